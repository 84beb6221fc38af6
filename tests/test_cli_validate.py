"""``pipecast validate`` end to end through the command line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pipecast.cli import app
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
