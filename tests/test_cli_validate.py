"""``pipecast validate`` end to end through the command line, quarantined rows included."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipecast.cli import app
from tests.features.test_checks import day, set_cell, tables
from tests.features.test_checks import write as write_checks_export
from tests.features.test_report import (
    ACTIVITIES,
    DATASET,
    LEADS,
    OPPORTUNITIES,
    STAGE_HISTORY,
    write,
)

runner = CliRunner()


def test_validate_prints_counts_rates_and_warnings(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "export",
        {
            "opportunities.csv": OPPORTUNITIES,
            "stage_history.csv": STAGE_HISTORY,
            "activities.csv": ACTIVITIES,
            "leads.csv": LEADS,
            "dataset.yaml": DATASET,
        },
    )
    result = runner.invoke(app, ["validate", "--data", str(folder)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in (
        "follows the data contract",
        "2026-06-30",
        "2026-01-01",
        "66.7%",
        "60.0%",
        "Enterprise",
        "partner",
        "no next step",
        "O7",
    ):
        assert needle in out, needle


def test_validate_reads_the_data_dir_setting(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "export", {"leads.csv": "lead_id,is_sqo,source\nL1,yes,inbound\nL2,no,inbound\n"}
    )
    result = runner.invoke(
        app, ["validate"], env={"PIPECAST_DATA_DIR": str(folder), "COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "50.0%" in result.stdout
    assert "not available (no opportunities file)" in result.stdout


# ----------------------------------------------------------------------------------------
# quarantined rows
# ----------------------------------------------------------------------------------------


def _export_with_inconsistent_rows(folder: Path) -> Path:
    """40 deals and 40 leads, one deal closed before it was created and one lead's SQO too."""
    frames = tables()
    set_cell("opportunities", 3, "closed_at", day(-2))(frames)  # O03 (won), line 5
    set_cell("leads", 9, "sqo_at", day(1))(frames)  # L09, line 11
    return write_checks_export(folder, frames)


def test_validate_lists_quarantined_rows_with_their_lines(tmp_path: Path) -> None:
    folder = _export_with_inconsistent_rows(tmp_path / "export")
    listing = tmp_path / "out" / "quarantine.csv"
    result = runner.invoke(
        app,
        ["validate", "--data", str(folder), "--quarantine", str(listing)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "follows the data contract; 5 row(s) quarantined" in out
    assert re.search(r"opportunities\.csv\s*│\s*5\s*│\s*O03\s*│\s*closed_at\s*│", out), out
    assert re.search(r"leads\.csv\s*│\s*11\s*│\s*L09\s*│\s*sqo_at\s*│", out), out
    assert "closed_at before created_at" in out and "sqo_at before created_at" in out
    assert (
        "5 rows quarantined (opportunities.csv: 1, stage_history.csv: 2, activities.csv: 1, "
        "leads.csv: 1); listed below" in result.stderr
    )
    written = pd.read_csv(listing, dtype=str, keep_default_na=False)
    assert list(written.columns) == ["file", "line", "table", "id", "column", "value", "reason"]
    assert written[["file", "line", "reason"]].values.tolist() == [
        ["opportunities.csv", "5", "closed_at before created_at"],
        ["stage_history.csv", "8", "its opportunity is quarantined (closed_at before created_at)"],
        ["stage_history.csv", "9", "its opportunity is quarantined (closed_at before created_at)"],
        ["activities.csv", "5", "its opportunity is quarantined (closed_at before created_at)"],
        ["leads.csv", "11", "sqo_at before created_at"],
    ]


def test_validate_strict_refuses_the_same_export(tmp_path: Path) -> None:
    folder = _export_with_inconsistent_rows(tmp_path / "export")
    listing = tmp_path / "quarantine.csv"
    result = runner.invoke(
        app,
        ["validate", "--data", str(folder), "--strict", "--quarantine", str(listing)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "The CRM export was refused (2 problems)" in message
    assert (
        "opportunities.csv, column 'closed_at': 1 deal(s) close before they were created (line 5)"
        in message
    )
    assert (
        "leads.csv, column 'sqo_at': 1 lead(s) became SQOs before they were created (line 11)"
        in message
    )
    assert "Traceback" not in result.output and "follows the data contract" not in message
    assert not listing.exists()


def test_validate_quarantine_onto_a_folder_is_refused_before_reading(tmp_path: Path) -> None:
    folder = _export_with_inconsistent_rows(tmp_path / "export")
    result = runner.invoke(
        app,
        ["validate", "--data", str(folder), "--quarantine", str(tmp_path)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    assert "--quarantine" in result.output and "is a folder" in result.output


def test_other_commands_count_quarantined_rows_and_strict_refuses(tmp_path: Path) -> None:
    frames = tables()
    set_cell("opportunities", 2, "amount", "-100")(frames)  # O02, open: would be featured
    folder = write_checks_export(tmp_path / "export", frames)
    out = tmp_path / "features.csv"
    args = ["features", "--data", str(folder), "--as-of", "2026-03-31", "--out", str(out)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (
        "4 rows quarantined (opportunities.csv: 1, stage_history.csv: 2, activities.csv: 1); "
        "`pipecast validate` lists them" in result.stderr
    )
    featured = set(pd.read_csv(out, dtype=str)["opportunity_id"])
    assert "O02" not in featured and {"O05", "O08"} <= featured
    out.unlink()
    strict = runner.invoke(app, [*args, "--strict"], env={"COLUMNS": "200"})
    assert strict.exit_code == 2, strict.output
    assert "column 'amount': 1 value(s) are negative (line 4)" in " ".join(strict.output.split())
    assert not out.exists()


def test_validate_says_an_undated_export_has_no_dates(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "export",
        {"leads.csv": "lead_id,is_sqo,source,employees\nL1,yes,inbound,10\nL2,no,outbound,20\n"},
    )
    result = runner.invoke(app, ["validate", "--data", str(folder)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Export date: no dates" in result.stdout
    assert "quarantined" not in result.output


@pytest.mark.slow
def test_train_records_quarantined_rows_in_its_mlflow_run(tmp_path: Path) -> None:
    folder = _export_with_inconsistent_rows(tmp_path / "export")
    uri = f"sqlite:///{tmp_path / 'var' / 'mlflow.db'}"
    env = {"COLUMNS": "200", "MLFLOW_TRACKING_URI": uri, "PIPECAST_VAR_DIR": str(tmp_path / "var")}
    result = runner.invoke(app, ["train", "--data", str(folder)], env=env)
    assert result.exit_code == 0, result.output
    assert "5 rows quarantined" in result.stderr
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.mlflow.runName LIKE 'train %'"
    )
    metrics = runs.iloc[0]
    assert metrics["metrics.quarantined_rows_opportunities"] == 1
    assert metrics["metrics.quarantined_rows_stage_history"] == 2
    assert metrics["metrics.quarantined_rows_leads"] == 1
