"""Scoring with the champion models: open opportunities and lead lists (no FastAPI here).

Both functions take an export that need not be the one the models were trained on: a new owner,
an unseen industry or a missing optional column is handled by the models' own encoding (unknown
categories and absent columns become missing values), never an error.

A lead list file of any size (``pipecast score leads``, :func:`score_lead_file_cli`) is read,
scored and written in chunks, so that memory stays flat in the list's length:

1. **read** (:func:`scan_lead_file`): the file in chunks of 100,000 rows, each typed and checked
   as a whole list is (``features.io.iter_leads_file``, the file's own line numbers); duplicate
   ids across chunks are found from a 64-bit hash per lead. Every problem of the file is
   gathered, and a broken list is refused before the model is loaded or anything written.
   Typed chunks are spooled to a temporary folder beside the output. Kept per lead: the hash,
   and when the list is its own history (no CRM export) the few columns other leads' features
   read (``lead_id``, ``account_id``, ``created_at``, outcomes).
2. **score**: per chunk, the point-in-time features and the probability; the chunk's features
   are spooled; a compact frame keeps per lead only what the whole-list rules read (row number,
   probability, and per rule do-not-contact, account, BDR as categorical codes, last contact,
   the accounts' deals). The rules (tiers by percentile, per-account cap, top N, allocation)
   run once on it (:func:`serving.lead_list.apply_list_rules`), giving each lead its place in
   the output. The reason tables are fitted on the 5,000 leads with the smallest id hashes
   (the same leads whatever the chunking or order).
3. **explain**: per chunk, reasons where needed (exact TreeSHAP for the kept leads ranked
   1…2,000, contribution tables for the others, none for leads cut for their rank), from the
   encoded matrix the chunk was scored with (spooled beside its features); the output rows
   are spooled by output bucket (places ``k·chunk … (k+1)·chunk-1``): for a CSV, each row
   already as its CSV line, formatted column by column in Arrow (:func:`_csv_lines`); each
   distinct reason text is made, and quoted, once (``models.explain.lead_reason_codes``).
4. **write**: bucket after bucket, each sorted by place, appended to a temporary file beside
   the output (for a CSV, each bucket's text made as one block of bytes in the spool and
   copied; Parquet row groups through ``pyarrow.parquet.ParquetWriter``), renamed onto the
   output at the end: kept leads by rank, then excluded ones. No sort larger than a bucket is
   ever held; a failure leaves no output and the spool is removed.

Passes 2 and 3 (and the CSV text of pass 4's buckets) run on two cores for a list of
:data:`POOL_MIN_ROWS` leads or more: two worker processes take the chunks as they free up
(the list's state handed to each once per pass through the spool folder), their results are
taken back in chunk order, and each keeps its chunk's files in the spool; a shorter list, or
any list on a machine whose cores are already busy (load average at or above their number),
is scored in this process (starting the workers would cost more than they save). The output
is the same file either way. While pass 1 reads, the next chunk is parsed in a thread.

The lead history (account histories, similar-lead rates) is indexed once per list (once in
each worker), or once per (export, day) for the server (:func:`lead_history`), never per
chunk or per request.

The output is the file :func:`score_lead_list` gives written by ``features.io.write_table``
(the tests compare them byte for byte).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import pickle
import queue
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from features import lead as lead_features
from features import opportunity as opportunity_features
from features.contract import MAX_LINES_KEPT, ContractError, Problem, problem_at
from features.errors import InputError
from features.io import (
    LEAD_CHUNK_ROWS,
    LEAD_LIST,
    DatasetConfig,
    Export,
    check_output_file,
    iter_leads_file,
    read_export,
)
from features.periods import Period, fiscal_quarter, parse_date, parse_period
from features.snapshots import cut_export
from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from models.explain import (
    ReasonTables,
    explain,
    fit_reason_tables,
    lead_reason_array,
    lead_reason_codes,
)
from models.registry import load_champion
from pipecast.config import Settings
from serving.lead_list import (
    FEW_ROWS,
    OVER_CAPACITY,
    ListRules,
    Tiering,
    apply_few_rules,
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
        keys = zip(stage.to_numpy(dtype=object, na_value=None), seg, strict=True)
        # a plain dict of (stage, segment) → limit: a MultiIndex look-up per deal is slow
        limits = dict(
            zip(cell.index.tolist(), cell.to_numpy(dtype="float64").tolist(), strict=True)
        )
        found = np.array([limits.get(k, np.nan) for k in keys], dtype="float64")
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


def explanation_texts(model: Any, features: pd.DataFrame, *, as_of: Any = None) -> np.ndarray:
    """Top factors of each row, "; "-joined (``models.explain``); "" when they cannot be had.

    A champion registered before explanations existed, or of an unknown kind, must still score:
    any failure here is logged and gives empty texts.
    """
    try:
        texts = explain(model, features, as_of=as_of).texts()
        return texts.fillna("").to_numpy(dtype=object)
    except Exception:  # noqa: BLE001 — explanations are optional; scoring must not fail on them
        log.warning("explanations unavailable for this model; scoring without them", exc_info=True)
        return np.array([""] * len(features), dtype=object)


def takes_as_of(model: Any) -> bool:
    """Whether the model places future weeks in the calendar from the rows' ``as_of`` day.

    The competing-risks close model does (its hazards depend on the week of the quarter);
    champions of the earlier kinds take no ``as_of`` and are called as before.
    """
    method = getattr(model, "predict_in_period", None)
    if method is None:
        return False
    try:
        return "as_of" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def close_probabilities(
    model: Any, features: pd.DataFrame, *, as_of: pd.Timestamp, start_days: int, end_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """(p_win, p_win_in_period) of deals open at the end of day ``as_of``.

    The period runs from ``start_days`` to ``end_days`` days after ``as_of``; one already over
    (``end_days <= 0``) gives 0: nothing more can close in it.
    """
    day = pd.Timestamp(as_of).normalize()
    dated = takes_as_of(model)
    if dated and end_days > 0 and hasattr(model, "predict_close"):
        # the competing-risks model gives both from one pass of its hazards (the same numbers)
        p_win, in_period = model.predict_close(
            features, start_days=start_days, end_days=end_days, as_of=day
        )
        return np.asarray(p_win, dtype="float64"), np.asarray(in_period, dtype="float64")
    if dated and hasattr(model, "predict_p_win"):
        p_win = np.asarray(model.predict_p_win(features, as_of=day), dtype="float64")
    else:
        p_win = np.asarray(model.predict_proba(features)[:, 1], dtype="float64")
    if end_days <= 0:
        return p_win, np.zeros(len(features))
    kwargs: dict[str, Any] = {"as_of": day} if dated else {}
    in_period = np.asarray(
        model.predict_in_period(
            features, start_days=start_days, end_days=end_days, p_win=p_win, **kwargs
        ),
        dtype="float64",
    )
    return p_win, in_period


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
    start, end = period_days(period, as_of)
    p_win, in_period = close_probabilities(
        model, features, as_of=as_of, start_days=start, end_days=end
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
            "top_factors": pd.Series(
                explanation_texts(model, features, as_of=as_of), dtype="string"
            ).to_numpy(),
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


def lead_reason_texts(
    model: Any,
    features: pd.DataFrame,
    *,
    tables: ReasonTables | None = None,
    exact: np.ndarray | None = None,
    encoded: np.ndarray | None = None,
) -> np.ndarray:
    """Reasons of each lead in a BDR's words (``models.explain.lead_reasons``); "" when they
    cannot be had: a champion of an unknown kind must still score. ``tables`` and ``exact``:
    rows not marked exact take their contributions from the tables; ``encoded``: the rows as
    :func:`lead_probabilities` encoded them."""
    try:
        return lead_reason_array(model, features, tables=tables, exact=exact, encoded=encoded)
    except Exception:  # noqa: BLE001 — reasons are optional; scoring must not fail on them
        log.warning("reasons unavailable for this model; scoring without them", exc_info=True)
        return np.array([""] * len(features), dtype=object)


def lead_reason_codes_or_none(
    model: Any,
    features: pd.DataFrame,
    *,
    tables: ReasonTables | None = None,
    exact: np.ndarray | None = None,
    encoded: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lead_reason_texts` as ``models.explain.lead_reason_codes`` gives them (per lead
    the number of its text, and the distinct texts); every lead "" when they cannot be had."""
    try:
        return lead_reason_codes(model, features, tables=tables, exact=exact, encoded=encoded)
    except Exception:  # noqa: BLE001 — reasons are optional; scoring must not fail on them
        log.warning("reasons unavailable for this model; scoring without them", exc_info=True)
        return np.zeros(len(features), dtype=np.int64), np.array([""], dtype=object)


def lead_probabilities(model: Any, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """P(SQO) of each lead, and the leads as the model's classifier takes them when the model
    can say (``SQOLikelihoodModel.encode``): encoded once, they serve the reasons too."""
    if not len(features):
        return np.zeros(0), None
    encode = getattr(model, "encode", None)
    if callable(encode) and hasattr(model, "predict_proba_encoded"):
        matrix = np.asarray(encode(features), dtype=np.float64)
        p = model.predict_proba_encoded(features, matrix)[:, 1]
        return np.asarray(p, dtype="float64"), matrix
    return np.asarray(model.predict_proba(features)[:, 1], dtype="float64"), None


#: (export, day) pairs whose lead history is kept: a server scores as of one or two days
LEAD_HISTORIES_KEPT = 4


class _LeadHistories:
    """The lead history (``features.lead.history_as_of``) of recent (export, day) pairs.

    Everything a lead's features read of the rest of the CRM depends only on the export and
    the scoring day; indexing it takes far longer than describing one lead, so a request for
    one lead must not redo it. Keyed by the export object (the server reads its export once
    and keeps the same object until a file changes) and the day: a history is handed out only
    for the very export and day it was built for (``build`` checks it again), so one day's
    history never describes leads as of another day. Thread-safe; the oldest pair is dropped
    first.
    """

    def __init__(self, kept: int = LEAD_HISTORIES_KEPT) -> None:
        self._kept = kept
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, pd.Timestamp], lead_features.LeadHistory] = (
            OrderedDict()
        )

    def get(self, export: Export, day: pd.Timestamp) -> lead_features.LeadHistory:
        key = (id(export), pd.Timestamp(day).normalize())
        with self._lock:
            found = self._entries.get(key)
            # an id can be reused once its export is gone: the history names its export
            if found is not None and found.source is export and found.day == key[1]:
                self._entries.move_to_end(key)
                return found
        history = lead_features.history_as_of(export, key[1])
        with self._lock:
            self._entries[key] = history
            self._entries.move_to_end(key)
            while len(self._entries) > self._kept:
                self._entries.popitem(last=False)
        return history

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_HISTORIES = _LeadHistories()


def lead_history(export: Export, day: Any) -> lead_features.LeadHistory:
    """The lead history of ``export`` as of the end of ``day``, indexed once per (export, day)."""
    return _HISTORIES.get(export, pd.Timestamp(day).normalize())


#: kept leads ranked 1…N get reasons from exact TreeSHAP; the rest from contribution tables
EXACT_REASONS_TOP = 2000
#: leads of a list the contribution tables are fitted on when the model carries none: those
#: with the smallest hashes of their lead_id, so that the sample is the same whatever the
#: list's order or the chunks it is read in
TABLE_SAMPLE_ROWS = 5_000


def _id_hashes(ids: pd.Series | pd.Index) -> np.ndarray:
    """A stable 64-bit hash of each lead_id (the reason-table sample is drawn by it)."""
    text = np.asarray(pd.Series(ids).astype("string").fillna("").to_numpy(dtype=object))
    return np.asarray(pd.util.hash_array(text, categorize=False), dtype=np.uint64)


def _table_sample(features: pd.DataFrame, rows: int = TABLE_SAMPLE_ROWS) -> pd.DataFrame:
    """The ``rows`` leads with the smallest lead_id hashes, in hash order."""
    h = _id_hashes(features.index)
    pick = np.argsort(h, kind="stable")[:rows]
    return features.iloc[pick]


def _reason_rows(
    table: pd.DataFrame, rules: ListRules, exact_top: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of the ruled list get reasons, and which of those exact ones."""
    need = ~table["excluded_reason"].isin(_rank_cuts(rules)).to_numpy(dtype=bool)
    if exact_top is None:
        return need, need.copy()
    rank = table["rank"].to_numpy(dtype="float64", na_value=np.inf)
    return need, need & (rank <= exact_top)


def _reason_tables(
    model: Any, needed: np.ndarray, sample: Callable[[], pd.DataFrame]
) -> tuple[ReasonTables | None, str | None]:
    """The contribution tables for the rows that need them, fitted on ``sample()`` (drawn
    only when some row needs them)."""
    if not needed.any():
        return None, None
    # fitted on the list itself, not on the training leads: on a list unlike the training
    # data (the bank campaigns drift) training tables named the exact top reason of 0% of
    # the latest leads, list-fitted ones of 100%
    try:
        tables = fit_reason_tables(model, sample())
    except Exception:  # noqa: BLE001 — reasons are optional; scoring must not fail on them
        log.warning("reason tables unavailable for this model; exact reasons", exc_info=True)
        return None, None
    if tables is None:
        return None, None
    return tables, f"tables fitted on {tables.rows} leads of the list"


def _reason_summary(
    summary: dict[str, Any],
    need: np.ndarray,
    exact: np.ndarray,
    tables: ReasonTables | None,
    source: str | None,
) -> None:
    summary["reasons_for"] = int(need.sum())
    summary["exact_reasons_for"] = (
        int((need & exact).sum()) if tables is not None else int(need.sum())
    )
    summary["reason_tables"] = source


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
    exact_top: int | None = EXACT_REASONS_TOP,
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
        reasons: on a long list cut short, explaining only the rest saves most of the time.
        The kept leads ranked 1…``exact_top`` are explained by exact TreeSHAP, the others
        from contribution tables (:func:`models.explain.fit_reason_tables`) fitted on a
        sample of the list; ``exact_top=None`` explains every lead exactly.
        The summary of :func:`serving.lead_list.apply_list_rules` with ``model_version`` and
        how the reasons were had.
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
    features = lead_features.build(
        export,
        as_of=day,
        leads=leads,
        history=lead_history(export, day) if has_history else None,
    )
    p, encoded = lead_probabilities(model, features)
    own = leads.reset_index(drop=True)
    contacts = (
        last_contacts(leads, export.activities if has_history else None, as_of=day)
        if rules.recontact_days is not None
        else None
    )
    if len(own) <= FEW_ROWS:
        few = _score_few_leads(
            model, own, features, p, encoded, model_version, rules, day, contacts, exact_top
        )
        if few is not None:
            return few
    # the compact frame the rules read, made at once: adding its columns one by one costs a
    # fixed fraction of a millisecond each, which is most of the work for one lead
    compact: dict[str, Any] = {
        "lead_id": features.index.astype("string"),
        "sqo_probability": p,
        "model_version": model_version,
    }
    for name in _RULE_COLUMNS:
        if name in own.columns:
            compact[name] = own[name].to_numpy()
    for name in ("account_open_opportunities", "account_won_opportunities"):
        if name in features.columns:
            compact[name] = features[name].to_numpy()
    if contacts is not None:
        compact["last_contacted_at"] = contacts
    frame = pd.DataFrame(compact)
    table, summary = apply_list_rules(frame, rules=rules, as_of=day)
    summary["model_version"] = model_version
    # reasons after the rules: a lead cut only for its rank (--top, BDR capacity) needs none,
    # and on a long list cut to a short one that spares most of the explaining
    need, exact = _reason_rows(table, rules, exact_top)
    tables, source = _reason_tables(model, need & ~exact, lambda: _table_sample(features))
    reasons = np.full(len(table), "", dtype=object)
    explained = table["lead_id"].to_numpy(dtype=object)[need]
    if len(explained):
        where: Any = slice(None)
        described = features
        if not _same_order(explained, features.index.to_numpy(dtype=object)):
            # some leads unexplained, or ranked in another order than described (one lead never is)
            where = features.index.get_indexer(explained)
            described = features.iloc[where]
        reasons[need] = lead_reason_texts(
            model,
            described,
            tables=tables,
            exact=exact[need],
            encoded=None if encoded is None else encoded[where],
        )
    table["reasons"] = pd.array(reasons, dtype="string")
    _reason_summary(summary, need, exact, tables, source)
    # the list's own columns follow, as given (a name the output uses gets a list_ prefix)
    fixed = [*LEAD_COLUMNS, *(["assigned_bdr"] if "assigned_bdr" in table.columns else [])]
    if rules.recontact_days is not None:
        table = table.rename(columns={"last_contacted_at": "last_contact_known"})
        fixed.append("last_contact_known")
    renamed = {c: f"list_{c}" for c in own.columns if c in fixed and c != "lead_id"}
    listed = [c for c in own.columns if c != "lead_id"]
    # each output row's own columns, by position (the ids are unique: the list was checked)
    out_ids = table["lead_id"].astype("string").to_numpy(dtype=object)
    own_ids = own["lead_id"].astype("string").to_numpy(dtype=object)
    names = [*fixed, *(renamed.get(c, c) for c in listed)]
    if len(set(names)) == len(names):
        # one frame from the columns' arrays, in output order: the same frame as a concat
        # of the two parts, at a fraction of its fixed cost (most of one lead's assembly)
        order = None if _same_order(out_ids, own_ids) else pd.Index(own_ids).get_indexer(out_ids)
        columns = {c: table[c].array for c in fixed}
        for c in listed:
            values = own[c].array
            columns[renamed.get(c, c)] = values if order is None else values.take(order)
        return pd.DataFrame(columns), summary
    rest = own.rename(columns=renamed)
    where = pd.Index(own_ids).get_indexer(out_ids)
    others = rest.drop(columns="lead_id").iloc[where].reset_index(drop=True)
    out = pd.concat([table[fixed].reset_index(drop=True), others], axis=1)
    return out, summary


def _score_few_leads(
    model: Any,
    own: pd.DataFrame,
    features: pd.DataFrame,
    p: np.ndarray,
    encoded: np.ndarray | None,
    model_version: str,
    rules: ListRules,
    day: pd.Timestamp,
    contacts: np.ndarray | None,
    exact_top: int | None,
) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """:func:`score_lead_list`'s answer for a few leads (one request's), from plain arrays:
    the same frame and summary (a test compares them), without the whole-list frames whose
    fixed costs are most of one lead's time. None when the list's own columns would need
    renaming (the general way does that)."""
    fixed = [*LEAD_COLUMNS, *(["assigned_bdr"] if rules.allocates() else [])]
    if contacts is not None:
        fixed.append("last_contact_known")
    listed = [c for c in own.columns if c != "lead_id"]
    if any(c in fixed for c in listed):
        return None
    ids = lead_features._texts(own["lead_id"])
    columns: dict[str, Any] = {
        "lead_id": ids,
        "sqo_probability": p,
        "model_version": [model_version] * len(ids),
    }
    for name in _RULE_COLUMNS:
        if name in own.columns:
            values = own[name]
            columns[name] = (
                values.to_numpy()
                if pd.api.types.is_bool_dtype(values)
                else lead_features._texts(values)
            )
    for name in ("account_open_opportunities", "account_won_opportunities"):
        if name in features.columns:
            columns[name] = features[name].to_numpy()
    if contacts is not None:
        columns["last_contacted_at"] = contacts
    ranked, summary = apply_few_rules(columns, rules=rules, as_of=day)
    summary["model_version"] = model_version
    position = {lead: i for i, lead in enumerate(ids)}
    order = np.array([position[lead] for lead in ranked["lead_id"]], dtype=np.int64)
    cuts = _rank_cuts(rules)
    shown = ranked["excluded_reason"].to_numpy(dtype=object, na_value=None)
    need = np.array([r is None or r not in cuts for r in shown], dtype=bool)
    if exact_top is None:
        exact = need.copy()
    else:
        rank = ranked["rank"].to_numpy(dtype="float64", na_value=np.inf)
        exact = need & (rank <= exact_top)
    tables, source = _reason_tables(model, need & ~exact, lambda: _table_sample(features))
    reasons = np.full(len(ids), "", dtype=object)
    if need.any():
        where = order[need]
        in_order = len(where) == len(features) and bool((where == np.arange(len(where))).all())
        reasons[need] = lead_reason_texts(
            model,
            # every lead explained in the list's order (one lead always is): the table itself
            features if in_order else features.iloc[where],
            tables=tables,
            exact=exact[need],
            encoded=None if encoded is None else encoded[where],
        )
    _reason_summary(summary, need, exact, tables, source)
    out: dict[str, Any] = {
        "lead_id": pd.array(ranked["lead_id"], dtype="string"),
        "sqo_probability": ranked["sqo_probability"],
        "rank": ranked["rank"],
        "tier": ranked["tier"],
        "reasons": pd.array(reasons, dtype="string"),
        "model_version": pd.Series(ranked["model_version"]).array,
        "excluded_reason": ranked["excluded_reason"],
    }
    if "assigned_bdr" in fixed:
        out["assigned_bdr"] = ranked["assigned_bdr"]
    if contacts is not None:
        out["last_contact_known"] = ranked["last_contacted_at"]
    same = bool((order == np.arange(len(order))).all())
    for c in listed:
        out[c] = own[c].array if same else own[c].array.take(order)
    return pd.DataFrame(out), summary


def _same_order(ids: np.ndarray, others: np.ndarray) -> bool:
    """Whether two id arrays hold the same ids in the same order (then no look-up is needed)."""
    return len(ids) == len(others) and bool((ids == others).all())


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


# ----------------------------------------------------------------------------------------
# a lead list file of any size, in chunks
# ----------------------------------------------------------------------------------------

#: a progress report: (step, rows done, rows in all or None when not yet known)
Progress = Callable[[str, int, "int | None"], None]

#: list columns the features read from the other leads when the list is its own history
_POOL_COLUMNS = ("lead_id", "account_id", "created_at", "sqo_at", "is_sqo")
_POOL_OUTCOME_COLUMNS = ("sqo_at", "is_sqo")


@dataclass
class ScannedList:
    """Pass 1 over a lead list file: checked whole, spooled in typed chunks, summarised.

    Holds what the whole-list steps need and nothing per lead but ``pool`` (the few columns
    the features read from the other leads when the list is its own history; ``None`` when
    the list has no ``account_id`` and no outcomes, or a CRM export is given).
    """

    path: Path
    folder: Path
    chunks: list[tuple[int, Path]]
    rows: int
    latest_created: pd.Timestamp | None
    has_time: dict[str, bool]
    pool: pd.DataFrame | None
    chunk_rows: int


def scan_lead_file(
    path: Path,
    folder: Path,
    *,
    chunk_rows: int = LEAD_CHUNK_ROWS,
    keep_pool: bool = True,
    progress: Progress | None = None,
) -> ScannedList:
    """Read and check a lead list in chunks; spool each typed chunk into ``folder``.

    Every chunk is checked as :func:`features.io.read_leads_file` checks a whole list, with the
    file's true line numbers; across chunks, duplicate lead ids and an empty list are refused.
    Every problem of the whole file is gathered before the list is refused
    (:class:`features.contract.ContractError`, subject "lead list"): nothing is written.
    """
    problems: list[Problem] = []
    hashes: list[np.ndarray] = []
    chunks: list[tuple[int, Path]] = []
    pool: list[pd.DataFrame] = []
    latest: pd.Timestamp | None = None
    has_time: dict[str, bool] = {}
    rows = 0
    for first, df, found in _read_ahead(iter_leads_file(path, chunk_rows=chunk_rows)):
        rows = first + len(df)
        if progress is not None:
            progress("reading", rows, None)
        problems.extend(found)
        if "lead_id" not in df.columns or df.columns.duplicated().any():
            break  # a header problem: every chunk would repeat it
        hashes.append(_id_hashes(df["lead_id"]))
        if problems:
            continue  # the list is refused: keep reading only to name every problem
        for name in df.columns:
            s = df[name]
            if pd.api.types.is_datetime64_any_dtype(s):
                timed = bool(((s - s.dt.normalize()).dropna() != pd.Timedelta(0)).any())
                has_time[name] = has_time.get(name, False) or timed
        if "created_at" in df.columns and df["created_at"].notna().any():
            day = pd.Timestamp(df["created_at"].max()).normalize()
            latest = day if latest is None else max(latest, day)
        if keep_pool and _needs_pool(df):
            pool.append(_pool_part(df))
        spool = folder / f"list-{len(chunks):05d}.arrow"
        df.to_feather(spool, compression="uncompressed")
        chunks.append((first, spool))
    if not problems and rows == 0:
        problems.append(
            Problem(
                file=path.name,
                message="holds no leads (only a header)",
                expected="one lead per row below the header",
            )
        )
    if not problems:
        problems.extend(_duplicate_ids(path, np.concatenate(hashes), chunks))
    if problems:
        raise ContractError(_merge_problems(problems), subject=LEAD_LIST)
    return ScannedList(
        path=path,
        folder=folder,
        chunks=chunks,
        rows=rows,
        latest_created=latest,
        has_time=has_time,
        pool=_concat_compact(pool, row_ids=False) if pool else None,
        chunk_rows=chunk_rows,
    )


def _read_ahead(chunks: Iterator[Any]) -> Iterator[Any]:
    """The items of ``chunks``, the next one read in a thread while the caller works on the
    last: reading and typing a chunk (Arrow's parser, pandas' typing) overlaps the caller's
    hashing and spooling of the one before. An error in the reading is raised here, in
    turn; a caller that stops early (an error, Ctrl-C) stops the reading too."""
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand(kind: str, item: Any) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                handoff.put((kind, item), timeout=0.1)
                return True
        return False

    def read() -> None:
        try:
            for item in chunks:
                if not hand("item", item):
                    return
            hand("end", None)
        except BaseException as exc:  # noqa: BLE001 — handed to the caller, raised there
            hand("error", exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # the file is closed now, not when the reader is collected

    reader = threading.Thread(target=read, name="pipecast-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _pool_part(df: pd.DataFrame) -> pd.DataFrame:
    """What other leads' features read of this chunk's leads, compactly.

    A list without outcomes gives other leads only their account's count of earlier leads:
    the account (a categorical code) and ``created_at`` suffice. A list with outcomes feeds
    the similar-lead rates too, which need the outcome and the grouping columns.
    """
    if not any(c in df.columns for c in _POOL_OUTCOME_COLUMNS):
        part = pd.DataFrame({"account_id": df["account_id"].astype("category")})
        if "created_at" in df.columns:
            part["created_at"] = df["created_at"].to_numpy()
        return part
    groups = {c for cols in lead_features.RATE_GROUPS.values() for c in cols}
    keep = [c for c in df.columns if c in _POOL_COLUMNS or c in groups or c == "meeting_at"]
    return df[keep]


def _row_ids(first: int, n: int) -> pd.Series:
    """The ids a compact pool gives its rows ``first … first+n-1`` (unlike any lead's id)."""
    return "\x00" + pd.Series(np.arange(first, first + n, dtype=np.int64)).astype("string")


def _row_pool(pool: pd.DataFrame) -> pd.DataFrame:
    """A compact pool as the leads of an export: each row under its row id (:func:`_row_ids`),
    its account as text and its ``created_at``: all an account's count of leads reads."""
    out = pd.DataFrame(
        {
            "lead_id": _row_ids(0, len(pool)).array,
            "account_id": pool["account_id"].astype("string").array,
        }
    )
    if "created_at" in pool.columns:
        out["created_at"] = pool["created_at"].to_numpy()
    return out


def _needs_pool(df: pd.DataFrame) -> bool:
    """Whether the features of a lead read other leads of the list (accounts, outcomes)."""
    return "account_id" in df.columns or any(c in df.columns for c in _POOL_OUTCOME_COLUMNS)


def _duplicate_ids(path: Path, hashes: np.ndarray, chunks: list[tuple[int, Path]]) -> list[Problem]:
    """Lead ids on more than one row, found by their hashes and confirmed on the ids."""
    order = np.argsort(hashes, kind="stable")
    sorted_h = hashes[order]
    same = np.zeros(hashes.size, dtype=bool)
    if hashes.size > 1:
        eq = sorted_h[1:] == sorted_h[:-1]
        same[order[1:][eq]] = True
        same[order[:-1][eq]] = True
    if not same.any():
        return []
    rows = np.flatnonzero(same)
    ids = np.empty(rows.size, dtype=object)
    for first, spool in chunks:
        inside = (rows >= first) & (rows < first + _chunk_len(chunks, first, rows))
        if inside.any():
            lead_id = pd.read_feather(spool, columns=["lead_id"])["lead_id"]
            ids[inside] = lead_id.to_numpy(dtype=object)[rows[inside] - first]
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()  # a hash collision is not a duplicate
    if not dup.any():
        return []
    mask = np.zeros(hashes.size, dtype=bool)
    mask[rows[dup]] = True
    shown = pd.unique(pd.Series(ids[dup]).astype(str))
    return [
        problem_at(
            path,
            "lead_id",
            f"{len(shown)} lead id(s) appear on more than one row (e.g. {', '.join(shown[:3])})",
            mask,
            expected="each id once",
        )
    ]


def _chunk_len(chunks: list[tuple[int, Path]], first: int, rows: np.ndarray) -> int:
    starts = [f for f, _ in chunks]
    i = starts.index(first)
    return (starts[i + 1] - first) if i + 1 < len(starts) else int(rows.max()) + 1 - first


def _merge_problems(problems: list[Problem]) -> list[Problem]:
    """One problem per (column, what is wrong) over all chunks: lines and counts added up."""
    merged: dict[tuple[Any, ...], Problem] = {}
    for p in problems:
        key = (p.file, p.column, p.expected, re.sub(r"^\d+ ", "", p.message))
        if key not in merged:
            merged[key] = p
            continue
        q = merged[key]
        n = q.n_rows + p.n_rows
        message = (
            re.sub(r"^\d+ ", f"{n} ", q.message) if re.match(r"^\d+ ", q.message) else q.message
        )
        merged[key] = replace(
            q, lines=(q.lines + p.lines)[:MAX_LINES_KEPT], n_rows=n, message=message
        )
    return list(merged.values())


def score_scanned_list(
    model: Any,
    scan: ScannedList,
    out_file: Path,
    *,
    model_version: str,
    as_of: Any,
    history: Export | None = None,
    rules: ListRules | None = None,
    exact_top: int | None = EXACT_REASONS_TOP,
    progress: Progress | None = None,
    workers: int | None = None,
    worker_peaks: list[float] | None = None,
) -> dict[str, Any]:
    """Score a scanned lead list chunk by chunk and write the ranked list to ``out_file``.

    The same list, rules and model give the same file as :func:`score_lead_list` written by
    :func:`features.io.write_table` (see the module notes for the passes). ``workers``: the
    processes that score and explain the chunks, two chunks at a time (None: two for a list
    of :data:`POOL_MIN_ROWS` leads or more on a machine with a core to spare, none
    otherwise; 0 or 1: this process alone); the file is the same either way.
    ``worker_peaks``, when given, receives each worker's peak memory in MB. Returns the
    summary. (A script that calls this on a long list needs the ``if __name__ ==
    "__main__":`` guard, as any script starting processes does: each worker imports the
    script's module.)
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
    own_history = not (has_history and history is not None)
    n = scan.rows
    work = _ListWork(
        folder=scan.folder,
        chunks=scan.chunks,
        model=model,
        model_version=model_version,
        day=day,
        rules=rules,
        has_history=has_history,
        own_history=own_history,
        bucket_rows=max(1, scan.chunk_rows),
        as_csv=check_output_file(out_file).suffix != ".parquet",
    )
    if not own_history:
        work.export = history
    elif scan.pool is not None:
        # the list is its own history: every lead of it, indexed once. A compact pool (no
        # outcomes: only the accounts' counts of leads are read) knows its leads by row
        work.by_row = "lead_id" not in scan.pool.columns
        pool = _row_pool(scan.pool) if work.by_row else scan.pool
        work.export = Export(leads=pool, config=DatasetConfig(exported_at=day))
    if workers is None:
        workers = CHUNK_WORKERS if n >= POOL_MIN_ROWS and _cores_to_spare() else 0
    workers = min(workers, len(scan.chunks))
    clock = _Clock(n, workers)
    with _Chunks(work, workers, worker_peaks) as chunks:
        # pass 2: features and scores; the rules' columns kept per lead, compactly
        parts: list[pd.DataFrame] = []
        sample: pd.DataFrame | None = None
        for i, (part, candidates) in enumerate(chunks.run(_score_chunk)):
            parts.append(part)
            sample = _merge_sample(sample, candidates)
            if progress is not None:
                progress("scoring", scan.chunks[i][0] + len(part), n)
        clock.lap("scored")
        # the history served the features only: its memory is the explaining's and writing's
        work.drop_history()
        compact = _concat_compact(parts)
        del parts
        table, summary = apply_list_rules(compact, rules=rules, as_of=day)
        summary["model_version"] = model_version
        del compact
        need, exact = _reason_rows(table, rules, exact_top)
        work.tables, source = _reason_tables(
            model, need & ~exact, lambda: sample if sample is not None else pd.DataFrame()
        )
        sample = None
        _reason_summary(summary, need, exact, work.tables, source)
        # each lead's place in the output and the rules' decisions, in list order
        rows = table["_row"].to_numpy(dtype=np.int64)
        decided = table.drop(columns=[c for c in table.columns if c not in _DECISIONS])
        del table
        decided = decided.assign(_need=need, _exact=exact, _place=np.arange(n))
        decided = decided.iloc[np.argsort(rows, kind="stable")].reset_index(drop=True)
        del rows, need, exact
        work.has_time = dict(scan.has_time)
        if "last_contacted_at" in decided.columns:
            s = pd.Series(decided["last_contacted_at"])
            work.has_time["last_contact_known"] = bool(
                ((s - s.dt.normalize()).dropna() != pd.Timedelta(0)).any()
            )
        # the decisions spooled per chunk too: nothing per lead stays in memory while explaining
        for i, (first, _) in enumerate(scan.chunks):
            end = scan.chunks[i + 1][0] if i + 1 < len(scan.chunks) else n
            decided.iloc[first:end].reset_index(drop=True).to_feather(
                _spooled(scan.folder, "decisions", i), compression="uncompressed"
            )
        del decided
        clock.lap("ruled (list rules, reason tables)")
        # pass 3: reasons and output rows, spooled by the output's buckets of places
        header: str | None = None
        for i, (columns, rows_done) in enumerate(chunks.run(_explain_chunk)):
            header = columns if header is None else header
            if progress is not None:
                progress("explaining", scan.chunks[i][0] + rows_done, n)
        clock.lap("explained")
        # pass 4: each bucket sorted by place and appended: the output in rank order
        buckets = -(-n // work.bucket_rows) if n else 0
        target = check_output_file(out_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if work.as_csv:
                # each bucket's text is made where the chunks were (two at a time by the
                # workers) and only copied here, in order
                with tmp.open("wb") as text:
                    text.write((header or "").encode("utf-8"))
                    done = 0
                    for b, rows_done in enumerate(chunks.run(_assemble_bucket, buckets)):
                        part = _spooled(scan.folder, "text", b)
                        with part.open("rb") as piece:
                            shutil.copyfileobj(piece, text, 1 << 22)
                        part.unlink()
                        done += rows_done
                        if progress is not None:
                            progress("writing", done, n)
            else:
                _write_parquet_buckets(scan.folder, buckets, tmp, progress=progress, total=n)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        clock.lap("written")
    return summary


class _Clock:
    """The seconds each pass of a list took, logged (debug) for whoever tunes the chunking."""

    def __init__(self, rows: int, workers: int) -> None:
        self.rows, self.workers = rows, workers
        self.last = time.perf_counter()

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        log.debug(
            "%d leads %s in %.2fs (%d worker processes)",
            self.rows,
            what,
            now - self.last,
            self.workers,
        )
        self.last = now


#: a list of at least this many leads is scored by worker processes; a shorter one here:
#: starting them (the server they are forked from imports the scoring code, ~2.5 CPU-seconds;
#: each loads the model and indexes the history) costs more than they save on a chunk. The
#: processes' memory is a step up (about twice this process's alone): a list past this size
#: has it whatever its length, so that memory stays flat from here to millions of leads
POOL_MIN_ROWS = 150_000
#: a lead list file of at least this size is likely long enough for worker processes: their
#: server is started before the file is read, its imports overlapping the reading (a hint
#: only, from ~110 bytes a lead; the number of leads decides)
POOL_MIN_BYTES = 16 << 20
#: worker processes for a long list: the chunks are scored and explained two at a time, so
#: that their Python work (features, reasons, CSV text), not only LightGBM's, uses two cores
CHUNK_WORKERS = 2


@dataclass
class _ListWork:
    """What the work on every chunk of one list reads: built in the scoring process, handed
    to each worker process once per pass (pickled into the spool folder)."""

    folder: Path
    chunks: list[tuple[int, Path]]
    model: Any
    model_version: str
    day: pd.Timestamp
    rules: ListRules
    has_history: bool
    own_history: bool
    bucket_rows: int
    as_csv: bool
    by_row: bool = False
    #: the export the features read (the CRM export, or the list's own pool of leads); None
    #: when nothing else of the list says anything about a lead
    export: Export | None = None
    tables: ReasonTables | None = None
    has_time: dict[str, bool] = field(default_factory=dict)
    _history: lead_features.LeadHistory | None = None

    def history(self) -> lead_features.LeadHistory | None:
        """The lead history as of the scoring day, indexed once in the process that scores
        (it holds a reference to its export that cannot be pickled: each process makes its
        own)."""
        if self.export is None:
            return None
        if self._history is None:
            self._history = (
                lead_history(self.export, self.day)
                if not self.own_history
                else lead_features.history_as_of(self.export, self.day)
            )
        return self._history

    def drop_history(self) -> None:
        self.export = None
        self._history = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_history": None}


def _spooled(folder: Path, kind: str, i: int) -> Path:
    suffix = {"encoded": "npy", "text": "csv"}.get(kind, "arrow")
    return folder / f"{kind}-{i:05d}.{suffix}"


def _score_chunk(work: _ListWork, i: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pass 2 on chunk ``i``: its features and scores spooled; returned, its compact frame
    and its candidates for the reason-table sample."""
    first, spool = work.chunks[i]
    chunk = pd.read_feather(spool)
    rules, day = work.rules, work.day
    shared = work.history()
    export = work.export
    if export is None:
        # no other lead of the list says anything about these (no accounts, no outcomes)
        export = Export(leads=chunk.head(0), config=DatasetConfig(exported_at=day))
    if shared is not None and work.own_history and work.by_row:
        # the chunk's leads are rows first… of the pool: named so, then given their ids
        targets = chunk.assign(lead_id=_row_ids(first, len(chunk)))
        features = lead_features.build(export, as_of=day, leads=targets, history=shared)
        features.index = pd.Index(chunk["lead_id"].astype("string").array, name="lead_id")
    else:
        features = lead_features.build(export, as_of=day, leads=chunk, history=shared)
    p, encoded = lead_probabilities(work.model, features)
    part = pd.DataFrame({"_row": np.arange(first, first + len(chunk)), "sqo_probability": p})
    for name in _rule_columns(rules):
        if name in chunk.columns:
            values = chunk[name]
            part[name] = values.astype("category") if name != "do_not_contact" else values
    for name in ("account_open_opportunities", "account_won_opportunities"):
        if rules.needs_accounts() and name in features.columns:
            part[name] = features[name].to_numpy()
    if rules.recontact_days is not None:
        part["last_contacted_at"] = last_contacts(
            chunk, export.activities if work.has_history else None, as_of=day
        )
    # spooled uncompressed: read back once, a few seconds later, from the same disk
    features.reset_index().to_feather(
        _spooled(work.folder, "features", i), compression="uncompressed"
    )
    if encoded is not None:
        np.save(_spooled(work.folder, "encoded", i), encoded)
    return part, _table_sample(features)


def _explain_chunk(work: _ListWork, i: int) -> tuple[str, int]:
    """Pass 3 on chunk ``i``: its output rows, with reasons, spooled by output bucket (a
    CSV's as their lines); returned, the output's header line and the chunk's rows."""
    spool = work.chunks[i][1]
    chunk = pd.read_feather(spool)
    features_file = _spooled(work.folder, "features", i)
    features = pd.read_feather(features_file).set_index("lead_id")
    decisions_file = _spooled(work.folder, "decisions", i)
    dec = pd.read_feather(decisions_file)
    encoded_file = _spooled(work.folder, "encoded", i)
    encoded = np.load(encoded_file) if encoded_file.exists() else None
    out = _output_rows(
        work.model, chunk, features, dec, work.model_version, work.rules, work.tables, encoded
    )
    del features, encoded
    places = dec["_place"].to_numpy()
    bucket = places // work.bucket_rows
    if work.as_csv:
        # a CSV's rows are formatted here, once, and only their text is spooled
        lines = _csv_lines(out, work.has_time)
        for b in np.unique(bucket):
            pick = np.flatnonzero(bucket == b)
            feather.write_feather(
                pa.table({"_place": places[pick], "line": lines.take(pick)}),
                str(work.folder / f"bucket-{int(b):05d}-{i:05d}.arrow"),
                compression="uncompressed",
            )
    else:
        out["_place"] = places
        for b in np.unique(bucket):
            out.loc[bucket == b].reset_index(drop=True).to_feather(
                work.folder / f"bucket-{int(b):05d}-{i:05d}.arrow", compression="uncompressed"
            )
    for used in (spool, features_file, decisions_file, encoded_file):
        used.unlink(missing_ok=True)
    return _csv_header([c for c in out.columns if c != "_place"]), len(chunk)


def _assemble_bucket(work: _ListWork, b: int) -> int:
    """Pass 4 on bucket ``b`` of a CSV output: its spooled lines sorted by place, written as
    the output's text of those places; returned, its rows."""
    files = sorted(work.folder.glob(f"bucket-{b:05d}-*.arrow"))
    spooled = pa.concat_tables([feather.read_table(str(f)) for f in files])
    lines = spooled["line"].take(pc.sort_indices(spooled["_place"])).combine_chunks()
    with _spooled(work.folder, "text", b).open("wb") as text:
        if len(lines):
            whole = pc.binary_join(
                pa.ListArray.from_arrays(pa.array([0, len(lines)], type=pa.int32()), lines), "\n"
            )
            text.write(whole[0].as_buffer())
            text.write(b"\n")
    for f in files:
        f.unlink()
    return len(lines)


class _Chunks:
    """Runs a pass over the chunks of a list, results handed back in chunk order: here, or
    in worker processes two chunks at a time.

    The workers are forked from a fresh server process (``forkserver``), never from this
    one: LightGBM's OpenMP threads hang in a child forked from a process that has used them.
    Each worker reads the pass's :class:`_ListWork` once from the spool folder; it ignores
    Ctrl-C (this process stops the pool and removes the spool). A failure in a worker is
    raised here as the same error; a worker that dies (killed, out of memory) stops the
    list with a clear message. Nothing is written to the output before every chunk is done.
    """

    def __init__(self, work: _ListWork, workers: int, peaks: list[float] | None) -> None:
        self.work = work
        self.workers = workers
        self.peaks = peaks
        self.pool: ProcessPoolExecutor | None = None
        self.passes = 0

    def __enter__(self) -> _Chunks:
        if self.workers > 1:
            try:
                self.pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=_worker_context(),
                    initializer=_worker_start,
                )
            except (OSError, ImportError, NotImplementedError, ValueError):
                # no processes here (a sandbox without shared semaphores): one process scores
                log.warning("worker processes unavailable; scoring in one", exc_info=True)
                self.pool = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is None:
            return
        if self.peaks is not None and exc[0] is None:
            self.peaks.extend(_worker_peaks(self.pool))
        # a failure drops the chunks not started; the ones running finish (a second at most)
        # before the caller removes the spool folder
        self.pool.shutdown(wait=True, cancel_futures=True)

    def run(self, step: Callable[[_ListWork, int], Any], count: int | None = None) -> Iterator[Any]:
        """``step(work, i)`` for each chunk (or ``count`` parts) ``i``, results in order."""
        count = len(self.work.chunks) if count is None else count
        if self.pool is None:
            for i in range(count):
                yield step(self.work, i)
            return
        self.passes += 1
        state = self.work.folder / f"work-{self.passes}.pkl"
        try:
            handed = pickle.dumps(self.work, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError):
            # a model (or export) that cannot be handed over is scored here, as a short list
            log.warning("the model cannot be handed to worker processes; scoring in one")
            self.pool.shutdown(wait=True)
            self.pool = None
            yield from self.run(step, count)
            return
        state.write_bytes(handed)
        # chunks handed out as workers free up, a few ahead of the one handed back: what
        # waits in memory is a few chunks' results
        ahead = 2 * self.workers
        pending = [
            self.pool.submit(_worker_step, str(state), step.__name__, i)
            for i in range(min(ahead, count))
        ]
        for i in range(count):
            done = _worker_result(pending.pop(0))
            if i + ahead < count:
                pending.append(self.pool.submit(_worker_step, str(state), step.__name__, i + ahead))
            yield done
        state.unlink(missing_ok=True)


def _worker_context() -> Any:
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    # the server imports the scoring code once; every worker is forked from it ready to work
    context.set_forkserver_preload(["serving.scoring", "lightgbm"])
    return context


def start_workers_early() -> None:
    """Start the process the workers are forked from, while the list is still being read
    (it imports the scoring code: a second or two a list long enough for workers need not
    wait for); nothing when the machine has no core to spare (:func:`_cores_to_spare`)."""
    from multiprocessing import forkserver

    if not _cores_to_spare():
        return
    _worker_context()
    forkserver.ensure_running()


def _cores_to_spare() -> bool:
    """Whether worker processes can speed a list up here: two cores or more, and the load of
    the last minute below their number. On cores busy with other work the workers only add
    their own start-up and indexing to the CPU time the list takes (measured on 2 cores at
    load 9–12: 1,000,000 leads in 51 s and 42 s with workers, 45 s and 37 s without)."""
    try:
        cores = len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not Linux: no load to read, cores as counted
        cores, load = os.cpu_count() or 1, 0.0
    return cores >= CHUNK_WORKERS and load < cores


#: in a worker process: the pass's work, read once per pass
_WORKER: dict[str, _ListWork] = {}


def _worker_start() -> None:
    import signal

    # Ctrl-C reaches every process of the terminal: the scoring process alone answers it
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_step(state: str, step: str, i: int) -> Any:
    try:
        work = _WORKER.get(state)
        if work is None:
            _WORKER.clear()
            with open(state, "rb") as handle:
                work = pickle.load(handle)
            _WORKER[state] = work
        return _STEPS[step](work, i)
    except ContractError as exc:
        # raised again in the scoring process, the very problems (the error itself does not
        # survive pickling: its fields are not its arguments)
        return _Failed(problems=exc.problems, subject=exc.subject, message=str(exc))
    except InputError as exc:
        return _Failed(problems=None, subject=None, message=str(exc))


@dataclass
class _Failed:
    """A user-facing error raised in a worker, to be raised again by the scoring process."""

    problems: list[Problem] | None
    subject: str | None
    message: str


_STEPS: dict[str, Callable[[_ListWork, int], Any]] = {
    "_score_chunk": _score_chunk,
    "_explain_chunk": _explain_chunk,
    "_assemble_bucket": _assemble_bucket,
}


def _worker_result(future: Future[Any]) -> Any:
    try:
        got = future.result()
    except BrokenProcessPool:
        raise RuntimeError(
            "a worker process scoring the lead list stopped (killed, or out of memory); "
            "nothing was written"
        ) from None
    if isinstance(got, _Failed):
        if got.problems is not None:
            raise ContractError(got.problems, subject=got.subject or LEAD_LIST)
        raise InputError(got.message)
    return got


def _worker_peaks(pool: ProcessPoolExecutor) -> list[float]:
    """Each live worker's peak resident memory (``VmHWM``) in MB."""
    peaks = []
    for pid in list(getattr(pool, "_processes", {}) or {}):
        with contextlib.suppress(OSError, StopIteration, ValueError):
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                line = next(x for x in status if x.startswith("VmHWM"))
            peaks.append(int(line.split()[1]) / 1024)
    return peaks


#: the rules' decisions carried from the compact frame to the output
_DECISIONS = (
    "sqo_probability",
    "rank",
    "tier",
    "excluded_reason",
    "assigned_bdr",
    "last_contacted_at",
)


def _rule_columns(rules: ListRules) -> list[str]:
    """The list's columns the chosen rules read (the compact frame keeps only these)."""
    names = ["do_not_contact"]
    if rules.max_per_account is not None:
        names.append("account_id")
    if rules.bdr_capacity is not None or rules.capacity_each is not None:
        names.append("sdr_id")
    return names


def _concat_compact(parts: list[pd.DataFrame], *, row_ids: bool = True) -> pd.DataFrame:
    """The chunks' compact frames as one; text columns stay categorical (codes, not strings)."""
    if not parts:
        return pd.DataFrame({"_row": [], "sqo_probability": []})
    from pandas.api.types import union_categoricals

    out: dict[str, Any] = {}
    for name in parts[0].columns:
        if isinstance(parts[0][name].dtype, pd.CategoricalDtype):
            out[name] = union_categoricals([p[name] for p in parts], ignore_order=True)
        else:
            out[name] = pd.concat([p[name] for p in parts], ignore_index=True)
    frame = pd.DataFrame(out)
    return frame.assign(lead_id=frame["_row"]) if row_ids else frame


def _merge_sample(sample: pd.DataFrame | None, features: pd.DataFrame) -> pd.DataFrame:
    """The reason-table sample so far with this chunk's leads: the smallest id hashes kept."""
    both = features if sample is None else pd.concat([sample, features])
    return _table_sample(both)


def _output_rows(
    model: Any,
    chunk: pd.DataFrame,
    features: pd.DataFrame,
    dec: pd.DataFrame,
    model_version: str,
    rules: ListRules,
    tables: ReasonTables | None,
    encoded: np.ndarray | None = None,
) -> pd.DataFrame:
    """The output rows of one chunk, in list order (the columns of :func:`score_lead_list`)."""
    need = dec["_need"].to_numpy(dtype=bool)
    # per lead the number of its text among the chunk's distinct reason texts (the first: "",
    # for leads not explained): the texts are made into Arrow strings once each
    codes = np.zeros(len(chunk), dtype=np.int64)
    texts = np.array([""], dtype=object)
    if need.any():
        rows = np.flatnonzero(need)
        every = bool(need.all())  # most lists: every lead explained, nothing to take
        found, distinct = lead_reason_codes_or_none(
            model,
            features if every else features.iloc[rows],
            tables=tables,
            exact=dec["_exact"].to_numpy(dtype=bool)[need],
            encoded=encoded if encoded is None or every else encoded[rows],
        )
        codes[need] = found + 1
        texts = np.concatenate([texts, distinct])
    reasons = pc.take(pa.array(texts, type=pa.string()), pa.array(codes))
    table = pd.DataFrame(
        {
            "lead_id": chunk["lead_id"].astype("string").to_numpy(),
            "sqo_probability": dec["sqo_probability"].to_numpy(),
            "rank": dec["rank"].array,
            "tier": dec["tier"].array,
            "reasons": pd.array(pd.arrays.ArrowStringArray(reasons), dtype="string"),
            "model_version": model_version,
            "excluded_reason": dec["excluded_reason"].array,
        }
    )
    fixed = list(LEAD_COLUMNS)
    if "assigned_bdr" in dec.columns:
        table["assigned_bdr"] = dec["assigned_bdr"].array
        fixed.append("assigned_bdr")
    if rules.recontact_days is not None:
        table["last_contact_known"] = dec["last_contacted_at"].to_numpy()
        fixed.append("last_contact_known")
    rest = chunk.rename(
        columns={c: f"list_{c}" for c in chunk.columns if c in fixed and c != "lead_id"}
    )
    rest = rest.drop(columns="lead_id")
    return pd.concat([table[fixed], rest.reset_index(drop=True)], axis=1)


def _write_parquet_buckets(
    folder: Path, buckets: int, tmp: Path, *, progress: Progress | None, total: int
) -> None:
    """Append bucket after bucket, each sorted by place, to ``tmp`` as Parquet row groups."""
    import pyarrow.parquet as pq

    writer: Any = None
    schema: Any = None
    done = 0
    try:
        for b in range(buckets):
            files = sorted(folder.glob(f"bucket-{b:05d}-*.arrow"))
            part = pd.concat([pd.read_feather(f) for f in files], ignore_index=True)
            part = part.sort_values("_place", kind="stable").drop(columns="_place")
            arrow = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False)
            if writer is None:
                schema = arrow.schema
                writer = pq.ParquetWriter(str(tmp), schema)
            writer.write_table(arrow.cast(schema))
            for f in files:
                f.unlink()
            done += len(part)
            if progress is not None:
                progress("writing", done, total)
    finally:
        if writer is not None:
            writer.close()


def _csv_header(columns: Sequence[Any]) -> str:
    """The header line of a CSV file with these columns (quoted as :func:`_csv_lines` does)."""
    return ",".join(_quote_text(str(c)) for c in columns) + "\n"


def _csv_lines(df: pd.DataFrame, has_time: Mapping[str, bool]) -> pa.Array:
    """Each row of ``df`` as the CSV line ``_csv_text(df).to_csv(index=False)`` writes for it
    (without the line break), made column by column in Arrow rather than cell by cell: numbers
    as pandas writes them (``numpy``'s shortest round-trip text), text quoted only where it
    holds a comma, a quote or a line break, dates as :func:`_csv_text` formats them, empty
    cells for missing values."""
    if not len(df.columns):
        return pa.array([""] * len(df), type=pa.string())
    cells = [_csv_cells(df[name], has_time.get(str(name), False)) for name in df.columns]
    if len(cells) == 1:
        return cells[0]
    return pc.binary_join_element_wise(*cells, ",")


def _csv_block(df: pd.DataFrame, has_time: Mapping[str, bool], *, header: bool) -> str:
    """``df`` as the CSV text ``_csv_text(df).to_csv(index=False, header=header)`` writes."""
    return (_csv_header(df.columns) if header else "") + _joined_lines(_csv_lines(df, has_time))


def _joined_lines(lines: pa.Array) -> str:
    if not len(lines):
        return ""
    whole = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)]), lines), "\n")
    return str(whole[0].as_py()) + "\n"


def _quote_text(value: str) -> str:
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


#: the bytes that make a CSV cell quoted: comma, quote, carriage return, line feed
_QUOTE_BYTES = (b",", b'"', b"\r", b"\n")


def _quoted(text: pa.Array) -> pa.Array:
    """Text cells quoted as Python's csv module quotes them (only where needed)."""
    if len(text) == 0 or not _may_need_quotes(text):
        return text
    # a column that needs quotes (the reasons, names with commas) repeats its values: each
    # distinct value is checked and quoted once
    coded = pc.dictionary_encode(text)
    values = coded.dictionary
    needs = pc.match_substring_regex(values, '[,"\r\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.take(pc.if_else(needs, quoted, values), coded.indices)


def _may_need_quotes(text: pa.Array) -> bool:
    """Whether any byte of the column's text is one that needs quoting (a byte scan of the
    column's data, far quicker than a match per cell; a false alarm only costs the check)."""
    data = text.buffers()[2]
    if data is None:
        return False
    raw = data.to_pybytes()
    return any(raw.find(ch) >= 0 for ch in _QUOTE_BYTES)


def _csv_cells(s: pd.Series, timed: bool) -> pa.Array:
    """One column as CSV cells (Arrow strings, "" for a missing value)."""
    dtype = s.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype) and getattr(dtype, "tz", None) is None:
        # numpy's ISO text of whole seconds or days is strftime's "%Y-%m-%dT%H:%M:%S" or
        # "%Y-%m-%d" (seconds floored, as strftime shows them)
        v = s.to_numpy(dtype="datetime64[ns]")
        text = _date_cells(v, timed)
    elif isinstance(dtype, pd.BooleanDtype) or pd.api.types.is_bool_dtype(dtype):
        flags = s.astype("boolean")
        values = np.where(flags.to_numpy(dtype=bool, na_value=False), "true", "false")
        text = pa.array(values, type=pa.string(), mask=flags.isna().to_numpy())
    elif pd.api.types.is_float_dtype(dtype):
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        # what pandas writes: numpy's text of each float (Python's repr), "" when missing
        text = _float_cells(v)
    elif pd.api.types.is_integer_dtype(dtype):
        text = pc.cast(pa.array(s.array if isinstance(dtype, pd.Int64Dtype) else s), pa.string())
    elif pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        arr = pa.array(s.array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        text = _quoted(arr.cast(pa.string()))
    else:
        # any other column (Python objects, dates with a time zone): as _csv_text and pandas
        # make it, value by value; the list's own columns never take this way
        shown = _csv_text(s.to_frame("v"), {"v": timed})["v"]
        plain = [None if _missing(v) else str(v) for v in shown.to_numpy(dtype=object)]
        text = _quoted(pa.array(plain, type=pa.string()))
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    return pc.fill_null(text.cast(pa.string()), "")


def _float_cells(v: np.ndarray) -> pa.Array:
    """Python's repr of each float ("" where NaN), as numpy's ``astype(str)`` gives it.

    Arrow writes the same shortest round-trip digits an order of magnitude faster; it differs
    only in form: a whole number lacks repr's ".0", and it picks exponent notation by other
    rules. Its text is kept where repr writes plain digits (1e-4 ≤ |x| < 1e16, or 0) and Arrow
    did too; any other value is written by numpy.
    """
    missing = np.isnan(v)
    with np.errstate(invalid="ignore"):
        size = np.abs(v)
        plain = ((size >= 1e-4) & (size < 1e16)) | (v == 0)
        # a whole number below 1e16 is its integer's digits and ".0" (-0.0 left to numpy)
        negative_zero = (v == 0) & np.signbit(v)
        whole = (size < 1e16) & (np.floor(v) == v) & ~negative_zero
    text = pc.cast(pa.array(v, mask=missing), pa.string())
    if whole.any():
        digits = pc.cast(pa.array(np.where(whole, v, 0).astype(np.int64)), pa.string())
        text = pc.if_else(pa.array(whole), pc.binary_join_element_wise(digits, ".0", ""), text)
    arrow_exp = pc.fill_null(pc.match_substring(text, "e"), False).to_numpy(zero_copy_only=False)
    other = np.flatnonzero(((~plain | arrow_exp) & ~missing) | negative_zero)
    if other.size:
        shown = np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
        shown[other] = v[other].astype(str)
        text = pa.array(shown, type=pa.string(), mask=missing)
    return text


def _date_cells(v: np.ndarray, timed: bool) -> pa.Array:
    """numpy's ISO text of whole seconds ("%Y-%m-%dT%H:%M:%S", ``timed``) or days
    ("%Y-%m-%d") of ``datetime64[ns]`` values, seconds floored as strftime shows them; null
    where NaT. Written by Arrow (the same text, several times faster)."""
    missing = np.isnat(v)
    if timed:
        seconds = v.astype("datetime64[s]").astype(np.int64)
        stamps = pa.array(seconds, type=pa.timestamp("s"), mask=missing)
        return pc.replace_substring(pc.cast(stamps, pa.string()), " ", "T", max_replacements=1)
    days = v.astype("datetime64[D]").astype(np.int64).astype(np.int32)
    return pc.cast(pa.array(days, type=pa.date32(), mask=missing), pa.string())


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _csv_text(df: pd.DataFrame, has_time: Mapping[str, bool]) -> pd.DataFrame:
    """``df`` formatted as :func:`features.io.write_table` formats a whole table: a date
    column shows its times when any value of the WHOLE column has one (``has_time``)."""
    out = df.copy()
    for name in out.columns:
        s = out[name]
        if pd.api.types.is_datetime64_any_dtype(s):
            fmt = "%Y-%m-%dT%H:%M:%S" if has_time.get(str(name), False) else "%Y-%m-%d"
            out[name] = s.dt.strftime(fmt)
        elif isinstance(s.dtype, pd.BooleanDtype) or pd.api.types.is_bool_dtype(s):
            out[name] = s.map(lambda v: "" if pd.isna(v) else ("true" if v else "false")).astype(
                "string"
            )
    return out


def score_lead_file_cli(
    settings: Settings,
    *,
    leads_file: Path,
    out_file: Path,
    data_dir: Path | None = None,
    as_of: str | None = None,
    rules: ListRules | None = None,
    chunk_rows: int = LEAD_CHUNK_ROWS,
    exact_top: int | None = EXACT_REASONS_TOP,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``pipecast score leads``: a lead list file of any size scored in chunks into ``out_file``.

    The list is read and checked whole (pass 1) before the export is read or the model is
    loaded; a broken list is refused with its lines and nothing is written. Returns the
    summary.
    """
    rules = rules or ListRules()
    rules.check()
    target = check_output_file(out_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    if Path(leads_file).is_file() and Path(leads_file).stat().st_size >= POOL_MIN_BYTES:
        start_workers_early()
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as folder:
        export = _history_export(settings, data_dir)
        has_history = bool(export.tables())
        scan = scan_lead_file(
            Path(leads_file),
            Path(folder),
            chunk_rows=chunk_rows,
            keep_pool=not has_history,
            progress=progress,
        )
        day = _scoring_day(as_of, export, scan.latest_created)
        if rules.needs_accounts() and export.opportunities is None:
            raise InputError(
                "--skip-open-accounts / --skip-customers need the accounts' deals: give the CRM "
                "export with --data (a folder with opportunities and their account_id)."
            )
        model, info = load_champion(settings, SQO_MODEL_NAME)
        return score_scanned_list(
            model,
            scan,
            target,
            model_version=str(info["version"]),
            as_of=day,
            history=export if has_history else None,
            rules=rules,
            exact_top=exact_top,
            progress=progress,
        )


def _scoring_day(
    as_of: str | None, export: Export, latest_created: pd.Timestamp | None
) -> pd.Timestamp:
    """As :func:`_lead_scoring_day`, from the list's latest ``created_at`` day."""
    if as_of:
        return parse_date(as_of)
    candidates = []
    if export.tables():
        with contextlib.suppress(InputError):
            candidates.append(export.exported_at)
    if latest_created is not None:
        candidates.append(latest_created)
    if candidates:
        return max(candidates)
    return pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()
