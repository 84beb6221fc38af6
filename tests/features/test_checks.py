"""Quarantine of inconsistent rows: each reason, the rows that follow them, --strict, the threshold.

The export is built in code: 40 deals (won, lost, open in turn) with two history rows and one
activity each, 40 leads (every third an SQO) and a few lead activities. Each test breaks a few
cells and checks that the row is listed with its file, line and reason, that it is gone from the
table used downstream, and that every input row is either kept or listed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.checks import QUARANTINE_COLUMNS, check_relations
from features.contract import ContractError
from features.errors import InputError
from features.io import read_export, read_policy

N = 40
DAY0 = pd.Timestamp("2026-01-01")


def day(offset: int, time: str = "") -> str:
    return (DAY0 + pd.Timedelta(days=offset)).date().isoformat() + (f"T{time}" if time else "")


def tables() -> dict[str, pd.DataFrame]:
    """A consistent export as text cells, with a ``row_no`` column to follow each input row."""
    opps, hist, acts, leads = [], [], [], []
    for i in range(N):
        oid, status = f"O{i:02d}", ("won", "lost", "open")[i % 3]
        closed = "" if status == "open" else day(i + 20)
        stage = {"won": "Closed Won", "lost": "Closed Lost", "open": "Proposal"}[status]
        opps.append([oid, f"A{i:02d}", day(i), stage, status, closed, str(1000 + i)])
        hist.append([oid, day(i, "09:00:00"), "Discovery", str(1000 + i)])
        # the last change is stamped on the close day itself (or after creation, if open)
        hist.append([oid, closed + "T17:30:00" if closed else day(i + 5), stage, str(1000 + i)])
        acts.append([oid, "", day(i + 1, "10:00:00"), "call"])
    for i in range(N):
        sqo = day(i + 5) if i % 3 == 0 else ""
        leads.append([f"L{i:02d}", day(i), sqo, str(10 * (i + 1))])
    for i in range(0, N, 8):
        acts.append(["", f"L{i:02d}", day(i + 1, "11:00:00"), "email"])
    frames = {
        "opportunities": pd.DataFrame(
            opps,
            columns=[
                "opportunity_id",
                "account_id",
                "created_at",
                "stage",
                "status",
                "closed_at",
                "amount",
            ],
        ),
        "stage_history": pd.DataFrame(
            hist, columns=["opportunity_id", "changed_at", "stage", "amount"]
        ),
        "activities": pd.DataFrame(
            acts, columns=["opportunity_id", "lead_id", "occurred_at", "type"]
        ),
        "leads": pd.DataFrame(leads, columns=["lead_id", "created_at", "sqo_at", "employees"]),
    }
    for df in frames.values():
        df["row_no"] = [str(i) for i in range(len(df))]
    return frames


def write(folder: Path, frames: dict[str, pd.DataFrame], fmt: str = "csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.yaml").write_text("exported_at: 2026-06-30\n", encoding="utf-8")
    for name, df in frames.items():
        if fmt == "parquet":
            df.replace("", None).to_parquet(folder / f"{name}.parquet", index=False)
        else:
            df.to_csv(folder / f"{name}.csv", index=False)
    return folder


def set_cell(table: str, row: int, column: str, value: str) -> Callable[[dict], None]:
    def apply(frames: dict[str, pd.DataFrame]) -> None:
        frames[table].loc[row, column] = value

    return apply


def assert_every_row_used_or_listed(
    frames: dict[str, pd.DataFrame], export_tables: dict[str, pd.DataFrame], q: pd.DataFrame
) -> None:
    """Rows in = rows kept + rows quarantined, per table, and no row is both."""
    for name, raw in frames.items():
        kept = set(export_tables[name]["row_no"].astype(int))
        listed = set(q.loc[q["table"] == name, "line"].astype(int) - 2)
        assert kept.isdisjoint(listed), name
        assert kept | listed == set(range(len(raw))), name
        assert len(raw) == len(export_tables[name]) + len(listed), name


def test_a_consistent_export_has_nothing_quarantined(tmp_path: Path) -> None:
    export = read_export(write(tmp_path / "e", tables()), strict=True)
    assert export.quarantine.empty
    assert list(export.quarantine.columns) == list(QUARANTINE_COLUMNS)
    assert export.quarantined_rows() == {}
    assert {n: len(df) for n, df in export.tables().items()} == {
        "opportunities": N,
        "stage_history": 2 * N,
        "activities": N + 5,
        "leads": N,
    }


# (table, row, column, new value) → file, line, column and reason of the quarantined row
REASONS = [
    ("opportunities", 0, "closed_at", day(-3), "closed_at before created_at"),
    ("opportunities", 3, "closed_at", "", "won/lost deal without closed_at"),
    ("opportunities", 2, "closed_at", day(30), "open deal with a closed_at"),
    ("opportunities", 4, "amount", "-250", "negative amount"),
    ("stage_history", 7, "opportunity_id", "O99", "history row for an unknown opportunity"),
    ("stage_history", 9, "amount", "-1", "negative amount"),
    (
        "stage_history",
        3,
        "changed_at",
        day(1 + 20 + 1, "08:00:00"),
        "history row after the deal closed",
    ),
    ("activities", 5, "opportunity_id", "O99", "activity for an unknown opportunity"),
    ("leads", 6, "sqo_at", day(2), "sqo_at before created_at"),
    ("leads", 11, "employees", "-40", "negative employees"),
]


@pytest.mark.parametrize(
    ("table", "row", "column", "value", "reason"),
    REASONS,
    ids=[r[4] + f" ({r[0]})" for r in REASONS],
)
def test_each_reason_quarantines_its_row(
    tmp_path: Path, table: str, row: int, column: str, value: str, reason: str
) -> None:
    frames = tables()
    set_cell(table, row, column, value)(frames)
    export = read_export(write(tmp_path / "e", frames))
    q = export.quarantine
    mine = q[(q["table"] == table) & (q["line"] == row + 2)]
    assert len(mine) == 1, q
    entry = mine.iloc[0]
    assert entry["file"] == f"{table}.csv"
    assert entry["reason"] == reason and entry["column"] == column
    # the row's own id is named (for history and activities: their opportunity or lead)
    assert entry["id"] == frames[table].iloc[row, 0] or entry["id"] == frames[table].iloc[row, 1]
    kept = export.table(table)
    assert kept is not None and str(row) not in set(kept["row_no"])
    assert_every_row_used_or_listed(frames, export.tables(), q)


def test_rows_of_a_quarantined_deal_or_lead_go_with_it(tmp_path: Path) -> None:
    frames = tables()
    set_cell("opportunities", 0, "closed_at", day(-3))(frames)  # O00: history 0-1, activity 0
    set_cell("leads", 8, "sqo_at", day(1))(frames)  # L08: the lead activity on line N + 3
    export = read_export(write(tmp_path / "e", frames))
    q = export.quarantine
    hist = q[q["table"] == "stage_history"]
    assert hist["line"].tolist() == [2, 3]
    assert (hist["reason"] == "its opportunity is quarantined (closed_at before created_at)").all()
    acts = q[q["table"] == "activities"].set_index("line")["reason"]
    assert acts[2] == "its opportunity is quarantined (closed_at before created_at)"
    assert acts[N + 3] == "its lead is quarantined (sqo_at before created_at)"
    assert export.stage_history is not None and "O00" not in set(
        export.stage_history["opportunity_id"]
    )
    assert export.quarantined_rows() == {
        "opportunities.csv": 1,
        "stage_history.csv": 2,
        "activities.csv": 2,
        "leads.csv": 1,
    }
    assert export.quarantined_rows(by="table")["stage_history"] == 2
    assert_every_row_used_or_listed(frames, export.tables(), q)


def test_every_input_row_is_used_or_listed(tmp_path: Path) -> None:
    """Many reasons at once, on random rows (seeded), some rows with two: nothing goes unlisted."""
    rng = np.random.default_rng(11)
    frames = tables()
    for row in rng.choice(N, size=6, replace=False):
        set_cell("opportunities", int(row), "amount", "-5")(frames)
    for row in rng.choice(N, size=4, replace=False):
        set_cell("leads", int(row), "sqo_at", "2025-01-01")(frames)
    for row in rng.choice(2 * N, size=5, replace=False):
        set_cell("stage_history", int(row), "opportunity_id", f"X{row}")(frames)
    for row in rng.choice(N, size=3, replace=False):
        set_cell("activities", int(row), "opportunity_id", "O00")(frames)
    set_cell("opportunities", 0, "closed_at", "2025-01-01")(frames)
    set_cell("opportunities", 0, "amount", "-1")(frames)  # two reasons, one row
    export = read_export(write(tmp_path / "e", frames), quarantine_threshold=1.0)
    q = export.quarantine
    assert len(q[(q["table"] == "opportunities") & (q["line"] == 2)]) == 2
    assert export.quarantined_rows()["opportunities.csv"] == len(
        q[q["table"] == "opportunities"].drop_duplicates("line")
    )
    assert_every_row_used_or_listed(frames, export.tables(), q)


def test_same_day_close_and_late_stamps_on_the_close_day_are_consistent(tmp_path: Path) -> None:
    frames = tables()
    # created and closed the same day; its last change at 23:59 on that day
    set_cell("opportunities", 0, "closed_at", day(0))(frames)
    set_cell("stage_history", 1, "changed_at", day(0, "23:59:59"))(frames)
    set_cell("leads", 0, "sqo_at", day(0))(frames)
    assert read_export(write(tmp_path / "e", frames), strict=True).quarantine.empty


def test_parquet_rows_are_numbered_from_one(tmp_path: Path) -> None:
    frames = tables()
    set_cell("opportunities", 4, "amount", "-3")(frames)
    export = read_export(write(tmp_path / "e", frames, fmt="parquet"))
    q = export.quarantine
    assert q[["file", "line", "reason"]].values.tolist() == [
        ["opportunities.parquet", 5, "negative amount"],
        ["stage_history.parquet", 9, "its opportunity is quarantined (negative amount)"],
        ["stage_history.parquet", 10, "its opportunity is quarantined (negative amount)"],
        ["activities.parquet", 5, "its opportunity is quarantined (negative amount)"],
    ]


def test_strict_refuses_and_lists_the_rows(tmp_path: Path) -> None:
    frames = tables()
    set_cell("opportunities", 0, "closed_at", day(-3))(frames)
    set_cell("stage_history", 7, "opportunity_id", "O99")(frames)
    folder = write(tmp_path / "e", frames)
    with pytest.raises(ContractError) as info:
        read_export(folder, strict=True)
    message = str(info.value)
    assert message.startswith("The CRM export was refused")
    assert (
        "opportunities.csv, column 'closed_at': 1 deal(s) close before they were created "
        "(line 2); expected closed_at ≥ created_at" in message
    )
    assert (
        "stage_history.csv, column 'opportunity_id': 1 row(s) refer to opportunities not in opportunities (O99) (line 9)"
        in message
    )
    # its history rows are not wrong themselves: fixing the deal fixes them
    assert "lines 2, 3" not in message and len(info.value.problems) == 2
    # the same read through the policy an entry point sets
    with read_policy(strict=True), pytest.raises(ContractError):
        read_export(folder)
    assert len(read_export(folder).quarantine) == 5


def test_the_threshold_refuses_a_suspect_export(tmp_path: Path) -> None:
    frames = tables()
    for row in (0, 3):
        set_cell("opportunities", row, "closed_at", day(-3))(frames)
    folder = write(tmp_path / "e", frames)
    # 2 of 40 deals is 5%: at the threshold, still used
    assert read_export(folder).quarantined_rows()["opportunities.csv"] == 2
    set_cell("opportunities", 6, "amount", "-9")(frames)
    write(folder, frames)
    with pytest.raises(ContractError) as info:
        read_export(folder)
    message = str(info.value)
    assert "opportunities.csv: 3 of 40 rows (7.5%) contradict themselves" in message
    assert "closed_at before created_at: 2, negative amount: 1" in message
    assert "the export itself looks suspect (lines 2, 5, 8)" in message
    # their history rows follow the deals and do not count against the history's own share
    assert "stage_history.csv" not in message
    assert (
        read_export(folder, quarantine_threshold=0.1).quarantined_rows()["opportunities.csv"] == 3
    )
    with read_policy(quarantine_threshold=0.1) as policy:
        read_export(folder)
    assert policy.counts() == {
        "opportunities.csv": 3,
        "stage_history.csv": 6,
        "activities.csv": 3,
    }
    with pytest.raises(InputError, match="quarantine threshold 1.5"):
        read_export(folder, quarantine_threshold=1.5)


def test_a_broken_file_is_still_refused_beside_inconsistent_rows(tmp_path: Path) -> None:
    """Duplicate ids cannot be tied to their rows: the export is refused, not quarantined."""
    frames = tables()
    set_cell("opportunities", 1, "opportunity_id", "O00")(frames)
    set_cell("opportunities", 5, "closed_at", day(-3))(frames)
    with pytest.raises(ContractError) as info:
        read_export(write(tmp_path / "e", frames))
    assert "opportunities.csv, column 'opportunity_id': 1 id(s) appear on more than one row" in str(
        info.value
    )
    assert "close before" not in str(info.value)


def test_check_relations_words_inconsistent_rows_as_refusals(tmp_path: Path) -> None:
    """What importers use: they convert a report export, and refuse rather than quarantine."""
    frames = tables()
    set_cell("opportunities", 4, "amount", "-250")(frames)
    folder = write(tmp_path / "e", frames)
    export = read_export(folder, quarantine_threshold=1.0)
    raw = read_export(write(tmp_path / "clean", tables()))
    typed = dict(raw.tables())
    amount = typed["opportunities"]["amount"].copy()
    amount.iloc[4] = -250.0
    typed["opportunities"] = typed["opportunities"].assign(amount=amount)
    files = {name: Path(f"{name}.csv") for name in typed}
    problems = check_relations(typed, files, export.config)
    assert [(p.file, p.column, p.lines, p.message) for p in problems] == [
        ("opportunities.csv", "amount", (6,), "1 value(s) are negative")
    ]
