"""Point-in-time features of open opportunities, for the close-probability model.

Time meaning: ``as_of`` is a day D and means the END of day D (inclusive). A feature at D uses
only what was recorded on or before D: ``build`` first cuts the export at D
(:func:`features.snapshots.cut_export`), and ``build_training_set`` computes the same values
for many days at once with as-of look-ups that see only rows dated on or before each day.

Features (one row per deal open at the end of D):

=============================  ============================================================
age_days                       days since ``created_at``
days_in_stage                  days since the current stage was entered (stage_history)
stage, stage_order             stage in force (categorical) and its index in the funnel order
stage_moves, stage_regressions stage changes so far, and those to an earlier funnel stage
amount                         amount in force
amount_change(_ratio)          amount minus / over the amount at creation (stage_history)
days_to_expected_close         expected close date minus D (negative = past due)
close_date_pushes(_days)       times the expected close date moved later, and total days
forecast_category              rep's category in force (stage_history, when recorded)
activities_7d / _30d           activities in the 7 / 30 days ending with D (activities file)
activities_total               activities since the deal was created, up to the end of D
activities_per_week            activities_total over the deal's age in weeks (at least one)
days_since_last_activity       NaN when the deal has had none
inbound_30d, outbound_30d,     by direction (when the activities file has ``direction``)
inbound_share_30d
meetings_30d                   activities of type ``meeting``
days_left_in_quarter           to the end of the fiscal quarter containing D
segment, source, …             fields that do not change over a deal's life (categorical)
owner_win_rate                 the AE's win rate on deals closed on or before D, shrunk
owner_closed_deals             toward the overall rate: (wins + k·prior) / (closed + k)
sdr_win_rate, sdr_closed_deals the same for the SDR who sourced the deal
<dataset.yaml extras>          columns declared under ``features.opportunities``
has_next_step                  only when D is on or after the export date (see below)
=============================  ============================================================

A feature whose input the export does not have (no stage_history, no activities file, no
``direction`` column, …) is absent, never filled with zeros; a value unknown for one deal is
NaN. ``next_step`` is a current-value column with no history: for a deal closed since D its
text is today's, not D's. It is therefore used only when D is on or after the export date (when
scoring the live pipeline); for a past D the column ``has_next_step`` is absent, and it is
always the LAST column so that a stacked training set only gains it at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from features._timeline import (
    DAY,
    EventIndex,
    as_day,
    count_before_all,
    days_between,
    group_codes,
    member,
    shrunk_rate,
)
from features.errors import InputError
from features.io import Export
from features.periods import quarter_end_days
from features.snapshots import (
    CURRENT_ONLY_OPPORTUNITY_COLUMNS,
    cumsum_within,
    cut_export,
    history_rows_in_force,
    opportunity_snapshots,
    prepared_history,
    state_frame,
    take,
)

log = logging.getLogger(__name__)

#: fields of the opportunity row that do not change over a deal's life, used as categories
STATIC_CATEGORIES = ("segment", "source", "signal_type", "industry", "region", "product")
#: the categorical feature columns (kept as strings; the model layer encodes them). Extra
#: text columns declared in dataset.yaml are categorical too: see :func:`categorical_columns`.
CATEGORICAL: list[str] = ["stage", "forecast_category", *STATIC_CATEGORIES]
#: prior strength k of the shrunk win rates: an owner with k closed deals is half-way to own rate
OWNER_PRIOR_STRENGTH = 10.0
#: columns of the opportunities file that are not model inputs (ids, outcomes, changing values)
_NOT_FEATURES = {
    "opportunity_id",
    "account_id",
    "created_at",
    "stage",
    "status",
    "closed_at",
    "amount",
    "expected_close_date",
    "owner_id",
    "sdr_id",
    "lead_id",
    "next_step",
}


def categorical_columns(table: pd.DataFrame) -> list[str]:
    """The categorical columns of a feature table: :data:`CATEGORICAL` plus text extras."""
    return [
        c
        for c in table.columns
        if c in CATEGORICAL
        or (c not in ("opportunity_id", "as_of") and pd.api.types.is_string_dtype(table[c]))
    ]


def build(export: Export, *, as_of: Any) -> pd.DataFrame:
    """Features of the opportunities open at the end of day ``as_of``.

    Parameters
    ----------
    export
        A CRM export (it may extend past ``as_of``: later rows are dropped first).
    as_of
        A day D; features describe each deal at the END of D, from what was recorded on or
        before D only.

    Returns
    -------
    DataFrame
        Indexed by ``opportunity_id`` (deals created on or before D and not closed on or before
        D, in the order of the opportunities file). Numeric features are float64; the columns
        of :func:`categorical_columns` are strings.
    """
    day = as_day(as_of)
    _require_opportunities(export)
    known = cut_export(export, day)
    snaps = opportunity_snapshots(known, [day])
    table = _features(known, snaps)
    table = table.drop(columns="as_of").set_index("opportunity_id")
    return table


def build_training_set(export: Export, *, dates: Iterable[Any]) -> pd.DataFrame:
    """Features of every deal open at the end of each of ``dates``, in one batch.

    Equal to stacking ``build(export, as_of=d).reset_index()`` (with an ``as_of`` column after
    ``opportunity_id``) for each day in sorted order, but computed with vectorised as-of
    look-ups rather than one cut export per day.

    Returns
    -------
    DataFrame
        ``opportunity_id``, ``as_of`` (the day; features are as of its end) and the feature
        columns of :func:`build`, on a fresh RangeIndex.
    """
    _require_opportunities(export)
    snaps = opportunity_snapshots(export, dates)
    return _features(export, snaps)


def _require_opportunities(export: Export) -> None:
    if export.opportunities is None:
        raise InputError(
            "Opportunity features need the export's opportunities: add opportunities.csv "
            "(or .parquet) to the export folder."
        )


# ----------------------------------------------------------------------------------------
# the batch core: one row per (deal, day) with the deal open at the end of the day
# ----------------------------------------------------------------------------------------


def _features(export: Export, snaps: pd.DataFrame) -> pd.DataFrame:
    opps = export.opportunities
    assert opps is not None
    exported = as_day(export.exported_at, "the export date")
    ids = snaps["opportunity_id"].reset_index(drop=True)
    days = pd.to_datetime(snaps["as_of"]).reset_index(drop=True).astype("datetime64[ns]")
    bounds = days + DAY
    n = len(ids)
    pos = pd.Index(opps["opportunity_id"]).get_indexer(ids.to_numpy())
    history = prepared_history(export, ids)
    rows = history_rows_in_force(history, ids, days)
    state = state_frame(export, ids, days, history=history, history_rows=rows, exported_at=exported)

    cols: dict[str, Any] = {"opportunity_id": ids.astype("string"), "as_of": days}
    cols["age_days"] = days_between(days, take(opps["created_at"], pos))
    if history is not None:
        cols["days_in_stage"] = days_between(days, take(history["stage_entered_at"], rows))
    cols["stage"] = state["stage"].astype("string")
    cols["stage_order"] = np.full(n, np.nan)
    if history is not None:
        cols["stage_moves"] = take(history["stage_moves"], rows).to_numpy(dtype=np.float64)
        cols["stage_regressions"] = np.full(n, np.nan)
    _stage_order_features(export, history, rows, days, cols)
    cols["amount"] = state["amount"].to_numpy(dtype=np.float64, na_value=np.nan)
    if history is not None and "initial_amount" in history.columns:
        initial = take(history["initial_amount"], rows).to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = cols["amount"] / initial
        cols["amount_change"] = cols["amount"] - initial
        cols["amount_change_ratio"] = np.where(initial > 0, ratio, np.nan)
    has_ecd = "expected_close_date" in opps.columns or (
        history is not None and "expected_close_date" in history.columns
    )
    if has_ecd:
        cols["days_to_expected_close"] = days_between(state["expected_close_date"], days)
    if history is not None and "close_date_pushes" in history.columns:
        cols["close_date_pushes"] = take(history["close_date_pushes"], rows).to_numpy(
            dtype=np.float64
        )
        cols["close_date_push_days"] = take(history["close_date_push_days"], rows).to_numpy(
            dtype=np.float64
        )
    if history is not None and "forecast_category" in history.columns:
        cols["forecast_category"] = state["forecast_category"].astype("string")
    cols.update(_activity_features(export, ids, days, bounds))
    if "activities_total" in cols:
        # the deal's lifetime pace: steadier evidence of engagement than the last 30 days
        weeks = (np.asarray(cols["age_days"], dtype=np.float64) + 1.0) / 7.0
        cols["activities_per_week"] = cols["activities_total"] / np.maximum(weeks, 1.0)
    q_end = quarter_end_days(days, export.config.fiscal_year_start_month)
    cols["days_left_in_quarter"] = days_between(q_end, days)
    for name in STATIC_CATEGORIES:
        if name in opps.columns:
            cols[name] = take(opps[name].astype("string"), pos)
    for role, column in (("owner", "owner_id"), ("sdr", "sdr_id")):
        if column in opps.columns:
            rate, closed = _win_rates(opps, column, ids, pos, bounds)
            cols[f"{role}_win_rate"] = rate
            cols[f"{role}_closed_deals"] = closed
    for name in export.config.features.get("opportunities", []):
        if name in opps.columns and name not in _NOT_FEATURES and name not in cols:
            values = take(opps[name], pos)
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                cols[name] = values.to_numpy(dtype=np.float64, na_value=np.nan)
            elif pd.api.types.is_bool_dtype(values):
                cols[name] = values.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                cols[name] = values.astype("string")
    current = (days >= exported).to_numpy(dtype=bool)
    for name in CURRENT_ONLY_OPPORTUNITY_COLUMNS:
        if name in opps.columns and current.any():
            text = take(opps[name].astype("string"), pos).str.strip()
            has = (text.notna() & (text != "")).to_numpy(dtype=bool, na_value=False)
            cols["has_next_step"] = np.where(current, has.astype(np.float64), np.nan)
    out = pd.DataFrame(
        {k: (v.reset_index(drop=True) if isinstance(v, pd.Series) else v) for k, v in cols.items()}
    )
    for name in out.columns:
        if name in ("opportunity_id", "as_of"):
            continue
        if not pd.api.types.is_string_dtype(out[name]):
            out[name] = out[name].astype("float64")
    return out


def stage_order_at(export: Export, day: pd.Timestamp) -> list[str]:
    """The funnel order of open stages as known at the end of ``day``.

    Declared stages (dataset.yaml) are fixed; an inferred order is inferred from the export cut
    at ``day``, so that it uses no later history.
    """
    declared = [s.name for s in export.config.stages if not (s.won or s.lost)]
    if declared:
        return declared
    light = export.replace(activities=None, leads=None)
    return cut_export(light, day).stage_order()


def _stage_order_features(
    export: Export,
    history: pd.DataFrame | None,
    rows: np.ndarray,
    days: pd.Series,
    cols: dict[str, Any],
) -> None:
    """``stage_order`` and ``stage_regressions`` under the funnel order known at each day."""
    unique_days = pd.unique(days.to_numpy())
    by_order: dict[tuple[str, ...], list[Any]] = {}
    for day in unique_days:
        order = tuple(stage_order_at(export, pd.Timestamp(day)))
        by_order.setdefault(order, []).append(day)
    stage = cols["stage"]
    day_values = days.to_numpy()
    if history is not None and len(history):
        ids = history["opportunity_id"].to_numpy()
        deal = np.cumsum(np.r_[True, ids[1:] != ids[:-1]])
    for order, order_days in by_order.items():
        mask = np.isin(day_values, np.array(order_days, dtype="datetime64[ns]"))
        rank = {name: float(i) for i, name in enumerate(order)}
        ranks = stage[mask].map(rank).astype("float64").to_numpy() if mask.any() else np.array([])
        cols["stage_order"][mask] = ranks
        if history is not None and len(history):
            # a regression is a stage change to an earlier stage of the funnel
            current = history["stage"].map(rank).astype("float64").to_numpy()
            previous = history["prev_stage"].map(rank).astype("float64").to_numpy()
            back = np.nan_to_num(current < previous, nan=0.0).astype(np.float64)
            running = pd.Series(cumsum_within(back, deal))
            picked = take(running, np.where(mask, rows, -1)).to_numpy(dtype=np.float64)
            cols["stage_regressions"][mask] = picked[mask]


def _activity_features(
    export: Export, ids: pd.Series, days: pd.Series, bounds: pd.Series
) -> dict[str, np.ndarray]:
    acts = export.activities
    if acts is None or "opportunity_id" not in acts.columns:
        return {}
    # only the activities of the deals asked about (few, for a single day) need sorting
    acts = acts.loc[member(acts["opportunity_id"], pd.Series(pd.unique(ids)))]
    ev, q = group_codes(acts["opportunity_id"], ids)
    times = acts["occurred_at"].to_numpy(dtype="datetime64[ns]")
    b = bounds.to_numpy(dtype="datetime64[ns]")
    b7 = b - np.timedelta64(7, "D")
    b30 = b - np.timedelta64(30, "D")
    everything = EventIndex(ev, times)
    out: dict[str, np.ndarray] = {}
    upto = everything.count_before(q, b)
    out["activities_total"] = upto.astype(np.float64)
    out["activities_7d"] = (upto - everything.count_before(q, b7)).astype(np.float64)
    out["activities_30d"] = (upto - everything.count_before(q, b30)).astype(np.float64)
    last = everything.last_before(q, b)
    last_time = np.where(
        last >= 0,
        times[np.maximum(last, 0)] if len(times) else np.datetime64("NaT", "ns"),
        np.datetime64("NaT", "ns"),
    )
    out["days_since_last_activity"] = days_between(
        days, pd.Series(last_time, dtype="datetime64[ns]")
    )
    if "direction" in acts.columns:
        direction = (
            acts["direction"].astype("string").str.lower().to_numpy(dtype=object, na_value="")
        )
        for name in ("inbound", "outbound"):
            sub = direction == name
            index = EventIndex(np.where(sub, ev, -1), times)
            out[f"{name}_30d"] = (index.count_before(q, b) - index.count_before(q, b30)).astype(
                np.float64
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            share = out["inbound_30d"] / (out["inbound_30d"] + out["outbound_30d"])
        out["inbound_share_30d"] = share
    kind = acts["type"].astype("string").str.lower().to_numpy(dtype=object, na_value="")
    meetings = EventIndex(np.where(kind == "meeting", ev, -1), times)
    out["meetings_30d"] = (meetings.count_before(q, b) - meetings.count_before(q, b30)).astype(
        np.float64
    )
    return out


def _win_rates(
    opps: pd.DataFrame, column: str, ids: pd.Series, pos: np.ndarray, bounds: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Shrunk win rate and number of closed deals of each row's owner (or SDR) as of its day.

    Only deals closed on or before the day count (their outcome was known then). The prior is
    the overall win rate of all deals closed by then; NaN when none had closed, and for rows
    with no owner.
    """
    if "closed_at" not in opps.columns:
        nan = np.full(len(ids), np.nan)
        return nan, nan.copy()
    status = opps["status"].astype("string").to_numpy(dtype=object, na_value="")
    closed_at = opps["closed_at"].to_numpy(dtype="datetime64[ns]")
    is_closed = np.isin(status, ["won", "lost"]) & ~np.isnat(closed_at)
    is_won = is_closed & (status == "won")
    owner_of_row = take(opps[column].astype("string"), pos)
    ev, q = group_codes(opps[column].astype("string"), owner_of_row)
    b = bounds.to_numpy(dtype="datetime64[ns]")
    closed_index = EventIndex(np.where(is_closed, ev, -1), closed_at)
    won_index = EventIndex(np.where(is_won, ev, -1), closed_at)
    n_closed = closed_index.count_before(q, b).astype(np.float64)
    n_won = won_index.count_before(q, b).astype(np.float64)
    all_closed = count_before_all(
        np.where(is_closed, closed_at, np.datetime64("NaT", "ns")), b
    ).astype(np.float64)
    all_won = count_before_all(np.where(is_won, closed_at, np.datetime64("NaT", "ns")), b).astype(
        np.float64
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        prior = np.where(all_closed > 0, all_won / all_closed, np.nan)
    rate = shrunk_rate(n_won, n_closed, prior, OWNER_PRIOR_STRENGTH)
    missing = owner_of_row.isna().to_numpy(dtype=bool)
    rate[missing] = np.nan
    n_closed[missing] = np.nan
    return rate, n_closed
