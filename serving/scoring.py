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
from models.explain import explain
from pipecast.config import Settings
from serving.registry import load_champion

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
    if export.opportunities is None or export.stage_history is None:
        return {}
    known = cut_export(export.replace(activities=None, leads=None), as_of)
    opps, hist = known.opportunities, known.stage_history
    if opps is None or hist is None or "closed_at" not in opps.columns:
        return {}
    won = opps.loc[(opps["status"].astype("string") == "won").to_numpy(dtype=bool, na_value=False)]
    if won.empty:
        return {}
    closed_at = pd.Series(won["closed_at"].to_numpy(), index=won["opportunity_id"].astype("string"))
    h = hist.loc[hist["opportunity_id"].astype("string").isin(closed_at.index)]
    h = h.loc[h["changed_at"].notna(), ["opportunity_id", "changed_at", "stage"]]
    if h.empty:
        return {}
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
    stats = per_deal.groupby("stage")["days"].agg(["median", "size"])
    stats = stats.loc[stats["size"] >= min_deals]
    return {str(k): float(v) for k, v in stats["median"].items()}


def simple_flags(
    features: pd.DataFrame, *, stage_days_won: Mapping[str, float] | None = None
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

    Flags
    -----
    expected close date passed; no activity recorded (the deal has had no activity at all, when
    the export has activities); no activity in 30 days (only when some activity was recorded
    before: "no activity recorded" already says it); close date pushed 3+ times; no next step;
    stale in stage.
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
    parts.append(np.where((col("activities_30d") == 0) & ~never, "no activity in 30 days", ""))
    parts.append(np.where(col("close_date_pushes") >= 3, "close date pushed 3+ times", ""))
    parts.append(np.where(col("has_next_step") == 0, "no next step", ""))
    if stage_days_won and "stage" in features.columns:
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
            "flags": simple_flags(features, stage_days_won=stage_days_won).to_numpy(),
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
    requested = parse_date(as_of) if as_of else None
    export = read_export(data_dir, require=("opportunities",))
    day = export.check_as_of(requested) if requested is not None else export.exported_at
    fy = export.config.fiscal_year_start_month
    chosen = parse_period(period, fy) if period else fiscal_quarter(day, fy)
    if chosen.end < day:
        raise InputError(
            f"period {chosen.label} ({chosen.start.date()} to {chosen.end.date()}) ended before "
            f"the as-of day {day.date()}: nothing open then can still be won in it. Give a "
            "period that ends on or after it."
        )
    model, info = load_champion(settings, CLOSE_MODEL_NAME)
    features = opportunity_features.build(export, as_of=day)
    table = score_opportunities(
        model,
        features,
        as_of=day,
        period=chosen,
        model_version=str(info["version"]),
        stage_days_won=won_stage_days(export, as_of=day),
    )
    log.info("scored %d open opportunities as of %s for %s", len(table), day.date(), chosen.label)
    return table.sort_values("expected_value", ascending=False, kind="stable").reset_index(
        drop=True
    )


def score_leads(
    model: Any, features: pd.DataFrame, *, model_version: str, excluded: pd.Series | None = None
) -> pd.DataFrame:
    """Ranked leads, best first; excluded leads (``excluded`` holds a reason) come last, unranked."""
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
            "tier": pd.Series([""] * len(features), dtype="string").to_numpy(),
            "reasons": pd.Series(explanation_texts(model, features), dtype="string").to_numpy(),
            "model_version": model_version,
            "excluded_reason": reason.to_numpy(),
        }
    )
    is_excluded = out["excluded_reason"].notna().to_numpy()
    out = out.assign(_excluded=is_excluded).sort_values(
        ["_excluded", "sqo_probability"], ascending=[True, False], kind="stable"
    )
    ranks = np.arange(1, len(out) + 1, dtype="float64")
    out["rank"] = pd.array(np.where(out["_excluded"].to_numpy(), np.nan, ranks), dtype="Int64")
    return out.drop(columns="_excluded")[LEAD_COLUMNS].reset_index(drop=True)


def score_leads_cli(
    settings: Settings,
    *,
    leads_file: Path,
    data_dir: Path | None = None,
    as_of: str | None = None,
) -> pd.DataFrame:
    """``pipecast score leads``: a lead list ranked by the champion SQO-likelihood model.

    Account history and similar-lead rates come from the export in ``data_dir`` (default:
    ``PIPECAST_DATA_DIR`` when it exists); without one the leads are scored on their own columns.
    """
    model, info = load_champion(settings, SQO_MODEL_NAME)
    leads = read_leads_file(leads_file)
    export = _history_export(settings, data_dir)
    day = _lead_scoring_day(as_of, export, leads)
    if not export.tables():
        # no CRM history to look up accounts and similar leads in: the list is its own history
        export = Export(leads=leads, config=DatasetConfig(exported_at=day))
    features = lead_features.build(export, as_of=day, leads=leads)
    excluded = None
    if "do_not_contact" in leads.columns:
        dnc = leads["do_not_contact"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        excluded = pd.Series(
            pd.NA, index=leads["lead_id"].astype("string").to_numpy(), dtype="string"
        )
        excluded[dnc] = "do not contact"
    return score_leads(model, features, model_version=str(info["version"]), excluded=excluded)


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
