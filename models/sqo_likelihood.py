"""SQO likelihood of a lead: P(the lead becomes an SQO within the window | pre-sequencing features).

The window is ``sqo_window_days`` (90 by default) from the lead's ``created_at``; leads whose
window has not ended at the label date are undecided and are not trained on
(``features.labels.lead_labels``). Only what is known before the first touch is a feature
(firmographics, source, signal, title, seniority …), never ``meeting_at`` or activity after
sequencing starts: the score exists to decide whom to sequence first.

A LightGBM classifier, calibrated on a later time slice of leads (isotonic or sigmoid by
cross-validated log loss), so that the sum of the scores of a list is the number of SQOs a
manager can plan on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from models.close_probability import restrict_columns
from models.lgbm import LGBMProbability, fit_calibrator


class SQOLikelihoodModel(ClassifierMixin, BaseEstimator):
    """Calibrated P(SQO within the window) for leads.

    Parameters
    ----------
    categorical
        Category columns (``features.lead.CATEGORICAL``).
    columns
        The feature columns the model uses (None: every column given to :meth:`fit`); other
        columns of a table to score are ignored.
    calibration
        ``"auto"``, ``"isotonic"``, ``"sigmoid"`` or ``"none"``.
    n_estimators, learning_rate, num_leaves, min_child_samples
        LightGBM settings; ``min_child_samples`` is a ceiling, scaled down on small lead
        histories (:func:`models.lgbm.scaled_capacity`).
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
        n_estimators: int = 1500,
        learning_rate: float = 0.03,
        num_leaves: int = 7,
        min_child_samples: int = 200,
        n_jobs: int = 2,
        random_state: int = 0,
    ) -> None:
        self.categorical = categorical
        self.columns = columns
        self.calibration = calibration
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(
        self, X: pd.DataFrame, y: Any, *, X_cal: pd.DataFrame | None = None, y_cal: Any = None
    ) -> SQOLikelihoodModel:
        """Fit on the earlier leads; early-stop and calibrate on the later ``(X_cal, y_cal)``."""
        yv = np.asarray(y, dtype="int64")
        self.classes_ = np.array([0, 1])
        X = restrict_columns(X, self.columns)
        X_cal = None if X_cal is None else restrict_columns(X_cal, self.columns)
        self.feature_names_ = [str(c) for c in X.columns]
        has_cal = X_cal is not None and len(X_cal) > 0 and np.unique(np.asarray(y_cal)).size == 2
        ycal = np.asarray(y_cal, dtype="int64") if has_cal else None
        self.clf_ = LGBMProbability(
            categorical=self.categorical,
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        ).fit(X, yv, eval_set=(X_cal, ycal) if has_cal else None)
        self.calibrator_: Any = None
        self.calibration_method_: dict[str, str] = {}
        self.calibration_scores_: dict[str, dict[str, float]] = {}
        if has_cal and self.calibration != "none":
            assert X_cal is not None and ycal is not None
            self.calibrator_, m, s = fit_calibrator(
                self.clf_, X_cal, ycal, method=self.calibration, random_state=self.random_state
            )
            self.calibration_method_["sqo"], self.calibration_scores_["sqo"] = m, s
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        est = self.calibrator_ if self.calibrator_ is not None else self.clf_
        p = np.asarray(est.predict_proba(X)[:, 1], dtype="float64")
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype("int64")

    @property
    def feature_importances_(self) -> pd.Series:
        return self.clf_.feature_importances_
