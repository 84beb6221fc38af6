"""The contract's checks across rows and files: what refuses an export, what is quarantined.

Two kinds of bad input are told apart (data-contract.md, "Bad input"):

* **A broken file is refused** (:func:`refusals`): a duplicate id, a stage ``dataset.yaml`` does
  not declare, a history without an opportunities file, an activity that belongs to nothing, a
  lead with neither a date nor a label. (Problems found cell by cell while reading — missing
  columns, unparsable values, bad status — are found by :func:`features.io.coerce_table`.)
* **An inconsistent row is quarantined** (:func:`find_quarantine`): a row that parses but
  contradicts itself or its history. It is left out of everything downstream and listed with
  its file, line and reason; rows that belong to a quarantined opportunity (its history and
  activities) or lead (its activities) go with it. Real CRM exports always hold a few such rows
  (a migration that stamped the import date as ``created_at``, a deal reopened by hand), so one
  bad row must not cost the whole export — but a table quarantined beyond a threshold is
  refused (:func:`threshold_problems`), since then the export itself is suspect.

Time meaning: the checks judge the export as a whole, as it stands at export time; they have
no ``as_of``. A deal quarantined for something recorded late in its life (a close date before
its creation) is left out at every as-of day, not only after that record: a row that
contradicts itself cannot be trusted on any day, and leaving it out everywhere keeps the
training table the same whichever day it is cut at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from features.config import DatasetConfig
from features.contract import (
    MAX_LINES_KEPT,
    PRIMARY_KEYS,
    Problem,
    columns_of,
    line_numbers,
    problem_at,
)

#: the columns of :attr:`features.io.Export.quarantine`, one row per (input row, reason)
QUARANTINE_COLUMNS = ("file", "line", "table", "id", "column", "value", "reason")
#: the default share of a table that may be quarantined before the export is refused
DEFAULT_THRESHOLD = 0.05
#: the table order in which quarantined rows are listed
TABLE_ORDER = ("opportunities", "stage_history", "activities", "leads")

# Quarantine reasons. Each is a short phrase a RevOps analyst can search the CRM for; strict
# mode (and importers, which refuse rather than quarantine) words them as a refusal with what
# was expected.
CLOSED_BEFORE_CREATED = "closed_at before created_at"
CLOSED_WITHOUT_DATE = "won/lost deal without closed_at"
OPEN_WITH_CLOSE_DATE = "open deal with a closed_at"
NEGATIVE_AMOUNT = "negative amount"
UNKNOWN_OPPORTUNITY_HISTORY = "history row for an unknown opportunity"
HISTORY_AFTER_CLOSE = "history row after the deal closed"
UNKNOWN_OPPORTUNITY_ACTIVITY = "activity for an unknown opportunity"
SQO_BEFORE_CREATED = "sqo_at before created_at"
OPPORTUNITY_QUARANTINED = "its opportunity is quarantined"
LEAD_QUARANTINED = "its lead is quarantined"

#: reason → (what the rows do, for "N row(s) …", and what was expected), for strict refusals
REFUSAL_WORDING: dict[str, tuple[str, str]] = {
    CLOSED_BEFORE_CREATED: ("deal(s) close before they were created", "closed_at ≥ created_at"),
    CLOSED_WITHOUT_DATE: (
        "won/lost deal(s) have no close date",
        "closed_at on every won or lost deal",
    ),
    OPEN_WITH_CLOSE_DATE: (
        "open deal(s) have a close date",
        "closed_at empty while status is open",
    ),
    NEGATIVE_AMOUNT: ("value(s) are negative", "a number ≥ 0"),
    UNKNOWN_OPPORTUNITY_HISTORY: (
        "row(s) refer to opportunities not in opportunities",
        "an opportunity_id present in the opportunities file",
    ),
    UNKNOWN_OPPORTUNITY_ACTIVITY: (
        "row(s) refer to opportunities not in opportunities",
        "an opportunity_id present in the opportunities file",
    ),
    HISTORY_AFTER_CLOSE: (
        "row(s) are dated after their deal closed",
        "changed_at on or before the day the deal closed",
    ),
    SQO_BEFORE_CREATED: ("lead(s) became SQOs before they were created", "sqo_at ≥ created_at"),
}


def empty_quarantine() -> pd.DataFrame:
    """A quarantine with no rows (the columns of :data:`QUARANTINE_COLUMNS`, typed)."""
    return pd.DataFrame(
        {
            name: pd.Series(dtype="int64" if name == "line" else "string")
            for name in QUARANTINE_COLUMNS
        }
    )


# ----------------------------------------------------------------------------------------
# refusals
# ----------------------------------------------------------------------------------------


def refusals(
    frames: Mapping[str, pd.DataFrame], files: Mapping[str, Path], config: DatasetConfig
) -> list[Problem]:
    """Problems across rows and files that make an export unusable as a whole.

    Parameters
    ----------
    frames
        The tables read so far (contract dtypes, positional index), by contract name.
    files
        The file each table was read from: problems name it and its lines.
    config
        The export's ``dataset.yaml`` (declared stages).

    Returns
    -------
    list of Problem
        Empty when the export can be used (possibly with quarantined rows).
    """
    problems: list[Problem] = []
    for table, key in PRIMARY_KEYS.items():
        if table in frames:
            problems.extend(duplicate_ids(frames[table], files[table], key))
    opps = frames.get("opportunities")
    if opps is not None:
        problems.extend(_undeclared_stages(opps, files["opportunities"], config, "deal(s)"))
    hist = frames.get("stage_history")
    if hist is not None:
        f = files["stage_history"]
        if opps is None:
            problems.append(
                Problem(
                    file=f.name,
                    message="has no opportunities file to belong to",
                    expected="opportunities.csv beside it",
                )
            )
        problems.extend(_undeclared_stages(hist, f, config, "row(s)"))
    acts = frames.get("activities")
    if acts is not None:
        opp_col = _column(acts, "opportunity_id")
        lead_col = _column(acts, "lead_id")
        neither = (opp_col.isna() & lead_col.isna()).to_numpy(dtype=bool)
        if neither.any():
            problems.append(
                problem_at(
                    files["activities"],
                    "opportunity_id",
                    f"{int(neither.sum())} activit(ies) belong to no opportunity and no lead",
                    neither,
                    expected="an opportunity_id or a lead_id on every row",
                )
            )
    leads = frames.get("leads")
    if leads is not None:
        problems.extend(check_leads(leads, files["leads"]))
    return problems


def duplicate_ids(df: pd.DataFrame, path: Path, key: str, *, what: str = "id") -> list[Problem]:
    """Ids that appear on more than one row (empty ids are reported as empty cells instead)."""
    keys = df[key]
    dup = (keys.notna() & keys.duplicated(keep=False)).to_numpy(dtype=bool)
    if not dup.any():
        return []
    ids = df.loc[dup, key].astype(str).unique()
    return [
        problem_at(
            path,
            key,
            f"{len(ids)} {what}(s) appear on more than one row (e.g. {', '.join(ids[:3])})",
            dup,
            expected="each id once",
        )
    ]


def check_leads(leads: pd.DataFrame, path: Path) -> list[Problem]:
    """Lead rules that refuse the file: a date or a label on every lead.

    A lead needs ``created_at`` (the day it was listed, which dates its label) unless the
    export has ``is_sqo`` labels instead: an undated lead table is usable with labels alone.
    """
    has_created = "created_at" in leads
    has_label = "is_sqo" in leads
    if not has_created and not has_label:
        return [
            Problem(
                file=path.name,
                column="created_at",
                message="a lead table needs created_at (or, where dates are unknown, is_sqo)",
                expected="a created_at column",
            )
        ]
    if has_created and not has_label:
        empty = leads["created_at"].isna().to_numpy(dtype=bool)
        if empty.any():
            return [
                problem_at(
                    path,
                    "created_at",
                    f"{int(empty.sum())} lead(s) have no created_at",
                    empty,
                    expected="the day each lead was added to a list",
                )
            ]
    return []


def _undeclared_stages(
    df: pd.DataFrame, path: Path, config: DatasetConfig, rows: str
) -> list[Problem]:
    """Stages that ``dataset.yaml`` does not declare (nothing to check when it declares none)."""
    declared = {s.name for s in config.stages}
    if not declared:
        return []
    bad = (df["stage"].notna() & ~df["stage"].isin(declared)).to_numpy(dtype=bool)
    if not bad.any():
        return []
    names = sorted(set(df.loc[bad, "stage"].astype(str)))[:5]
    return [
        problem_at(
            path,
            "stage",
            f"{int(bad.sum())} {rows} have a stage not declared in dataset.yaml ({', '.join(names)})",
            bad,
            expected="one of " + ", ".join(sorted(declared)),
        )
    ]


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(pd.NA, index=df.index, dtype="string")


# ----------------------------------------------------------------------------------------
# quarantine
# ----------------------------------------------------------------------------------------


class _Finder:
    """Collects quarantine entries rule by rule, one small frame per rule."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = files
        self.parts: list[pd.DataFrame] = []

    def add(
        self,
        table: str,
        mask: np.ndarray,
        ids: pd.Series | Callable[[np.ndarray], pd.Series],
        column: str,
        values: pd.Series,
        reason: str | Callable[[np.ndarray], pd.Series],
    ) -> None:
        """Entries for the rows where ``mask`` is true.

        ``ids`` and ``reason`` may be functions of the mask, so that what is costly to build
        for every row (a parent's reason, an id from one of two columns) is built for the few
        quarantined rows only.
        """
        if not mask.any():
            return
        path = self.files[table]
        reasons = reason(mask).to_numpy(dtype=object) if callable(reason) else reason
        row_ids = ids(mask) if callable(ids) else ids[mask]
        self.parts.append(
            pd.DataFrame(
                {
                    "file": path.name,
                    "line": line_numbers(path, mask).astype("int64"),
                    "table": table,
                    "id": row_ids.astype("string").to_numpy(),
                    "column": column,
                    "value": _as_text(values[mask]).to_numpy(),
                    "reason": np.asarray(reasons, dtype=object),
                }
            )
        )

    def result(self) -> pd.DataFrame:
        if not self.parts:
            return empty_quarantine()
        out = pd.concat(self.parts, ignore_index=True)
        order = out["table"].map({t: i for i, t in enumerate(TABLE_ORDER)})
        out = out.assign(_order=order).sort_values(["_order", "line"], kind="stable")
        out = out.drop(columns="_order").reset_index(drop=True)
        for name in QUARANTINE_COLUMNS:
            out[name] = out[name].astype("int64" if name == "line" else "string")
        return out[list(QUARANTINE_COLUMNS)]


def _as_text(values: pd.Series) -> pd.Series:
    """Values as the user wrote them, near enough: dates as ISO days or timestamps."""
    if pd.api.types.is_datetime64_any_dtype(values):
        has_time = bool(((values - values.dt.normalize()).dropna() != pd.Timedelta(0)).any())
        return values.dt.strftime("%Y-%m-%dT%H:%M:%S" if has_time else "%Y-%m-%d").astype("string")
    if pd.api.types.is_float_dtype(values):
        return values.map(lambda v: "" if pd.isna(v) else f"{v:g}").astype("string")
    return values.astype("string")


def _first_reason(entries: pd.DataFrame, table: str) -> pd.Series:
    """id → the first reason a row of ``table`` is quarantined for (for rows that follow it)."""
    rows = entries.loc[entries["table"] == table]
    return rows.drop_duplicates("id").set_index("id")["reason"]


def find_quarantine(frames: Mapping[str, pd.DataFrame], files: Mapping[str, Path]) -> pd.DataFrame:
    """Every row that parses but contradicts itself, its history or its parent, with why.

    Parameters
    ----------
    frames
        The tables read (contract dtypes, positional index) by contract name; they are not
        changed. Call only when :func:`refusals` found nothing (ids are unique).
    files
        The file each table was read from, for file names and line numbers.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`QUARANTINE_COLUMNS`, one row per (input row, reason) — a row with two
        problems is listed twice — in table order, then line order. ``line`` is the file's
        own line number; ``id`` the row's opportunity or lead id; ``value`` the offending
        value as text.

    Notes
    -----
    A deal "closes before it was created" and a history row "comes after the close" by the
    day: a deal created and closed on the same day, or a last stage change stamped later on
    the close day, is consistent.
    """
    found = _Finder(files)
    opps = frames.get("opportunities")
    if opps is not None:
        _quarantine_opportunities(found, opps)
    early = found.result()
    bad_opps = _first_reason(early, "opportunities")
    leads = frames.get("leads")
    if leads is not None:
        _quarantine_leads(found, leads)
        bad_leads = _first_reason(found.result(), "leads")
    else:
        bad_leads = pd.Series(dtype="string")
    hist = frames.get("stage_history")
    if hist is not None and opps is not None:
        _quarantine_history(found, hist, opps, bad_opps)
    acts = frames.get("activities")
    if acts is not None:
        _quarantine_activities(found, acts, opps, bad_opps, bad_leads)
    return found.result()


def _quarantine_opportunities(found: _Finder, opps: pd.DataFrame) -> None:
    ids = opps["opportunity_id"]
    status = opps["status"]
    closed_at = _column(opps, "closed_at")
    if "closed_at" not in opps:
        closed_at = pd.Series(pd.NaT, index=opps.index, dtype="datetime64[ns]")
    is_closed = status.isin(["won", "lost"]).to_numpy(dtype=bool)
    no_date = closed_at.isna().to_numpy(dtype=bool)
    found.add("opportunities", is_closed & no_date, ids, "closed_at", status, CLOSED_WITHOUT_DATE)
    is_open = (status == "open").to_numpy(dtype=bool)
    found.add(
        "opportunities", is_open & ~no_date, ids, "closed_at", closed_at, OPEN_WITH_CLOSE_DATE
    )
    before = (
        (closed_at.dt.normalize() < opps["created_at"].dt.normalize())
        .fillna(False)
        .to_numpy(dtype=bool)
    )
    found.add("opportunities", before, ids, "closed_at", closed_at, CLOSED_BEFORE_CREATED)
    _negatives(found, "opportunities", opps, ids)


def _negatives(found: _Finder, table: str, df: pd.DataFrame, ids: pd.Series) -> None:
    """Numbers the contract says are ≥ 0 (amounts, head counts, revenue) that are negative."""
    for col in columns_of(table).values():
        if col.non_negative and col.name in df and pd.api.types.is_numeric_dtype(df[col.name]):
            neg = (df[col.name] < 0).fillna(False).to_numpy(dtype=bool)
            reason = NEGATIVE_AMOUNT if col.name == "amount" else f"negative {col.name}"
            found.add(table, neg, ids, col.name, df[col.name], reason)


def _quarantine_leads(found: _Finder, leads: pd.DataFrame) -> None:
    ids = leads["lead_id"]
    if "created_at" in leads and "sqo_at" in leads:
        before = (
            (leads["sqo_at"].dt.normalize() < leads["created_at"].dt.normalize())
            .fillna(False)
            .to_numpy(dtype=bool)
        )
        found.add("leads", before, ids, "sqo_at", leads["sqo_at"], SQO_BEFORE_CREATED)
    _negatives(found, "leads", leads, ids)


def _following(
    found: _Finder,
    table: str,
    parent_ids: pd.Series,
    bad: pd.Series,
    prefix: str,
    row_ids: pd.Series | Callable[[np.ndarray], pd.Series],
) -> np.ndarray:
    """Quarantine the rows whose parent (deal or lead) is quarantined; their mask."""
    if bad.empty:
        return np.zeros(len(parent_ids), dtype=bool)
    mask = parent_ids.isin(bad.index).to_numpy(dtype=bool)
    found.add(
        table,
        mask,
        row_ids,
        str(parent_ids.name),
        parent_ids,
        lambda m: prefix + " (" + parent_ids[m].map(bad).astype("string") + ")",
    )
    return mask


def _quarantine_history(
    found: _Finder, hist: pd.DataFrame, opps: pd.DataFrame, bad_opps: pd.Series
) -> None:
    ids = hist["opportunity_id"]
    known = ids.isin(opps["opportunity_id"]).to_numpy(dtype=bool)
    present = ids.notna().to_numpy(dtype=bool)
    found.add(
        "stage_history", present & ~known, ids, "opportunity_id", ids, UNKNOWN_OPPORTUNITY_HISTORY
    )
    of_bad = _following(found, "stage_history", ids, bad_opps, OPPORTUNITY_QUARANTINED, ids)
    if "closed_at" in opps:
        # the rows of a quarantined deal are already listed with its reason
        closed = ids.map(opps.set_index("opportunity_id")["closed_at"])
        after = (
            (hist["changed_at"].dt.normalize() > closed.dt.normalize())
            .fillna(False)
            .to_numpy(dtype=bool)
        ) & ~of_bad
        found.add(
            "stage_history", after, ids, "changed_at", hist["changed_at"], HISTORY_AFTER_CLOSE
        )
    _negatives(found, "stage_history", hist, ids)


def _quarantine_activities(
    found: _Finder,
    acts: pd.DataFrame,
    opps: pd.DataFrame | None,
    bad_opps: pd.Series,
    bad_leads: pd.Series,
) -> None:
    opp_ids = _column(acts, "opportunity_id").rename("opportunity_id")
    lead_ids = _column(acts, "lead_id").rename("lead_id")

    def row_ids(mask: np.ndarray) -> pd.Series:
        # an activity is named by its deal, else by its lead
        return opp_ids[mask].fillna(lead_ids[mask])

    if opps is not None and "opportunity_id" in acts:
        unknown = (opp_ids.notna() & ~opp_ids.isin(opps["opportunity_id"])).to_numpy(dtype=bool)
        found.add(
            "activities", unknown, row_ids, "opportunity_id", opp_ids, UNKNOWN_OPPORTUNITY_ACTIVITY
        )
    _following(found, "activities", opp_ids, bad_opps, OPPORTUNITY_QUARANTINED, row_ids)
    _following(found, "activities", lead_ids, bad_leads, LEAD_QUARANTINED, row_ids)


def quarantined_rows(quarantine: pd.DataFrame, *, by: str = "file") -> dict[str, int]:
    """How many rows of each file (or ``by="table"``) are quarantined, each row counted once."""
    if by not in ("file", "table"):
        raise ValueError(f"by={by!r}: file or table")
    if quarantine.empty:
        return {}
    rows = quarantine.drop_duplicates(["file", "line"])
    counts = rows.groupby(by, sort=False)["line"].size()
    return {str(k): int(v) for k, v in counts.items()}


def quarantined_positions(quarantine: pd.DataFrame, table: str, path: Path) -> np.ndarray:
    """0-based row positions of ``table`` (read from ``path``) that are quarantined."""
    offset = 1 if path.suffix == ".parquet" else 2
    lines = quarantine.loc[quarantine["table"] == table, "line"].to_numpy(dtype="int64")
    return np.unique(lines - offset)


def without_quarantined(
    frames: Mapping[str, pd.DataFrame], files: Mapping[str, Path], quarantine: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """The tables with the quarantined rows taken out (indexes renumbered from 0)."""
    out: dict[str, pd.DataFrame] = {}
    for name, df in frames.items():
        drop = quarantined_positions(quarantine, name, files[name])
        if len(drop) == 0:
            out[name] = df
            continue
        keep = np.ones(len(df), dtype=bool)
        keep[drop] = False
        out[name] = df.loc[keep].reset_index(drop=True)
    return out


def quarantine_problems(quarantine: pd.DataFrame) -> list[Problem]:
    """The quarantined rows worded as refusals (``--strict``, and importers): one per reason.

    Rows quarantined only because their deal or lead is are left out: they are not wrong
    themselves, and fixing the deal or lead fixes them.
    """
    problems: list[Problem] = []
    own = ~quarantine["reason"].str.startswith((OPPORTUNITY_QUARANTINED, LEAD_QUARANTINED))
    keyed = quarantine.loc[own.to_numpy(dtype=bool)]
    if keyed.empty:
        return problems
    for (file, column, reason), rows in keyed.groupby(
        ["file", "column", "reason"], sort=False, observed=True
    ):
        key = NEGATIVE_AMOUNT if str(reason).startswith("negative ") else str(reason)
        what, expected = REFUSAL_WORDING.get(key, (f"row(s): {reason}", "a consistent row"))
        message = f"{len(rows)} {what}"
        if reason in (UNKNOWN_OPPORTUNITY_HISTORY, UNKNOWN_OPPORTUNITY_ACTIVITY):
            message += f" ({', '.join(rows['value'].astype(str).unique()[:3])})"
        problems.append(
            Problem(
                file=str(file),
                column=str(column),
                message=message,
                lines=tuple(int(n) for n in rows["line"].to_numpy()[:MAX_LINES_KEPT]),
                n_rows=len(rows),
                expected=expected,
            )
        )
    return problems


def threshold_problems(
    quarantine: pd.DataFrame,
    frames: Mapping[str, pd.DataFrame],
    files: Mapping[str, Path],
    threshold: float,
) -> list[Problem]:
    """Tables quarantined beyond ``threshold`` (a share of their rows): the export is suspect.

    When many rows contradict themselves the cause is rarely the rows: it is the export (a
    wrong column mapped to ``closed_at``, a migration's import date as ``created_at``).
    Training on what is left would learn from a biased remainder, so the export is refused.

    Only rows quarantined for a reason of their own count: the history and activities that
    follow a quarantined deal or lead are counted where the cause is, in its own table (a few
    long deals would otherwise push their history past the threshold).
    """
    problems: list[Problem] = []
    own = ~quarantine["reason"].str.startswith((OPPORTUNITY_QUARANTINED, LEAD_QUARANTINED))
    for name, df in frames.items():
        if len(df) == 0:
            continue
        rows = quarantine.loc[(quarantine["table"] == name) & own.to_numpy(dtype=bool)]
        n = rows.drop_duplicates("line").shape[0]
        share = n / len(df)
        if share <= threshold:
            continue
        reasons = rows["reason"].str.replace(r" \(.*\)$", "", regex=True).value_counts()
        why = ", ".join(f"{r}: {c}" for r, c in reasons.items())
        lines = rows.drop_duplicates("line")["line"].to_numpy()
        problems.append(
            Problem(
                file=files[name].name,
                message=(
                    f"{n} of {len(df)} rows ({share:.1%}) contradict themselves ({why}), more "
                    f"than the {threshold:.0%} of a table that may be quarantined: the export "
                    "itself looks suspect"
                ),
                lines=tuple(int(x) for x in lines[:MAX_LINES_KEPT]),
                n_rows=n,
                expected=(
                    "an export whose rows are mostly consistent; fix the export (`pipecast "
                    "validate --strict` lists every row), or raise the quarantine threshold "
                    "(PIPECAST_QUARANTINE_THRESHOLD) if these rows are known and few enough"
                ),
            )
        )
    return problems


def check_relations(
    frames: Mapping[str, pd.DataFrame], files: Mapping[str, Path], config: DatasetConfig
) -> list[Problem]:
    """Every problem across rows and files, quarantinable rows included, as refusals.

    For callers that refuse rather than quarantine (``--strict``, importers converting a
    report export before it is written).
    """
    problems = refusals(frames, files, config)
    if ids_are_unique(frames):
        problems.extend(quarantine_problems(find_quarantine(frames, files)))
    return problems


def ids_are_unique(frames: Mapping[str, pd.DataFrame]) -> bool:
    """Whether every opportunity and lead id is unique (rows can then be tied to their parent)."""
    return all(
        not frames[table][key].dropna().duplicated().any()
        for table, key in PRIMARY_KEYS.items()
        if table in frames
    )


def summary_line(counts: Mapping[str, int]) -> str | None:
    """``3 rows quarantined (opportunities.csv: 2, leads.csv: 1)``; None when there are none."""
    total = sum(counts.values())
    if total == 0:
        return None
    parts = ", ".join(f"{file}: {n}" for file, n in counts.items())
    return f"{total} row{'s' if total != 1 else ''} quarantined ({parts})"
