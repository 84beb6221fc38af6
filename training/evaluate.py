"""Evaluation of a model against its baselines on the same test rows, overall and by group.

The numbers come from :mod:`models.calibration`; this module only decides what is compared with
what, and lays the results out as one long table (one row per target × model × group) that is
logged to MLflow as CSV and printed by ``pipecast train``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.calibration import reliability_table, summarize, summarize_by

#: columns of the evaluation table, in order (brier_skill_vs_* columns follow)
COLUMNS = [
    "target",
    "model",
    "group_by",
    "group",
    "n",
    "base_rate",
    "mean_predicted",
    "auc",
    "log_loss",
    "brier",
    "ece",
    "top_decile_lift",
]


def evaluation_table(
    target: str,
    y: Any,
    predictions: Mapping[str, Any],
    *,
    baselines: Sequence[str],
    groups: Mapping[str, pd.Series] | None = None,
    min_group_rows: int = 30,
) -> pd.DataFrame:
    """Every prediction scored on the same rows, overall and by each grouping column.

    Parameters
    ----------
    target
        What is predicted (``p_win``, ``p_win_in_period``, ``sqo``).
    y
        Observed outcomes (0/1).
    predictions
        ``{name: probabilities}``: the model, its baselines, the truth when known, the champion.
    baselines
        The names in ``predictions`` that every prediction gets a Brier skill score against.
    groups
        ``{column: values}`` to break the numbers down by (segment, stage, source …).
    min_group_rows
        Groups with fewer rows are left out of the breakdown.
    """
    yv = np.asarray(y, dtype="float64")
    refs = {b: np.asarray(predictions[b], dtype="float64") for b in baselines if b in predictions}
    frames = []
    for name, p in predictions.items():
        pv = np.asarray(p, dtype="float64")
        overall = summarize(yv, pv, reference=refs)
        frames.append(
            pd.DataFrame(
                [{"target": target, "model": name, "group_by": "all", "group": "all", **overall}]
            )
        )
        for col, values in (groups or {}).items():
            by = summarize_by(
                yv,
                pv,
                pd.Series(np.asarray(values, dtype=object)),
                reference=refs,
                min_rows=min_group_rows,
            )
            if by.empty:
                continue
            by.insert(0, "group_by", col)
            by.insert(0, "model", name)
            by.insert(0, "target", target)
            frames.append(by)
    table = pd.concat(frames, ignore_index=True)
    skill = [c for c in table.columns if c.startswith("brier_skill_vs_")]
    return table[[c for c in COLUMNS if c in table.columns] + skill]


def headline(table: pd.DataFrame, target: str, model: str) -> dict[str, float]:
    """The overall row of ``model`` for ``target`` as a flat dict of numbers."""
    row = table[
        (table["target"] == target) & (table["model"] == model) & (table["group_by"] == "all")
    ]
    if row.empty:
        return {}
    out = row.iloc[0].drop(labels=["target", "model", "group_by", "group"]).to_dict()
    return {str(k): float(v) for k, v in out.items() if v is not None and not pd.isna(v)}


#: what the by-month table keeps of each model (the rest is in evaluation.csv)
BY_MONTH_METRICS = ("brier", "auc", "mean_predicted")


def by_month(table: pd.DataFrame, target: str) -> pd.DataFrame:
    """The test slice of ``target`` by calendar month, one row per month, models side by side.

    Parameters
    ----------
    table
        An :func:`evaluation_table` with a ``month`` grouping (months with fewer rows than its
        ``min_group_rows`` are not in it).
    target
        ``p_win`` or ``sqo``.

    Returns
    -------
    DataFrame
        ``month, n, base_rate`` and ``<model>_brier``, ``<model>_auc``, ``<model>_mean_predicted``
        for each model compared; empty when the table has no months (an undated export).
    """
    rows = table[(table["target"] == target) & (table["group_by"] == "month")]
    if rows.empty:
        return pd.DataFrame(columns=["month", "n", "base_rate"])
    first = rows["model"].iloc[0]
    out = (
        rows[rows["model"] == first][["group", "n", "base_rate"]]
        .rename(columns={"group": "month"})
        .set_index("month")
    )
    for model, part in rows.groupby("model", sort=False):
        values = part.set_index("group")
        for metric in BY_MONTH_METRICS:
            if metric in values.columns:
                out[f"{model}_{metric}"] = values[metric]
    return out.sort_index().reset_index()


def reliability(y: Any, p: Any, *, n_bins: int = 10) -> pd.DataFrame:
    """The reliability table of one prediction (see :func:`models.calibration.reliability_table`)."""
    return reliability_table(y, p, n_bins=n_bins)


def in_period_coherence(
    p_win: Any, by_quarter_end: Any, by_next_quarter_end: Any
) -> dict[str, float]:
    """Share of rows breaking ``p_win_in_period ≤ p_win`` or monotonicity in the horizon
    (should be 0; reported so that a regression is visible in MLflow)."""
    pw = np.asarray(p_win, dtype="float64")
    q1 = np.asarray(by_quarter_end, dtype="float64")
    q2 = np.asarray(by_next_quarter_end, dtype="float64")
    tol = 1e-9
    return {
        "share_above_p_win": float(np.mean((q1 > pw + tol) | (q2 > pw + tol))) if pw.size else 0.0,
        "share_not_monotone": float(np.mean(q1 > q2 + tol)) if pw.size else 0.0,
    }
