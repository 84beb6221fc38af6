"""The pipeline as it stood at the end of a past day: cut exports, opportunity state, snapshots.

Time meaning, everywhere in this module: ``as_of`` is a day D and means the END of day D
(inclusive). Anything dated on or before D — timestamps up to 23:59:59 of D — is known; nothing
later is.

Honest handling of the current-value columns of ``opportunities`` (data-contract.md lists stage,
status, amount, closed_at and expected_close_date as changing; ``next_step`` changes too but is
in no history):

* With ``stage_history``, the stage, amount, expected close date and forecast category in force
  at D come from the history rows with ``changed_at`` on or before D (an empty cell in a history
  row means "unchanged", so values are carried forward).
* On or after the export date the ``opportunities`` row *is* the state, so its current values
  are used for deals open then.
* Before the export date, a value that no history row dates is **unknown** (missing), never the
  current value: without ``stage_history`` a deal's stage and amount at a past D could have been
  anything, and for deals closed since, the current row shows the outcome (``Closed Won``, the
  final amount). Only whether the deal was open (from ``created_at`` / ``closed_at``) and the
  fields that do not change (segment, source, owner, …) are known then.
* ``next_step`` and a lead's ``last_contacted_at`` are current values with no history: a cut
  export before the export date drops those columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from features._timeline import EventIndex, as_day, end_bound, group_codes, member
from features.io import Export

log = logging.getLogger(__name__)

#: fields of a deal that change over its life and that stage_history records
STATE_FIELDS = ("stage", "amount", "expected_close_date", "forecast_category")
#: columns of the opportunities row that change over a deal's life (or are its outcome)
_CHANGING = {
    "opportunity_id",
    "stage",
    "status",
    "amount",
    "closed_at",
    "expected_close_date",
    "next_step",
}
#: current-value columns with no history: known only on (or after) the export date
CURRENT_ONLY_OPPORTUNITY_COLUMNS = ("next_step",)
CURRENT_ONLY_LEAD_COLUMNS = ("last_contacted_at",)


# ----------------------------------------------------------------------------------------
# stage history, prepared once for many as-of look-ups
# ----------------------------------------------------------------------------------------


def prepared_history(export: Export, ids: Any = None) -> pd.DataFrame | None:
    """``stage_history`` sorted by deal and time, with values carried forward and running counts.

    Every derived column of a row depends only on that row and the deal's earlier rows, so the
    row in force at D carries everything known at D about the deal's path:
    ``stage_entered_at`` (start of the current run of the stage), ``stage_moves``,
    ``close_date_pushes`` / ``close_date_push_days`` (increases of the expected close date),
    ``initial_amount`` (the first row's amount) and ``prev_stage`` (the stage left, on rows that
    change stage; used to count regressions once the funnel order is known).

    ``ids`` limits the work to those deals (derived columns are per deal, so they do not
    change). Returns ``None`` when the export has no stage history.
    """
    hist = export.stage_history
    opps = export.opportunities
    if hist is None or opps is None:
        return None
    cols = ["opportunity_id", "changed_at", "stage"] + [
        c for c in ("amount", "expected_close_date", "forecast_category") if c in hist.columns
    ]
    wanted = opps["opportunity_id"] if ids is None else pd.Series(pd.unique(pd.Series(ids)))
    keep = member(hist["opportunity_id"], wanted) & hist["changed_at"].notna().to_numpy()
    if ids is not None:
        keep &= member(hist["opportunity_id"], opps["opportunity_id"])
    h = hist.loc[keep, cols]
    h = h.sort_values(["opportunity_id", "changed_at"], kind="stable").reset_index(drop=True)
    ids = h["opportunity_id"]
    first = (ids != ids.shift()).to_numpy(dtype=bool, na_value=True)
    first[:1] = True
    deal = (np.cumsum(first) - 1).astype(np.int64)  # deal number, increasing down the sorted frame
    out = pd.DataFrame({"opportunity_id": ids, "changed_at": h["changed_at"], "stage": h["stage"]})
    grouped_key = pd.Series(deal)
    for col in ("amount", "expected_close_date", "forecast_category"):
        if col in h.columns:
            # an empty cell means "unchanged": carry the value forward within the deal
            out[col] = h[col].groupby(grouped_key.to_numpy()).ffill()
    if "amount" in h.columns:
        out["initial_amount"] = h["amount"].to_numpy()[np.flatnonzero(first)][deal]
    stage = h["stage"].astype("string")
    prev = stage.shift()
    new_run = first | (stage != prev).to_numpy(dtype=bool, na_value=True)
    move = new_run & ~first
    out["stage_entered_at"] = h["changed_at"].where(new_run).ffill()
    out["stage_moves"] = cumsum_within(move.astype(np.float64), deal)
    out["prev_stage"] = prev.where(move)
    if "expected_close_date" in out.columns:
        ecd = out["expected_close_date"]
        prev_ecd = ecd.shift()
        delta = (ecd - prev_ecd).dt.days.to_numpy(dtype=np.float64, na_value=np.nan).copy()
        delta[first] = np.nan
        pushed = np.nan_to_num(delta, nan=0.0) > 0
        out["close_date_pushes"] = cumsum_within(pushed.astype(np.float64), deal)
        out["close_date_push_days"] = cumsum_within(np.where(pushed, delta, 0.0), deal)
    return out


def cumsum_within(values: np.ndarray, deal: np.ndarray) -> np.ndarray:
    """Running sum restarting at each deal (rows sorted by deal)."""
    total = np.cumsum(values)
    starts = np.flatnonzero(np.r_[True, deal[1:] != deal[:-1]])
    before = np.r_[0.0, total][starts]  # sum of everything before each deal's first row
    lengths = np.diff(np.r_[starts, len(values)])
    return total - np.repeat(before, lengths)


def history_rows_in_force(history: pd.DataFrame | None, ids: Any, days: Any) -> np.ndarray:
    """For each (deal, day), the row of ``history`` in force at the end of that day, or -1."""
    n = len(ids)
    if history is None or not len(history):
        return np.full(n, -1, dtype=np.int64)
    ev, q = group_codes(history["opportunity_id"], ids)
    index = EventIndex(ev, history["changed_at"].to_numpy())
    bounds = np.asarray(pd.to_datetime(pd.Series(days)), dtype="datetime64[ns]") + np.timedelta64(
        1, "D"
    )
    return index.last_before(q, bounds)


def take(values: pd.Series, rows: np.ndarray) -> pd.Series:
    """``values`` at positions ``rows`` (-1 → missing), keeping the dtype's missing value."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(values):
        return pd.Series(index=pd.RangeIndex(len(rows)), dtype=values.dtype)
    valid = rows >= 0
    picked = values.iloc[np.where(valid, rows, 0)].reset_index(drop=True)
    return picked.where(pd.Series(valid))


# ----------------------------------------------------------------------------------------
# state of deals at given days
# ----------------------------------------------------------------------------------------


def _exported_at(export: Export) -> pd.Timestamp:
    return as_day(export.exported_at, "the export date")


def state_frame(
    export: Export,
    ids: pd.Series,
    days: pd.Series,
    *,
    history: pd.DataFrame | None = None,
    history_rows: np.ndarray | None = None,
    exported_at: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Stage, amount, expected close date and forecast category of deals at the end of days.

    Row i describes deal ``ids[i]`` at the end of ``days[i]`` (the deal is assumed open then).
    Values come from the export's current row on or after the export date, else from the
    history row in force (missing when no history row dates the value); see the module notes.
    """
    opps = export.opportunities
    assert opps is not None
    ids = pd.Series(ids).reset_index(drop=True)
    days = pd.to_datetime(pd.Series(days)).reset_index(drop=True)
    if history is None:
        history = prepared_history(export, ids)
    if history_rows is None:
        history_rows = history_rows_in_force(history, ids, days)
    exported = exported_at if exported_at is not None else _exported_at(export)
    current_ok = (days >= exported).to_numpy(dtype=bool)
    pos = pd.Index(opps["opportunity_id"]).get_indexer(ids.to_numpy())
    out = pd.DataFrame(index=pd.RangeIndex(len(ids)))
    dtypes = {
        "stage": "string",
        "amount": "float64",
        "expected_close_date": "datetime64[ns]",
        "forecast_category": "string",
    }
    for col in STATE_FIELDS:
        if history is not None and col in history.columns:
            value = take(history[col], history_rows)
        else:
            value = pd.Series(index=pd.RangeIndex(len(ids)), dtype=dtypes[col])
        if col in opps.columns and current_ok.any():
            current = take(opps[col], np.where(current_ok, pos, -1))
            value = current.where(pd.Series(current_ok), value)
        out[col] = value.astype(dtypes[col])
    return out


def state_as_of(export: Export, as_of: Any) -> pd.DataFrame:
    """The opportunities open at the end of day ``as_of``, with the values in force then.

    Parameters
    ----------
    export
        A CRM export.
    as_of
        A day D; the state is the one at the END of D (events dated D included).

    Returns
    -------
    DataFrame
        Indexed by ``opportunity_id`` (deals open at D: created on or before D and not closed on
        or before D), with ``stage``, ``amount``, ``expected_close_date`` and
        ``forecast_category``, then the fields of the opportunities row that do not change
        (``account_id``, ``created_at``, ``segment``, ``owner_id``, …; not ``next_step``). From ``stage_history`` when there is one; without it, these are
        known only on or after the export date (current values) and are missing for a past D —
        a deal's stage or amount could have changed since, and the current row of a deal closed
        since shows its outcome.
    """
    day = as_day(as_of)
    snaps = opportunity_snapshots(export, [day])
    state = state_frame(export, snaps["opportunity_id"], snaps["as_of"])
    opps = export.opportunities
    if opps is not None and len(state):
        pos = pd.Index(opps["opportunity_id"]).get_indexer(snaps["opportunity_id"].to_numpy())
        for name in opps.columns:
            if name not in _CHANGING and name not in state.columns:
                state[name] = take(opps[name], pos).to_numpy()
                state[name] = state[name].astype(opps[name].dtype)
    state.index = pd.Index(
        snaps["opportunity_id"].to_numpy(), name="opportunity_id", dtype="string"
    )
    return state


# ----------------------------------------------------------------------------------------
# snapshots
# ----------------------------------------------------------------------------------------


def snapshot_dates(
    export: Export,
    *,
    start: Any = None,
    end: Any = None,
    freq: str = "W-SUN",
) -> pd.DatetimeIndex:
    """Weekly as-of days (Sundays by default) between ``start`` and ``end``, both inclusive.

    ``start`` defaults to the first opportunity's ``created_at`` and ``end`` to the export date.
    Each date means the end of that day.
    """
    opps = export.opportunities
    if start is None:
        if opps is None or not len(opps) or opps["created_at"].isna().all():
            return pd.DatetimeIndex([], dtype="datetime64[ns]")
        start = opps["created_at"].min()
    end = _exported_at(export) if end is None else end
    first, last = as_day(start, "start"), as_day(end, "end")
    if last < first:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    return pd.date_range(first, last, freq=freq).as_unit("ns")


def opportunity_snapshots(export: Export, dates: Iterable[Any]) -> pd.DataFrame:
    """Every (opportunity, as-of day) with the deal open at the end of that day.

    A deal is open at the end of D when ``created_at`` is on or before D and it is not closed
    on or before D. Rows come date by date (dates sorted, duplicates dropped), deals in the
    order of the opportunities table.

    Returns
    -------
    DataFrame
        ``opportunity_id`` (string) and ``as_of`` (``datetime64[ns]``, a day).
    """
    opps = export.opportunities
    days = sorted({as_day(d) for d in dates})
    if opps is None or not days:
        return pd.DataFrame(
            {
                "opportunity_id": pd.Series([], dtype="string"),
                "as_of": pd.Series([], dtype="datetime64[ns]"),
            }
        )
    created = opps["created_at"].to_numpy(dtype="datetime64[ns]")
    closed = (
        opps["closed_at"].to_numpy(dtype="datetime64[ns]")
        if "closed_at" in opps.columns
        else np.full(len(opps), np.datetime64("NaT", "ns"), dtype="datetime64[ns]")
    )
    closed_nat = np.isnat(closed)
    rows: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    for day in days:
        bound = np.datetime64(end_bound(day).to_datetime64(), "ns")
        is_open = (created < bound) & (closed_nat | (closed >= bound))
        idx = np.flatnonzero(is_open)
        rows.append(idx)
        stamps.append(np.full(len(idx), np.datetime64(day.to_datetime64(), "ns")))
    all_rows = np.concatenate(rows)
    return pd.DataFrame(
        {
            "opportunity_id": opps["opportunity_id"]
            .iloc[all_rows]
            .astype("string")
            .reset_index(drop=True),
            "as_of": pd.Series(np.concatenate(stamps), dtype="datetime64[ns]"),
        }
    )


# ----------------------------------------------------------------------------------------
# the export as it would have been exported at the end of a past day
# ----------------------------------------------------------------------------------------


def cut_export(export: Export, as_of: Any) -> Export:
    """The export as it would have been exported at the end of day ``as_of``.

    Following the point-in-time rule of data-contract.md, for D = ``as_of``:

    * opportunities created after D are dropped; those closed after D are shown open (status
      ``open``, ``closed_at`` empty); every deal open at D shows the stage, amount and expected
      close date in force at D (from ``stage_history``; missing where no history row dates
      them, see the module notes); ``next_step`` (current-only) is dropped;
    * history rows and activities dated after D are dropped, as are activities of dropped deals
      that belong to no lead;
    * leads created after D are dropped; ``sqo_at`` and ``meeting_at`` after D are emptied;
      ``is_sqo`` is emptied where the label was not yet decided at D; ``last_contacted_at``
      (current-only) is dropped;
    * ``config.exported_at`` becomes D.

    On or after the export date nothing is known that is not in the export already: only the
    export date changes. Cutting twice at the same day gives the same export.
    """
    day = as_day(as_of)
    bound = end_bound(day)
    exported = _exported_at(export)
    past = day < exported
    opps = export.opportunities
    history = export.stage_history
    new_opps = None
    if opps is not None:
        kept = opps.loc[(opps["created_at"] < bound).to_numpy(dtype=bool)].copy()
        if past:
            closed = (
                kept["closed_at"]
                if "closed_at" in kept.columns
                else pd.Series(pd.NaT, index=kept.index)
            )
            open_at_d = (closed.isna() | (closed >= bound)).to_numpy(dtype=bool)
            reopened = open_at_d & closed.notna().to_numpy(dtype=bool)
            if reopened.any():
                kept.loc[reopened, "status"] = "open"
                kept.loc[reopened, "closed_at"] = pd.NaT
            if open_at_d.any():
                ids = kept.loc[open_at_d, "opportunity_id"].reset_index(drop=True)
                state = state_frame(
                    export,
                    ids,
                    pd.Series([day] * len(ids), dtype="datetime64[ns]"),
                    exported_at=exported,
                )
                for col in ("stage", "amount", "expected_close_date"):
                    if col in kept.columns:
                        values = state[col].astype(kept[col].dtype)
                        kept.loc[open_at_d, col] = values.to_numpy()
            kept = kept.drop(
                columns=[c for c in CURRENT_ONLY_OPPORTUNITY_COLUMNS if c in kept.columns]
            )
        new_opps = kept.reset_index(drop=True)
    new_history = None
    if history is not None:
        keep = (history["changed_at"] < bound).to_numpy(dtype=bool)
        if new_opps is not None:
            keep = keep & member(history["opportunity_id"], new_opps["opportunity_id"])
        # copy-on-write: an untouched table can be shared with the full export
        new_history = history if keep.all() else history.loc[keep].reset_index(drop=True)
    new_acts = None
    acts = export.activities
    if acts is not None:
        keep = (acts["occurred_at"] < bound).to_numpy(dtype=bool)
        a = acts if keep.all() else acts.loc[keep].reset_index(drop=True)
        if "opportunity_id" in a.columns and new_opps is not None:
            linked = a["opportunity_id"].notna().to_numpy(dtype=bool)
            unknown = linked & ~member(a["opportunity_id"], new_opps["opportunity_id"])
            if unknown.any():
                a = a.copy(deep=False)
                a.loc[unknown, "opportunity_id"] = pd.NA
                lead = (
                    a["lead_id"].isna().to_numpy(dtype=bool)
                    if "lead_id" in a.columns
                    else np.ones(len(a), dtype=bool)
                )
                a = a.loc[~(unknown & lead)].reset_index(drop=True)
        new_acts = a
    new_leads = None
    leads = export.leads
    if leads is not None:
        from features.labels import lead_decided_at  # labels own the label rule

        keep = np.ones(len(leads), dtype=bool)
        if "created_at" in leads.columns:
            keep = ~(leads["created_at"] >= bound).fillna(False).to_numpy(dtype=bool)
        lds = leads.copy(deep=False)
        if past and "is_sqo" in lds.columns:
            decided_at = lead_decided_at(leads, export.config.sqo_window_days)
            # leads with no dates at all cannot be placed in time: their label stays as given
            dated = decided_at.notna() | (
                leads["created_at"].notna() if "created_at" in leads.columns else False
            )
            undecided = dated & ~(decided_at < bound).fillna(False)
            lds.loc[undecided.to_numpy(dtype=bool), "is_sqo"] = pd.NA
        for col in ("sqo_at", "meeting_at", "last_contacted_at"):
            if col in lds.columns:
                later = (lds[col] >= bound).fillna(False).to_numpy(dtype=bool)
                if later.any():
                    lds.loc[later, col] = pd.NaT
        if past:
            lds = lds.drop(columns=[c for c in CURRENT_ONLY_LEAD_COLUMNS if c in lds.columns])
        new_leads = lds.loc[keep].reset_index(drop=True)
    config = replace(export.config, exported_at=day)
    return Export(
        opportunities=new_opps,
        stage_history=new_history,
        activities=new_acts,
        leads=new_leads,
        config=config,
        path=export.path,
    )
