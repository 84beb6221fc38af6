"""What ``pipecast validate`` prints: counts, rates and the red flags of a pipeline review.

:func:`summarize` computes a :class:`ValidationReport` from an export (numbers and small
DataFrames, no I/O); :func:`render_validation` draws it with rich. A missing optional table or
column never fails the report: the section it feeds says it is not available instead.

Time meaning: everything is judged as of the export date (``Export.exported_at``), the end of
that day. "Past", "last 30 days" and "undecided" are relative to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd
from rich.console import Console
from rich.table import Table

from features.checks import empty_quarantine
from features.contract import TABLES
from features.io import TABLE_NAMES, Export, latest_date
from features.labels import decided_labels

log = logging.getLogger(__name__)

#: an open deal with no activity in this many days (up to the export date) is neglected
NEGLECT_DAYS = 30
#: a deal is stale when it has been in its stage this many times longer than won deals' median
STALE_FACTOR = 2.0
#: won deals that must have passed through a stage before its typical duration is trusted
MIN_WON_SPELLS = 3
#: a close date pushed this many times or more is a red flag
MIN_PUSHES = 2
#: how many example ids a warning shows
N_EXAMPLES = 5
#: label for rows whose grouping column is empty
NONE_LABEL = "(none)"
#: how many quarantined rows ``pipecast validate`` prints (``--quarantine FILE`` writes them all)
MAX_QUARANTINE_SHOWN = 100


@dataclass(frozen=True)
class Finding:
    """One warning: what is wrong, on how many rows, and a few ids to look at."""

    kind: str
    message: str
    count: int
    examples: tuple[str, ...] = ()


@dataclass
class ValidationReport:
    """Everything ``pipecast validate`` shows, as numbers and DataFrames.

    Attributes
    ----------
    counts
        Rows per table and the breakdowns (open/won/lost deals, leads, SQOs), one row each,
        columns ``table``, ``what``, ``count``.
    win_rates
        Per segment plus an ``overall`` row: ``closed``, ``won``, ``win_rate``
        (won / closed) and ``median_days_to_win`` (created_at → closed_at of won deals).
    sqo_by_source, sqo_by_signal
        Per value of the leads' ``source`` / ``signal_type``: ``decided``, ``sqos``,
        ``sqo_rate``. Only decided leads count (see :func:`lead_labels`).
    meeting_to_sqo
        One row ``overall``: decided leads with a meeting, how many became SQOs, the rate.
    warnings, data_quality
        Pipeline red flags, and data-quality issues that do not break the contract.
    unavailable
        Section → why it could not be computed (a missing table or column).
    quarantine
        The rows left out because they contradict themselves (``Export.quarantine``): file,
        line, table, id, column, value, reason.
    dated
        False when the export holds no dates at all: rows have no time order, and nothing is
        judged "as of" a day.
    """

    path: str | None
    exported_at: pd.Timestamp | None
    date_start: pd.Timestamp | None
    date_end: pd.Timestamp | None
    counts: pd.DataFrame
    sqo_window_days: int
    win_rates: pd.DataFrame | None = None
    sqo_by_source: pd.DataFrame | None = None
    sqo_by_signal: pd.DataFrame | None = None
    meeting_to_sqo: pd.DataFrame | None = None
    undecided_leads: int = 0
    warnings: list[Finding] = field(default_factory=list)
    data_quality: list[Finding] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    quarantine: pd.DataFrame = field(default_factory=empty_quarantine)
    dated: bool = True

    def warning(self, kind: str) -> Finding | None:
        """The warning or data-quality finding of ``kind``, if it was raised."""
        return next((f for f in [*self.warnings, *self.data_quality] if f.kind == kind), None)


# ----------------------------------------------------------------------------------------
# computing
# ----------------------------------------------------------------------------------------


def summarize(export: Export) -> ValidationReport:
    """Summarize a validated export as of its export date.

    Parameters
    ----------
    export
        A CRM export as returned by :func:`features.io.read_export`.

    Returns
    -------
    ValidationReport
        Counts, date range, win and SQO rates, pipeline warnings and data-quality findings.
    """
    exported_at = export.export_date
    report = ValidationReport(
        path=None if export.path is None else str(export.path),
        exported_at=exported_at,
        date_start=earliest_date(export),
        date_end=latest_date(export),
        counts=_counts(export, exported_at),
        sqo_window_days=export.config.sqo_window_days,
        quarantine=export.quarantine,
        dated=export.has_dates(),
    )
    opps = export.opportunities
    if opps is None:
        report.unavailable["win_rates"] = "no opportunities file"
        report.unavailable["warnings"] = "no opportunities file"
    else:
        report.win_rates = win_rates(opps)
        if "segment" not in opps.columns:
            report.unavailable["segments"] = "opportunities have no segment column"
        if exported_at is None:
            report.unavailable["warnings"] = "the export holds no dates"
        else:
            report.warnings = pipeline_warnings(export, exported_at, report.unavailable)
    _lead_sections(export, exported_at, report)
    if exported_at is not None:
        report.data_quality = data_quality(export, exported_at)
    return report


def earliest_date(export: Export) -> pd.Timestamp | None:
    """The earliest event date, floored to the day.

    Expected close dates (plans) and ``last_contacted_at`` (a lead's touches before it was
    listed) are not events of the export's history and are left aside.
    """
    earliest: pd.Timestamp | None = None
    for name, df in export.tables().items():
        for col in TABLES[name]:
            if col.kind in ("date", "datetime") and col.name in df.columns:
                if col.name in ("expected_close_date", "last_contacted_at"):
                    continue
                value = df[col.name].min()
                if pd.notna(value) and (earliest is None or value < earliest):
                    earliest = value
    return None if earliest is None else pd.Timestamp(earliest).normalize()


def _counts(export: Export, exported_at: pd.Timestamp | None) -> pd.DataFrame:
    rows: list[tuple[str, str, int]] = []
    left_out = export.quarantine.drop_duplicates(["table", "line"])["table"].value_counts()
    for name in TABLE_NAMES:
        df = export.table(name)
        if df is not None:
            rows.append((name, "rows", len(df)))
            if name in left_out.index:
                rows.append((name, "quarantined (left out)", int(left_out[name])))
        if name == "opportunities" and df is not None:
            for status in ("open", "won", "lost"):
                rows.append((name, status, int((df["status"] == status).sum())))
        if name == "leads" and df is not None:
            labels = lead_labels(df, exported_at, export.config.sqo_window_days)
            if labels is not None:
                rows.append((name, "SQOs", int(labels.sum(skipna=True))))
    return pd.DataFrame(rows, columns=["table", "what", "count"])


def win_rates(opps: pd.DataFrame) -> pd.DataFrame:
    """Win rate and median days created → won, per segment and overall.

    Win rate is won / (won + lost): open deals are not decided yet and do not count.
    """
    closed = opps[opps["status"].isin(["won", "lost"])]
    won = closed["status"] == "won"
    days = (closed["closed_at"].dt.normalize() - closed["created_at"].dt.normalize()).dt.days
    frame = pd.DataFrame({"won": won.astype(int), "days_to_win": days.where(won)})
    if "segment" in opps.columns:
        frame["segment"] = closed["segment"].astype("string").fillna(NONE_LABEL)
    else:
        frame["segment"] = NONE_LABEL
    rows = []
    groups = [] if "segment" not in opps.columns else sorted(frame["segment"].unique())
    for label, part in [*((g, frame[frame["segment"] == g]) for g in groups), ("overall", frame)]:
        n = len(part)
        n_won = int(part["won"].sum())
        rows.append(
            {
                "segment": str(label),
                "closed": n,
                "won": n_won,
                "win_rate": n_won / n if n else float("nan"),
                "median_days_to_win": float(part["days_to_win"].median())
                if n_won
                else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def lead_labels(
    leads: pd.DataFrame, exported_at: pd.Timestamp | None, window_days: int
) -> pd.Series | None:
    """The SQO label of each lead: True, False, or missing while undecided.

    The same rule as training (:func:`features.labels.decided_labels`): a lead is an SQO when
    ``sqo_at`` falls within ``window_days`` of ``created_at``; one whose window has not ended by
    the export date is undecided (missing) unless it already became an SQO; one with only
    ``is_sqo`` waits for its window either way. Rows without dates fall back to ``is_sqo``.
    ``None`` when the export has no label.
    """
    if not {"sqo_at", "is_sqo"} & set(leads.columns):
        return None
    if exported_at is None or "created_at" not in leads.columns:
        if "is_sqo" not in leads.columns:
            return None
        return leads["is_sqo"].astype("boolean")
    is_sqo, _ = decided_labels(leads, exported_at.normalize(), window_days)
    return pd.Series(is_sqo, index=leads.index, dtype="Float64").astype("boolean")


def sqo_rates(leads: pd.DataFrame, labels: pd.Series, column: str) -> pd.DataFrame:
    """Decided leads, SQOs and SQO rate per value of ``column`` (empty → ``(none)``)."""
    decided = labels.notna()
    frame = pd.DataFrame(
        {
            "group": leads.loc[decided, column].astype("string").fillna(NONE_LABEL),
            "sqo": labels[decided].astype(bool).astype(int),
        }
    )
    table = frame.groupby("group").agg(decided=("sqo", "size"), sqos=("sqo", "sum")).reset_index()
    table = table.rename(columns={"group": column})
    table["sqo_rate"] = table["sqos"] / table["decided"]
    return table.sort_values(["decided", column], ascending=[False, True]).reset_index(drop=True)


def _lead_sections(
    export: Export, exported_at: pd.Timestamp | None, report: ValidationReport
) -> None:
    leads = export.leads
    if leads is None:
        for section in ("sqo_by_source", "sqo_by_signal", "meeting_to_sqo"):
            report.unavailable[section] = "no leads file"
        return
    labels = lead_labels(leads, exported_at, export.config.sqo_window_days)
    if labels is None:
        reason = "leads have neither created_at + sqo_at nor is_sqo"
        for section in ("sqo_by_source", "sqo_by_signal", "meeting_to_sqo"):
            report.unavailable[section] = reason
        return
    report.undecided_leads = int(labels.isna().sum())
    for section, column in (("sqo_by_source", "source"), ("sqo_by_signal", "signal_type")):
        if column in leads.columns:
            setattr(report, section, sqo_rates(leads, labels, column))
        else:
            report.unavailable[section] = f"leads have no {column} column"
    if "meeting_at" in leads.columns:
        met = leads["meeting_at"].notna()
        with_meeting = leads.loc[met].assign(meeting="with a meeting")
        report.meeting_to_sqo = sqo_rates(with_meeting, labels[met], "meeting")
    else:
        report.unavailable["meeting_to_sqo"] = "leads have no meeting_at column"


# --- pipeline red flags -------------------------------------------------------------------


def _finding(kind: str, message: str, ids: pd.Series) -> Finding | None:
    """A finding over the rows whose ids are given, or None when there are none."""
    if ids.empty:
        return None
    unique = pd.unique(ids.astype(str))
    return Finding(
        kind=kind, message=message, count=len(unique), examples=tuple(unique[:N_EXAMPLES])
    )


def pipeline_warnings(
    export: Export, exported_at: pd.Timestamp, unavailable: dict[str, str]
) -> list[Finding]:
    """Red flags of a pipeline review, on the deals open at the export date.

    Checks that need an optional table or column are skipped when it is absent, and the reason
    is recorded in ``unavailable``.
    """
    opps = export.opportunities
    assert opps is not None
    is_open = opps["status"] == "open"
    open_deals = opps[is_open]
    found: list[Finding | None] = []

    if "expected_close_date" in opps.columns:
        past = open_deals["expected_close_date"].dt.normalize() < exported_at
        found.append(
            _finding(
                "close_date_past",
                "open deals whose expected close date is past",
                open_deals.loc[past.fillna(False), "opportunity_id"],
            )
        )
    else:
        unavailable["close_date_past"] = "opportunities have no expected_close_date column"

    acts = export.activities
    if acts is not None and "opportunity_id" in acts.columns:
        end = exported_at + pd.Timedelta(days=1)
        recent = acts[
            (acts["occurred_at"] >= end - pd.Timedelta(days=NEGLECT_DAYS))
            & (acts["occurred_at"] < end)
        ]
        neglected = ~open_deals["opportunity_id"].isin(recent["opportunity_id"].dropna())
        found.append(
            _finding(
                "no_recent_activity",
                f"open deals with no activity in the last {NEGLECT_DAYS} days",
                open_deals.loc[neglected, "opportunity_id"],
            )
        )
    else:
        unavailable["no_recent_activity"] = (
            "no activities file" if acts is None else "activities have no opportunity_id column"
        )

    if "next_step" in opps.columns:
        missing = open_deals["next_step"].isna()
        found.append(
            _finding(
                "no_next_step",
                "open deals with no next step",
                open_deals.loc[missing, "opportunity_id"],
            )
        )
    else:
        unavailable["no_next_step"] = "opportunities have no next_step column"

    hist = export.stage_history
    if hist is not None:
        found.append(stale_deals(opps, hist, exported_at))
        if "expected_close_date" in hist.columns:
            pushes = close_date_pushes(hist)
            pushed = pushes[pushes >= MIN_PUSHES].index.to_series()
            pushed = pushed[pushed.isin(open_deals["opportunity_id"])]
            found.append(
                _finding(
                    "close_date_pushed",
                    f"open deals whose close date was pushed {MIN_PUSHES}+ times",
                    pushed,
                )
            )
        else:
            unavailable["close_date_pushed"] = "stage_history has no expected_close_date column"
    else:
        unavailable["stale"] = "no stage_history file"
        unavailable["close_date_pushed"] = "no stage_history file"

    zero = opps["amount"] == 0
    found.append(
        _finding("zero_amount", "deals with a zero amount", opps.loc[zero, "opportunity_id"])
    )
    return [f for f in found if f is not None]


def stage_spells(hist: pd.DataFrame) -> pd.DataFrame:
    """Consecutive stays in one stage: ``opportunity_id, stage, entered_at, left_at``.

    A spell starts at the first history row of a new stage; ``left_at`` is the start of the next
    spell (missing for the current one).
    """
    h = hist[["opportunity_id", "changed_at", "stage"]].sort_values(
        ["opportunity_id", "changed_at"], kind="stable"
    )
    new_spell = (h["stage"] != h.groupby("opportunity_id")["stage"].shift()).fillna(True)
    spells = h[new_spell.to_numpy(dtype=bool)].rename(columns={"changed_at": "entered_at"}).copy()
    spells["left_at"] = spells.groupby("opportunity_id")["entered_at"].shift(-1)
    return spells.reset_index(drop=True)


def stale_deals(
    opps: pd.DataFrame, hist: pd.DataFrame, exported_at: pd.Timestamp
) -> Finding | None:
    """Open deals in their current stage more than ``STALE_FACTOR`` × won deals' median stay.

    Won deals' stays are measured from the history (a stage left for the next one, or for the
    close on ``closed_at``). Stages that fewer than ``MIN_WON_SPELLS`` won deals went through are
    not judged.
    """
    spells = stage_spells(hist)
    status = opps.set_index("opportunity_id")["status"]
    closed_at = opps.set_index("opportunity_id")["closed_at"]
    spells["status"] = spells["opportunity_id"].map(status)
    won = spells[spells["status"] == "won"].copy()
    # the last stay of a won deal ends at its close (unless it is the closing stage itself)
    won["left_at"] = won["left_at"].fillna(won["opportunity_id"].map(closed_at))
    won = won[won["left_at"] > won["entered_at"]]
    won_days = (won["left_at"] - won["entered_at"]).dt.total_seconds() / 86400
    typical = won_days.groupby(won["stage"]).agg(["median", "size"])
    typical = typical[typical["size"] >= MIN_WON_SPELLS]["median"]

    current = spells[(spells["status"] == "open") & spells["left_at"].isna()].copy()
    end = exported_at + pd.Timedelta(days=1)
    current["days"] = (end - current["entered_at"]).dt.total_seconds() / 86400
    limit = current["stage"].map(typical) * STALE_FACTOR
    stale = current[(current["days"] > limit).fillna(False)]
    return _finding(
        "stale",
        f"open deals in their stage over {STALE_FACTOR:g}× as long as won deals typically stayed",
        stale["opportunity_id"],
    )


def close_date_pushes(hist: pd.DataFrame) -> pd.Series:
    """How many times each opportunity's expected close date moved later, by opportunity_id.

    An empty ``expected_close_date`` in a history row means unchanged.
    """
    h = hist[["opportunity_id", "changed_at", "expected_close_date"]].sort_values(
        ["opportunity_id", "changed_at"], kind="stable"
    )
    ecd = h.groupby("opportunity_id")["expected_close_date"].ffill()
    previous = ecd.groupby(h["opportunity_id"]).shift()
    later = (ecd > previous).fillna(False).astype(int)
    return later.groupby(h["opportunity_id"]).sum()


# --- data quality -------------------------------------------------------------------------


def data_quality(export: Export, exported_at: pd.Timestamp) -> list[Finding]:
    """Oddities that do not break the contract but deserve a look before training."""
    end = exported_at + pd.Timedelta(days=1)
    found: list[Finding | None] = []
    opps = export.opportunities
    if opps is not None:
        found.append(
            _finding(
                "created_after_export",
                "opportunities created after the export date",
                opps.loc[opps["created_at"] >= end, "opportunity_id"],
            )
        )
        if "closed_at" in opps.columns:
            late = (opps["closed_at"] >= end).fillna(False)
            found.append(
                _finding(
                    "closed_after_export",
                    "deals closed after the export date",
                    opps.loc[late, "opportunity_id"],
                )
            )
    hist = export.stage_history
    if hist is not None and opps is not None:
        created = hist["opportunity_id"].map(opps.set_index("opportunity_id")["created_at"])
        early = (hist["changed_at"].dt.normalize() < created).fillna(False)
        found.append(
            _finding(
                "history_before_created",
                "stage history rows dated before their opportunity was created",
                hist.loc[early, "opportunity_id"],
            )
        )
        found.append(
            _finding(
                "history_after_export",
                "stage history rows dated after the export date",
                hist.loc[hist["changed_at"] >= end, "opportunity_id"],
            )
        )
    acts = export.activities
    if acts is not None:
        ids = (
            acts["opportunity_id"]
            if "opportunity_id" in acts.columns
            else pd.Series(pd.NA, index=acts.index)
        )
        if "lead_id" in acts.columns:
            ids = ids.fillna(acts["lead_id"])
        found.append(
            _finding(
                "activity_after_export",
                "activities dated after the export date",
                ids[acts["occurred_at"] >= end],
            )
        )
    leads = export.leads
    if leads is not None and "sqo_at" in leads.columns:
        late = (leads["sqo_at"] >= end).fillna(False)
        found.append(
            _finding(
                "sqo_after_export",
                "leads that became SQOs after the export date",
                leads.loc[late, "lead_id"],
            )
        )
    return [f for f in found if f is not None]


# ----------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------


def _day(value: pd.Timestamp | None) -> str:
    return "—" if value is None or pd.isna(value) else value.date().isoformat()


def _pct(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.1%}"


def _not_available(console: Console, title: str, why: str) -> None:
    console.print(f"[bold]{title}[/]: [dim]not available ({why})[/]", highlight=False)


def _rates_table(title: str, df: pd.DataFrame, key: str, note: str) -> Table:
    table = Table(title=title, title_justify="left", caption=note, caption_justify="left")
    table.add_column(key)
    for name in ("decided leads", "SQOs", "SQO rate"):
        table.add_column(name, justify="right")
    for row in df.itertuples(index=False):
        d = row._asdict()
        table.add_row(str(d[key]), f"{d['decided']:,}", f"{d['sqos']:,}", _pct(d["sqo_rate"]))
    return table


def _findings_table(title: str, findings: list[Finding]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("issue")
    table.add_column("count", justify="right")
    table.add_column("e.g.")
    for f in findings:
        table.add_row(
            f.message,
            f"{f.count:,}",
            ", ".join(f.examples) + (" …" if f.count > len(f.examples) else ""),
        )
    return table


def render_validation(report: ValidationReport, console: Console) -> None:
    """Draw ``report`` as rich tables on ``console``."""
    where = report.path or "export"
    n_left_out = len(report.quarantine.drop_duplicates(["file", "line"]))
    if n_left_out:
        console.print(
            f"[bold green]✓[/] {where} follows the data contract; [bold yellow]{n_left_out:,} "
            f"row(s) quarantined[/] (left out of training and scoring, listed below)",
            highlight=False,
        )
    else:
        console.print(f"[bold green]✓[/] {where} follows the data contract", highlight=False)
    if report.dated:
        console.print(
            f"Export date: [bold]{_day(report.exported_at)}[/]   "
            f"data from {_day(report.date_start)} to {_day(report.date_end)}",
            highlight=False,
        )
    else:
        console.print(
            "Export date: [bold]no dates[/] — the files hold no dates, so their rows have no "
            "time order: no as-of day, and no split by time",
            highlight=False,
        )

    counts = Table(title="Rows", title_justify="left")
    counts.add_column("table")
    counts.add_column("what")
    counts.add_column("count", justify="right")
    for row in report.counts.itertuples(index=False):
        counts.add_row(str(row.table), str(row.what), f"{int(row.count):,}")
    console.print(counts)

    if report.win_rates is None:
        _not_available(console, "Win rate", report.unavailable.get("win_rates", "no data"))
    else:
        wins = Table(title="Win rate (won / closed) and days created → won", title_justify="left")
        for name, justify in (
            ("segment", "left"),
            ("closed", "right"),
            ("won", "right"),
            ("win rate", "right"),
            ("median days to win", "right"),
        ):
            wins.add_column(name, justify=justify)  # type: ignore[arg-type]
        for row in report.win_rates.itertuples(index=False):
            days = "—" if pd.isna(row.median_days_to_win) else f"{row.median_days_to_win:g}"
            wins.add_row(
                str(row.segment), f"{row.closed:,}", f"{row.won:,}", _pct(row.win_rate), days
            )
        console.print(wins)
        if "segments" in report.unavailable:
            _not_available(console, "Win rate by segment", report.unavailable["segments"])

    note = (
        f"SQO within {report.sqo_window_days} days of created_at; "
        f"{report.undecided_leads:,} lead(s) still undecided are left out"
    )
    for section, title, key in (
        ("sqo_by_source", "SQO rate by source", "source"),
        ("sqo_by_signal", "SQO rate by signal", "signal_type"),
        ("meeting_to_sqo", "Meeting → SQO rate", "meeting"),
    ):
        df = getattr(report, section)
        if df is None:
            _not_available(console, title, report.unavailable.get(section, "no data"))
        else:
            console.print(_rates_table(title, df, key, note))

    if "warnings" in report.unavailable:
        _not_available(console, "Pipeline warnings", report.unavailable["warnings"])
    elif report.warnings:
        console.print(_findings_table("Pipeline warnings", report.warnings))
    else:
        console.print("[bold]Pipeline warnings[/]: none", highlight=False)
    for key, title in (
        ("close_date_past", "Past close dates"),
        ("no_recent_activity", "Neglected deals"),
        ("no_next_step", "Missing next steps"),
        ("stale", "Stale deals"),
        ("close_date_pushed", "Pushed close dates"),
    ):
        if key in report.unavailable and "warnings" not in report.unavailable:
            _not_available(console, title, report.unavailable[key])

    if report.data_quality:
        console.print(_findings_table("Data quality (not contract errors)", report.data_quality))
    else:
        console.print("[bold]Data quality[/]: no issues found", highlight=False)
    if n_left_out:
        console.print(_quarantine_table(report.quarantine))


def _quarantine_table(quarantine: pd.DataFrame) -> Table:
    """The quarantined rows, each with its file, line and reason (the first ones if many)."""
    shown = quarantine.head(MAX_QUARANTINE_SHOWN)
    rest = len(quarantine) - len(shown)
    caption = (
        f"and {rest:,} more; `pipecast validate --quarantine FILE` writes them all"
        if rest > 0
        else "`pipecast validate --quarantine FILE` writes them to a CSV"
    )
    table = Table(
        title="Quarantined rows (left out: they contradict themselves; --strict refuses them)",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    for name, justify in (
        ("file", "left"),
        ("line", "right"),
        ("id", "left"),
        ("column", "left"),
        ("value", "left"),
        ("reason", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in shown.itertuples(index=False):
        table.add_row(
            str(row.file),
            str(row.line),
            "" if pd.isna(row.id) else str(row.id),
            str(row.column),
            "" if pd.isna(row.value) else str(row.value),
            str(row.reason),
        )
    return table
