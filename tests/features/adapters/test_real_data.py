"""The Maven CRM and UCI bank-marketing imports on the real datasets (skip when absent)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.adapters import bank_marketing, maven_crm
from features.io import read_export, write_export
from pipecast.cli import app

pytestmark = pytest.mark.real_data
runner = CliRunner()


@pytest.fixture(scope="module")
def maven_dir(real_data_dir: Path) -> Path:
    folder = real_data_dir / "maven_crm"
    if not (folder / "sales_pipeline.csv").is_file():
        pytest.skip(f"{folder} is absent")
    return folder


@pytest.fixture(scope="module")
def bank_dir(real_data_dir: Path) -> Path:
    folder = real_data_dir / "uci_bank_marketing"
    if not (folder / "bank-additional-full.csv").is_file():
        pytest.skip(f"{folder} is absent")
    return folder


def test_maven_crm(tmp_path: Path, maven_dir: Path) -> None:
    export, report = maven_crm.convert_with_report(maven_dir)
    assert report.n_source == 8800 and report.skipped_prospecting == 500
    back = read_export(write_export(export, tmp_path / "maven"), require=("opportunities",))
    opps = back.opportunities
    assert len(opps) == 8300
    assert opps["status"].value_counts().to_dict() == {"won": 4238, "lost": 2473, "open": 1589}
    assert set(opps["stage"]) == {"Won", "Lost", "Engaging"}
    won = opps[opps["status"] == "won"]
    assert won["amount"].sum() == pytest.approx(10_005_534)
    # open and lost deals carry the product's list price
    prices = {
        "GTX Basic": 550,
        "GTX Pro": 4821,
        "MG Special": 55,
        "MG Advanced": 3393,
        "GTX Plus Pro": 5482,
        "GTX Plus Basic": 1096,
        "GTK 500": 26768,
    }
    not_won = opps[opps["status"] != "won"]
    assert (not_won["amount"] == not_won["product"].map(prices)).all()
    assert "GTXPro" not in set(opps["product"])
    assert opps.loc[opps["status"] == "open", "closed_at"].isna().all()
    assert opps["account_id"].isna().sum() == 1088 == opps["segment"].isna().sum()
    assert set(opps["segment"].dropna()) == {"SMB", "Mid-Market", "Enterprise"}
    assert opps["region"].notna().all()
    assert back.exported_at == pd.Timestamp("2017-12-31")
    assert opps["created_at"].min() == pd.Timestamp("2016-10-20")


def test_bank_additional(tmp_path: Path, bank_dir: Path) -> None:
    export = bank_marketing.convert(bank_dir)  # the folder: bank-additional-full.csv preferred
    back = read_export(write_export(export, tmp_path / "bank"), require=("leads",))
    leads = back.leads
    assert len(leads) == 41188 and leads["lead_id"].is_unique
    assert leads["is_sqo"].mean() == pytest.approx(0.1127, abs=0.0005)
    assert leads["created_at"].is_monotonic_increasing
    assert leads["created_at"].min() == pd.Timestamp("2008-05-05")
    assert leads["created_at"].max().strftime("%Y-%m") == "2010-11"
    assert (leads["created_at"].dt.day_of_week < 5).all()  # calls on weekdays only
    assert "duration" not in leads.columns
    assert leads["pdays"].isna().sum() == 39673 == (leads["previously_contacted"] == "false").sum()
    assert "sqo_at" not in leads.columns
    assert set(back.config.features["leads"]) <= set(leads.columns)


def test_bank_full(bank_dir: Path) -> None:
    leads = bank_marketing.convert(bank_dir / "bank-full.csv").leads
    assert len(leads) == 45211
    assert leads["is_sqo"].mean() == pytest.approx(0.117, abs=0.0005)
    assert leads["created_at"].is_monotonic_increasing
    assert leads["created_at"].max().strftime("%Y-%m") == "2010-11"


def test_cli_imports_write_valid_exports(tmp_path: Path, maven_dir: Path, bank_dir: Path) -> None:
    runner.invoke(app, ["import", "maven-crm", str(maven_dir), "--out", str(tmp_path / "maven")])
    runner.invoke(
        app,
        [
            "import",
            "bank-marketing",
            str(bank_dir / "bank-additional-full.csv"),
            "--out",
            str(tmp_path / "bank"),
        ],
    )
    assert len(read_export(tmp_path / "maven").opportunities) == 8300
    assert len(read_export(tmp_path / "bank").leads) == 41188


def test_cli_imports_exit_0(tmp_path: Path, maven_dir: Path, bank_dir: Path) -> None:
    result = runner.invoke(
        app, ["import", "maven-crm", str(maven_dir), "--out", str(tmp_path / "maven")]
    )
    assert result.exit_code == 0, result.output
    assert "8300 opportunities" in result.output
    result = runner.invoke(
        app, ["import", "bank-marketing", str(bank_dir), "--out", str(tmp_path / "bank")]
    )
    assert result.exit_code == 0, result.output
    assert "41188 leads" in result.output
