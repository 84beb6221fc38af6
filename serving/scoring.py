"""Scoring with the champion models: open opportunities and lead lists (no FastAPI here).

Both functions take an export that need not be the one the models were trained on: a new owner,
an unseen industry or a missing optional column is handled by the models' own encoding (unknown
categories and absent columns become missing values), never an error.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features import lead as lead_features
from features import opportunity as opportunity_features
from features.errors import InputError
from features.io import DatasetConfig, Export, read_export, read_leads_file
from features.periods import Period, fiscal_quarter, parse_date, parse_period
from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
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


def simple_flags(features: pd.DataFrame) -> pd.Series:
    """Pipeline-review red flags readable from the features alone ("; "-separated).

    A first, simple set; richer flags (stale against won deals' stage durations, pushes) come
    with the explanation work.
    """
    n = len(features)
    parts: list[np.ndarray] = []

    def col(name: str) -> np.ndarray:
        if name in features.columns:
            return pd.to_numeric(features[name], errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan
            )
        return np.full(n, np.nan)

    parts.append(np.where(col("days_to_expected_close") < 0, "expected close date passed", ""))
    parts.append(np.where(col("activities_30d") == 0, "no activity in 30 days", ""))
    parts.append(np.where(col("close_date_pushes") >= 3, "close date pushed 3+ times", ""))
    parts.append(np.where(col("has_next_step") == 0, "no next step", ""))
    joined = (
        ["; ".join(p for p in row if p) for row in zip(*parts, strict=True)] if parts else [""] * n
    )
    return pd.Series(joined, index=features.index, dtype="string")


def score_opportunities(
    model: Any,
    features: pd.DataFrame,
    *,
    as_of: pd.Timestamp,
    period: Period,
    model_version: str,
) -> pd.DataFrame:
    """Per open opportunity: p_win, p_win_in_period, expected value and flags.

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
            "flags": simple_flags(features).to_numpy(),
            "top_factors": pd.Series([""] * len(features), dtype="string").to_numpy(),
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
    model, info = load_champion(settings, CLOSE_MODEL_NAME)
    export = read_export(data_dir, require=("opportunities",))
    day = parse_date(as_of) if as_of else export.exported_at
    fy = export.config.fiscal_year_start_month
    chosen = parse_period(period, fy) if period else fiscal_quarter(day, fy)
    features = opportunity_features.build(export, as_of=day)
    table = score_opportunities(
        model, features, as_of=day, period=chosen, model_version=str(info["version"])
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
            "reasons": pd.Series([""] * len(features), dtype="string").to_numpy(),
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
