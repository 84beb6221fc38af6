"""A broken export is refused with exit 2 and a message naming the file, column and line.

A row that parses but contradicts itself is quarantined instead: listed with its file, line and
reason (exit 0), refused with ``--strict``, and refused when too many rows of a table are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipecast.cli import app

runner = CliRunner()

DATASET = """\
exported_at: 2026-06-30
fiscal_year_start_month: 2
stages:
  - {name: Discovery, probability: 0.1}
  - {name: Proposal, probability: 0.5}
  - {name: Closed Won, probability: 1.0, won: true}
  - {name: Closed Lost, probability: 0.0, lost: true}
"""
OPPORTUNITIES = """\
opportunity_id,account_id,created_at,stage,status,closed_at,amount,segment
O1,A1,2026-01-01,Closed Won,won,2026-02-01,1000,SMB
O2,A2,2026-01-15,Closed Lost,lost,2026-03-01,2000,Enterprise
O3,A3,2026-03-01,Proposal,open,,500,SMB
O4,A4,2026-04-01,Discovery,open,,800,NA
"""
STAGE_HISTORY = """\
opportunity_id,changed_at,stage,amount
O1,2026-01-01T09:00:00,Discovery,1000
O1,2026-02-01T10:00:00,Closed Won,1000
O2,2026-01-15,Discovery,2000
O2,2026-03-01,Closed Lost,2000
O3,2026-03-01,Discovery,500
O3,2026-04-10,Proposal,500
O4,2026-04-01,Discovery,800
"""
ACTIVITIES = """\
opportunity_id,lead_id,occurred_at,type
O1,,2026-01-10T10:00:00,call
O3,,2026-05-01T10:00:00,email
,L1,2026-01-02T10:00:00,email
"""
LEADS = """\
lead_id,created_at,sqo_at,is_sqo,source
L1,2026-01-01,2026-01-10,true,outbound
L2,2026-01-05,,false,inbound
L3,2026-02-01,,false,outbound
"""
VALID = {
    "dataset.yaml": DATASET,
    "opportunities.csv": OPPORTUNITIES,
    "stage_history.csv": STAGE_HISTORY,
    "activities.csv": ACTIVITIES,
    "leads.csv": LEADS,
}


def write_valid(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in VALID.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def edit(file: str, old: str, new: str) -> Callable[[Path], None]:
    """Break ``file`` by replacing the first ``old`` with ``new`` (which must be there)."""

    def apply(folder: Path) -> None:
        path = folder / file
        text = path.read_text(encoding="utf-8")
        assert old in text, (file, old)
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    return apply


def as_parquet_too(folder: Path) -> None:
    pd.read_csv(folder / "opportunities.csv", dtype=str).to_parquet(
        folder / "opportunities.parquet"
    )


@dataclass(frozen=True)
class Case:
    """One way to break the valid export, and what the message must name."""

    id: str
    breakage: Callable[[Path], None]
    file: str
    column: str | None = None
    line: int | None = None
    #: set for an inconsistent row: the reason it is quarantined for (not refused)
    reason: str | None = None


CASES = [
    Case(
        "missing required column",
        edit("opportunities.csv", ",amount,", ",value,"),
        "opportunities.csv",
        "amount",
    ),
    Case(
        "unparsable date",
        edit("opportunities.csv", "O3,A3,2026-03-01", "O3,A3,03/01/2026x"),
        "opportunities.csv",
        "created_at",
        4,
    ),
    Case(
        "closed_at before created_at",
        edit("opportunities.csv", "2026-03-01,2000", "2025-12-01,2000"),
        "opportunities.csv",
        "closed_at",
        3,
        reason="closed_at before created_at",
    ),
    Case(
        "duplicate opportunity_id",
        edit("opportunities.csv", "O4,A4", "O3,A4"),
        "opportunities.csv",
        "opportunity_id",
        4,
    ),
    Case(
        "status not open/won/lost",
        edit("opportunities.csv", ",Proposal,open,", ",Proposal,pending,"),
        "opportunities.csv",
        "status",
        4,
    ),
    Case(
        "won deal without closed_at",
        edit("opportunities.csv", "won,2026-02-01,", "won,,"),
        "opportunities.csv",
        "closed_at",
        2,
        reason="won/lost deal without closed_at",
    ),
    Case(
        "history for an unknown opportunity",
        edit("stage_history.csv", "O4,2026-04-01", "O9,2026-04-01"),
        "stage_history.csv",
        "opportunity_id",
        8,
        reason="history row for an unknown opportunity",
    ),
    Case(
        "negative amount",
        edit("opportunities.csv", ",800,", ",-800,"),
        "opportunities.csv",
        "amount",
        5,
        reason="negative amount",
    ),
    Case(
        "non-numeric amount",
        edit("opportunities.csv", ",500,", ",$500k,"),
        "opportunities.csv",
        "amount",
        4,
    ),
    Case(
        "open deal with closed_at",
        edit("opportunities.csv", ",open,,500", ",open,2026-05-01,500"),
        "opportunities.csv",
        "closed_at",
        4,
        reason="open deal with a closed_at",
    ),
    Case(
        "empty required value",
        edit("opportunities.csv", ",Discovery,open", ",,open"),
        "opportunities.csv",
        "stage",
        5,
    ),
    Case(
        "stage not declared",
        edit("opportunities.csv", ",Proposal,open", ",Negotiation,open"),
        "opportunities.csv",
        "stage",
        4,
    ),
    Case(
        "history stage not declared",
        edit("stage_history.csv", "2026-04-10,Proposal", "2026-04-10,Demo"),
        "stage_history.csv",
        "stage",
        7,
    ),
    Case(
        "fiscal month 13",
        edit("dataset.yaml", "fiscal_year_start_month: 2", "fiscal_year_start_month: 13"),
        "dataset.yaml",
        "fiscal_year_start_month",
    ),
    Case(
        "lead sqo_at before created_at",
        edit("leads.csv", "2026-01-01,2026-01-10", "2026-01-01,2025-12-10"),
        "leads.csv",
        "sqo_at",
        2,
        reason="sqo_at before created_at",
    ),
    Case(
        "bad boolean in leads",
        edit("leads.csv", "2026-01-05,,false", "2026-01-05,,maybe"),
        "leads.csv",
        "is_sqo",
        3,
    ),
    Case(
        "activity with no opportunity or lead",
        edit("activities.csv", ",L1,", ",,"),
        "activities.csv",
        "opportunity_id",
        4,
    ),
    Case(
        "activity for an unknown opportunity",
        edit("activities.csv", "O3,,", "O7,,"),
        "activities.csv",
        "opportunity_id",
        3,
        reason="activity for an unknown opportunity",
    ),
    Case(
        "bad activity timestamp",
        edit("activities.csv", "2026-05-01T10:00:00", "2026-05-01T25:00:00"),
        "activities.csv",
        "occurred_at",
        3,
    ),
    Case("duplicate lead_id", edit("leads.csv", "L3,", "L2,"), "leads.csv", "lead_id", 4),
    Case(
        "empty opportunity_id",
        edit("opportunities.csv", "O4,A4", ",A4"),
        "opportunities.csv",
        "opportunity_id",
        5,
    ),
    Case(
        "empty history stage",
        edit("stage_history.csv", "2026-04-10,Proposal", "2026-04-10,"),
        "stage_history.csv",
        "stage",
        7,
    ),
    Case(
        "empty history opportunity_id",
        edit("stage_history.csv", "O4,2026-04-01", ",2026-04-01"),
        "stage_history.csv",
        "opportunity_id",
        8,
    ),
    Case(
        "empty created_at",
        edit("opportunities.csv", "O4,A4,2026-04-01", "O4,A4,"),
        "opportunities.csv",
        "created_at",
        5,
    ),
    Case(
        "csv and parquet both present", as_parquet_too, "opportunities.csv / opportunities.parquet"
    ),
]


REFUSED = [c for c in CASES if c.reason is None]
QUARANTINED = [c for c in CASES if c.reason is not None]
#: the valid export is tiny: one bad row is more than the default 5% of a table
LENIENT = {"COLUMNS": "300", "PIPECAST_QUARANTINE_THRESHOLD": "1"}


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_broken_export_is_refused(tmp_path: Path, case: Case) -> None:
    folder = write_valid(tmp_path / "export")
    case.breakage(folder)
    result = runner.invoke(app, ["validate", "--data", str(folder)], env={"COLUMNS": "300"})
    message = result.output
    assert result.exit_code == 2, message
    assert "Traceback" not in message
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert case.file in message
    if case.column is not None:
        assert f"column '{case.column}'" in message
    if case.line is not None:
        assert re.search(rf"\(lines? (\d+, )*{case.line}\b", message), message
    # the refusal is all a broken export produces: no report below it
    assert "follows the data contract" not in message


@pytest.mark.parametrize("case", QUARANTINED, ids=[c.id for c in QUARANTINED])
def test_inconsistent_row_is_quarantined_with_its_line(tmp_path: Path, case: Case) -> None:
    folder = write_valid(tmp_path / "export")
    case.breakage(folder)
    listing = tmp_path / "quarantine.csv"
    result = runner.invoke(
        app, ["validate", "--data", str(folder), "--quarantine", str(listing)], env=LENIENT
    )
    assert result.exit_code == 0, result.output
    assert "row(s) quarantined" in result.stdout
    # the row is listed with its file, line and reason, in the report and in the CSV
    assert re.search(rf"{re.escape(case.file)}\s*│\s*{case.line}\s*│", result.stdout), result.stdout
    assert case.reason is not None and case.reason in result.stdout
    rows = pd.read_csv(listing, dtype=str, keep_default_na=False)
    mine = rows[(rows["file"] == case.file) & (rows["line"] == str(case.line))]
    assert mine["reason"].str.startswith(case.reason).any(), rows
    assert case.column in set(mine["column"])
    assert "quarantined" in result.stderr and "listed below" in result.stderr


@pytest.mark.parametrize("case", QUARANTINED, ids=[c.id for c in QUARANTINED])
def test_inconsistent_row_is_refused_with_strict(tmp_path: Path, case: Case) -> None:
    folder = write_valid(tmp_path / "export")
    case.breakage(folder)
    listing = tmp_path / "quarantine.csv"
    result = runner.invoke(
        app,
        ["validate", "--data", str(folder), "--strict", "--quarantine", str(listing)],
        env=LENIENT,
    )
    message = result.output
    assert result.exit_code == 2, message
    assert "Traceback" not in message and "The CRM export was refused" in message
    assert f"{case.file}, column '{case.column}'" in message
    assert re.search(rf"\(lines? (\d+, )*{case.line}\b", message), message
    assert "follows the data contract" not in message
    assert not listing.exists()


@pytest.mark.parametrize("case", QUARANTINED[:2], ids=[c.id for c in QUARANTINED[:2]])
def test_too_many_inconsistent_rows_refuse_the_export(tmp_path: Path, case: Case) -> None:
    """One bad deal of four is 25%, beyond the default 5%: the export itself is suspect."""
    folder = write_valid(tmp_path / "export")
    case.breakage(folder)
    result = runner.invoke(app, ["validate", "--data", str(folder)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "1 of 4 rows (25.0%) contradict themselves" in result.output
    assert case.reason is not None
    assert "looks suspect" in result.output and case.reason in result.output
    assert re.search(rf"\(line {case.line}\)", result.output), result.output


def test_valid_export_is_accepted(tmp_path: Path) -> None:
    folder = write_valid(tmp_path / "export")
    result = runner.invoke(app, ["validate", "--data", str(folder)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "follows the data contract" in result.output


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-export"
    result = runner.invoke(app, ["validate", "--data", str(missing)], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "no-such-export" in result.output and "no such folder" in result.output


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    folder = write_valid(tmp_path / "export")
    edit("opportunities.csv", ",800,", ",800 USD,")(folder)
    edit("leads.csv", "2026-01-05,,false", "2026-01-05,,maybe")(folder)
    result = runner.invoke(app, ["validate", "--data", str(folder)], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "2 problems" in result.output
    assert "opportunities.csv" in result.output and "leads.csv" in result.output


def test_features_writes_nothing_for_a_broken_export(tmp_path: Path) -> None:
    folder = write_valid(tmp_path / "export")
    edit("opportunities.csv", "O3,A3,2026-03-01", "O3,A3,someday")(folder)
    out = tmp_path / "out" / "features.csv"
    result = runner.invoke(
        app,
        ["features", "--data", str(folder), "--as-of", "2026-05-01", "--out", str(out)],
        env={"COLUMNS": "300"},
    )
    assert "Traceback" not in result.output
    assert not out.exists() and not out.parent.exists()
    assert result.exit_code == 2, result.output
    assert "created_at" in result.output


def test_features_refuses_a_bad_as_of_before_writing(tmp_path: Path) -> None:
    folder = write_valid(tmp_path / "export")
    out = tmp_path / "features.csv"
    result = runner.invoke(
        app, ["features", "--data", str(folder), "--as-of", "yesterday", "--out", str(out)]
    )
    assert not out.exists()
    assert result.exit_code == 2, result.output
    assert "--as-of" in result.output


@pytest.mark.parametrize(
    ("command", "as_of", "says"),
    [
        (["features", "--out", "{out}"], "2026-07-01", "after the export date 2026-06-30"),
        (["features", "--snapshots", "--out", "{out}"], "2027-01-01", "after the export date"),
        (["train"], "2026-07-01", "after the export date 2026-06-30"),
        (["train"], "2025-06-30", "before the export's first record (2026-01-01)"),
    ],
)
def test_as_of_outside_the_export_is_refused(
    tmp_path: Path, command: list[str], as_of: str, says: str
) -> None:
    """Days after the export would look like days without activity; before it, nothing is known."""
    folder = write_valid(tmp_path / "export")
    out = tmp_path / "out.csv"
    args = [a.replace("{out}", str(out)) for a in command]
    result = runner.invoke(
        app,
        [*args, "--data", str(folder), "--as-of", as_of],
        env={"COLUMNS": "300", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "mlflow.db").exists()
