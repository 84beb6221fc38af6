"""``pipecast import csv`` end to end: convert the example reports, then validate the result."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from features.io import read_export
from pipecast.cli import app

runner = CliRunner()


def test_import_salesforce_then_validate(
    tmp_path: Path, salesforce_dir: Path, salesforce_mapping: Path
) -> None:
    out = tmp_path / "export"
    result = runner.invoke(
        app,
        [
            "import",
            "csv",
            str(salesforce_dir),
            "--mapping",
            str(salesforce_mapping),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "12 opportunities, 23 stage_history" in " ".join(result.output.split())
    export = read_export(out, require=("opportunities", "stage_history"))
    assert len(export.opportunities) == 12
    checked = runner.invoke(app, ["validate", "--data", str(out)], env={"COLUMNS": "200"})
    assert checked.exit_code == 0, checked.output
    assert "follows the data contract" in checked.output


def test_import_hubspot_then_validate(
    tmp_path: Path, hubspot_dir: Path, hubspot_mapping: Path
) -> None:
    out = tmp_path / "export"
    result = runner.invoke(
        app,
        ["import", "csv", str(hubspot_dir), "--mapping", str(hubspot_mapping), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert read_export(out).opportunities["status"].value_counts().to_dict() == {
        "open": 7,
        "won": 3,
        "lost": 2,
    }
    checked = runner.invoke(app, ["validate", "--data", str(out)], env={"COLUMNS": "200"})
    assert checked.exit_code == 0, checked.output


def test_bad_mapping_exits_2_and_writes_nothing(
    tmp_path: Path, salesforce_dir: Path, salesforce_mapping: Path
) -> None:
    data = yaml.safe_load(salesforce_mapping.read_text(encoding="utf-8"))
    data["tables"]["opportunities"]["columns"]["amount"] = {"from": "Amount", "currancy": "USD"}
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "export"
    result = runner.invoke(
        app, ["import", "csv", str(salesforce_dir), "--mapping", str(mapping), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "tables.opportunities.columns.amount.currancy: unknown key" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_missing_source_exits_2(tmp_path: Path, salesforce_mapping: Path) -> None:
    result = runner.invoke(
        app,
        [
            "import",
            "csv",
            str(tmp_path / "absent"),
            "--mapping",
            str(salesforce_mapping),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2
    assert "no such file or folder" in result.output
