"""The CRM export contract: tables, columns, types, and how a problem with a file is told.

The checks themselves live in :mod:`features.checks` (across rows and files) and
:mod:`features.io` (cell by cell, while reading). Every problem found is collected (not just the
first) so that a RevOps analyst can fix the export in one pass. Line numbers are the file's own:
the header is line 1, the first data row line 2; for Parquet files they are 1-based row numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from features.errors import InputError

Kind = Literal["string", "date", "datetime", "number", "bool"]


@dataclass(frozen=True)
class Column:
    """One contract column: its name, type and whether a file must have it."""

    name: str
    kind: Kind
    required: bool = False
    #: allowed values (after lower-casing), for enumerations such as status
    choices: tuple[str, ...] | None = None
    #: value must be >= 0
    non_negative: bool = False
    #: a row may not leave it empty (when the column is present)
    not_null: bool = False


OPPORTUNITY_STATUSES = ("open", "won", "lost")
ACTIVITY_DIRECTIONS = ("inbound", "outbound")
FORECAST_CATEGORIES = ("pipeline", "best_case", "commit", "closed", "omitted")

TABLES: dict[str, tuple[Column, ...]] = {
    "opportunities": (
        Column("opportunity_id", "string", required=True, not_null=True),
        Column("account_id", "string", required=True),
        Column("created_at", "date", required=True, not_null=True),
        Column("stage", "string", required=True, not_null=True),
        Column("status", "string", required=True, not_null=True, choices=OPPORTUNITY_STATUSES),
        Column("closed_at", "date"),
        Column("amount", "number", required=True, not_null=True, non_negative=True),
        Column("expected_close_date", "date"),
        Column("segment", "string"),
        Column("source", "string"),
        Column("owner_id", "string"),
        Column("sdr_id", "string"),
        Column("signal_type", "string"),
        Column("lead_id", "string"),
        Column("industry", "string"),
        Column("region", "string"),
        Column("product", "string"),
        Column("next_step", "string"),
    ),
    "stage_history": (
        Column("opportunity_id", "string", required=True, not_null=True),
        Column("changed_at", "datetime", required=True, not_null=True),
        Column("stage", "string", required=True, not_null=True),
        Column("amount", "number", non_negative=True),
        Column("expected_close_date", "date"),
        Column("forecast_category", "string", choices=FORECAST_CATEGORIES),
    ),
    "activities": (
        Column("opportunity_id", "string"),
        Column("lead_id", "string"),
        Column("occurred_at", "datetime", required=True, not_null=True),
        Column("type", "string", required=True, not_null=True),
        Column("direction", "string", choices=ACTIVITY_DIRECTIONS),
    ),
    "leads": (
        Column("lead_id", "string", required=True, not_null=True),
        Column("account_id", "string"),
        Column("created_at", "date"),
        Column("sqo_at", "date"),
        Column("is_sqo", "bool"),
        Column("meeting_at", "date"),
        Column("employees", "number", non_negative=True),
        Column("annual_revenue", "number", non_negative=True),
        Column("industry", "string"),
        Column("region", "string"),
        Column("country", "string"),
        Column("source", "string"),
        Column("signal_type", "string"),
        Column("title", "string"),
        Column("seniority", "string"),
        Column("sdr_id", "string"),
        Column("sequence", "string"),
        Column("do_not_contact", "bool"),
        Column("last_contacted_at", "date"),
    ),
}

#: the primary key of each table that has one
PRIMARY_KEYS = {"opportunities": "opportunity_id", "leads": "lead_id"}

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "0.0"})

#: how many offending line numbers a message lists before "and N more"
MAX_LINES_SHOWN = 5
#: how many line numbers a :class:`Problem` keeps (the API returns them)
MAX_LINES_KEPT = 20


def columns_of(table: str) -> dict[str, Column]:
    """The contract columns of ``table`` by name."""
    return {c.name: c for c in TABLES[table]}


@dataclass(frozen=True)
class Problem:
    """One way in which a file breaks the contract."""

    file: str
    message: str
    column: str | None = None
    lines: tuple[int, ...] = ()
    n_rows: int = 0
    expected: str | None = None

    def render(self) -> str:
        where = self.file if self.column is None else f"{self.file}, column '{self.column}'"
        text = f"{where}: {self.message}"
        if self.lines:
            shown = ", ".join(str(n) for n in self.lines[:MAX_LINES_SHOWN])
            more = self.n_rows - min(len(self.lines), MAX_LINES_SHOWN)
            label = "line" if len(self.lines) == 1 and more <= 0 else "lines"
            text += f" ({label} {shown}" + (f" and {more} more" if more > 0 else "") + ")"
        if self.expected:
            text += f"; expected {self.expected}"
        return text + "."


def line_numbers(path: Path, mask: np.ndarray) -> np.ndarray:
    """The file's own line numbers of the rows where ``mask`` is true.

    A CSV's header is line 1, so row ``i`` (0-based) is line ``i + 2``; a Parquet file has no
    header line, so its rows are numbered from 1.
    """
    offset = 1 if path.suffix == ".parquet" else 2
    return np.flatnonzero(mask) + offset


def problem_at(
    path: Path,
    column: str | None,
    message: str,
    mask: np.ndarray | None = None,
    expected: str | None = None,
) -> Problem:
    """A :class:`Problem` of file ``path`` on the rows where ``mask`` is true."""
    lines = (
        tuple(int(n) for n in line_numbers(path, mask)[:MAX_LINES_KEPT]) if mask is not None else ()
    )
    return Problem(
        file=path.name,
        column=column,
        message=message,
        lines=lines,
        n_rows=int(mask.sum()) if mask is not None else 0,
        expected=expected,
    )


@dataclass
class ContractError(InputError):
    """The input breaks the contract. ``problems`` lists every problem found.

    ``subject`` names what was refused in the user's words: "CRM export" (an export folder),
    "lead list" (a list to score), "report export" (a file ``pipecast import csv`` converts).
    """

    problems: list[Problem] = field(default_factory=list)
    subject: str = "CRM export"

    def __post_init__(self) -> None:
        super().__init__(self.render())

    def render(self) -> str:
        if len(self.problems) == 1:
            return f"The {self.subject} was refused: " + self.problems[0].render()
        body = "\n".join(f"  - {p.render()}" for p in self.problems)
        return f"The {self.subject} was refused ({len(self.problems)} problems):\n{body}"

    def __str__(self) -> str:
        return self.render()
