"""Forecast periods: fiscal quarters, months, ranges of days."""

from __future__ import annotations

import pandas as pd
import pytest

from features.errors import InputError
from features.periods import (
    fiscal_quarter,
    next_quarter,
    parse_date,
    parse_period,
    quarter_end_days,
)

T = pd.Timestamp


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-Q1", "2026-02-01", "2026-04-30"),
        ("2026-Q2", "2026-05-01", "2026-07-31"),
        ("2026-Q3", "2026-08-01", "2026-10-31"),
        ("2026-Q4", "2026-11-01", "2027-01-31"),
        ("2026q4", "2026-11-01", "2027-01-31"),
    ],
)
def test_fiscal_quarters_starting_in_february(text: str, start: str, end: str) -> None:
    period = parse_period(text, fiscal_year_start_month=2)
    assert (period.start, period.end) == (T(start), T(end))
    assert period.label == text.upper().replace("26Q", "26-Q")


def test_calendar_quarter_by_default() -> None:
    period = parse_period("2026-Q3")
    assert (period.start, period.end, period.days) == (T("2026-07-01"), T("2026-09-30"), 92)


def test_fiscal_year_is_named_after_the_year_it_starts_in() -> None:
    assert fiscal_quarter(T("2027-01-15"), 2).label == "2026-Q4"
    assert fiscal_quarter(T("2026-01-31 23:59"), 2).label == "2025-Q4"
    assert fiscal_quarter(T("2026-02-01"), 2).label == "2026-Q1"
    assert next_quarter(parse_period("2026-Q4", 2), 2).label == "2027-Q1"


def test_month_and_range() -> None:
    feb = parse_period("2028-02")
    assert (feb.start, feb.end, feb.days) == (T("2028-02-01"), T("2028-02-29"), 29)
    span = parse_period("2026-07-01:2026-07-01")
    assert span.days == 1
    # the end day is inside the period up to its last instant
    assert span.contains(T("2026-07-01 23:59:59"))
    assert not span.contains(T("2026-07-02"))
    assert not span.contains(T("2026-06-30 23:59:59"))


def test_quarter_end_days_is_vectorised_and_keeps_missing() -> None:
    dates = pd.Series([T("2026-01-15"), T("2026-02-01"), pd.NaT, T("2026-12-31 18:00")])
    ends = quarter_end_days(dates, fiscal_year_start_month=2)
    assert ends.iloc[0] == T("2026-01-31")
    assert ends.iloc[1] == T("2026-04-30")
    assert pd.isna(ends.iloc[2])
    assert ends.iloc[3] == T("2027-01-31")


@pytest.mark.parametrize(
    "text",
    [
        "2026-Q5",
        "2026-13",
        "2026-00",
        "Q3",
        "2026-07-01:2026-06-30",
        "2026-02-30:2026-03-31",
        "",
        "soon",
    ],
)
def test_bad_periods_are_input_errors(text: str) -> None:
    with pytest.raises(InputError, match="2026-Q3"):
        parse_period(text)


def test_parse_date() -> None:
    assert parse_date("2026-03-14") == T("2026-03-14")
    assert parse_date(" 2026-03-14T18:30:00 ") == T("2026-03-14")
    # an aware time is moved to UTC before the day is taken
    assert parse_date("2026-03-14T23:30:00-02:00") == T("2026-03-15")
    with pytest.raises(InputError, match="--as-of"):
        parse_date("yesterday")
    with pytest.raises(InputError, match="as_of"):
        parse_date("2026-02-30", what="as_of")
