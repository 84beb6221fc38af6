"""More user mistakes, each refused with exit 2, a message naming what to fix, and nothing written.

Output paths that cannot take the output (a folder for a file, a file for a folder, an input
file), dates and periods that are not ISO or have no calendar days, ``dataset.yaml`` values of
the wrong kind, empty files, spreadsheets, and mappings of ``pipecast import csv`` that would
only fail half-way through the import.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from features.errors import InputError
from features.periods import parse_period
from pipecast.cli import app
from tests.features.adapters.conftest import EXAMPLES, MAPPINGS
from tests.test_cli_bad_input import VALID, edit, write_valid

runner = CliRunner()
ENV = {"COLUMNS": "300"}

SALESFORCE = EXAMPLES / "salesforce"
SALESFORCE_MAPPING = MAPPINGS / "salesforce.yaml"
MAVEN_PIPELINE_HEADER = (
    "opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_date,close_value"
)
BANK_HEADER = ";".join(
    f'"{c}"'
    for c in [
        *["age", "job", "marital", "education", "default", "housing", "loan", "contact"],
        *["month", "day_of_week", "duration", "campaign", "pdays", "previous", "poutcome"],
        *["emp.var.rate", "cons.price.idx", "cons.conf.idx", "euribor3m", "nr.employed", "y"],
    ]
)


def run(args: list[str], env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, args, env={**ENV, **(env or {})})


def refused(result: Any, *says: str) -> str:
    """The one-paragraph refusal: exit 2, no traceback, and every one of ``says`` in it."""
    message = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "pipecast failed" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for text in says:
        assert text in message, (text, message)
    return message


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes: to show nothing was touched."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------------------
# where the output goes
# ----------------------------------------------------------------------------------------


def test_simulate_refuses_a_negative_seed(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run(["simulate", "--out", str(out), "--seed", "-1"])
    refused(result, "--seed", "greater than or equal to 0")
    assert not out.exists()


def test_simulate_onto_an_existing_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me", encoding="utf-8")
    result = run(["simulate", "--out", str(target), "--opportunities", "50", "--leads", "100"])
    refused(result, "--out", "notes.txt", "is a file, not a folder")
    assert target.read_text(encoding="utf-8") == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_simulate_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    result = run(
        ["simulate", "--out", str(tmp_path / "notes.txt" / "demo"), "--opportunities", "50"]
    )
    refused(result, "notes.txt is a file, so nothing can be written under it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_features_out_onto_a_folder_is_refused(tmp_path: Path) -> None:
    folder = write_valid(tmp_path / "export")
    out = tmp_path / "results"
    out.mkdir()
    result = run(["features", "--data", str(folder), "--as-of", "2026-05-01", "--out", str(out)])
    refused(result, "--out", "results: is a folder", "out.csv")
    assert list(out.iterdir()) == []


def test_features_out_under_a_file_is_refused(tmp_path: Path) -> None:
    folder = write_valid(tmp_path / "export")
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    out = tmp_path / "afile" / "features.csv"
    result = run(["features", "--data", str(folder), "--as-of", "2026-05-01", "--out", str(out)])
    refused(result, "afile is a file, so nothing can be written under it")
    assert (tmp_path / "afile").read_text(encoding="utf-8") == "x"


def test_features_will_not_write_over_the_export_it_reads(tmp_path: Path) -> None:
    folder = write_valid(tmp_path / "export")
    before = digest(folder)
    out = folder / "opportunities.csv"
    result = run(["features", "--data", str(folder), "--as-of", "2026-05-01", "--out", str(out)])
    refused(result, "--out", "is opportunities.csv, a file this command reads")
    assert digest(folder) == before


def test_score_leads_will_not_write_over_the_lead_list(tmp_path: Path) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text(VALID["leads.csv"], encoding="utf-8")
    result = run(
        ["score", "leads", str(leads), "--out", str(leads)],
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    refused(result, "is leads.csv, a file this command reads")
    assert leads.read_text(encoding="utf-8") == VALID["leads.csv"]
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unwritable_output_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_valid(tmp_path / "export")
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr("features.io.os.access", lambda path, mode: Path(path) != locked)
    out = locked / "features.csv"
    result = run(["features", "--data", str(folder), "--as-of", "2026-05-01", "--out", str(out)])
    refused(result, "locked cannot be written to (permission denied)")
    assert list(locked.iterdir()) == []


def test_an_import_onto_another_export_is_refused_rather_than_mixed(tmp_path: Path) -> None:
    """Salesforce opportunities beside another export's leads and activities would not fit."""
    target = write_valid(tmp_path / "export")
    before = digest(target)
    result = run(
        [
            "import",
            "csv",
            str(SALESFORCE),
            "--mapping",
            str(SALESFORCE_MAPPING),
            "--out",
            str(target),
        ]
    )
    refused(result, "already holds activities.csv, leads.csv", "would mix two exports")
    assert digest(target) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]


def test_an_import_into_its_source_folder_keeps_the_source(tmp_path: Path) -> None:
    source = tmp_path / "salesforce"
    source.mkdir()
    for file in SALESFORCE.iterdir():
        (source / file.name).write_bytes(file.read_bytes())
    before = digest(source)
    result = run(
        ["import", "csv", str(source), "--mapping", str(SALESFORCE_MAPPING), "--out", str(source)]
    )
    refused(result, "would replace opportunities.csv, which this import reads")
    assert digest(source) == before


def test_validate_given_a_file_says_it_is_not_a_folder(tmp_path: Path) -> None:
    folder = write_valid(tmp_path / "export")
    result = run(["validate", "--data", str(folder / "leads.csv")])
    refused(result, "leads.csv: is a file, not a folder", f"({folder})")


# ----------------------------------------------------------------------------------------
# dates and periods
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_of", ["2026/05/01", "05/01/2026", "today", "20260501"])
@pytest.mark.parametrize("command", ["features", "train"])
def test_an_as_of_that_is_not_iso_is_refused(tmp_path: Path, command: str, as_of: str) -> None:
    """Read by a guessing parser, 05/01/2026 is May 1st for some and January 5th for others."""
    folder = write_valid(tmp_path / "export")
    out = tmp_path / "features.csv"
    args = [command, "--data", str(folder), "--as-of", as_of]
    if command == "features":
        args += ["--out", str(out)]
    result = run(args, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    refused(result, f"--as-of '{as_of}' is not a date", "YYYY-MM-DD")
    assert not out.exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("period", ["0000-Q1", "9999-Q4", "9999-12", "0000-01"])
def test_a_period_without_calendar_days_is_an_input_error(period: str) -> None:
    with pytest.raises(InputError, match=f"period '{period}' is not understood"):
        parse_period(period, 2)


# ----------------------------------------------------------------------------------------
# dataset.yaml
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (
            "exported_at: 2026-06-30",
            "exported_at: 2026-13-45",
            "dataset.yaml: holds a date that does not exist",
        ),
        (
            "fiscal_year_start_month: 2",
            "fiscal_year_start_month: 2\nsqo_window_days: true",
            "column 'sqo_window_days': True is not a number of days",
        ),
        (
            "fiscal_year_start_month: 2",
            "fiscal_year_start_month: true",
            "column 'fiscal_year_start_month': True is not a month",
        ),
        (
            "won: true}",
            'won: "no"}',
            "stage 'Closed Won' has won: 'no'; expected won: true or won: false",
        ),
        (
            "{name: Discovery, probability: 0.1}",
            "{name: Discovery, probability: true}",
            "stage 'Discovery' has probability True",
        ),
        (
            "won: true}",
            "won: true, lost: true}",
            "stage 'Closed Won' is marked both won and lost",
        ),
    ],
)
def test_dataset_yaml_values_of_the_wrong_kind_are_refused(
    tmp_path: Path, old: str, new: str, says: str
) -> None:
    folder = write_valid(tmp_path / "export")
    edit("dataset.yaml", old, new)(folder)
    refused(run(["validate", "--data", str(folder)]), "dataset.yaml", says)


def test_dataset_yaml_that_is_not_text_is_refused(tmp_path: Path) -> None:
    folder = write_valid(tmp_path / "export")
    (folder / "dataset.yaml").write_bytes(b"\xff\xfe\x00\x01exported_at")
    refused(run(["validate", "--data", str(folder)]), "dataset.yaml: is not UTF-8 text")


# ----------------------------------------------------------------------------------------
# empty and foreign files
# ----------------------------------------------------------------------------------------


def test_an_export_of_headers_only_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "dataset.yaml").write_text(VALID["dataset.yaml"], encoding="utf-8")
    for name in ("opportunities.csv", "leads.csv"):
        (folder / name).write_text(VALID[name].splitlines()[0] + "\n", encoding="utf-8")
    result = run(
        ["train", "--data", str(folder)],
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    refused(result, "opportunities.csv, leads.csv: no data rows", "only a header")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_csv_that_is_not_utf8_is_named_as_such(tmp_path: Path) -> None:
    folder = write_valid(tmp_path / "export")
    text = VALID["opportunities.csv"].replace("NA\n", "Café\n")
    (folder / "opportunities.csv").write_bytes(text.encode("latin-1"))
    refused(
        run(["validate", "--data", str(folder)]),
        "opportunities.csv: is not UTF-8 text (byte b'\\xe9'",
        "saved as UTF-8",
    )


@pytest.fixture
def no_model_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``score leads`` reads the list after loading the champion: stand in for the registry."""
    monkeypatch.setattr(
        "serving.scoring.load_champion", lambda settings, name: (object(), {"version": "1"})
    )


@pytest.mark.usefixtures("no_model_needed")
@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("leads.csv", "lead_id,created_at\n", "leads.csv: holds no leads (only a header)"),
        ("leads.xlsx", "PK\x03\x04", "leads.xlsx: is a spreadsheet workbook"),
        ("leads", None, "leads: is a folder, not a file"),
    ],
)
def test_a_lead_list_that_cannot_be_scored_is_refused(
    tmp_path: Path, name: str, content: str | None, says: str
) -> None:
    leads = tmp_path / name
    if content is None:
        leads.mkdir()
    else:
        leads.write_text(content, encoding="utf-8")
    out = tmp_path / "ranked.csv"
    result = run(["score", "leads", str(leads), "--out", str(out)])
    refused(result, says)
    assert not out.exists()


def test_a_maven_pipeline_without_deals_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "maven"
    src.mkdir()
    files = {
        "sales_pipeline.csv": [MAVEN_PIPELINE_HEADER, "P1,Ann,MG Special,,Prospecting,,,"],
        "accounts.csv": ["account,sector,employees"],
        "products.csv": ["product,sales_price", "MG Special,55"],
        "sales_teams.csv": ["sales_agent,regional_office", "Ann,East"],
    }
    for name, lines in files.items():
        (src / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run(["import", "maven-crm", str(src), "--out", str(out)])
    refused(result, "sales_pipeline.csv: no deals to import", "all 1 are Prospecting deals")
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ((BANK_HEADER + "\n").encode(), "bank-additional-full.csv: no data rows (only a header)"),
        (b"\xff\xfe\x00\x01;y;month\n", "bank-additional-full.csv: not a bank-marketing file"),
    ],
)
def test_a_bank_file_without_clients_is_refused(tmp_path: Path, content: bytes, says: str) -> None:
    src = tmp_path / "bank-additional-full.csv"
    src.write_bytes(content)
    out = tmp_path / "out"
    refused(run(["import", "bank-marketing", str(src), "--out", str(out)]), says)
    assert not out.exists()


# ----------------------------------------------------------------------------------------
# mappings of ``pipecast import csv``
# ----------------------------------------------------------------------------------------


def _mapping(tmp_path: Path, change: Any) -> Path:
    data = yaml.safe_load(SALESFORCE_MAPPING.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _set(*keys: str, value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            _set("defaults", "encoding", value="utf-9"),
            "defaults.encoding: 'utf-9' is not a text encoding",
        ),
        (
            _set("defaults", "date_format", value="%Q/%d/%Y"),
            "tables.opportunities.columns.created_at.format: ['%Q/%d/%Y'] is not a date format",
        ),
        (
            _set("tables", "opportunities", "file", value="/etc/opportunities.csv"),
            "tables.opportunities.file: '/etc/opportunities.csv' is an absolute path",
        ),
        (
            _set("tables", "stage_history", "optional", value="no"),
            "tables.stage_history.optional: 'no' is not true or false",
        ),
        (
            _set("defaults", "stop_at_blank_row", value="yes"),
            "defaults.stop_at_blank_row: 'yes' is not true or false",
        ),
        (
            _set("tables", "opportunities", "columns", "stage", value={"value": {"a": 1}}),
            "tables.opportunities.columns.stage.value: {'a': 1} is not a single value",
        ),
    ],
)
def test_a_mapping_that_would_fail_mid_import_is_refused_up_front(
    tmp_path: Path, change: Any, says: str
) -> None:
    mapping = _mapping(tmp_path, change)
    out = tmp_path / "out"
    result = run(["import", "csv", str(SALESFORCE), "--mapping", str(mapping), "--out", str(out)])
    message = refused(result, "mapping.yaml cannot be used", says)
    # a bad default is named once, not once per table inheriting it
    assert message.count(says) == 1
    assert not out.exists()


def test_a_mapping_that_is_not_text_is_refused(tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_bytes(b"\xff\xfe\x00tables")
    out = tmp_path / "out"
    result = run(["import", "csv", str(SALESFORCE), "--mapping", str(mapping), "--out", str(out)])
    refused(result, "mapping.yaml cannot be used", "(file): is not UTF-8 text")
    assert not out.exists()


def test_a_report_of_headers_only_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "report"
    src.mkdir()
    header = (SALESFORCE / "opportunities.csv").read_text(encoding="utf-8").splitlines()[0]
    (src / "opportunities.csv").write_text(header + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run(
        ["import", "csv", str(src), "--mapping", str(SALESFORCE_MAPPING), "--out", str(out)]
    )
    refused(result, "opportunities.csv: no data rows to import")
    assert not out.exists()


# ----------------------------------------------------------------------------------------
# serve
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "70000"], "--port"),
        (["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' cannot be resolved"),
    ],
)
def test_serve_refuses_an_address_it_cannot_listen_on(
    monkeypatch: pytest.MonkeyPatch, args: list[str], says: str
) -> None:
    def must_not_start(*a: Any, **k: Any) -> None:
        raise AssertionError("the server started")

    monkeypatch.setattr("uvicorn.run", must_not_start)
    refused(run(["serve", *args]), says)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("id,employees\nL1,10\n", "list.csv, column 'lead_id': a required column is missing"),
        (
            "lead_id,employees\nL1,10\nL1,20\n",
            "column 'lead_id': 1 lead id(s) appear on more than one row (e.g. L1) (lines 2, 3)",
        ),
        (
            "lead_id,employees\nL1,10\nL2,ten\n",
            "column 'employees': 1 value(s) are not numbers (line 3)",
        ),
        (
            "lead_id,created_at\nL1,2026-13-01\n",
            "column 'created_at': 1 value(s) are not dates (line 2)",
        ),
    ],
    ids=["no lead_id", "duplicate ids", "number", "date"],
)
def test_a_broken_lead_list_is_refused_before_the_model_is_loaded(
    tmp_path: Path, content: str, says: str
) -> None:
    leads = tmp_path / "list.csv"
    leads.write_text(content, encoding="utf-8")
    out = tmp_path / "ranked.csv"
    registry = tmp_path / "var" / "mlflow.db"
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{registry}",
        "PIPECAST_DATA_DIR": str(tmp_path / "no-export"),
    }
    message = refused(run(["score", "leads", str(leads), "--out", str(out)], env), says)
    assert message.startswith("error: The lead list was refused") and "CRM export" not in message
    assert not out.exists() and not registry.exists()


@pytest.mark.parametrize("value", ["7", "-0.1", "five percent"])
def test_a_quarantine_threshold_that_is_not_a_share_is_refused(tmp_path: Path, value: str) -> None:
    folder = write_valid(tmp_path / "export")
    result = run(["validate", "--data", str(folder)], env={"PIPECAST_QUARANTINE_THRESHOLD": value})
    refused(result, f"PIPECAST_QUARANTINE_THRESHOLD={value!r}", "A setting is not valid")
