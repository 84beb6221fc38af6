"""Close probability of an open opportunity: ``p_win`` and ``p_win_in_period``.

Targets — why they are shaped this way
--------------------------------------
A training row is a *snapshot*: an opportunity as it stood at the end of day ``as_of`` (weekly
snapshots of every open deal), with features built from what was known then only.

* ``p_win`` = P(the deal is eventually won | snapshot). Learned by a LightGBM classifier on the
  snapshots whose outcome is known. Deals still open when the labels are read are *censored*, not
  lost: they are left out, and the time split (``training.splits``) keeps a gap so that the rows
  left in are not just the fast-closing deals.
* ``p_win_in_period`` = P(won on or before the period end | snapshot) — or, for a period that
  starts later, won inside it. It is factored as

      P(won by as_of + h) = p_win × G(h),   G(h) = P(closed within h days | won, snapshot)

  G is a second LightGBM classifier trained on the snapshots of won deals only, each stacked with
  several horizons ``h`` (the days to the current and next fiscal quarter end, plus random
  horizons up to a year and a half, so any period end works) and the label "closed within h
  days". ``horizon_days`` is a feature under a +1 monotone constraint. This gives by construction
  what a forecast needs: ``p_win_in_period ≤ p_win`` and non-decreasing in the period end. It
  also sidesteps censoring for timing: a won deal's close date is known exactly.
* Both classifiers are calibrated on a later time slice (isotonic or sigmoid, whichever has the
  lower cross-validated log loss within that slice). Calibration maps are non-decreasing, so the
  two properties above survive calibration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from models.lgbm import LGBMProbability, fit_calibrator

log = logging.getLogger(__name__)

#: name of the horizon feature of the timing model
HORIZON = "horizon_days"


def restrict_columns(X: pd.DataFrame, columns: Sequence[str] | None) -> pd.DataFrame:
    """``X`` limited to ``columns`` (those it has, in that order); all of it when None."""
    if columns is None:
        return X
    return X[[c for c in columns if c in X.columns]]


def stack_horizons(
    X: pd.DataFrame,
    days_to_close: Any,
    horizons: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Repeat each won snapshot once per horizon: features + ``horizon_days`` and the label.

    Parameters
    ----------
    X
        Snapshot features of won deals (n rows).
    days_to_close
        Days from each snapshot's ``as_of`` to its close date (n values, ≥ 1).
    horizons
        (n, k) horizons in days; NaN entries are skipped.

    Returns
    -------
    (stacked features, labels "closed within horizon", row index into X)
    """
    days = np.asarray(days_to_close, dtype="float64")
    h = np.asarray(horizons, dtype="float64")
    rows, cols = np.nonzero(np.isfinite(h))
    stacked = X.iloc[rows].reset_index(drop=True)
    stacked[HORIZON] = h[rows, cols]
    label = (days[rows] <= h[rows, cols]).astype("int64")
    return stacked, label, rows


class CloseProbabilityModel(ClassifierMixin, BaseEstimator):
    """p_win and p_win_in_period from one object (what is logged to MLflow and served).

    Parameters
    ----------
    categorical
        Category columns of the feature table (``features.opportunity.CATEGORICAL``).
    columns
        The feature columns the model uses (None: every column of the table given to
        :meth:`fit`). Prediction takes any table that has them: other columns are ignored, so
        a model restricted to a few columns scores the same snapshot table as the full one.
    calibration
        ``"auto"`` (choose by cross-validated log loss on the calibration slice), ``"isotonic"``,
        ``"sigmoid"`` or ``"none"``.
    random_horizons
        How many random horizons (uniform on 1..``max_horizon_days``) each won snapshot is
        stacked with, besides the horizons given to :meth:`fit`.
    max_horizon_days
        Longest random horizon.
    n_estimators, learning_rate, num_leaves, min_child_samples
        LightGBM settings of both classifiers. Shallow trees (5 leaves) with many rows per leaf
        did best on held-out slices: a deal's outcome is mostly additive on the log-odds scale
        in its drivers, and snapshots of one deal are far from independent rows, so deep trees
        fit the noise of a few thousand deals. Boosting stops early on the calibration slice.
        ``min_child_samples`` is a ceiling: on a small history a leaf needs 1% of the training
        rows (:func:`models.lgbm.scaled_capacity`), so that a few hundred closed deals still
        give deal-specific probabilities.
    n_jobs, random_state
        Threads and seed.
    """

    kind = "lightgbm"

    def __init__(
        self,
        *,
        categorical: Sequence[str] = (),
        columns: Sequence[str] | None = None,
        calibration: str = "auto",
        random_horizons: int = 4,
        max_horizon_days: int = 540,
        n_estimators: int = 3000,
        learning_rate: float = 0.03,
        num_leaves: int = 5,
        min_child_samples: int = 400,
        n_jobs: int = 2,
        random_state: int = 0,
    ) -> None:
        self.categorical = categorical
        self.columns = columns
        self.calibration = calibration
        self.random_horizons = random_horizons
        self.max_horizon_days = max_horizon_days
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _classifier(self, monotone: dict[str, int] | None = None) -> LGBMProbability:
        return LGBMProbability(
            categorical=self.categorical,
            monotone=monotone,
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )

    def _horizons(self, n: int, given: Any, rng: np.random.Generator) -> np.ndarray:
        parts = []
        if given is not None:
            g = np.asarray(given, dtype="float64")
            parts.append(g.reshape(n, -1))
        if self.random_horizons > 0:
            parts.append(
                rng.integers(1, self.max_horizon_days + 1, size=(n, self.random_horizons)).astype(
                    "float64"
                )
            )
        return np.hstack(parts) if parts else np.full((n, 1), np.nan)

    def fit(
        self,
        X: pd.DataFrame,
        y: Any,
        *,
        days_to_close: Any,
        horizons: Any = None,
        X_cal: pd.DataFrame | None = None,
        y_cal: Any = None,
        days_to_close_cal: Any = None,
        horizons_cal: Any = None,
        groups_cal: Any = None,
        sample_weight: Any = None,
    ) -> CloseProbabilityModel:
        """Fit on the training slice; calibrate on the calibration slice when given.

        Parameters
        ----------
        X, y
            Snapshot features and the eventual outcome (1 won, 0 lost; censored rows excluded).
        days_to_close
            Days from ``as_of`` to the close date, per row (used on won rows only).
        horizons
            Optional (n, k) horizons to stack won rows with, typically the days to the current
            and next fiscal quarter end; random horizons are added to them.
        X_cal, y_cal, days_to_close_cal, horizons_cal
            The same for the later calibration slice; also used to stop boosting early.
        groups_cal
            Opportunity id per calibration row, so calibration folds keep a deal together.
        sample_weight
            Optional weight per training row (of the p_win classifier).
        """
        rng = np.random.default_rng(self.random_state)
        yv = np.asarray(y, dtype="int64")
        self.classes_ = np.array([0, 1])
        X = restrict_columns(X, self.columns)
        X_cal = None if X_cal is None else restrict_columns(X_cal, self.columns)
        self.feature_names_ = [str(c) for c in X.columns]
        has_cal = X_cal is not None and len(X_cal) > 0 and np.unique(np.asarray(y_cal)).size == 2
        ycal = np.asarray(y_cal, dtype="int64") if has_cal else None

        self.win_ = self._classifier().fit(
            X, yv, eval_set=(X_cal, ycal) if has_cal else None, sample_weight=sample_weight
        )

        won: np.ndarray = np.asarray(yv == 1, dtype=bool)
        Xs, ls, _ = stack_horizons(
            X.loc[won],
            np.asarray(days_to_close, dtype="float64")[won],
            self._horizons(
                int(won.sum()), None if horizons is None else np.asarray(horizons)[won], rng
            ),
        )
        cal_stack = None
        if has_cal:
            assert X_cal is not None
            won_c: np.ndarray = np.asarray(ycal == 1, dtype=bool)
            hc = self._horizons(
                int(won_c.sum()),
                None if horizons_cal is None else np.asarray(horizons_cal)[won_c],
                rng,
            )
            Xcs, lcs, rows = stack_horizons(
                X_cal.loc[won_c], np.asarray(days_to_close_cal, dtype="float64")[won_c], hc
            )
            gcs = None if groups_cal is None else np.asarray(groups_cal)[won_c][rows]
            cal_stack = (Xcs, lcs, gcs)
        self.timing_ = self._classifier(monotone={HORIZON: 1}).fit(
            Xs, ls, eval_set=(cal_stack[0], cal_stack[1]) if cal_stack is not None else None
        )

        self.win_calibrator_: Any = None
        self.timing_calibrator_: Any = None
        self.calibration_method_: dict[str, str] = {}
        self.calibration_scores_: dict[str, dict[str, float]] = {}
        if has_cal and self.calibration != "none":
            assert X_cal is not None and ycal is not None
            self.win_calibrator_, m, s = fit_calibrator(
                self.win_,
                X_cal,
                ycal,
                method=self.calibration,
                groups=groups_cal,
                random_state=self.random_state,
            )
            self.calibration_method_["p_win"], self.calibration_scores_["p_win"] = m, s
            if cal_stack is not None and np.unique(cal_stack[1]).size == 2:
                self.timing_calibrator_, m, s = fit_calibrator(
                    self.timing_,
                    cal_stack[0],
                    cal_stack[1],
                    method=self.calibration,
                    groups=cal_stack[2],
                    random_state=self.random_state,
                )
                self.calibration_method_["timing"], self.calibration_scores_["timing"] = m, s
        return self

    # --- prediction ---------------------------------------------------------------------
    def predict_p_win(self, X: pd.DataFrame) -> np.ndarray:
        """P(won eventually) per row."""
        est = self.win_calibrator_ if self.win_calibrator_ is not None else self.win_
        return np.asarray(est.predict_proba(X)[:, 1], dtype="float64")

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.predict_p_win(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_p_win(X) >= 0.5).astype("int64")

    def timing(self, X: pd.DataFrame, horizon_days: Any) -> np.ndarray:
        """G(h) = P(closed within ``horizon_days`` of as_of | won); 0 for horizons ≤ 0."""
        h = np.broadcast_to(np.asarray(horizon_days, dtype="float64"), (len(X),)).copy()
        Xh = X.copy()
        Xh[HORIZON] = np.maximum(h, 0.0)
        est = self.timing_calibrator_ if self.timing_calibrator_ is not None else self.timing_
        g = np.asarray(est.predict_proba(Xh)[:, 1], dtype="float64")
        return np.where(h <= 0, 0.0, g)

    def predict_won_by(
        self, X: pd.DataFrame, horizon_days: Any, *, p_win: np.ndarray | None = None
    ) -> np.ndarray:
        """P(won within ``horizon_days`` days after as_of), ≤ p_win and non-decreasing in h."""
        pw = self.predict_p_win(X) if p_win is None else p_win
        return pw * self.timing(X, horizon_days)

    def predict_in_period(
        self, X: pd.DataFrame, *, start_days: Any, end_days: Any, p_win: np.ndarray | None = None
    ) -> np.ndarray:
        """P(won inside a period), its first and last days given in days after as_of.

        A period that has already started (``start_days ≤ 0``) counts every win from as_of to its
        end; a later one counts only wins after its first day.
        """
        pw = self.predict_p_win(X) if p_win is None else p_win
        start = np.asarray(start_days, dtype="float64")
        g_end = self.timing(X, end_days)
        g_before = self.timing(X, start - 1)
        return pw * np.clip(g_end - g_before, 0.0, 1.0)

    @property
    def feature_importances_(self) -> pd.Series:
        """Gain of each feature in the p_win classifier."""
        return self.win_.feature_importances_
