"""Reading and writing an export: dtypes, round trips, text that looks like missing values."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.contract import ContractError
from features.errors import InputError
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


# ----------------------------------------------------------------------------------------
# undated exports
# ----------------------------------------------------------------------------------------


def test_an_undated_lead_export_is_read(tmp_path: Path) -> None:
    """Leads with an outcome and attributes but no dates: usable, only not in time order."""
    folder = tmp_path / "undated"
    folder.mkdir()
    (folder / "leads.csv").write_text(
        "lead_id,is_sqo,source,employees\nL1,yes,inbound,10\nL2,no,outbound,20\n",
        encoding="utf-8",
    )
    export = read_export(folder)
    assert export.leads is not None and export.leads["is_sqo"].tolist() == [True, False]
    assert not export.has_dates() and not export.has_dates("leads")
    assert export.export_date is None
    # an as-of day cannot be placed, so it is not refused either
    assert export.check_as_of(pd.Timestamp("2026-01-01")) == pd.Timestamp("2026-01-01")
    with pytest.raises(InputError, match="holds no dates"):
        _ = export.exported_at


def test_a_partly_dated_export_uses_the_dates_it_has(tmp_path: Path) -> None:
    folder = tmp_path / "partly"
    folder.mkdir()
    (folder / "leads.csv").write_text(
        "lead_id,created_at,is_sqo\nL1,,yes\nL2,2026-02-01,no\nL3,,no\n", encoding="utf-8"
    )
    export = read_export(folder)
    assert export.has_dates("leads") and export.has_dates()
    assert not export.has_dates("opportunities")
    assert export.exported_at == pd.Timestamp("2026-02-01")


# ----------------------------------------------------------------------------------------
# lead lists to score
# ----------------------------------------------------------------------------------------


def _list(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bdr-list.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "id,created_at\nL1,2026-01-01\n",
            "bdr-list.csv, column 'lead_id': a required column is missing; expected a header "
            "with lead_id (found: id, created_at)",
        ),
        (
            "lead_id,employees\nL1,10\nL2,20\nL1,30\nL2,40\n",
            "bdr-list.csv, column 'lead_id': 2 lead id(s) appear on more than one row (e.g. L1, "
            "L2) (lines 2, 3, 4, 5)",
        ),
        (
            "lead_id,employees\nL1,10\nL2,about 50\nL3,\n",
            "bdr-list.csv, column 'employees': 1 value(s) are not numbers (line 3)",
        ),
        (
            "lead_id,created_at\nL1,2026-01-01\nL2,01/02/2026\nL3,2026-02-30\n",
            "bdr-list.csv, column 'created_at': 2 value(s) are not dates (lines 3, 4)",
        ),
        (
            "lead_id,employees\nL1,10\nL2,-5\n",
            "bdr-list.csv, column 'employees': 1 value(s) are negative (line 3)",
        ),
        (
            "lead_id,employees\nL1,10\n,20\n",
            "bdr-list.csv, column 'lead_id': 1 row(s) leave it empty (line 3)",
        ),
        ("lead_id,employees\n", "bdr-list.csv: holds no leads (only a header)"),
        ("", "bdr-list.csv: cannot be read as a table"),
    ],
    ids=[
        "no lead_id",
        "duplicates",
        "number",
        "date",
        "negative",
        "empty id",
        "header only",
        "empty file",
    ],
)
def test_a_broken_lead_list_is_refused_as_a_lead_list(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ContractError) as info:
        read_leads_file(_list(tmp_path, text))
    message = str(info.value)
    assert message.startswith("The lead list was refused"), message
    assert "CRM export" not in message
    assert says in message, message


def test_a_lead_list_without_a_declared_feature_column_is_refused(tmp_path: Path) -> None:
    path = _list(tmp_path, "lead_id,source\nL1,inbound\n")
    with pytest.raises(ContractError, match="The lead list was refused") as info:
        read_leads_file(path, extra_columns=["landing_page"])
    assert "bdr-list.csv, column 'landing_page': a required column is missing" in str(info.value)


def test_a_parquet_lead_list_with_list_cells_is_refused(tmp_path: Path) -> None:
    """A column of lists or records (Parquet nested types) has no one value per lead."""
    path = tmp_path / "list.parquet"
    pd.DataFrame(
        {"lead_id": ["L1", "L2", "L3"], "industry": [["SaaS", "Fintech"], None, ["Retail"]]}
    ).to_parquet(path)
    with pytest.raises(ContractError) as info:
        read_leads_file(path)
    assert (
        "The lead list was refused: list.parquet, column 'industry': holds lists (a nested "
        "Parquet type), which cannot be used as a value (lines 1, 3)" in str(info.value)
    )
