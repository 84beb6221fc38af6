"""``pipecast validate``'s numbers, checked on small hand-built exports."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from features.io import read_export
from features.report import ValidationReport, render_validation, summarize

OPPORTUNITIES = """\
opportunity_id,account_id,created_at,stage,status,closed_at,amount,expected_close_date,segment,next_step
O1,A1,2026-01-01,Closed Won,won,2026-01-11,1000,,SMB,
O2,A2,2026-01-01,Closed Won,won,2026-01-21,2000,,SMB,
O3,A3,2026-01-01,Closed Lost,lost,2026-02-01,500,,SMB,
O4,A4,2026-02-01,Closed Won,won,2026-04-02,9000,,Enterprise,
O5,A5,2026-02-01,Closed Lost,lost,2026-03-01,0,,Enterprise,
O6,A6,2026-05-01,Discovery,open,,100,2026-06-01,SMB,call the CFO
O7,A7,2026-06-01,Proposal,open,,0,2026-08-01,Enterprise,
O8,A8,2026-06-10,Discovery,open,,300,2026-07-15,,send the demo
"""

STAGE_HISTORY = """\
opportunity_id,changed_at,stage,expected_close_date
O1,2026-01-01,Discovery,
O1,2026-01-11,Closed Won,
O2,2026-01-01,Discovery,
O2,2026-01-21,Closed Won,
O3,2026-01-01,Discovery,
O3,2026-02-01,Closed Lost,
O4,2026-02-01,Discovery,
O4,2026-04-02,Closed Won,
O5,2026-01-25,Discovery,
O5,2026-03-01,Closed Lost,
O6,2026-05-01,Discovery,2026-05-15
O6,2026-05-10,Discovery,2026-05-25
O6,2026-05-20,Discovery,
O6,2026-05-25,Discovery,2026-06-01
O7,2026-06-01,Proposal,2026-08-01
O7,2026-06-15,Proposal,2026-07-15
O8,2026-06-10,Discovery,2026-07-01
O8,2026-06-20,Discovery,2026-07-15
"""

ACTIVITIES = """\
opportunity_id,lead_id,occurred_at,type
O8,,2026-06-25T10:00:00,call
O6,,2026-05-15T09:00:00,email
,L1,2026-07-05T08:00:00,email
,L2,2026-01-20T08:00:00,call
"""

LEADS = """\
lead_id,created_at,sqo_at,meeting_at,source,signal_type
L1,2026-01-01,2026-02-01,2026-01-10,outbound,funding
L2,2026-01-01,,2026-01-15,outbound,hiring
L3,2026-01-01,2026-06-01,,inbound,funding
L4,2026-02-01,2026-02-10,2026-02-05,inbound,
L5,2026-06-01,,2026-06-05,outbound,funding
L6,2026-06-01,2026-06-20,,partner,hiring
L7,2026-03-01,,,outbound,funding
"""

DATASET = "exported_at: 2026-06-30\nsqo_window_days: 90\n"


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    folder = write(
        tmp_path_factory.mktemp("full"),
        {
            "opportunities.csv": OPPORTUNITIES,
            "stage_history.csv": STAGE_HISTORY,
            "activities.csv": ACTIVITIES,
            "leads.csv": LEADS,
            "dataset.yaml": DATASET,
        },
    )
    return summarize(read_export(folder))


def count(report: ValidationReport, table: str, what: str) -> int:
    rows = report.counts[(report.counts["table"] == table) & (report.counts["what"] == what)]
    assert len(rows) == 1, (table, what)
    return int(rows["count"].iloc[0])


def test_counts_and_dates(full_report: ValidationReport) -> None:
    r = full_report
    assert count(r, "opportunities", "rows") == 8
    assert (
        count(r, "opportunities", "open"),
        count(r, "opportunities", "won"),
        count(r, "opportunities", "lost"),
    ) == (3, 3, 2)
    assert count(r, "stage_history", "rows") == 18
    assert count(r, "activities", "rows") == 4
    assert count(r, "leads", "rows") == 7
    assert count(r, "leads", "SQOs") == 3
    assert r.exported_at == pd.Timestamp("2026-06-30")
    assert r.date_start == pd.Timestamp("2026-01-01")
    assert r.date_end == pd.Timestamp("2026-07-05")  # the activity dated after the export


def test_win_rate_and_days_to_win_by_segment(full_report: ValidationReport) -> None:
    wr = full_report.win_rates
    assert wr is not None
    rows = wr.set_index("segment")
    assert list(wr["segment"]) == ["Enterprise", "SMB", "overall"]
    assert rows.loc["SMB", ["closed", "won"]].tolist() == [3, 2]
    assert rows.loc["SMB", "win_rate"] == pytest.approx(2 / 3)
    assert rows.loc["SMB", "median_days_to_win"] == 15  # 10 and 20 days
    assert rows.loc["Enterprise", "win_rate"] == pytest.approx(0.5)
    assert rows.loc["Enterprise", "median_days_to_win"] == 60
    assert rows.loc["overall", ["closed", "won"]].tolist() == [5, 3]
    assert rows.loc["overall", "win_rate"] == pytest.approx(0.6)
    assert rows.loc["overall", "median_days_to_win"] == 20


def test_sqo_rates_leave_undecided_leads_out(full_report: ValidationReport) -> None:
    r = full_report
    assert r.undecided_leads == 1  # L5: created 30 days before the export, no SQO yet
    assert (
        r.sqo_by_source is not None and r.sqo_by_signal is not None and r.meeting_to_sqo is not None
    )
    src = r.sqo_by_source.set_index("source")
    # L3 became an SQO after 151 days: outside the 90-day window, so a no
    assert src.loc["outbound", ["decided", "sqos"]].tolist() == [3, 1]
    assert src.loc["inbound", ["decided", "sqos"]].tolist() == [2, 1]
    assert src.loc["partner", "sqo_rate"] == 1.0
    sig = r.sqo_by_signal.set_index("signal_type")
    assert sig.loc["funding", ["decided", "sqos"]].tolist() == [3, 1]
    assert sig.loc["hiring", ["decided", "sqos"]].tolist() == [2, 1]
    assert sig.loc["(none)", ["decided", "sqos"]].tolist() == [1, 1]
    meeting = r.meeting_to_sqo.iloc[0]
    assert (meeting["decided"], meeting["sqos"]) == (3, 2)
    assert meeting["sqo_rate"] == pytest.approx(2 / 3)


def test_pipeline_warnings(full_report: ValidationReport) -> None:
    r = full_report
    past = r.warning("close_date_past")
    assert past is not None and (past.count, past.examples) == (1, ("O6",))
    neglected = r.warning("no_recent_activity")
    assert neglected is not None and (neglected.count, set(neglected.examples)) == (2, {"O6", "O7"})
    no_step = r.warning("no_next_step")
    assert no_step is not None and no_step.examples == ("O7",)
    # won deals stayed 10, 20 and 60 days in Discovery: O6 (61 days) is stale, O8 (21) is not
    stale = r.warning("stale")
    assert stale is not None and stale.examples == ("O6",)
    pushed = r.warning("close_date_pushed")
    assert pushed is not None and pushed.examples == ("O6",)  # O8 pushed once, O7 pulled in
    zero = r.warning("zero_amount")
    assert zero is not None and (zero.count, set(zero.examples)) == (2, {"O5", "O7"})
    assert not r.unavailable


def test_data_quality_findings(full_report: ValidationReport) -> None:
    r = full_report
    early = r.warning("history_before_created")
    assert early is not None and early.examples == ("O5",)
    late = r.warning("activity_after_export")
    assert late is not None and late.examples == ("L1",)
    assert r.warning("closed_after_export") is None


def test_render_shows_the_numbers(full_report: ValidationReport) -> None:
    console = Console(record=True, width=200)
    render_validation(full_report, console)
    text = console.export_text()
    for needle in (
        "2026-06-30",
        "66.7%",
        "SMB",
        "outbound",
        "33.3%",
        "O6",
        "in their stage",
        "dated before their opportunity",
    ):
        assert needle in text


def test_minimal_export_says_what_is_not_available(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        {
            "opportunities.csv": "opportunity_id,account_id,created_at,stage,status,"
            "closed_at,amount\n"
            "O1,A1,2026-01-01,Won,won,2026-01-31,10\nO2,A2,2026-01-05,Lost,lost,2026-02-01,10\n"
            "O3,A3,2026-02-01,Discovery,open,,10\n"
        },
    )
    report = summarize(read_export(folder))
    assert report.exported_at == pd.Timestamp("2026-02-01")
    assert report.win_rates is not None
    assert report.win_rates["segment"].tolist() == ["overall"]
    assert report.win_rates["median_days_to_win"].iloc[0] == 30
    assert report.warnings == []
    for section in (
        "segments",
        "close_date_past",
        "no_recent_activity",
        "no_next_step",
        "stale",
        "close_date_pushed",
        "sqo_by_source",
        "meeting_to_sqo",
    ):
        assert section in report.unavailable
    console = Console(record=True, width=200)
    render_validation(report, console)
    text = console.export_text()
    assert "not available (no stage_history file)" in text
    assert "not available (no leads file)" in text


def test_leads_with_only_is_sqo(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        {
            "leads.csv": "lead_id,is_sqo,source\n"
            "L1,yes,inbound\nL2,no,inbound\nL3,no,outbound\nL4,true,\n"
        },
    )
    report = summarize(read_export(folder))
    assert report.exported_at is None
    assert report.sqo_by_source is not None
    src = report.sqo_by_source.set_index("source")
    assert src.loc["inbound", "sqo_rate"] == 0.5
    assert src.loc["outbound", "sqo_rate"] == 0.0
    assert src.loc["(none)", "sqos"] == 1
    assert report.unavailable["win_rates"] == "no opportunities file"
    assert "sqo_by_signal" in report.unavailable and "meeting_to_sqo" in report.unavailable
    assert not report.dated
    console = Console(record=True, width=200)
    render_validation(report, console)
    text = console.export_text()
    assert "50.0%" in text and "Export date: no dates" in text
    assert not math.isnan(src.loc["inbound", "decided"])


def test_quarantined_rows_are_counted_and_listed(tmp_path: Path) -> None:
    """A deal closed before it was created is left out of the rates, and shown as such."""
    folder = write(
        tmp_path,
        {
            "opportunities.csv": OPPORTUNITIES.replace(
                "O3,A3,2026-01-01,Closed Lost,lost,2026-02-01",
                "O3,A3,2026-01-01,Closed Lost,lost,2025-12-01",
            ),
            "dataset.yaml": DATASET,
        },
    )
    report = summarize(read_export(folder, quarantine_threshold=1.0))
    counts = report.counts.set_index(["table", "what"])["count"]
    assert counts[("opportunities", "rows")] == 7
    assert counts[("opportunities", "quarantined (left out)")] == 1
    assert counts[("opportunities", "lost")] == 1
    assert report.quarantine[["line", "id", "reason"]].values.tolist() == [
        [4, "O3", "closed_at before created_at"]
    ]
    # the SMB win rate no longer counts the lost O3: 2 won of 2 closed
    assert report.win_rates is not None
    assert report.win_rates.set_index("segment").loc["SMB", "win_rate"] == 1.0
    console = Console(record=True, width=200)
    render_validation(report, console)
    text = console.export_text()
    assert "follows the data contract; 1 row(s) quarantined" in text
    assert "Quarantined rows" in text and "closed_at before created_at" in text
    assert "2025-12-01" in text
