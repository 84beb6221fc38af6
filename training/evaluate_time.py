"""In-period probabilities judged where a forecast needs them: by the point of the quarter.

A ``p_win_in_period`` can be well calibrated on average and still wrong in the weeks that
matter: late in a quarter (when the quarter-end rush pulls closes in), for a month inside the
quarter, for the next quarter, or for deals that have lingered for months. :func:`by_time`
cuts the test rows along those lines and reports, for each cut and each model, the ECE, the
Brier score and predicted against actual wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from models.calibration import brier_score, expected_calibration_error

#: thirds of a 13-week quarter by the week of the snapshot's as_of
QUARTER_THIRDS = (("weeks 1-4", 1, 4), ("weeks 5-9", 5, 9), ("weeks 10-13", 10, 14))
#: deal age bands in days open at as_of (inclusive upper bounds)
AGE_BANDS = (("0-30 days", -np.inf, 30), ("31-90 days", 31, 90), ("over 90 days", 91, np.inf))


def week_of_quarter(as_of: Any, fiscal_year_start_month: int = 1) -> np.ndarray:
    """Week of the fiscal quarter (1 = its first seven days) of each as_of day."""
    d = pd.to_datetime(pd.Series(np.asarray(as_of).ravel())).dt.normalize()
    months_into = (d.dt.month - fiscal_year_start_month) % 3
    first_of_month = d - pd.to_timedelta(d.dt.day - 1, unit="D")
    q_start = first_of_month.to_numpy(dtype="datetime64[M]") - months_into.to_numpy(
        dtype=np.int64
    ).astype("timedelta64[M]")
    days = (d.to_numpy(dtype="datetime64[D]") - q_start.astype("datetime64[D]")).astype(np.int64)
    return days // 7 + 1


def quarter_third(as_of: Any, fiscal_year_start_month: int = 1) -> np.ndarray:
    """``weeks 1-4`` / ``weeks 5-9`` / ``weeks 10-13`` per as_of (week 14, a partial one, is
    counted with the last third)."""
    week = week_of_quarter(as_of, fiscal_year_start_month)
    out = np.empty(len(week), dtype=object)
    for name, lo, hi in QUARTER_THIRDS:
        out[(week >= lo) & (week <= hi)] = name
    return out


def age_band(age_days: Any) -> np.ndarray:
    """``0-30 days`` / ``31-90 days`` / ``over 90 days`` open at as_of (missing → ``unknown``)."""
    age = np.asarray(
        pd.to_numeric(pd.Series(np.asarray(age_days).ravel()), errors="coerce"), dtype="float64"
    )
    out = np.full(len(age), "unknown", dtype=object)
    for name, lo, hi in AGE_BANDS:
        out[(age >= lo) & (age <= hi)] = name
    return out


def by_time(
    rows: pd.DataFrame,
    predictions: Mapping[str, Any],
    *,
    fiscal_year_start_month: int = 1,
    n_bins: int = 10,
) -> pd.DataFrame:
    """ECE, Brier and predicted vs actual wins by third of quarter, period kind and deal age.

    Parameters
    ----------
    rows
        One row per (snapshot, period) with ``as_of`` (the snapshot day, end of day),
        ``period`` (its kind: ``quarter``, ``month``, ``next quarter`` …), ``age_days`` (days
        open at as_of) and ``won_in_period`` (1.0 / 0.0: the actual outcome; rows whose
        outcome is unknown must be left out).
    predictions
        ``{model name: P(won in the period) per row}``.
    fiscal_year_start_month
        Where the fiscal quarters start.

    Returns
    -------
    DataFrame
        One row per (cut, group, model): ``cut`` (``all``, ``quarter third``, ``period``,
        ``deal age``, and ``period × quarter third``), ``group``, ``model``, ``rows``,
        ``predicted_wins``, ``actual_wins``, ``predicted_over_actual``, ``ece``, ``brier``.
    """
    y = rows["won_in_period"].to_numpy(dtype="float64")
    if np.isnan(y).any():
        raise ValueError("won_in_period has unknown outcomes: leave those rows out")
    third = quarter_third(rows["as_of"], fiscal_year_start_month)
    period = rows["period"].astype("string").to_numpy(dtype=object)
    cuts: dict[str, np.ndarray] = {
        "all": np.full(len(rows), "all", dtype=object),
        "quarter third": third,
        "period": period,
        "deal age": age_band(rows["age_days"]),
        "period × quarter third": np.array(
            [f"{p} / {t}" for p, t in zip(period, third, strict=True)], dtype=object
        ),
    }
    out: list[dict[str, Any]] = []
    for cut, group in cuts.items():
        for g in pd.unique(group):
            mask = group == g
            for name, p in predictions.items():
                pv = np.asarray(p, dtype="float64")[mask]
                yv = y[mask]
                pred, act = float(pv.sum()), float(yv.sum())
                out.append(
                    {
                        "cut": cut,
                        "group": str(g),
                        "model": name,
                        "rows": int(mask.sum()),
                        "predicted_wins": pred,
                        "actual_wins": act,
                        "predicted_over_actual": pred / act if act > 0 else np.nan,
                        "ece": expected_calibration_error(yv, pv, n_bins=n_bins),
                        "brier": brier_score(yv, pv),
                    }
                )
    return pd.DataFrame(out)
