"""How good a probability is: discrimination, calibration and lift — numbers only, no plotting.

Every function takes the observed outcomes ``y`` (0/1) and the predicted probabilities ``p`` of
the same rows. Drawing the reliability diagram is left to ``training.plots`` so that the numbers
can be computed (and tested) without a plotting backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

#: probabilities are clipped to this distance from 0 and 1 before taking logs
EPS = 1e-6
#: z for a 95% Wilson interval
Z95 = 1.959963984540054


def _arrays(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    ya = np.asarray(y, dtype="float64").ravel()
    pa = np.asarray(p, dtype="float64").ravel()
    if ya.shape != pa.shape:
        raise ValueError(f"y has {ya.size} rows but p has {pa.size}")
    keep = np.isfinite(ya) & np.isfinite(pa)
    return ya[keep], np.clip(pa[keep], 0.0, 1.0)


def brier_score(y: Any, p: Any) -> float:
    """Mean squared error of the probability against the 0/1 outcome (lower is better)."""
    ya, pa = _arrays(y, p)
    return float(np.mean((pa - ya) ** 2)) if ya.size else math.nan


def log_loss(y: Any, p: Any) -> float:
    """Mean negative log-likelihood, probabilities clipped to [EPS, 1 - EPS]."""
    ya, pa = _arrays(y, p)
    if not ya.size:
        return math.nan
    pa = np.clip(pa, EPS, 1 - EPS)
    return float(-np.mean(ya * np.log(pa) + (1 - ya) * np.log1p(-pa)))


def auc(y: Any, p: Any) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    ya, pa = _arrays(y, p)
    if ya.size == 0 or np.unique(ya).size < 2:
        return math.nan
    return float(roc_auc_score(ya, pa))


def brier_skill(y: Any, p: Any, p_reference: Any) -> float:
    """Brier skill score against a reference forecast: ``1 - Brier(p) / Brier(reference)``.

    Positive means ``p`` is better than the reference (0.2 = 20% lower Brier score).
    """
    ya = np.asarray(y, dtype="float64").ravel()
    pa = np.asarray(p, dtype="float64").ravel()
    ra = np.asarray(p_reference, dtype="float64").ravel()
    keep = np.isfinite(ya) & np.isfinite(pa) & np.isfinite(ra)
    if not keep.any():
        return math.nan
    ya, pa, ra = ya[keep], np.clip(pa[keep], 0, 1), np.clip(ra[keep], 0, 1)
    ref = float(np.mean((ra - ya) ** 2))
    return math.nan if ref == 0 else 1.0 - float(np.mean((pa - ya) ** 2)) / ref


def wilson_interval(successes: Any, n: Any, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for binomial proportions (vectorised); NaN where ``n == 0``."""
    k = np.asarray(successes, dtype="float64")
    m = np.asarray(n, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = k / m
        denom = 1 + z**2 / m
        centre = (phat + z**2 / (2 * m)) / denom
        half = z * np.sqrt(phat * (1 - phat) / m + z**2 / (4 * m**2)) / denom
    low = np.where(m > 0, np.clip(centre - half, 0, 1), np.nan)
    high = np.where(m > 0, np.clip(centre + half, 0, 1), np.nan)
    return low, high


def _bin_edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        edges = (
            np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
            if p.size
            else np.array([0.0, 1.0])
        )
        edges[0], edges[-1] = 0.0, 1.0
        return edges
    raise ValueError(f"strategy {strategy!r}: choose 'uniform' or 'quantile'")


def reliability_table(
    y: Any, p: Any, *, n_bins: int = 10, strategy: str = "uniform"
) -> pd.DataFrame:
    """Predicted against observed, bin by bin.

    Parameters
    ----------
    y, p
        Outcomes (0/1) and predicted probabilities of the same rows.
    n_bins
        Number of bins.
    strategy
        ``"uniform"`` (equal-width bins on [0, 1]) or ``"quantile"`` (equal-count bins).

    Returns
    -------
    DataFrame
        One row per bin (empty bins included for uniform bins): ``bin, lower, upper, count,
        mean_predicted, observed_rate, ci_low, ci_high`` (95% Wilson interval of the observed
        rate).
    """
    ya, pa = _arrays(y, p)
    edges = _bin_edges(pa, n_bins, strategy)
    idx = np.clip(np.searchsorted(edges, pa, side="right") - 1, 0, len(edges) - 2)
    nb = len(edges) - 1
    count = np.bincount(idx, minlength=nb).astype("float64")
    sum_p = np.bincount(idx, weights=pa, minlength=nb)
    sum_y = np.bincount(idx, weights=ya, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        rate = np.where(count > 0, sum_y / count, np.nan)
    low, high = wilson_interval(sum_y, count)
    return pd.DataFrame(
        {
            "bin": np.arange(nb),
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count.astype("int64"),
            "mean_predicted": mean_p,
            "observed_rate": rate,
            "ci_low": low,
            "ci_high": high,
        }
    )


def expected_calibration_error(
    y: Any, p: Any, *, n_bins: int = 10, strategy: str = "uniform"
) -> float:
    """Count-weighted mean of |mean predicted − observed rate| over the bins (lower is better)."""
    table = reliability_table(y, p, n_bins=n_bins, strategy=strategy)
    filled = table[table["count"] > 0]
    if filled.empty:
        return math.nan
    gap = (filled["mean_predicted"] - filled["observed_rate"]).abs()
    return float((gap * filled["count"]).sum() / filled["count"].sum())


def top_decile_lift(y: Any, p: Any, *, share: float = 0.1) -> float:
    """Outcome rate among the ``share`` highest-scored rows divided by the overall rate.

    Ties at the cut are broken by order (a stable sort), so the top group has exactly
    ``ceil(share * n)`` rows.
    """
    ya, pa = _arrays(y, p)
    if ya.size == 0 or ya.mean() == 0:
        return math.nan
    k = max(1, math.ceil(share * ya.size))
    top = np.argsort(-pa, kind="stable")[:k]
    return float(ya[top].mean() / ya.mean())


def summarize(
    y: Any, p: Any, *, reference: Mapping[str, Any] | None = None, n_bins: int = 10
) -> dict[str, float]:
    """All headline numbers for one prediction: n, base rate, mean predicted, AUC, log loss,
    Brier, ECE, top-decile lift, and ``brier_skill_vs_<name>`` for each reference forecast."""
    ya, pa = _arrays(y, p)
    out: dict[str, float] = {
        "n": float(ya.size),
        "base_rate": float(ya.mean()) if ya.size else math.nan,
        "mean_predicted": float(pa.mean()) if pa.size else math.nan,
        "auc": auc(ya, pa),
        "log_loss": log_loss(ya, pa),
        "brier": brier_score(ya, pa),
        "ece": expected_calibration_error(ya, pa, n_bins=n_bins),
        "top_decile_lift": top_decile_lift(ya, pa),
    }
    for name, ref in (reference or {}).items():
        out[f"brier_skill_vs_{name}"] = brier_skill(y, p, ref)
    return out


def summarize_by(
    y: Any,
    p: Any,
    groups: pd.Series,
    *,
    reference: Mapping[str, Any] | None = None,
    min_rows: int = 1,
) -> pd.DataFrame:
    """:func:`summarize` for every value of ``groups`` (missing values form a group "(missing)")."""
    ya = np.asarray(y, dtype="float64").ravel()
    pa = np.asarray(p, dtype="float64").ravel()
    keys = pd.Series(groups).astype("string").fillna("(missing)").to_numpy()
    refs = {k: np.asarray(v, dtype="float64").ravel() for k, v in (reference or {}).items()}
    rows = []
    for key in sorted(set(keys)):
        mask = keys == key
        if mask.sum() < min_rows:
            continue
        row: dict[str, Any] = {"group": str(key)}
        row.update(summarize(ya[mask], pa[mask], reference={k: v[mask] for k, v in refs.items()}))
        rows.append(row)
    return pd.DataFrame(rows)
