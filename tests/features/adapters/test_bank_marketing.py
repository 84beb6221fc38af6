"""The bank-marketing import on tiny hand-made files (real data: test_real_data.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.adapters import bank_marketing
from features.errors import InputError
from features.io import read_export, write_export

ADDITIONAL_COLUMNS = [
    *["age", "job", "marital", "education", "default", "housing", "loan", "contact", "month"],
    *["day_of_week", "duration", "campaign", "pdays", "previous", "poutcome", "emp.var.rate"],
    *["cons.price.idx", "cons.conf.idx", "euribor3m", "nr.employed", "y"],
]
ADDITIONAL_HEADER = ";".join(f'"{c}"' for c in ADDITIONAL_COLUMNS)


def _additional_row(
    month: str,
    weekday: str,
    *,
    y: str = "no",
    pdays: int = 999,
    poutcome: str = "nonexistent",
    job: str = "admin.",
) -> str:
    client = f'41;"{job}";"married";"university.degree";"no";"yes";"no";"cellular"'
    call = f'"{month}";"{weekday}";300;2;{pdays};0;"{poutcome}"'
    return f'{client};{call};1.1;93.994;-36.4;4.857;5191;"{y}"'


@pytest.fixture
def additional_file(tmp_path: Path) -> Path:
    rows = [
        _additional_row("may", "mon"),  # May 2008: Monday 5th
        _additional_row("may", "mon", y="yes"),
        _additional_row("may", "wed"),  # Wednesday 7th
        _additional_row("may", "mon"),  # the next Monday: 12th
        _additional_row("dec", "fri", job="unknown"),  # Friday 5 Dec 2008
        _additional_row(
            "mar", "tue", pdays=6, poutcome="success"
        ),  # the month wraps: March 2009, Tuesday 3rd
    ]
    path = tmp_path / "bank-additional-full.csv"
    path.write_text(ADDITIONAL_HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_leads_with_rebuilt_dates(additional_file: Path) -> None:
    leads = bank_marketing.convert(additional_file).leads
    assert leads["lead_id"].tolist()[:2] == ["bank-add-000001", "bank-add-000002"]
    assert leads["created_at"].dt.strftime("%Y-%m-%d").tolist() == [
        "2008-05-05",
        "2008-05-05",
        "2008-05-07",
        "2008-05-12",
        "2008-12-05",
        "2009-03-03",
    ]
    assert leads["is_sqo"].tolist() == [False, True, False, False, False, False]
    assert "duration" not in leads.columns  # it leaks the outcome
    assert leads["pdays"].isna().tolist() == [True] * 5 + [False]
    assert leads["previously_contacted"].tolist() == [False] * 5 + [True]
    assert (
        leads["signal_type"].iloc[-1] == "prior_campaign_success"
        and leads["signal_type"].iloc[:5].isna().all()
    )
    assert pd.isna(leads["title"].iloc[4]) and leads["title"].iloc[0] == "admin."
    assert set(leads["sequence"]) == {"cellular"} and set(leads["source"]) == {"outbound"}
    assert leads["euribor3m"].iloc[0] == pytest.approx(4.857)


def test_round_trip_declares_features(tmp_path: Path, additional_file: Path) -> None:
    export = bank_marketing.convert(additional_file.parent)  # the folder works too
    features = export.config.features["leads"]
    assert {
        "age",
        "job",
        "pdays",
        "previously_contacted",
        "emp_var_rate",
        "nr_employed",
        "poutcome",
    } <= set(features)
    assert not any("." in f for f in features) and "duration" not in features
    # complete only once the outcome is known: kept as a column, never a feature
    assert "campaign" not in features and "campaign" in export.leads.columns
    back = read_export(write_export(export, tmp_path / "out"), require=("leads",))
    assert back.leads["is_sqo"].tolist() == export.leads["is_sqo"].tolist()
    assert back.exported_at == pd.Timestamp("2009-03-03")


def test_bank_full_uses_the_day(tmp_path: Path) -> None:
    columns = ["age", "job", "marital", "education", "default", "balance", "housing", "loan"]
    columns += [
        "contact",
        "day",
        "month",
        "duration",
        "campaign",
        "pdays",
        "previous",
        "poutcome",
        "y",
    ]
    header = ";".join(f'"{c}"' for c in columns)
    rows = [
        '58;"management";"married";"tertiary";"no";2143;"yes";"no";"unknown";5;"may";261;1;-1;0;"unknown";"no"',
        '33;"services";"single";"secondary";"no";-20;"yes";"no";"cellular";30;"dec";100;2;92;1;"success";"yes"',
        '33;"services";"single";"secondary";"no";50;"yes";"no";"telephone";29;"feb";100;2;-1;0;"unknown";"no"',
    ]
    path = tmp_path / "bank-full.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    leads = bank_marketing.convert(tmp_path).leads
    # 29 February 2009 does not exist: the last day of that month
    assert leads["created_at"].dt.strftime("%Y-%m-%d").tolist() == [
        "2008-05-05",
        "2008-12-30",
        "2009-02-28",
    ]
    assert leads["lead_id"].iloc[0] == "bank-full-000001"
    assert leads["balance"].tolist() == [2143.0, -20.0, 50.0]
    assert leads["previously_contacted"].tolist() == [False, True, False]
    assert pd.isna(leads["sequence"].iloc[0])


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds neither"):
        bank_marketing.convert(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        bank_marketing.convert(tmp_path / "bank-additional-full.csv")
    other = tmp_path / "other.csv"
    other.write_text("a;b\n1;2\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a bank-marketing file"):
        bank_marketing.convert(other)
