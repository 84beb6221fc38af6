"""The weekly forecast of a period, as a plain dict (no FastAPI here): ``pipecast forecast``, ``POST /forecast``.

For the deals open at the end of day ``as_of``: their p_win and p_win_in_period from the champion
close-probability model (:mod:`serving.scoring`), the distribution of the period's bookings with
what is already won and what new deals will add (:mod:`models.forecast`), the CRM's
stage-weighted number for the same deals, quota odds and coverage, a roll-up by any column, one
line per deal with its red flags, and with ``compare_to`` what changed since an earlier day.

Everything is point in time: the export is read as it stood at the end of ``as_of`` (later
history, activities and outcomes are not seen), except the deal's ``next_step``, which has no
history and is used only when ``as_of`` is the export date.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from features import opportunity as opportunity_features
from features.errors import InputError
from features.io import Export, read_export
from features.periods import Period, parse_date
from features.snapshots import cut_export, state_as_of
from models import CLOSE_MODEL_NAME
from models.forecast import (
    BEST_CASE_THRESHOLD,
    COMMIT_THRESHOLD,
    MAX_GROUPS,
    NEW_BUSINESS_GROUP,
    UNASSIGNED_GROUP,
    BookingsForecast,
    ModelUncertainty,
    NewBusiness,
    estimate_model_uncertainty,
    estimate_new_business,
    forecast_bookings,
    in_period,
    model_predictor,
    probability_category,
    stage_probabilities,
    won_in_period,
)
from models.registry import load_champion
from pipecast.config import Settings
from serving.scoring import (
    NEGLECT_DAYS,
    close_probabilities,
    period_days,
    pipeline_day_and_period,
    score_opportunities,
    stale_limits,
)

log = logging.getLogger(__name__)

#: a deal's p_win_in_period moving by this many points or more since --compare-to is a change
CHANGE_POINTS = 10.0
#: the probability category column a roll-up can use besides the opportunities' own columns
CATEGORY_COLUMN = "category"
#: opportunity columns that are not roll-up keys (ids, dates, numbers, free text, outcome)
_NOT_GROUPS = {
    "opportunity_id",
    "created_at",
    "closed_at",
    "amount",
    "expected_close_date",
    "status",
    "next_step",
}
#: columns of a per-deal line (``--out``), in order
DEAL_COLUMNS = [
    "opportunity_id",
    "p_win",
    "p_win_in_period",
    "expected_value",
    "amount",
    "stage",
    "stage_probability",
    "expected_close_date",
    "category",
    "forecast_category",
    "flags",
    "top_factors",
    "change",
    "model_version",
]


@dataclass
class ForecastResult:
    """A forecast: the response document and the per-deal lines as a table."""

    response: dict[str, Any]
    deals: pd.DataFrame
    changes: pd.DataFrame | None = None


def group_columns(export: Export) -> list[str]:
    """Columns a forecast can be rolled up by: the opportunities' text columns, and category."""
    opps = export.opportunities
    cols = [] if opps is None else [c for c in opps.columns if c not in _NOT_GROUPS]
    if "stage" not in cols:
        cols.append("stage")
    if export.stage_history is not None and "forecast_category" in export.stage_history.columns:
        cols.append("forecast_category")
    return [*dict.fromkeys([*cols, CATEGORY_COLUMN])]


def check_forecast_options(
    export: Export,
    *,
    as_of: str | None,
    period: str | None,
    quota: float | None,
    group_by: str | None,
    compare_to: str | None,
    commit: float,
    best_case: float,
    neglect_days: int = NEGLECT_DAYS,
    change_points: float = CHANGE_POINTS,
) -> tuple[pd.Timestamp, Period, pd.Timestamp | None]:
    """The as-of day, period and compare-to day, or ``InputError`` saying what to fix."""
    if neglect_days < 1:
        raise InputError(f"--neglect-days {neglect_days}: give a number of days ≥ 1 (default 30).")
    if not 0 < change_points <= 100:
        raise InputError(
            f"--change-points {change_points:g}: give percentage points in (0, 100] (default 10)."
        )
    if period is None or not str(period).strip():
        raise InputError(
            "a forecast needs a period: give --period as a fiscal quarter (2026-Q3), a month "
            "(2026-07) or a range of days (2026-07-01:2026-09-30)."
        )
    if quota is not None and (not math.isfinite(quota) or quota < 0):
        raise InputError(f"--quota {quota:g} is not an amount: give the period's quota, ≥ 0.")
    if not (0.0 <= best_case <= commit <= 1.0):
        raise InputError(
            f"category thresholds best case {best_case:g} and commit {commit:g} must satisfy "
            "0 ≤ best case ≤ commit ≤ 1 (defaults 0.4 and 0.7)."
        )
    day, chosen = pipeline_day_and_period(export, as_of=as_of, period=period)
    if group_by is not None:
        allowed = group_columns(export)
        if group_by not in allowed:
            raise InputError(
                f"--by {group_by!r} is not a column to roll the forecast up by: choose one of "
                f"{', '.join(allowed)}."
            )
    since = None
    if compare_to is not None:
        since = parse_date(compare_to, "--compare-to")
        if since >= day:
            raise InputError(
                f"--compare-to {since.date()} is not before the as-of day {day.date()}: give an "
                "earlier day (usually the day of the last forecast call, e.g. a week before)."
            )
    return day, chosen, since


#: (export, model, day, period) whose model uncertainty is kept: a server forecasts a few periods
UNCERTAINTIES_KEPT = 16
_uncertainties: OrderedDict[tuple[int, int, pd.Timestamp, str], tuple[Any, Any, Any]] = (
    OrderedDict()
)
_uncertainties_lock = threading.Lock()


def model_uncertainty(
    export: Export, known: Export, model: Any, *, day: pd.Timestamp, period: Period
) -> ModelUncertainty:
    """The close model's uncertainty on ``period`` forecast at ``day`` (σ of the shared factor).

    :func:`models.forecast.estimate_model_uncertainty` on ``known`` (the export cut at ``day``),
    as the backtest estimates it. It scores the deals of six past periods, so it is kept per
    (export object, model object, day, period): a server reads its export once and keeps the
    model in service, and the same forecast asked again must not pay for it twice. Entries hold
    weak references: one is handed out only while its very export and model are alive, and it
    keeps neither alive.
    """
    key = (id(export), id(model), pd.Timestamp(day).normalize(), period.label)
    with _uncertainties_lock:
        found = _uncertainties.get(key)
        if found is not None and found[0]() is export and found[1]() is model:
            _uncertainties.move_to_end(key)
            return cast(ModelUncertainty, found[2])
    estimate = estimate_model_uncertainty(known, model_predictor(model), as_of=day, period=period)
    try:
        refs = (weakref.ref(export), weakref.ref(model))
    except TypeError:  # an object that takes no weak reference is simply not kept
        return estimate
    with _uncertainties_lock:
        _uncertainties[key] = (*refs, estimate)
        _uncertainties.move_to_end(key)
        while len(_uncertainties) > UNCERTAINTIES_KEPT:
            _uncertainties.popitem(last=False)
    return estimate


def forecast_export(
    export: Export,
    model: Any,
    *,
    model_version: str,
    period: str | None,
    as_of: str | None = None,
    quota: float | None = None,
    group_by: str | None = None,
    compare_to: str | None = None,
    commit: float = COMMIT_THRESHOLD,
    best_case: float = BEST_CASE_THRESHOLD,
    neglect_days: int = NEGLECT_DAYS,
    change_points: float = CHANGE_POINTS,
    seed: int = 0,
) -> ForecastResult:
    """The forecast of ``period`` made at the end of day ``as_of`` (default: the export date).

    Parameters
    ----------
    export
        A CRM export (it may extend past ``as_of``; later rows are not used).
    model, model_version
        The close-probability model (``predict_proba``, ``predict_in_period``) and its version.
    period
        ``2026-Q3``, ``2026-07`` or ``2026-07-01:2026-09-30``; it must not have ended before
        ``as_of``.
    quota
        The period's quota: adds ``prob_attain_quota`` (of the total) and ``coverage_ratio``.
    group_by
        Roll-up column (:func:`group_columns`).
    compare_to
        An earlier day: the changes since then (new, won, lost, moved in or out of the period,
        probability up or down by ``change_points`` or more).
    commit, best_case
        Thresholds of the probability categories (on ``p_win_in_period``).
    neglect_days
        No activity in this many days is a red flag.
    seed
        Seed of the Monte Carlo simulation (the same inputs give the same numbers).
    """
    if export.opportunities is None:
        raise InputError("the export has no opportunities file: there is nothing to forecast.")

    day, chosen, since = check_forecast_options(
        export,
        as_of=as_of,
        period=period,
        quota=quota,
        group_by=group_by,
        compare_to=compare_to,
        commit=commit,
        best_case=best_case,
        neglect_days=neglect_days,
        change_points=change_points,
    )
    known = cut_export(export.replace(leads=None), day)
    features = opportunity_features.build(export, as_of=day)
    deals, numbers, new, won, changes = _forecast_numbers(
        export,
        known,
        features,
        model,
        model_version=model_version,
        day=day,
        period=chosen,
        since=since,
        quota=quota,
        group_by=group_by,
        commit=commit,
        best_case=best_case,
        neglect_days=neglect_days,
        change_points=change_points,
        seed=seed,
    )
    response = _response(
        deals=deals,
        numbers=numbers,
        new=new,
        won=won,
        day=day,
        period=chosen,
        model_version=model_version,
        quota=quota,
        group_by=group_by,
        commit=commit,
        best_case=best_case,
        since=since,
        changes=changes,
        has_crm_categories="forecast_category" in features.columns,
    )
    lines = deals[DEAL_COLUMNS]
    if group_by is not None and group_by not in DEAL_COLUMNS:
        lines.insert(1, group_by, deals["_group"])
    return ForecastResult(response=response, deals=lines, changes=changes)


def _forecast_numbers(
    export: Export,
    known: Export,
    features: pd.DataFrame,
    model: Any,
    *,
    model_version: str,
    day: pd.Timestamp,
    period: Period,
    since: pd.Timestamp | None,
    quota: float | None,
    group_by: str | None,
    commit: float,
    best_case: float,
    neglect_days: int,
    change_points: float,
    seed: int,
) -> tuple[pd.DataFrame, BookingsForecast, NewBusiness, pd.DataFrame, pd.DataFrame | None]:
    """The numbers of :func:`forecast_export`: deal lines, the bookings' distribution, new
    business, the deals won to date and the changes."""
    scores = score_opportunities(
        model,
        features,
        as_of=day,
        period=period,
        model_version=model_version,
        stale_days=stale_limits(export, features, as_of=day),
        neglect_days=neglect_days,
    ).set_index("opportunity_id", drop=False)
    state = state_as_of(export, day).reindex(features.index)
    deals = _deal_lines(scores, state, known, period, commit=commit, best_case=best_case)

    won = won_in_period(known.opportunities, period)
    new = estimate_new_business(known.opportunities, as_of=day, period=period)
    uncertainty = model_uncertainty(export, known, model, day=day, period=period)
    open_labels, won_labels = _group_labels(group_by, deals, state, won)
    if open_labels is not None:
        deals["_group"] = (
            pd.Series(open_labels, dtype="string")
            .fillna(UNASSIGNED_GROUP)
            .replace("", UNASSIGNED_GROUP)
            .to_numpy()
        )
    numbers = forecast_bookings(
        deals["amount"].fillna(0.0).to_numpy(dtype="float64"),
        deals["p_win_in_period"].to_numpy(dtype="float64"),
        groups=open_labels,
        won_amounts=won["amount"].to_numpy(dtype="float64"),
        won_groups=won_labels,
        new_business=new,
        new_business_by_group=group_by == "segment",
        quota=quota,
        seed=seed,
        model_uncertainty=uncertainty.sigma,
    )
    changes = None
    if since is not None:
        changes = _changes(
            export, model, since=since, as_of=day, period=period, now=deals, points=change_points
        )
        summary = changes.groupby("opportunity_id")["change"].agg("; ".join)
        deals["change"] = deals["opportunity_id"].map(summary).fillna("").astype("string")
    return deals, numbers, new, won, changes


def forecast_cli(
    settings: Settings,
    *,
    data_dir: Path,
    period: str | None,
    as_of: str | None = None,
    quota: float | None = None,
    group_by: str | None = None,
    compare_to: str | None = None,
    commit: float = COMMIT_THRESHOLD,
    best_case: float = BEST_CASE_THRESHOLD,
    neglect_days: int = NEGLECT_DAYS,
    change_points: float = CHANGE_POINTS,
) -> ForecastResult:
    """``pipecast forecast``: read the export, check the options, load the champion, forecast."""
    export = read_export(data_dir, require=("opportunities",))
    # bad options are refused before the (slow) model load
    check_forecast_options(
        export,
        as_of=as_of,
        period=period,
        quota=quota,
        group_by=group_by,
        compare_to=compare_to,
        commit=commit,
        best_case=best_case,
        neglect_days=neglect_days,
        change_points=change_points,
    )
    model, info = load_champion(settings, CLOSE_MODEL_NAME)
    return forecast_export(
        export,
        model,
        model_version=str(info["version"]),
        period=period,
        as_of=as_of,
        quota=quota,
        group_by=group_by,
        compare_to=compare_to,
        commit=commit,
        best_case=best_case,
        neglect_days=neglect_days,
        change_points=change_points,
    )


# ----------------------------------------------------------------------------------------
# pieces
# ----------------------------------------------------------------------------------------


def _deal_lines(
    scores: pd.DataFrame,
    state: pd.DataFrame,
    known: Export,
    period: Period,
    *,
    commit: float,
    best_case: float,
) -> pd.DataFrame:
    ids = scores.index
    stage = state["stage"].astype("string").reindex(ids)
    probability = stage.map(stage_probabilities(known)).astype("float64")
    close = pd.to_datetime(state["expected_close_date"]).reindex(ids)
    crm = (
        state["forecast_category"].astype("string").reindex(ids)
        if "forecast_category" in state.columns
        else pd.Series(pd.NA, index=ids, dtype="string")
    )
    deals = pd.DataFrame(
        {
            "opportunity_id": ids.astype("string"),
            "p_win": scores["p_win"].to_numpy(dtype="float64"),
            "p_win_in_period": scores["p_win_in_period"].to_numpy(dtype="float64"),
            "expected_value": scores["expected_value"].to_numpy(dtype="float64"),
            "amount": pd.to_numeric(state["amount"], errors="coerce").reindex(ids).to_numpy(),
            "stage": stage.to_numpy(),
            "stage_probability": probability.to_numpy(),
            "expected_close_date": close.to_numpy(),
            "close_in_period": in_period(close, period),
            "category": probability_category(
                scores["p_win_in_period"].to_numpy(dtype="float64"),
                commit=commit,
                best_case=best_case,
            ),
            "forecast_category": crm.to_numpy(),
            "flags": scores["flags"].astype("string").to_numpy(),
            "top_factors": scores["top_factors"].astype("string").to_numpy(),
            "change": pd.Series([""] * len(ids), dtype="string").to_numpy(),
            "model_version": scores["model_version"].astype("string").to_numpy(),
        },
        index=pd.RangeIndex(len(ids)),
    )
    for col in ("stage", "category", "forecast_category", "flags", "top_factors", "change"):
        deals[col] = deals[col].astype("string")
    deals = deals.sort_values(
        ["expected_value", "opportunity_id"], ascending=[False, True], kind="stable"
    )
    return deals.reset_index(drop=True)


def _group_labels(
    group_by: str | None, deals: pd.DataFrame, state: pd.DataFrame, won: pd.DataFrame
) -> tuple[Any, Any]:
    if group_by is None:
        return None, None
    n_won = len(won)
    if group_by == CATEGORY_COLUMN:
        return deals["category"].to_numpy(), np.array(["won"] * n_won, dtype=object)
    if group_by in ("stage", "forecast_category"):
        open_labels = deals[group_by].to_numpy(dtype=object, na_value=None)
        if group_by == "stage":
            won_labels = won["stage"].astype("string") if "stage" in won else None
            labels = (
                won_labels.to_numpy(dtype=object, na_value=None)
                if won_labels is not None
                else np.array(["won"] * n_won, dtype=object)
            )
        else:
            labels = np.array(["closed"] * n_won, dtype=object)
        return open_labels, labels
    by_id = state[group_by].astype("string") if group_by in state.columns else None
    open_labels = (
        deals["opportunity_id"].map(by_id).to_numpy(dtype=object, na_value=None)
        if by_id is not None
        else np.array([None] * len(deals), dtype=object)
    )
    won_labels = (
        won[group_by].astype("string").to_numpy(dtype=object, na_value=None)
        if group_by in won.columns
        else np.array([None] * n_won, dtype=object)
    )
    n_groups = len(set(open_labels) | set(won_labels))
    if n_groups > MAX_GROUPS:
        raise InputError(
            f"--by {group_by!r} has {n_groups} values among the deals of the period: roll-ups "
            f"take a column with at most {MAX_GROUPS} (owner_id, segment, source, region, stage, "
            "product, …)."
        )
    return open_labels, won_labels


def _changes(
    export: Export,
    model: Any,
    *,
    since: pd.Timestamp,
    as_of: pd.Timestamp,
    period: Period,
    now: pd.DataFrame,
    points: float,
) -> pd.DataFrame:
    """What changed between the end of ``since`` and the end of ``as_of`` (one row per change)."""
    before = opportunity_features.build(export, as_of=since)
    p_before = pd.Series(np.zeros(len(before)), index=before.index.astype("string"))
    start, end = period_days(period, since)
    if len(before) and end > 0:
        p_before[:] = close_probabilities(
            model, before, as_of=since, start_days=start, end_days=end
        )[1]
    state_before = state_as_of(export, since)
    close_before = pd.to_datetime(state_before["expected_close_date"]).reindex(p_before.index)
    in_before = pd.Series(in_period(close_before, period), index=p_before.index)

    now_i = now.set_index("opportunity_id")
    p_now = now_i["p_win_in_period"].astype("float64")
    in_now = now_i["close_in_period"].astype(bool)
    rows: list[dict[str, Any]] = []

    def add(i: str, change: str, detail: str, amount: float, p0: float, p1: float) -> None:
        rows.append(
            {
                "opportunity_id": i,
                "change": change,
                "detail": detail,
                "amount": None if amount != amount else float(amount),
                "p_before": None if p0 != p0 else float(p0),
                "p_after": None if p1 != p1 else float(p1),
            }
        )

    for i in p_now.index.difference(p_before.index):
        add(i, "new", "opened since", now_i.at[i, "amount"], np.nan, p_now[i])
    closed = p_before.index.difference(p_now.index)
    if len(closed):
        opps = cut_export(export.replace(leads=None, activities=None), as_of).opportunities
        assert opps is not None
        o = opps.set_index(opps["opportunity_id"].astype("string"))
        for i in closed:
            if i not in o.index:
                continue
            status = str(o.at[i, "status"])
            when = pd.Timestamp(o.at[i, "closed_at"])
            inside = "inside" if period.contains(when) else "outside"
            if status in ("won", "lost"):
                add(
                    i,
                    status,
                    f"{status} on {when.date()} ({inside} the period)",
                    float(o.at[i, "amount"]),
                    p_before[i],
                    1.0 if status == "won" and inside == "inside" else 0.0,
                )
    both = p_now.index.intersection(p_before.index)
    for i in both:
        if in_now[i] and not in_before[i]:
            add(
                i,
                "moved into period",
                "expected close date moved into the period",
                now_i.at[i, "amount"],
                p_before[i],
                p_now[i],
            )
        elif in_before[i] and not in_now[i]:
            add(
                i,
                "moved out of period",
                "expected close date moved out of the period",
                now_i.at[i, "amount"],
                p_before[i],
                p_now[i],
            )
        delta = 100.0 * (p_now[i] - p_before[i])
        if abs(delta) >= points:
            direction = "probability up" if delta > 0 else "probability down"
            add(
                i,
                direction,
                f"{p_before[i]:.0%} → {p_now[i]:.0%} in period",
                now_i.at[i, "amount"],
                p_before[i],
                p_now[i],
            )
    table = pd.DataFrame(
        rows, columns=["opportunity_id", "change", "detail", "amount", "p_before", "p_after"]
    )
    order = {
        c: k
        for k, c in enumerate(
            [
                "won",
                "lost",
                "new",
                "moved into period",
                "moved out of period",
                "probability up",
                "probability down",
            ]
        )
    }
    table["_order"] = table["change"].map(order)
    table = table.sort_values(["_order", "amount"], ascending=[True, False], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def _category_rows(deals: pd.DataFrame, column: str) -> list[dict[str, Any]]:
    rows = []
    labels = deals[column].astype("string").fillna(UNASSIGNED_GROUP)
    for label, part in deals.groupby(labels, sort=True):
        rows.append(
            {
                # both keys, as the response schema (CategoryRow) spells every row
                "category": str(label) if column == "category" else None,
                "forecast_category": str(label) if column == "forecast_category" else None,
                "n_deals": len(part),
                "amount": float(part["amount"].fillna(0.0).sum()),
                "expected": float(part["expected_value"].sum()),
            }
        )
    return rows


def _data_notes(deals: pd.DataFrame) -> list[str]:
    """What the reader should know about the inputs of the numbers."""
    notes = []
    unknown = int(deals["amount"].isna().sum())
    if unknown:
        notes.append(
            f"{unknown} open deal(s) have no amount known at the as-of day and count as 0 "
            "(without stage_history, amounts before the export date are unknown)"
        )
    no_stage = int(deals["stage_probability"].isna().sum())
    if no_stage:
        notes.append(f"{no_stage} open deal(s) have no stage probability: 0 in stage-weighted")
    return notes


def _deal_rows(deals: pd.DataFrame) -> list[dict[str, Any]]:
    """The response's line per deal, built column by column (a pipeline has thousands).

    Plain Python values only, every number finite or None: the lines need no :func:`jsonable`
    pass.
    """
    fields = {
        "opportunity_id": [str(v) for v in deals["opportunity_id"].tolist()],
        "p_win": _optional_numbers(deals["p_win"]),
        "p_win_in_period": _optional_numbers(deals["p_win_in_period"]),
        "expected_value": _optional_numbers(deals["expected_value"]),
        "amount": _optional_numbers(deals["amount"]),
        "stage": _optional_texts(deals["stage"]),
        "stage_probability": _optional_numbers(deals["stage_probability"]),
        "expected_close_date": _dates(deals["expected_close_date"]),
        "category": [str(v) for v in deals["category"].tolist()],
        "forecast_category": _optional_texts(deals["forecast_category"]),
        "flags": _parts(deals["flags"]),
        "top_factors": _parts(deals["top_factors"]),
        "change": _parts(deals["change"]),
    }
    names = list(fields)
    return [dict(zip(names, values, strict=True)) for values in zip(*fields.values(), strict=True)]


def _floats(values: pd.Series) -> list[float]:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return [float(v) for v in numbers.tolist()]


def _optional_numbers(values: pd.Series) -> list[float | None]:
    # NaN and ±inf → None, as jsonable makes them: the deal lines are strict JSON as built
    return [v if v - v == 0.0 else None for v in _floats(values)]


def _optional_texts(values: pd.Series) -> list[str | None]:
    missing = values.isna().to_numpy(dtype=bool)
    return [None if m else str(v) for v, m in zip(values.tolist(), missing.tolist(), strict=True)]


def _dates(values: pd.Series) -> list[str | None]:
    missing = values.isna().to_numpy(dtype=bool)
    return [
        None if m else pd.Timestamp(v).date().isoformat()
        for v, m in zip(values.tolist(), missing.tolist(), strict=True)
    ]


def _parts(values: pd.Series) -> list[list[str]]:
    """Texts joined with "; " (missing: none) as lists."""
    texts = _optional_texts(values)
    return [[] if t is None else [f for f in t.split("; ") if f] for t in texts]


def _response(
    *,
    deals: pd.DataFrame,
    numbers: BookingsForecast,
    new: NewBusiness,
    won: pd.DataFrame,
    day: pd.Timestamp,
    period: Period,
    model_version: str,
    quota: float | None,
    group_by: str | None,
    commit: float,
    best_case: float,
    since: pd.Timestamp | None,
    changes: pd.DataFrame | None,
    has_crm_categories: bool,
) -> dict[str, Any]:
    closing = deals["close_in_period"].to_numpy(dtype=bool)
    amount = deals["amount"].fillna(0.0).to_numpy(dtype="float64")
    stage_prob = deals["stage_probability"].fillna(0.0).to_numpy(dtype="float64")
    stage_weighted = float(np.dot(amount * stage_prob, closing))
    open_pipeline = float(amount[closing].sum())
    pct_open = numbers.open.percentiles()
    pct_total = numbers.total.percentiles()
    remaining = None if quota is None else float(quota) - numbers.won_to_date
    coverage = None if remaining is None or remaining <= 0 else open_pipeline / remaining
    flag_counts: dict[str, int] = {}
    for text in deals["flags"].fillna(""):
        for flag in filter(None, str(text).split("; ")):
            key = "close date pushed" if flag.startswith("close date pushed") else flag
            flag_counts[key] = flag_counts.get(key, 0) + 1
    groups = []
    if group_by is not None:
        stage_w = pd.Series(amount * stage_prob * closing)
        by_group = stage_w.groupby(deals["_group"].to_numpy()).sum()
        for row in numbers.groups.itertuples(index=False):
            groups.append(
                {
                    "group": str(row.group),
                    "expected": float(row.expected),
                    "p10": float(row.p10),
                    "p50": float(row.p50),
                    "p90": float(row.p90),
                    "stage_weighted": float(by_group.get(row.group, 0.0)),
                    "won_to_date": float(row.won_to_date),
                    "open_expected": float(row.open_expected),
                    "expected_new": float(row.expected_new),
                    "n_deals": int(row.n_deals),
                }
            )
    deal_rows = _deal_rows(deals)
    response: dict[str, Any] = {
        "as_of": day.date().isoformat(),
        "period": {
            "label": period.label,
            "start": period.start.date().isoformat(),
            "end": period.end.date().isoformat(),
        },
        "model_version": model_version,
        "n_open_deals": len(deals),
        "expected": numbers.open_expected,
        **pct_open,
        "stage_weighted": stage_weighted,
        "won_to_date": numbers.won_to_date,
        "n_won_to_date": len(won),
        "expected_new": numbers.expected_new,
        "total": {"expected": numbers.expected, **pct_total},
        "quota": None if quota is None else float(quota),
        "prob_attain_quota": numbers.prob_attain_quota,
        "coverage_ratio": coverage,
        "open_pipeline_in_period": open_pipeline,
        "remaining_quota": remaining,
        "new_business": {
            "expected": new.expected,
            "past_periods": list(new.windows),
            "note": new.note or None,
            "segments": [
                {
                    "segment": s.segment,
                    "expected_deals": s.rate,
                    "mean_amount": float(s.amounts.mean()) if s.amounts.size else 0.0,
                    "expected": s.expected,
                    "past_counts": list(s.counts),
                }
                for s in new.streams
            ],
        },
        "categories": {
            "thresholds": {"commit": float(commit), "best_case": float(best_case)},
            "model": _category_rows(deals, "category"),
            "crm": _category_rows(deals, "forecast_category") if has_crm_categories else None,
        },
        "group_by": group_by,
        "groups": groups,
        "deals": deal_rows,
        "flag_counts": flag_counts,
        "compare_to": None if since is None else since.date().isoformat(),
        "changes": None
        if changes is None
        else [
            {k: (None if (isinstance(v, float) and v != v) else v) for k, v in row.items()}
            for row in changes.to_dict(orient="records")
        ],
        "method": {"distribution": numbers.method, "draws": numbers.draws},
        "notes": [*numbers.notes, *_data_notes(deals)],
    }
    return response


__all__ = [
    "NEW_BUSINESS_GROUP",
    "ForecastResult",
    "forecast_cli",
    "forecast_json",
    "forecast_export",
    "group_columns",
    "jsonable",
    "render_forecast",
    "stage_probabilities",
]


# ----------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------


def _money(value: Any) -> str:
    if value is None or value != value:
        return "—"
    v = float(value)
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:,.2f}{unit}" if unit == "M" else f"{v / size:,.0f}{unit}"
    return f"{v:,.0f}"


def _pct(value: Any) -> str:
    return "—" if value is None or value != value else f"{float(value):.0%}"


def render_forecast(response: dict[str, Any], console: Any, *, top: int = 10) -> None:
    """Draw a forecast response (:func:`forecast_export`) as rich tables on ``console``."""
    from rich.table import Table

    period = response["period"]
    console.print(
        f"[bold]Forecast {period['label']}[/] ({period['start']} → {period['end']}) as of "
        f"[bold]{response['as_of']}[/], close-probability model v{response['model_version']}, "
        f"{response['n_open_deals']:,} open deals",
        highlight=False,
    )
    total = response["total"]
    summary = Table(title="Bookings of the period", title_justify="left")
    for name, justify in (
        ("", "left"),
        ("expected", "right"),
        ("P10", "right"),
        ("P50", "right"),
        ("P90", "right"),
    ):
        summary.add_column(name, justify=justify)  # type: ignore[arg-type]
    summary.add_row(
        f"won to date ({response['n_won_to_date']} deals)",
        _money(response["won_to_date"]),
        "",
        "",
        "",
    )
    summary.add_row(
        "open deals (Σ amount × p in period)",
        _money(response["expected"]),
        _money(response["p10"]),
        _money(response["p50"]),
        _money(response["p90"]),
    )
    summary.add_row("new business (not yet created)", _money(response["expected_new"]), "", "", "")
    summary.add_row(
        "[bold]total = won + open + new[/]",
        f"[bold]{_money(total['expected'])}[/]",
        _money(total["p10"]),
        _money(total["p50"]),
        _money(total["p90"]),
    )
    summary.add_row(
        "CRM stage-weighted (close date in period)", _money(response["stage_weighted"]), "", "", ""
    )
    console.print(summary)
    if response.get("quota") is not None:
        coverage = response.get("coverage_ratio")
        console.print(
            f"Quota {_money(response['quota'])}: odds of making it "
            f"[bold]{_pct(response['prob_attain_quota'])}[/]; remaining "
            f"{_money(response['remaining_quota'])}, pipeline closing in the period "
            f"{_money(response['open_pipeline_in_period'])}, coverage "
            + ("—" if coverage is None else f"{coverage:.1f}×"),
            highlight=False,
        )
    cats = response["categories"]
    table = Table(
        title=f"Categories: commit ≥ {cats['thresholds']['commit']:g}, best case ≥ "
        f"{cats['thresholds']['best_case']:g} (p in period) beside the CRM's",
        title_justify="left",
    )
    for name in ("category", "model: deals", "amount", "expected", "CRM: deals", "amount "):
        table.add_column(name, justify="left" if name == "category" else "right")
    crm = {r["forecast_category"]: r for r in (cats["crm"] or [])}
    model = {r["category"]: r for r in cats["model"]}
    for key in [*dict.fromkeys(["commit", "best_case", "pipeline", *model, *crm])]:
        m, c = model.get(key), crm.get(key)
        table.add_row(
            key,
            str(m["n_deals"]) if m else "",
            _money(m["amount"]) if m else "",
            _money(m["expected"]) if m else "",
            str(c["n_deals"]) if c else ("" if cats["crm"] is not None else "n/a"),
            _money(c["amount"]) if c else "",
        )
    console.print(table)
    if response["groups"]:
        table = Table(title=f"By {response['group_by']}", title_justify="left")
        for name in (
            str(response["group_by"]),
            "expected",
            "P10",
            "P50",
            "P90",
            "stage-weighted",
            "won",
            "open deals",
        ):
            first = name == response["group_by"]
            table.add_column(name, justify="left" if first else "right", no_wrap=first)
        for g in response["groups"]:
            table.add_row(
                g["group"],
                _money(g["expected"]),
                _money(g["p10"]),
                _money(g["p50"]),
                _money(g["p90"]),
                _money(g["stage_weighted"]),
                _money(g["won_to_date"]),
                str(g["n_deals"]),
            )
        console.print(table)
    deals = response["deals"]
    if deals:
        table = Table(
            title=f"Deals that carry the period (top {min(top, len(deals))})", title_justify="left"
        )
        for name in ("deal", "amount", "stage", "close", "p in period", "expected", "category"):
            table.add_column(
                name,
                justify="right" if name in ("amount", "p in period", "expected") else "left",
                no_wrap=name in ("deal", "close", "category"),
            )
        table.add_column("flags", justify="right")
        for d in deals[:top]:
            table.add_row(
                d["opportunity_id"],
                _money(d["amount"]),
                d["stage"] or "—",
                d["expected_close_date"] or "—",
                _pct(d["p_win_in_period"]),
                _money(d["expected_value"]),
                d["category"],
                str(len(d["flags"])) if d["flags"] else "",
            )
        console.print(table)
    if response["flag_counts"]:
        counts = ", ".join(
            f"{k}: {v}" for k, v in sorted(response["flag_counts"].items(), key=lambda kv: -kv[1])
        )
        console.print(f"[bold]Red flags[/] on the open deals — {counts}", highlight=False)
        risky = sorted((d for d in deals if d["flags"]), key=lambda d: -(d["amount"] or 0.0))[:top]
        if risky:
            table = Table(title="Largest deals with red flags", title_justify="left")
            for name in ("deal", "amount", "stage", "p in period", "red flags"):
                table.add_column(
                    name,
                    justify="right" if name in ("amount", "p in period") else "left",
                    no_wrap=name == "deal",
                )
            for d in risky:
                table.add_row(
                    d["opportunity_id"],
                    _money(d["amount"]),
                    d["stage"] or "—",
                    _pct(d["p_win_in_period"]),
                    "; ".join(d["flags"]),
                )
            console.print(table)
    if response.get("changes") is not None:
        changes = response["changes"]
        table = Table(
            title=f"What changed since {response['compare_to']} ({len(changes)})",
            title_justify="left",
        )
        for name in ("deal", "change", "detail", "amount", "p before", "p now"):
            table.add_column(
                name,
                justify="right" if name in ("amount", "p before", "p now") else "left",
                no_wrap=name in ("deal", "change"),
            )
        for c in changes[: 3 * top]:
            table.add_row(
                c["opportunity_id"],
                c["change"],
                c["detail"],
                _money(c["amount"]),
                _pct(c["p_before"]),
                _pct(c["p_after"]),
            )
        console.print(table)
    method = response["method"]
    how = (
        "exact distribution"
        if method["distribution"] == "exact"
        else f"Monte Carlo, {method['draws']:,} draws"
    )
    console.print(f"[dim]Percentiles: {how}. {' '.join(response['notes'])}[/]", highlight=False)


def jsonable(value: Any) -> Any:
    """``value`` with NaN → None and numpy scalars → Python ones, for a strict JSON document.

    Lists and dicts that need no change are returned as they are (not copied): a response holds
    thousands of deals, and copying them for nothing cost more than the check. Treat the result
    as read-only.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    # the plain leaves of a list or dict are checked in line, without a call each: a response's
    # deal lines hold some 100,000 of them (x - x == 0 is false for NaN and ±inf alone)
    if kind is list:
        for i, v in enumerate(value):
            t = type(v)
            if t is str or (t is float and v - v == 0.0) or t is int or t is bool or v is None:
                continue
            if jsonable(v) is not v:
                return [*value[:i], *(jsonable(w) for w in value[i:])]
        return value
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) is not str:
                return {str(k): jsonable(w) for k, w in value.items()}
            t = type(v)
            if t is str or (t is float and v - v == 0.0) or t is int or t is bool or v is None:
                continue
            if jsonable(v) is not v:
                return {str(k): jsonable(w) for k, w in value.items()}
        return value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def forecast_pipeline(
    settings: Settings,
    champion: Any,
    store: Any,
    request: Any,
    *,
    request_id: str | None = None,
) -> dict[str, Any]:
    """``POST /forecast``: the forecast of a period, stored with its model version, returned.

    The pipeline is the request's inline tables (checked as an export folder would be) when it
    carries any, else the server's export. ``request`` is a
    :class:`serving.forecast_schema.ForecastRequest`; ``champion`` the close-probability
    champion in service (name, version, model); ``store`` the prediction store.
    """
    # imported here: the service module imports this one's neighbours at start-up
    from serving.reports.pages import store_forecast
    from serving.service import inline_export, server_export

    tables = {
        name: rows
        for name in ("opportunities", "stage_history", "activities")
        if (rows := getattr(request, name)) is not None
    }
    if tables:
        export = inline_export(settings, tables)
    else:
        export = server_export(settings, require=("opportunities",))
    result = forecast_export(
        export,
        champion.model,
        model_version=champion.version,
        period=request.period,
        as_of=request.as_of,
        quota=request.quota,
        group_by=request.group_by,
        compare_to=request.compare_to,
        commit=request.commit_threshold,
        best_case=request.best_case_threshold,
        neglect_days=request.neglect_days,
        change_points=request.change_points,
    )
    # made strict JSON once: the store keeps this very document and the answer is it. The
    # deal lines are built strict (_deal_rows) and are not walked again value by value
    document: dict[str, Any] = {
        k: v if k == "deals" else jsonable(v) for k, v in result.response.items()
    }
    store_forecast(store, document, model_name=champion.name, request_id=request_id)
    return document


def forecast_json(document: dict[str, Any]) -> bytes:
    """The answer of ``POST /forecast``: :func:`forecast_pipeline`'s document as JSON bytes.

    Encoded as FastAPI encodes a JSON answer (UTF-8, compact, NaN refused). The document is
    built to the :class:`serving.forecast_schema.ForecastResponse` schema (the tests hold it
    to it), so it is sent as it is, not validated again field by field for its 5,000 deals.
    """
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
