"""Forecast periods: fiscal quarters, months and explicit date ranges.

A period is a closed range of whole days ``[start, end]``: a deal closed at any time on ``end``
is inside it. A fiscal year is named after the calendar year in which it *starts* (the
Salesforce default): with ``fiscal_year_start_month=2``, ``2026-Q1`` is 2026-02-01..2026-04-30.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import InputError

_QUARTER = re.compile(r"^(\d{4})-?Q([1-4])$", re.IGNORECASE)
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2}):(\d{4}-\d{2}-\d{2})$")
#: a day, optionally with a time of day and a UTC offset (ISO 8601, as --as-of takes it)
_ISO_DAY = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$"
)


@dataclass(frozen=True)
class Period:
    """A closed range of days; ``label`` is how the user wrote it."""

    start: pd.Timestamp
    end: pd.Timestamp
    label: str

    @property
    def end_exclusive(self) -> pd.Timestamp:
        """The first instant after the period (midnight after ``end``)."""
        return self.end + pd.Timedelta(days=1)

    def contains(self, when: pd.Timestamp) -> bool:
        return bool(self.start <= when < self.end_exclusive)

    @property
    def days(self) -> int:
        return int((self.end - self.start).days) + 1


def quarter_start(when: pd.Timestamp, fiscal_year_start_month: int = 1) -> pd.Timestamp:
    """First day of the fiscal quarter containing ``when``."""
    offset = (when.month - fiscal_year_start_month) % 3
    first = pd.Timestamp(year=when.year, month=when.month, day=1) - pd.DateOffset(months=offset)
    return pd.Timestamp(first)


def fiscal_quarter(when: pd.Timestamp, fiscal_year_start_month: int = 1) -> Period:
    """The fiscal quarter containing day ``when``."""
    start = quarter_start(pd.Timestamp(when).normalize(), fiscal_year_start_month)
    end = start + pd.DateOffset(months=3) - pd.Timedelta(days=1)
    fy = start.year if start.month >= fiscal_year_start_month else start.year - 1
    q = ((start.month - fiscal_year_start_month) % 12) // 3 + 1
    return Period(start=start, end=pd.Timestamp(end), label=f"{fy}-Q{q}")


def next_quarter(period: Period, fiscal_year_start_month: int = 1) -> Period:
    """The fiscal quarter after the one ``period`` ends in."""
    return fiscal_quarter(period.end + pd.Timedelta(days=1), fiscal_year_start_month)


def quarter_end_days(dates: pd.Series, fiscal_year_start_month: int = 1) -> pd.Series:
    """Vectorised: last day of the fiscal quarter containing each date (NaT stays NaT)."""
    d = pd.to_datetime(dates).dt.normalize()
    months_into = (d.dt.month - fiscal_year_start_month) % 3
    first_of_month = d - pd.to_timedelta(d.dt.day - 1, unit="D")
    # add (3 - months_into) months to the first of the month, minus one day
    values = first_of_month.to_numpy(dtype="datetime64[M]") + (
        3 - months_into.fillna(0).to_numpy(dtype=np.int64)
    ).astype("timedelta64[M]")
    end = pd.Series(values.astype("datetime64[ns]"), index=d.index) - pd.Timedelta(days=1)
    return end.where(d.notna())


def parse_period(text: str, fiscal_year_start_month: int = 1) -> Period:
    """Parse ``2026-Q3`` (fiscal quarter), ``2026-07`` (month) or ``2026-07-01:2026-09-30``.

    Raises
    ------
    InputError
        The text is none of these forms, or the range ends before it starts.
    """
    value = str(text).strip()
    try:
        return _parse_period(value, fiscal_year_start_month)
    except (ValueError, OverflowError):  # also a year such as 0000 or 9999-Q4: no calendar days
        raise InputError(
            f"period {value!r} is not understood: write a fiscal quarter such as 2026-Q3, a month "
            "such as 2026-07, or a range of days such as 2026-07-01:2026-09-30 (end ≥ start)."
        ) from None


def _parse_period(value: str, fiscal_year_start_month: int) -> Period:
    """The period ``value`` names; ``ValueError`` when it is none of the three forms."""
    if m := _QUARTER.match(value):
        fy, q = int(m.group(1)), int(m.group(2))
        start = pd.Timestamp(year=fy, month=fiscal_year_start_month, day=1) + pd.DateOffset(
            months=3 * (q - 1)
        )
        period = fiscal_quarter(pd.Timestamp(start), fiscal_year_start_month)
        return Period(start=period.start, end=period.end, label=f"{fy}-Q{q}")
    if m := _MONTH.match(value):
        year, month = int(m.group(1)), int(m.group(2))
        if 1 <= month <= 12:
            start = pd.Timestamp(year=year, month=month, day=1)
            end = start + pd.DateOffset(months=1) - pd.Timedelta(days=1)
            return Period(start=start, end=pd.Timestamp(end), label=value)
    if m := _RANGE.match(value):
        try:
            start, end = pd.Timestamp(m.group(1)), pd.Timestamp(m.group(2))
        except ValueError:
            start = end = None  # type: ignore[assignment]
        if start is not None and end is not None and end >= start:
            return Period(start=start, end=end, label=value)
    raise ValueError(value)


def parse_date(text: str, what: str = "--as-of") -> pd.Timestamp:
    """A day given on the command line or in a request (``2026-03-14``).

    Only ISO 8601 is taken (a time of day and a UTC offset may follow the day): ``03/04/2026``
    or ``today`` would be read one way or another by a parser that guesses, so they are refused.
    """
    value = str(text).strip()
    ts: pd.Timestamp | None = None
    if _ISO_DAY.match(value):
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError):
            ts = None
    if ts is None or pd.isna(ts):
        raise InputError(f"{what} {text!r} is not a date: write it as YYYY-MM-DD, e.g. 2026-03-14.")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.normalize()
