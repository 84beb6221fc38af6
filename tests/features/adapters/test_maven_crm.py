"""The Maven CRM import on a tiny hand-made copy of the dataset (real data: test_real_data.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.adapters import maven_crm
from features.contract import ContractError
from features.errors import InputError
from features.io import read_export, write_export

PIPELINE = [
    "opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_date,close_value",
    "W1,Ann Agent,GTXPro,Big Co,Won,2016-10-20,2017-03-01,4514",
    "L1,Bob Agent,MG Special,Small Co,Lost,2016-11-02,2016-12-15,0",
    "E1,Ann Agent,GTX Basic,,Engaging,2017-06-01,,",
    "E2,Bob Agent,GTX Basic,Mid Co,Engaging,2017-07-10,,",
    "P1,Ann Agent,MG Special,,Prospecting,,,",
]


def _write(folder: Path, name: str, lines: list[str]) -> None:
    # the original files have CRLF line endings
    (folder / name).write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))


@pytest.fixture
def maven_dir(tmp_path: Path) -> Path:
    _write(tmp_path, "sales_pipeline.csv", PIPELINE)
    _write(
        tmp_path,
        "accounts.csv",
        [
            "account,sector,year_established,revenue,employees,office_location,subsidiary_of",
            "Big Co,retail,1990,5000.5,12000,United States,",
            "Small Co,medical,2001,12.3,999,Kenya,",
            "Mid Co,software,2010,300,1000,United States,Big Co",
        ],
    )
    _write(
        tmp_path,
        "products.csv",
        ["product,series,sales_price", "GTX Basic,GTX,550", "GTX Pro,GTX,4821", "MG Special,MG,55"],
    )
    _write(
        tmp_path,
        "sales_teams.csv",
        [
            "sales_agent,manager,regional_office",
            "Ann Agent,Max Manager,East",
            "Bob Agent,Max Manager,West",
        ],
    )
    return tmp_path


def test_deals_become_opportunities(maven_dir: Path) -> None:
    export, report = maven_crm.convert_with_report(maven_dir)
    opps = export.opportunities.set_index("opportunity_id")
    assert report.skipped_prospecting == 1 and report.n_source == 5 and report.no_account == 1
    assert list(opps.index) == ["W1", "L1", "E1", "E2"]
    assert opps["status"].tolist() == ["won", "lost", "open", "open"]
    # won: close_value; lost and open: the product's list price
    assert opps["amount"].tolist() == [4514.0, 55.0, 550.0, 550.0]
    assert opps.loc["W1", "product"] == "GTX Pro"
    assert opps.loc["W1", "created_at"] == pd.Timestamp("2016-10-20")
    assert opps.loc["W1", "closed_at"] == pd.Timestamp("2017-03-01")
    assert opps.loc[["E1", "E2"], "closed_at"].isna().all()
    assert opps["segment"].tolist()[:2] == ["Enterprise", "SMB"]
    assert opps.loc["E2", "segment"] == "Mid-Market"  # 1,000 employees is no longer SMB
    assert pd.isna(opps.loc["E1", "account_id"]) and pd.isna(opps.loc["E1", "segment"])
    assert opps["region"].tolist() == ["East", "West", "East", "West"]
    assert opps.loc["L1", "industry"] == "medical"
    assert opps.loc["W1", "owner_id"] == "Ann Agent"
    assert export.stage_history is None
    assert export.config.exported_at == pd.Timestamp("2017-07-10")
    assert [s.name for s in export.config.stages] == ["Prospecting", "Engaging", "Won", "Lost"]
    assert export.won_stages == {"Won"} and export.lost_stages == {"Lost"}
    assert export.stage_probabilities() == {}


def test_round_trip(tmp_path: Path, maven_dir: Path) -> None:
    export = maven_crm.convert(maven_dir)
    back = read_export(write_export(export, tmp_path / "out"))
    assert back.opportunities["opportunity_id"].tolist() == ["W1", "L1", "E1", "E2"]
    assert back.exported_at == pd.Timestamp("2017-07-10")


@pytest.mark.parametrize(
    "name", ["sales_pipeline.csv", "accounts.csv", "products.csv", "sales_teams.csv"]
)
def test_missing_file_is_named(maven_dir: Path, name: str) -> None:
    (maven_dir / name).unlink()
    with pytest.raises(InputError, match=f"needs {name}"):
        maven_crm.convert(maven_dir)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        maven_crm.convert(tmp_path / "absent")


def test_unknown_product_is_refused(maven_dir: Path) -> None:
    _write(
        maven_dir,
        "sales_pipeline.csv",
        [*PIPELINE, "E3,Ann Agent,GTX Ultra,,Engaging,2017-07-11,,"],
    )
    with pytest.raises(ContractError, match="'GTX Ultra' are not in products.csv"):
        maven_crm.convert(maven_dir)


def test_missing_column_is_named(maven_dir: Path) -> None:
    _write(maven_dir, "sales_teams.csv", ["sales_agent,manager", "Ann Agent,Max Manager"])
    with pytest.raises(ContractError, match="sales_teams.csv, column 'regional_office'"):
        maven_crm.convert(maven_dir)
