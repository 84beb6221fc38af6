"""Reading and writing an export: dtypes, round trips, text that looks like missing values."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.io import Export, read_export, read_leads_file, write_export

OPPORTUNITIES = """\
opportunity_id,account_id,created_at,stage,status,closed_at,amount,expected_close_date,region,competitor
O1,A1,2026-01-01,Closed Won,won,2026-02-01,1000.5,2026-02-15,NA,None
O2,A2,2026-01-15,Closed Lost,lost,2026-03-01,0,,EMEA,
O3,A3,2026-03-01,Proposal,open,,500,2027-01-31, NA ,Acme
"""
STAGE_HISTORY = """\
opportunity_id,changed_at,stage,amount,forecast_category
O1,2026-01-01T09:00:00,Discovery,1000.5,pipeline
O1,2026-02-01T10:00:00+02:00,Closed Won,,closed
O2,2026-01-15,Discovery,,pipeline
O3,2026-03-01,Discovery,500,
O3,2026-04-10T23:30:00-01:00,Proposal,,commit
"""
LEADS = """\
lead_id,created_at,sqo_at,is_sqo,do_not_contact,employees,country
L1,2026-01-01,2026-01-10,yes,false,250,NA
L2,2026-01-05,,0,,,None
"""


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    for name, text in {
        "opportunities.csv": OPPORTUNITIES,
        "stage_history.csv": STAGE_HISTORY,
        "leads.csv": LEADS,
    }.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_contract_dtypes(export_dir: Path) -> None:
    export = read_export(export_dir)
    opps = export.opportunities
    assert opps is not None and export.leads is not None
    assert opps["created_at"].dtype == "datetime64[ns]"
    assert opps["amount"].dtype == "float64"
    assert opps["amount"].tolist() == [1000.5, 0.0, 500.0]
    assert pd.api.types.is_string_dtype(opps["stage"])
    assert opps["status"].tolist() == ["won", "lost", "open"]
    assert pd.isna(opps.loc[2, "closed_at"])
    assert export.leads["is_sqo"].dtype == "boolean"
    assert export.leads["is_sqo"].tolist() == [True, False]
    assert export.leads["do_not_contact"].isna().tolist() == [False, True]


def test_na_and_none_stay_text(export_dir: Path) -> None:
    export = read_export(export_dir)
    assert export.opportunities is not None and export.leads is not None
    assert export.opportunities["region"].tolist() == ["NA", "EMEA", "NA"]
    assert export.leads["country"].tolist() == ["NA", "None"]
    # an extra column is kept, as text, with its empty cell missing
    competitor = export.opportunities["competitor"]
    assert competitor.iloc[0] == "None" and competitor.iloc[2] == "Acme"
    assert pd.isna(competitor.iloc[1])


def test_aware_timestamps_become_naive_utc(export_dir: Path) -> None:
    hist = read_export(export_dir).stage_history
    assert hist is not None
    assert hist["changed_at"].dt.tz is None
    assert hist.loc[1, "changed_at"] == pd.Timestamp("2026-02-01 08:00:00")
    # 23:30 at UTC-1 is already the next day in UTC
    assert hist.loc[4, "changed_at"] == pd.Timestamp("2026-04-11 00:30:00")


def test_exported_at_defaults_to_the_latest_date(export_dir: Path) -> None:
    export = read_export(export_dir)
    # expected close dates (2027-01-31) lie in the future by design and do not count
    assert export.exported_at == pd.Timestamp("2026-04-11")
    (export_dir / "dataset.yaml").write_text("exported_at: 2026-05-01\n", encoding="utf-8")
    assert read_export(export_dir).exported_at == pd.Timestamp("2026-05-01")


def _assert_same(a: Export, b: Export) -> None:
    assert set(a.tables()) == set(b.tables())
    for name, df in a.tables().items():
        pd.testing.assert_frame_equal(df, b.tables()[name], check_dtype=True)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip(export_dir: Path, tmp_path: Path, fmt: str) -> None:
    first = read_export(export_dir)
    out = write_export(first, tmp_path / f"copy-{fmt}", fmt=fmt)
    assert (out / f"opportunities.{fmt}").exists() and (out / "dataset.yaml").exists()
    second = read_export(out)
    _assert_same(first, second)
    assert second.exported_at == first.exported_at
    assert second.opportunities is not None
    assert second.opportunities["region"].tolist() == ["NA", "EMEA", "NA"]


def test_rewriting_in_another_format_leaves_one_file_per_table(
    export_dir: Path, tmp_path: Path
) -> None:
    export = read_export(export_dir)
    target = tmp_path / "copy"
    write_export(export, target, fmt="csv")
    write_export(export, target, fmt="parquet")
    assert not (target / "opportunities.csv").exists()
    _assert_same(export, read_export(target))


def test_parquet_with_aware_timestamps(tmp_path: Path) -> None:
    folder = tmp_path / "pq"
    folder.mkdir()
    pd.DataFrame(
        {
            "lead_id": ["L1", "L2"],
            "created_at": pd.to_datetime(
                ["2026-01-01T22:00:00-05:00", "2026-01-02T01:00:00-05:00"], utc=True
            ),
            "employees": [10, 20],
        }
    ).to_parquet(folder / "leads.parquet")
    leads = read_export(folder).leads
    assert leads is not None
    assert leads["created_at"].dt.tz is None
    assert leads["created_at"].tolist() == [
        pd.Timestamp("2026-01-02 03:00"),
        pd.Timestamp("2026-01-02 06:00"),
    ]
    assert leads["employees"].dtype == "float64"


def test_a_parquet_table_with_its_id_as_the_index_is_read(tmp_path: Path) -> None:
    """pandas writes a named index into Parquet and reads it back as the index."""
    frame = pd.DataFrame(
        {"lead_id": ["L1", "L2"], "created_at": ["2026-01-05", "2026-01-06"]}
    ).set_index("lead_id")
    frame.to_parquet(tmp_path / "list.parquet")
    leads = read_leads_file(tmp_path / "list.parquet")
    assert list(leads["lead_id"]) == ["L1", "L2"]
