"""Scoring with the champion models: open opportunities and lead lists (no FastAPI here).

Both functions take an export that need not be the one the models were trained on: a new owner,
an unseen industry or a missing optional column is handled by the models' own encoding (unknown
categories and absent columns become missing values), never an error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features import lead as lead_features
from features import opportunity as opportunity_features
from features.errors import InputError
from features.io import DatasetConfig, Export, read_export, read_leads_file
from features.periods import Period, fiscal_quarter, parse_date, parse_period
from features.snapshots import cut_export
from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from models.explain import explain, lead_reasons
from models.registry import load_champion
from pipecast.config import Settings
from serving.lead_list import (
    OVER_CAPACITY,
    ListRules,
    Tiering,
    apply_list_rules,
    assign_tiers,
    tier_thresholds,
    top_reason,
)

log = logging.getLogger(__name__)

#: output columns, in order (interface.md)
OPPORTUNITY_COLUMNS = [
    "opportunity_id",
    "p_win",
    "p_win_in_period",
    "expected_value",
    "flags",
    "top_factors",
    "model_version",
]
LEAD_COLUMNS = [
    "lead_id",
    "sqo_probability",
    "rank",
    "tier",
    "reasons",
    "model_version",
    "excluded_reason",
]


def period_days(period: Period, as_of: pd.Timestamp) -> tuple[int, int]:
    """First and last day of ``period`` as days after ``as_of`` (the end of day ``as_of``)."""
    return int((period.start - as_of).days), int((period.end - as_of).days)


#: a deal is stale when it has sat in its stage this many times the median won deals spent there
STALE_MULTIPLE = 2.0
#: an open deal with no activity in this many days is neglected
NEGLECT_DAYS = 30
#: a close date pushed this many times or more is a red flag (as ``pipecast validate`` says)
MIN_PUSHES_FLAGGED = 2
#: fewer won deals than this through a stage and its median is not trusted for the stale flag
MIN_WON_FOR_STAGE_MEDIAN = 5


def won_stage_days(
    export: Export, *, as_of: Any, min_deals: int = MIN_WON_FOR_STAGE_MEDIAN
) -> dict[str, float]:
    """Median days that won deals spent in each open stage, from deals won on or before ``as_of``.

    Point in time: the export is first cut at the END of day ``as_of``, so only deals won by
    then and history recorded by then count. A stage spell runs from the change that entered the
    stage to the next stage change (or the close date, for the last spell of a deal whose history
    stops before a closing stage). Spells of won/lost stages are left out, and a stage that fewer
    than ``min_deals`` won deals passed through has no median (too few to trust).

    Returns
    -------
    dict
        ``{stage: median days}``; empty when the export has no stage history or no won deals.
    """
    per_deal = won_stage_spell_days(export, as_of=as_of)
    if per_deal.empty:
        return {}
    stats = per_deal.groupby("stage")["days"].agg(["median", "size"])
    stats = stats.loc[stats["size"] >= min_deals]
    return {str(k): float(v) for k, v in stats["median"].items()}


#: a deal is stale when it has sat in its stage longer than this share of won deals of its
#: segment did (measured on the demo export: it flags about one open deal in six, which won
#: about half as often as the others — the previous 2 × median rule flagged four in ten)
STALE_QUANTILE = 0.9
#: won deals of a segment through a stage needed for a segment-specific stale limit
MIN_WON_FOR_SEGMENT_LIMIT = 10


def stale_limits(
    export: Export,
    features: pd.DataFrame,
    *,
    as_of: Any,
    quantile: float = STALE_QUANTILE,
    min_deals: int = MIN_WON_FOR_STAGE_MEDIAN,
    min_segment_deals: int = MIN_WON_FOR_SEGMENT_LIMIT,
) -> pd.Series:
    """Days in its current stage after which each open deal is stale, as of ``as_of``.

    The limit is the ``quantile`` of the days won deals of the deal's segment spent in that
    stage (deals won on or before ``as_of``, :func:`won_stage_spell_days`); with fewer than
    ``min_segment_deals`` such deals, the quantile over all segments; with fewer than
    ``min_deals`` of those, no limit (NaN: not judged).

    Returns
    -------
    Series
        Indexed like ``features`` (``opportunity_id``), float days.
    """
    out = pd.Series(np.nan, index=features.index, dtype="float64")
    per_deal = won_stage_spell_days(export, as_of=as_of)
    if per_deal.empty or "stage" not in features.columns:
        return out
    stage = features["stage"].astype("string")
    by_stage = per_deal.groupby("stage")["days"].agg(limit=lambda d: d.quantile(quantile), n="size")
    by_stage = by_stage.loc[by_stage["n"] >= min_deals, "limit"]
    out[:] = stage.map(by_stage.to_dict()).astype("float64").to_numpy()
    opps = export.opportunities
    if opps is not None and "segment" in opps.columns and "segment" in per_deal.columns:
        cell = per_deal.groupby(["stage", "segment"])["days"].agg(
            limit=lambda d: d.quantile(quantile), n="size"
        )
        cell = cell.loc[cell["n"] >= min_segment_deals, "limit"]
        segment = pd.Series(
            opps["segment"].astype("string").to_numpy(),
            index=opps["opportunity_id"].astype("string"),
        )
        seg = segment.reindex(features.index.astype("string")).to_numpy()
        keys = list(zip(stage.to_numpy(dtype=object, na_value=None), seg, strict=True))
        found = np.array([cell.get(k, np.nan) for k in keys], dtype="float64")
        out[:] = np.where(np.isnan(found), out.to_numpy(), found)
    return out


def won_stage_spell_days(export: Export, *, as_of: Any) -> pd.DataFrame:
    """Days each deal won on or before ``as_of`` spent in each open stage.

    See :func:`won_stage_days` for how spells are measured. Columns ``stage``, ``deal``,
    ``days`` (a deal that re-entered a stage counts its total time there once) and ``segment``
    when the opportunities have one.
    """
    empty = pd.DataFrame({"stage": [], "deal": [], "days": []})
    if export.opportunities is None or export.stage_history is None:
        return empty
    known = cut_export(export.replace(activities=None, leads=None), as_of)
    opps, hist = known.opportunities, known.stage_history
    if opps is None or hist is None or "closed_at" not in opps.columns:
        return empty
    won = opps.loc[(opps["status"].astype("string") == "won").to_numpy(dtype=bool, na_value=False)]
    if won.empty:
        return empty
    closed_at = pd.Series(won["closed_at"].to_numpy(), index=won["opportunity_id"].astype("string"))
    h = hist.loc[hist["opportunity_id"].astype("string").isin(closed_at.index)]
    h = h.loc[h["changed_at"].notna(), ["opportunity_id", "changed_at", "stage"]]
    if h.empty:
        return empty
    h = h.assign(
        opportunity_id=h["opportunity_id"].astype("string"), stage=h["stage"].astype("string")
    )
    h = h.sort_values(["opportunity_id", "changed_at"], kind="stable").reset_index(drop=True)
    deal = h["opportunity_id"]
    new_deal = (deal != deal.shift()).to_numpy(dtype=bool, na_value=True)
    new_run = new_deal | (h["stage"] != h["stage"].shift()).to_numpy(dtype=bool, na_value=True)
    runs = h.loc[new_run].reset_index(drop=True)
    same_deal_next = (runs["opportunity_id"] == runs["opportunity_id"].shift(-1)).to_numpy(
        dtype=bool, na_value=False
    )
    ends = runs["changed_at"].shift(-1).where(same_deal_next)
    ends = ends.fillna(runs["opportunity_id"].map(closed_at))
    days = (ends - runs["changed_at"]).dt.total_seconds() / 86400.0
    closing = known.won_stages | known.lost_stages
    frame = pd.DataFrame({"deal": runs["opportunity_id"], "stage": runs["stage"], "days": days})
    frame = frame.loc[frame["days"].notna() & (frame["days"] >= 0) & ~frame["stage"].isin(closing)]
    # a deal that re-entered a stage counts its total time there once
    per_deal = frame.groupby(["stage", "deal"], sort=False)["days"].sum().reset_index()
    if "segment" in won.columns:
        segment = pd.Series(
            won["segment"].astype("string").to_numpy(), index=closed_at.index, dtype="string"
        )
        per_deal["segment"] = per_deal["deal"].map(segment).astype("string").to_numpy()
    return per_deal


def simple_flags(
    features: pd.DataFrame,
    *,
    stage_days_won: Mapping[str, float] | None = None,
    stale_days: pd.Series | None = None,
    neglect_days: int = NEGLECT_DAYS,
) -> pd.Series:
    """Pipeline-review red flags readable from the features ("; "-separated).

    Parameters
    ----------
    features
        ``features.opportunity.build`` output (index ``opportunity_id``).
    stage_days_won
        Median days won deals spent in each stage (:func:`won_stage_days`, as of the same day).
        With it, a deal in its stage for more than :data:`STALE_MULTIPLE` × that median is
        flagged "stale in stage"; without it (or for a stage without a median) no such flag.
    stale_days
        Per deal (index ``opportunity_id``), the days in stage after which it is stale
        (:func:`stale_limits`); takes the place of ``stage_days_won`` when given.
    neglect_days
        A deal with no activity in this many days is flagged.

    Flags
    -----
    expected close date passed; no activity recorded (the deal has had no activity at all, when
    the export has activities); no activity in N days (only when some activity was recorded
    before: "no activity recorded" already says it); close date pushed N times (2 or more); no
    next step; no amount / no close date (premature: an opportunity without them is not yet a
    forecastable deal; only when the export has the column); stale in stage.
    """
    n = len(features)
    parts: list[np.ndarray] = []

    def col(name: str) -> np.ndarray:
        if name in features.columns:
            return pd.to_numeric(features[name], errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan
            )
        return np.full(n, np.nan)

    # activities_total is absent when the export has no activities file: then nothing is flagged
    never = col("activities_total") == 0
    parts.append(np.where(col("days_to_expected_close") < 0, "expected close date passed", ""))
    parts.append(np.where(never, "no activity recorded", ""))
    if neglect_days == NEGLECT_DAYS and "activities_30d" in features.columns:
        quiet = col("activities_30d") == 0
    else:
        quiet = col("days_since_last_activity") >= neglect_days
    parts.append(np.where(quiet & ~never, f"no activity in {neglect_days} days", ""))
    pushes = col("close_date_pushes")
    parts.append(
        np.where(
            pushes >= MIN_PUSHES_FLAGGED,
            [f"close date pushed {int(x)} times" if x == x else "" for x in pushes],
            "",
        )
    )
    parts.append(np.where(col("has_next_step") == 0, "no next step", ""))
    if "amount" in features.columns:
        amount = col("amount")
        parts.append(np.where(np.isnan(amount) | (amount <= 0), "no amount", ""))
    if "days_to_expected_close" in features.columns:
        parts.append(np.where(np.isnan(col("days_to_expected_close")), "no close date", ""))
    if stale_days is not None:
        limit = stale_days.reindex(features.index).to_numpy(dtype="float64", na_value=np.nan)
        parts.append(np.where(col("days_in_stage") > limit, "stale in stage", ""))
    elif stage_days_won and "stage" in features.columns:
        median = (
            features["stage"].astype("string").map(dict(stage_days_won)).astype("float64")
        ).to_numpy(dtype="float64", na_value=np.nan)
        stale = col("days_in_stage") > STALE_MULTIPLE * median
        parts.append(np.where(stale, "stale in stage", ""))
    joined = (
        ["; ".join(p for p in row if p) for row in zip(*parts, strict=True)] if parts else [""] * n
    )
    return pd.Series(joined, index=features.index, dtype="string")


def explanation_texts(model: Any, features: pd.DataFrame) -> np.ndarray:
    """Top factors of each row, "; "-joined (``models.explain``); "" when they cannot be had.

    A champion registered before explanations existed, or of an unknown kind, must still score:
    any failure here is logged and gives empty texts.
    """
    try:
        texts = explain(model, features).texts()
        return texts.fillna("").to_numpy(dtype=object)
    except Exception:  # noqa: BLE001 — explanations are optional; scoring must not fail on them
        log.warning("explanations unavailable for this model; scoring without them", exc_info=True)
        return np.array([""] * len(features), dtype=object)


def score_opportunities(
    model: Any,
    features: pd.DataFrame,
    *,
    as_of: pd.Timestamp,
    period: Period,
    model_version: str,
    stage_days_won: Mapping[str, float] | None = None,
    stale_days: pd.Series | None = None,
    neglect_days: int = NEGLECT_DAYS,
) -> pd.DataFrame:
    """Per open opportunity: p_win, p_win_in_period, expected value, flags and top factors.

    Parameters
    ----------
    model
        A close-probability model (``predict_proba``, ``predict_in_period``).
    features
        ``features.opportunity.build(export, as_of=as_of)`` (index ``opportunity_id``).
    as_of
        The day the features describe (end of day).
    period
        The forecast period; a period that has already started counts wins from ``as_of`` on.
    stage_days_won
        Median days won deals spent per stage as of ``as_of`` (:func:`won_stage_days`), for the
        "stale in stage" flag; optional.
    stale_days, neglect_days
        Per-deal stale limits (:func:`stale_limits`) and the neglect window of the flags.
    """
    if features.empty:
        return pd.DataFrame(
            {
                c: pd.Series(
                    dtype="float64" if c.startswith("p_") or c == "expected_value" else "string"
                )
                for c in OPPORTUNITY_COLUMNS
            }
        )
    p_win = np.asarray(model.predict_proba(features)[:, 1], dtype="float64")
    start, end = period_days(period, as_of)
    if end <= 0:
        in_period = np.zeros(len(features))  # the period is over: nothing more can close in it
    else:
        in_period = np.asarray(
            model.predict_in_period(features, start_days=start, end_days=end, p_win=p_win),
            dtype="float64",
        )
    amount = pd.to_numeric(
        features.get("amount", pd.Series(np.nan, index=features.index)), errors="coerce"
    ).to_numpy(dtype="float64", na_value=np.nan)
    out = pd.DataFrame(
        {
            "opportunity_id": features.index.astype("string"),
            "p_win": p_win,
            "p_win_in_period": in_period,
            "expected_value": np.nan_to_num(amount, nan=0.0) * in_period,
            "flags": simple_flags(
                features,
                stage_days_won=stage_days_won,
                stale_days=stale_days,
                neglect_days=neglect_days,
            ).to_numpy(),
            "top_factors": pd.Series(explanation_texts(model, features), dtype="string").to_numpy(),
            "model_version": model_version,
        }
    )
    return out[OPPORTUNITY_COLUMNS]


def score_opportunities_cli(
    settings: Settings,
    *,
    data_dir: Path,
    as_of: str | None = None,
    period: str | None = None,
) -> pd.DataFrame:
    """``pipecast score opportunities``: every deal open at ``as_of`` scored by the champion."""
    export = read_export(data_dir, require=("opportunities",))
    day, chosen = pipeline_day_and_period(export, as_of=as_of, period=period)
    model, info = load_champion(settings, CLOSE_MODEL_NAME)
    table, _ = score_open_pipeline(
        model, export, as_of=day, period=chosen, model_version=str(info["version"])
    )
    return table


def pipeline_day_and_period(
    export: Export, *, as_of: str | None = None, period: str | None = None
) -> tuple[pd.Timestamp, Period]:
    """The as-of day (default: the export date) and forecast period (default: its quarter).

    Refused (``InputError``): a day after the export date, a period that ended before it.
    """
    requested = parse_date(as_of) if as_of else None
    day = export.check_as_of(requested) if requested is not None else export.exported_at
    fy = export.config.fiscal_year_start_month
    chosen = parse_period(period, fy) if period else fiscal_quarter(day, fy)
    if chosen.end < day:
        raise InputError(
            f"period {chosen.label} ({chosen.start.date()} to {chosen.end.date()}) ended before "
            f"the as-of day {day.date()}: nothing open then can still be won in it. Give a "
            "period that ends on or after it."
        )
    return day, chosen


def score_open_pipeline(
    model: Any, export: Export, *, as_of: pd.Timestamp, period: Period, model_version: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every deal open at the end of day ``as_of`` scored, largest expected value first.

    Returns the scores (:data:`OPPORTUNITY_COLUMNS`) and the point-in-time features they were
    computed from (index ``opportunity_id``), for callers that keep the segment or amount.
    """
    features = opportunity_features.build(export, as_of=as_of)
    table = score_opportunities(
        model,
        features,
        as_of=as_of,
        period=period,
        model_version=model_version,
        stale_days=stale_limits(export, features, as_of=as_of),
    )
    log.info("scored %d open opportunities as of %s for %s", len(table), as_of.date(), period.label)
    table = table.sort_values("expected_value", ascending=False, kind="stable")
    return table.reset_index(drop=True), features


def score_leads(
    model: Any,
    features: pd.DataFrame,
    *,
    model_version: str,
    excluded: pd.Series | None = None,
    tiers: Tiering | None = None,
) -> pd.DataFrame:
    """Ranked leads, best first; excluded leads (``excluded`` holds a reason) come last, unranked.

    ``tier`` is cut on the leads not excluded (:class:`serving.lead_list.Tiering`, percentile
    cut-offs by default) and ``reasons`` says in a BDR's words why each lead scored what it did.
    """
    p = (
        np.asarray(model.predict_proba(features)[:, 1], dtype="float64")
        if len(features)
        else np.zeros(0)
    )
    reason = (
        excluded.reindex(features.index).astype("string")
        if excluded is not None
        else pd.Series(pd.NA, index=features.index, dtype="string")
    )
    out = pd.DataFrame(
        {
            "lead_id": features.index.astype("string"),
            "sqo_probability": p,
            "reasons": lead_reason_texts(model, features),
            "model_version": model_version,
            "excluded_reason": reason.to_numpy(),
        }
    )
    is_excluded = out["excluded_reason"].notna().to_numpy()
    kept = p[~is_excluded] if (~is_excluded).any() else p
    out["tier"] = pd.array(
        assign_tiers(p, tier_thresholds(kept, tiers or Tiering())), dtype="string"
    )
    out = out.assign(_excluded=is_excluded).sort_values(
        ["_excluded", "sqo_probability"], ascending=[True, False], kind="stable"
    )
    ranks = np.arange(1, len(out) + 1, dtype="float64")
    out["rank"] = pd.array(np.where(out["_excluded"].to_numpy(), np.nan, ranks), dtype="Int64")
    return out.drop(columns="_excluded")[LEAD_COLUMNS].reset_index(drop=True)


def lead_reason_texts(model: Any, features: pd.DataFrame) -> np.ndarray:
    """Reasons of each lead in a BDR's words (``models.explain.lead_reasons``); "" when they
    cannot be had: a champion of an unknown kind must still score."""
    try:
        return lead_reasons(model, features).fillna("").to_numpy(dtype=object)
    except Exception:  # noqa: BLE001 — reasons are optional; scoring must not fail on them
        log.warning("reasons unavailable for this model; scoring without them", exc_info=True)
        return np.array([""] * len(features), dtype=object)


def _rank_cuts(rules: ListRules) -> list[str]:
    """The ``excluded_reason`` texts of the rules that cut by rank, not by the lead itself."""
    return [OVER_CAPACITY, *([top_reason(rules.top)] if rules.top is not None else [])]


#: columns of the lead list the list rules read, beside the score
_RULE_COLUMNS = ("account_id", "sdr_id", "do_not_contact")


def score_lead_list(
    model: Any,
    leads: pd.DataFrame,
    *,
    model_version: str,
    as_of: Any,
    history: Export | None = None,
    rules: ListRules | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score a lead list, tier it and cut it by the list rules; the API and the CLI call this.

    Parameters
    ----------
    model
        The champion SQO-likelihood model.
    leads
        The list (contract ``leads`` columns, one row per lead, unique ``lead_id``).
    model_version
        Written beside every score.
    as_of
        The scoring day (end of day): account history, deals and contacts known by then.
    history
        The CRM export to look accounts, similar leads and lead activities up in; without one
        the list is its own history (and rules on accounts' deals cannot run).
    rules
        List rules (:class:`serving.lead_list.ListRules`; default: do-not-contact excluded).

    Returns
    -------
    (frame, summary)
        ``lead_id, sqo_probability, rank, tier, reasons, model_version, excluded_reason``, then
        ``assigned_bdr`` when allocating, then the list's own columns; kept leads best first,
        excluded ones last. A lead cut only for its rank (``--top``, BDR capacity) has no
        reasons: on a long list cut short, explaining only the rest saves most of the time. The summary of :func:`serving.lead_list.apply_list_rules` with
        ``model_version``.
    """
    rules = rules or ListRules()
    rules.check()
    day = pd.Timestamp(as_of).normalize()
    has_history = history is not None and bool(history.tables())
    if rules.needs_accounts() and (
        not has_history or history is None or history.opportunities is None
    ):
        raise InputError(
            "--skip-open-accounts / --skip-customers need the accounts' deals: give the CRM "
            "export with --data (its opportunities with account_id)."
        )
    export = (
        history
        if has_history and history is not None
        else Export(leads=leads, config=DatasetConfig(exported_at=day))
    )
    features = lead_features.build(export, as_of=day, leads=leads)
    p = (
        np.asarray(model.predict_proba(features)[:, 1], dtype="float64")
        if len(features)
        else np.zeros(0)
    )
    frame = pd.DataFrame(
        {
            "lead_id": features.index.astype("string"),
            "sqo_probability": p,
            "model_version": model_version,
        }
    )
    own = leads.reset_index(drop=True)
    for name in _RULE_COLUMNS:
        if name in own.columns:
            frame[name] = own[name].to_numpy()
    for name in ("account_open_opportunities", "account_won_opportunities"):
        if name in features.columns:
            frame[name] = features[name].to_numpy()
    if rules.recontact_days is not None:
        frame["last_contacted_at"] = last_contacts(
            leads, export.activities if has_history else None, as_of=day
        )
    table, summary = apply_list_rules(frame, rules=rules, as_of=day)
    summary["model_version"] = model_version
    # reasons after the rules: a lead cut only for its rank (--top, BDR capacity) needs none,
    # and on a long list cut to a short one that spares most of the explaining
    cut_by_rank = table["excluded_reason"].isin(_rank_cuts(rules)).to_numpy(dtype=bool)
    reasons = np.full(len(table), "", dtype=object)
    explained = table["lead_id"].to_numpy(dtype=object)[~cut_by_rank]
    if len(explained):
        reasons[~cut_by_rank] = lead_reason_texts(model, features.loc[explained])
    table["reasons"] = pd.array(reasons, dtype="string")
    summary["reasons_for"] = int((~cut_by_rank).sum())
    # the list's own columns follow, as given (a name the output uses gets a list_ prefix)
    fixed = [*LEAD_COLUMNS, *(["assigned_bdr"] if "assigned_bdr" in table.columns else [])]
    if rules.recontact_days is not None:
        table = table.rename(columns={"last_contacted_at": "last_contact_known"})
        fixed.append("last_contact_known")
    rest = own.rename(
        columns={c: f"list_{c}" for c in own.columns if c in fixed and c != "lead_id"}
    )
    rest = rest.assign(lead_id=rest["lead_id"].astype("string"))
    out = table[fixed].merge(rest, on="lead_id", how="left", validate="one_to_one", sort=False)
    return out, summary


def last_contacts(
    leads: pd.DataFrame, activities: pd.DataFrame | None, *, as_of: Any
) -> np.ndarray:
    """The last contact of each lead known at the end of day ``as_of``.

    The later of the list's ``last_contacted_at`` and the lead's latest activity in the export
    (any type or direction) on or before that day; a contact dated after it is not known then.
    """
    end = pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1)
    n = len(leads)
    last = (
        pd.to_datetime(leads["last_contacted_at"]).to_numpy(dtype="datetime64[ns]")
        if "last_contacted_at" in leads.columns
        else np.full(n, np.datetime64("NaT", "ns"))
    )
    last = np.where(last < np.datetime64(end), last, np.datetime64("NaT", "ns"))
    if activities is not None and "lead_id" in activities.columns and len(activities):
        known = activities.loc[
            (activities["occurred_at"] < end).to_numpy(dtype=bool, na_value=False)
            & activities["lead_id"].notna().to_numpy(dtype=bool),
            ["lead_id", "occurred_at"],
        ]
        latest = known.groupby(known["lead_id"].astype("string"))["occurred_at"].max()
        from_acts = leads["lead_id"].astype("string").map(latest).to_numpy(dtype="datetime64[ns]")
        last = np.fmax(last, from_acts)  # fmax: NaT on one side gives the other
    return last


def score_leads_cli(
    settings: Settings,
    *,
    leads_file: Path,
    data_dir: Path | None = None,
    as_of: str | None = None,
    rules: ListRules | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``pipecast score leads``: a lead list scored by the champion, tiered and cut by the rules.

    Account history and similar-lead rates come from the export in ``data_dir`` (default:
    ``PIPECAST_DATA_DIR`` when it exists); without one the leads are scored on their own columns.
    The list, the export and the rules are checked before the model is loaded: a broken list is
    refused as such, not with "no model trained yet".
    """
    rules = rules or ListRules()
    leads = read_leads_file(leads_file)
    rules.check()
    export = _history_export(settings, data_dir)
    day = _lead_scoring_day(as_of, export, leads)
    if rules.needs_accounts() and export.opportunities is None:
        raise InputError(
            "--skip-open-accounts / --skip-customers need the accounts' deals: give the CRM "
            "export with --data (a folder with opportunities and their account_id)."
        )
    model, info = load_champion(settings, SQO_MODEL_NAME)
    return score_lead_list(
        model,
        leads,
        model_version=str(info["version"]),
        as_of=day,
        history=export if export.tables() else None,
        rules=rules,
    )


def _history_export(settings: Settings, data_dir: Path | None) -> Export:
    if data_dir is not None:
        return read_export(data_dir)
    if settings.data_dir.is_dir():
        try:
            return read_export(settings.data_dir)
        except InputError:
            log.warning(
                "the default export %s cannot be read; scoring leads on their own columns",
                settings.data_dir,
            )
    return Export(config=DatasetConfig())


def _lead_scoring_day(as_of: str | None, export: Export, leads: pd.DataFrame) -> pd.Timestamp:
    if as_of:
        return parse_date(as_of)
    candidates = []
    if export.tables():
        with contextlib.suppress(InputError):
            candidates.append(export.exported_at)
    if "created_at" in leads.columns and leads["created_at"].notna().any():
        candidates.append(pd.Timestamp(leads["created_at"].max()).normalize())
    if candidates:
        return max(candidates)
    return pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()
