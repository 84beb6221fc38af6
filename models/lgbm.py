"""The building blocks shared by the close-probability and SQO-likelihood models.

* :class:`FeatureEncoder` turns a feature table from ``features/`` into what LightGBM needs and
  tolerates the exports it will meet in production: a column missing from a new export becomes
  NaN, a category never seen in training (a new owner, a new industry) becomes missing rather
  than an error, extra columns are ignored.
* :class:`LGBMProbability` is a LightGBM binary classifier with the scikit-learn contract, so that
  it can be frozen and calibrated with ``CalibratedClassifierCV(FrozenEstimator(model))``.
* :func:`fit_calibrator` picks isotonic or sigmoid calibration by cross-validated log loss within
  the calibration slice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GroupKFold, StratifiedKFold

from models.calibration import log_loss

log = logging.getLogger(__name__)

#: calibration methods tried, in order of preference when they tie
CALIBRATION_METHODS = ("sigmoid", "isotonic")
#: isotonic regression overfits small slices; below this many rows only sigmoid is tried
MIN_ROWS_FOR_ISOTONIC = 1000
#: with ``scale_to_data``, a leaf needs at least 1% of the training rows (never fewer than
#: MIN_LEAF_ROWS), a category level 1 in ROWS_PER_LEVEL rows: the settings given are ceilings
ROWS_PER_LEAF = 100
MIN_LEAF_ROWS = 10
ROWS_PER_LEVEL = 500
MIN_LEVEL_ROWS = 5


def scaled_capacity(
    n_rows: int,
    *,
    min_child_samples: int,
    min_category_count: int,
    min_data_per_group: int = 50,
    cat_smooth: float = 20.0,
) -> dict[str, Any]:
    """LightGBM's minimum group sizes scaled to a training table of ``n_rows`` rows.

    The given values are the ceilings, reached by tables of ``ROWS_PER_LEAF × min_child_samples``
    rows and more. A fixed minimum leaf of 400 rows suits a table of 80,000 snapshots, but on a
    few hundred closed deals it leaves room for one or two leaves and every deal gets the same
    probability. The levels a category keeps and LightGBM's ``min_data_per_group`` shrink with
    it, so that a category that matters can still split; ``cat_smooth`` does not: the fewer the
    rows, the more a level's own rate is noise, and a high-cardinality column (a landing page, an
    owner) must still be shrunk towards the overall rate.
    """
    n = max(int(n_rows), 0)
    leaf = int(np.clip(n // ROWS_PER_LEAF, MIN_LEAF_ROWS, max(min_child_samples, MIN_LEAF_ROWS)))
    level = int(
        np.clip(n // ROWS_PER_LEVEL, MIN_LEVEL_ROWS, max(min_category_count, MIN_LEVEL_ROWS))
    )
    return {
        "min_child_samples": min(leaf, min_child_samples),
        "min_category_count": min(level, min_category_count),
        "min_data_per_group": min(max(leaf, MIN_LEAF_ROWS), min_data_per_group),
        "cat_smooth": cat_smooth,
    }


class FeatureEncoder(BaseEstimator):
    """Feature table → LightGBM input with a fixed column set and fixed category levels.

    Parameters
    ----------
    categorical
        Columns to treat as categories. Text columns not listed are treated as categories too.
    min_category_count
        Levels seen fewer times than this in training are treated as missing: a rep with three
        deals says nothing reliable, and it keeps the model small.
    max_levels
        At most this many levels per column (the most frequent); the rest are missing.
    """

    def __init__(
        self,
        *,
        categorical: Sequence[str] = (),
        min_category_count: int = 20,
        max_levels: int = 200,
    ) -> None:
        self.categorical = categorical
        self.min_category_count = min_category_count
        self.max_levels = max_levels

    def fit(self, X: pd.DataFrame, y: Any = None) -> FeatureEncoder:
        declared = set(self.categorical)
        columns: list[str] = []
        levels: dict[str, list[str]] = {}
        for name in X.columns:
            s = X[name]
            if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
                continue  # dates are not features; the builders turn them into ages in days
            is_text = (
                name in declared
                or pd.api.types.is_string_dtype(s)
                or s.dtype == object
                or isinstance(s.dtype, pd.CategoricalDtype)
            )
            if is_text and not pd.api.types.is_bool_dtype(s):
                counts = s.astype("string").value_counts(dropna=True)
                keep = counts[counts >= self.min_category_count].index[: self.max_levels]
                levels[str(name)] = sorted(str(v) for v in keep)
            columns.append(str(name))
        self.columns_ = columns
        self.levels_ = levels
        return self

    @property
    def categorical_(self) -> list[str]:
        return [c for c in self.columns_ if c in self.levels_]

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        out: dict[str, Any] = {}
        n = len(X)
        for name in self.columns_:
            if name in self.levels_:
                dtype = pd.CategoricalDtype(self.levels_[name])
                if name in X.columns:
                    text = X[name].astype("string")
                    known = text.isin(self.levels_[name]).to_numpy(dtype=bool, na_value=False)
                    values = text.astype(object).where(known, None)
                    out[name] = pd.Categorical(values, dtype=dtype)
                else:
                    out[name] = pd.Categorical([None] * n, dtype=dtype)
            elif name in X.columns:
                s = X[name]
                if pd.api.types.is_bool_dtype(s) or isinstance(s.dtype, pd.BooleanDtype):
                    s = s.astype("Float64")
                out[name] = (
                    pd.to_numeric(s, errors="coerce").astype("float64").to_numpy(na_value=np.nan)
                )
            else:
                out[name] = np.full(n, np.nan)
        return pd.DataFrame(out, index=X.index)

    def fit_transform(self, X: pd.DataFrame, y: Any = None) -> pd.DataFrame:
        return self.fit(X).transform(X)


class LGBMProbability(ClassifierMixin, BaseEstimator):
    """LightGBM binary classifier on a feature table (scikit-learn contract).

    Parameters
    ----------
    categorical
        Category columns (see :class:`FeatureEncoder`).
    monotone
        ``{column: +1 or -1}`` monotone constraints, e.g. ``{"horizon_days": 1}``.
    n_estimators, learning_rate, num_leaves, min_child_samples, reg_lambda, colsample
        LightGBM settings; kept small because the tables are small and training must be fast.
    min_category_count
        Levels seen fewer times in training are treated as missing (:class:`FeatureEncoder`).
    min_data_per_group, cat_smooth
        LightGBM's smoothing of categorical splits: a level needs this many rows to form a
        group, and its mean is shrunk towards the overall one by ``cat_smooth`` pseudo-rows, so
        that a high-cardinality column (a landing page, an owner) does not split on noise.
    scale_to_data
        Treat ``min_child_samples``, ``min_category_count`` and ``min_data_per_group`` as
        ceilings and scale them down to the training table (:func:`scaled_capacity`); the
        values used are in ``capacity_``.
    early_stopping_rounds
        With an ``eval_set`` in :meth:`fit`, stop when its log loss has not improved for this many
        rounds.
    n_jobs, random_state
        Threads and seed.
    """

    def __init__(
        self,
        *,
        categorical: Sequence[str] = (),
        monotone: Mapping[str, int] | None = None,
        n_estimators: int = 400,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 100,
        reg_lambda: float = 1.0,
        colsample: float = 0.9,
        early_stopping_rounds: int = 30,
        min_category_count: int = 20,
        min_data_per_group: int = 50,
        cat_smooth: float = 20.0,
        scale_to_data: bool = True,
        n_jobs: int = 2,
        random_state: int = 0,
    ) -> None:
        self.categorical = categorical
        self.monotone = monotone
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.colsample = colsample
        self.early_stopping_rounds = early_stopping_rounds
        self.min_category_count = min_category_count
        self.min_data_per_group = min_data_per_group
        self.cat_smooth = cat_smooth
        self.scale_to_data = scale_to_data
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _params(self) -> dict[str, Any]:
        capacity = self.capacity_
        params: dict[str, Any] = {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": capacity["min_child_samples"],
            "lambda_l2": self.reg_lambda,
            "feature_fraction": self.colsample,
            "cat_smooth": capacity["cat_smooth"],
            "min_data_per_group": capacity["min_data_per_group"],
            "num_threads": self.n_jobs,
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }
        if self.monotone:
            params["monotone_constraints"] = [
                int(self.monotone.get(c, 0)) for c in self.encoder_.columns_
            ]
            params["monotone_constraints_method"] = "advanced"
        return params

    def fit(
        self,
        X: pd.DataFrame,
        y: Any,
        *,
        eval_set: tuple[pd.DataFrame, Any] | None = None,
        sample_weight: Any = None,
    ) -> LGBMProbability:
        """Fit on feature table ``X`` and 0/1 labels ``y``; early-stop on ``eval_set`` if given."""
        yv = np.asarray(y, dtype="float64")
        self.classes_ = np.array([0, 1])
        self.capacity_: dict[str, Any] = {
            "min_child_samples": self.min_child_samples,
            "min_category_count": self.min_category_count,
            "min_data_per_group": self.min_data_per_group,
            "cat_smooth": self.cat_smooth,
        }
        if self.scale_to_data:
            self.capacity_ = scaled_capacity(
                len(X),
                min_child_samples=self.min_child_samples,
                min_category_count=self.min_category_count,
                min_data_per_group=self.min_data_per_group,
                cat_smooth=self.cat_smooth,
            )
        self.encoder_ = FeatureEncoder(
            categorical=self.categorical,
            min_category_count=self.capacity_["min_category_count"],
        ).fit(X)
        Xe = self.encoder_.transform(X)
        cats = self.encoder_.categorical_
        train = lgb.Dataset(
            Xe, label=yv, weight=sample_weight, categorical_feature=cats, free_raw_data=True
        )
        valid_sets = []
        callbacks: list[Any] = []
        if (
            eval_set is not None
            and len(eval_set[0]) > 0
            and np.unique(np.asarray(eval_set[1])).size == 2
        ):
            Xv = self.encoder_.transform(eval_set[0])
            valid = lgb.Dataset(
                Xv,
                label=np.asarray(eval_set[1], dtype="float64"),
                categorical_feature=cats,
                reference=train,
            )
            valid_sets.append(valid)
            callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        self.booster_ = lgb.train(
            self._params(),
            train,
            num_boost_round=self.n_estimators,
            valid_sets=valid_sets or None,
            callbacks=callbacks,
        )
        best = self.booster_.best_iteration
        self.n_iter_ = int(best) if best and best > 0 else int(self.booster_.current_iteration())
        self.feature_names_ = list(self.encoder_.columns_)
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Raw log-odds (what sigmoid calibration works on)."""
        Xe = self.encoder_.transform(X)
        return np.asarray(
            self.booster_.predict(Xe, num_iteration=self.n_iter_, raw_score=True), dtype="float64"
        )

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype("int64")

    @property
    def feature_importances_(self) -> pd.Series:
        """Total gain per feature, largest first."""
        gain = self.booster_.feature_importance(importance_type="gain", iteration=self.n_iter_)
        return pd.Series(gain, index=self.feature_names_, name="gain").sort_values(ascending=False)


def fit_calibrator(
    model: Any,
    X: pd.DataFrame,
    y: Any,
    *,
    method: str = "auto",
    groups: Any = None,
    n_splits: int = 5,
    random_state: int = 0,
) -> tuple[CalibratedClassifierCV, str, dict[str, float]]:
    """Calibrate the fitted ``model`` on a later slice ``(X, y)``.

    With ``method="auto"``, isotonic and sigmoid are compared by their out-of-fold log loss
    within the calibration slice (folds grouped by ``groups`` — the deal — so that a deal's
    snapshots never sit on both sides), and the better one is refitted on the whole slice.

    Returns
    -------
    (calibrated, method, scores)
        The fitted ``CalibratedClassifierCV(FrozenEstimator(model))``, the method chosen and the
        cross-validated log loss of each method tried.
    """
    yv = np.asarray(y, dtype="int64")
    if method != "auto":
        cal = CalibratedClassifierCV(FrozenEstimator(model), method=method).fit(X, yv)
        return cal, method, {}
    methods = [
        m for m in CALIBRATION_METHODS if m != "isotonic" or len(yv) >= MIN_ROWS_FOR_ISOTONIC
    ]
    scores: dict[str, float] = {}
    if len(methods) > 1:
        if groups is not None:
            splitter: Any = GroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
            folds = list(splitter.split(X, yv, groups=np.asarray(groups)))
        else:
            splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
            folds = list(splitter.split(X, yv))
        raw = np.asarray(model.decision_function(X))
        for m in methods:
            oof = np.full(len(yv), np.nan)
            for fit_idx, held_idx in folds:
                if np.unique(yv[fit_idx]).size < 2:
                    continue
                oof[held_idx] = _one_dim_calibration(m, raw[fit_idx], yv[fit_idx], raw[held_idx])
            scores[m] = log_loss(yv, oof)
        chosen = min(methods, key=lambda m: scores[m] if math.isfinite(scores[m]) else math.inf)
    else:
        chosen = methods[0]
    cal = CalibratedClassifierCV(FrozenEstimator(model), method=chosen).fit(X, yv)
    log.info("calibration: %s (cross-validated log loss %s)", chosen, scores)
    return cal, chosen, scores


def _one_dim_calibration(
    method: str, raw_fit: np.ndarray, y_fit: np.ndarray, raw_apply: np.ndarray
) -> np.ndarray:
    """The same one-dimensional maps CalibratedClassifierCV fits, on precomputed scores (fast CV)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw_fit, y_fit)
        return np.asarray(iso.predict(raw_apply))
    # Platt scaling: a logistic regression on the raw score, as CalibratedClassifierCV does
    platt = LogisticRegression(C=1e6).fit(raw_fit.reshape(-1, 1), y_fit)
    return np.asarray(platt.predict_proba(raw_apply.reshape(-1, 1))[:, 1])
