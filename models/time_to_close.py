"""Close probabilities that know time: a discrete-time competing-risks model of open deals.

Why this model
--------------
``p_win`` learned from closed deals only never sees the deals that stay open (stale deals a rep
stopped working but never closed), and a timing model learned from won deals only cannot tell a
deal that lingers from one that is about to sign. Here every open deal at every weekly snapshot
teaches the model, whatever became of it: a deal still open at the label date contributes the
weeks it was seen open (censored), never a guessed outcome.

The time axis
-------------
From a snapshot at the end of day ``as_of`` (the *landmark*), the future is cut into
*intervals*: the days up to each Sunday, also cut at every month end (so that a month or a
fiscal quarter always ends exactly on an interval end). In each interval an open deal is won,
lost, or still open at its end. A multiclass LightGBM gives the hazards

    h_won(k) = P(won in interval k | open at its start, snapshot at as_of)
    h_lost(k) = P(lost in interval k | …)

from the snapshot's point-in-time features (as known at ``as_of``), how far ahead the interval
starts, its length, and its place in the fiscal calendar (days to the quarter end, whether it
closes a quarter or a month, week of the quarter, last month of the quarter) and the deal's age
at its end. So the quarter-end rush is learned from the calendar and applied at the future
weeks where the quarter actually ends. Then

    S(k) = Π_{j≤k} (1 − h_won(j) − h_lost(j)),   P(won by the end of interval k) = Σ_{j≤k} S(j−1) h_won(j)

and ``p_win`` is the same sum over the long horizon: what is still open then is not a win.
Because the sum only grows, ``P(won by t)`` is non-decreasing in ``t`` and never above ``p_win``.

Calibration (on a later time slice) is a map ``f_a`` of the cumulative probability that
depends on the deal's age ``a`` at as_of, fitted on (prediction, outcome) pairs "won by the month
end / quarter end / next quarter end / ever": a logistic regression in log-odds,

    logit f_a(p) = α + β · logit p + γ · log(1 + a) + δ · logit p · log(1 + a),

with ``β + δ · log(1 + a) > 0`` over the ages it is used for. Conditioning on age matters
because a CRM holds many deals that quietly died and were never closed: their probabilities
are near zero, and one map for all ages (isotonic) pools them with those of young deals and
lifts them all, so old deals are over-forecast. In log-odds, near zero stays near zero. The
age is the one at as_of (not at the horizon), so ``G(t) = f_a(P(won by t))`` for ``t > 0`` and 0
otherwise stays non-decreasing in ``t``: coherence survives calibration.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from models.interval_trees import IntervalForest
from models.lgbm import FeatureEncoder, scaled_capacity
from models.treeshap import PatternTreeShap

log = logging.getLogger(__name__)

#: interval features added to the snapshot's features (names of the calendar position)
INTERVAL_COLUMNS = (
    "days_ahead",
    "interval_days",
    "days_to_quarter_end",
    "closes_quarter",
    "closes_month",
    "week_of_quarter",
    "in_last_month_of_quarter",
    "age_at_interval_end",
)
#: the outcome classes of an interval
OPEN, WON, LOST = 0, 1, 2
#: calibration needs this many (prediction, outcome) pairs; fewer → uncalibrated
MIN_CALIBRATION_PAIRS = 1000
#: at most this many calibration-slice snapshots are used to fit the calibration map (measured
#: on the default simulated export: 8,000 left the age bands' in-period wins 4-9% off on the
#: test slice from the calibration slice's noise alone, 20,000 within 4%)
MAX_CALIBRATION_SNAPSHOTS = 20000
#: the calibration choices (``calibration=``)
CALIBRATIONS = ("logistic_age", "isotonic", "sigmoid", "none")
#: (deal, interval) rows per booster call when predicting hazards: a 5,000-deal pipeline over a
#: 420-day horizon is 350,000 rows, stacked a block at a time (65,536 rows × 41 features ≈ 21 MB)
HAZARD_BLOCK_ROWS = 65_536
#: deals explained at once from which the won/lost contributions are worked out per distinct
#: way through each tree (:mod:`models.treeshap`, tabulated once per model) instead of by
#: LightGBM row by row: the same numbers, several times faster on a pipeline
PATTERN_SHAP_MIN_ROWS = 256
_EPOCH = np.datetime64("1970-01-01", "D")


def _day_numbers(values: Any) -> np.ndarray:
    """Days since 1970 (int64) of dates / timestamps (the day they fall on)."""
    d = pd.to_datetime(pd.Series(np.asarray(values).ravel())).dt.normalize()
    return d.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1.0 - 1e-6)
    return np.log(q / (1.0 - q))


def _per_row_days(values: Any, n: int) -> np.ndarray:
    """One day number per row from one day or one per row."""
    if np.ndim(values) == 0:
        return np.full(n, _day_numbers(np.atleast_1d(values))[0], dtype=np.int64)
    return _day_numbers(values)


def _calendar(days: np.ndarray, fiscal_year_start_month: int) -> dict[str, np.ndarray]:
    """Fiscal-calendar position of each day (int days since 1970)."""
    d = days.astype("datetime64[D]")
    month = d.astype("datetime64[M]")
    m = month.astype(np.int64) % 12 + 1
    into = (m - fiscal_year_start_month) % 3
    q_start = (month - into.astype("timedelta64[M]")).astype("datetime64[D]").astype(np.int64)
    q_end = (month + (3 - into).astype("timedelta64[M]")).astype("datetime64[D]").astype(
        np.int64
    ) - 1
    month_end = (month + np.timedelta64(1, "M")).astype("datetime64[D]").astype(np.int64) - 1
    return {
        "days_to_quarter_end": (q_end - days).astype("float64"),
        "closes_quarter": (q_end == days).astype("float64"),
        "closes_month": (month_end == days).astype("float64"),
        "week_of_quarter": ((days - q_start) // 7 + 1).astype("float64"),
        "in_last_month_of_quarter": (into == 2).astype("float64"),
    }


def interval_ends(as_of_day: int, horizon_days: int) -> np.ndarray:
    """Interval ends after a landmark, as day offsets, up to the first one at or past
    ``horizon_days``.

    Every Sunday and every month end after ``as_of_day`` (int days since 1970) closes an
    interval. The grid depends only on the landmark, so a longer horizon extends it and never
    re-cuts it: what is won by a day does not depend on how far the question looks.
    """
    offsets = np.arange(1, max(int(horizon_days), 1) + 7, dtype=np.int64)
    days = as_of_day + offsets
    sunday = (days - 3) % 7 == 0  # 1970-01-04 (day 3) was a Sunday
    d = days.astype("datetime64[D]")
    month_end = (d + np.timedelta64(1, "D")).astype("datetime64[M]") != d.astype("datetime64[M]")
    ends = offsets[sunday | month_end]
    return ends[: int(np.searchsorted(ends, horizon_days, side="left")) + 1]


def interval_frame(as_of_day: int, ends: np.ndarray, fiscal_year_start_month: int) -> pd.DataFrame:
    """The calendar features of the intervals ending at offsets ``ends`` after ``as_of_day``."""
    starts = np.r_[0, ends[:-1]]
    cal = _calendar(as_of_day + ends, fiscal_year_start_month)
    return pd.DataFrame(
        {
            "days_ahead": starts.astype("float64"),
            "interval_days": (ends - starts).astype("float64"),
            **cal,
        }
    )


class CompetingRisksCloseModel(ClassifierMixin, BaseEstimator):
    """p_win and p_win_in_period from weekly won / lost hazards of open deals.

    Parameters
    ----------
    categorical
        Category columns of the feature table (``features.opportunity.CATEGORICAL``).
    fiscal_year_start_month
        First month of the fiscal year (``dataset.yaml``): where quarters end.
    max_horizon_days
        The long horizon of ``p_win`` ("ever"), capped at how far ahead training saw deals
        close (``support_days_``) plus a quarter: beyond that there is nothing to learn from.
    max_training_rows
        The (snapshot, interval) rows are thinned at random, independently of the outcome, to at
        most this many: an unbiased sample of the risk sets that keeps training fast.
    calibration
        ``"logistic_age"`` (log-odds map with deal-age terms, see the module notes; the
        default), ``"isotonic"`` (one non-decreasing map for all ages), ``"sigmoid"`` (Platt
        scaling, no age) or ``"none"``; fitted on the calibration slice when it has enough
        pairs. An age-dependent map that would not increase with the probability falls back to
        ``"sigmoid"``.
    n_estimators, learning_rate, num_leaves, min_child_samples
        LightGBM settings (``min_child_samples`` is scaled down on small tables).
    n_jobs, random_state
        Threads and seed.
    """

    kind = "competing_risks"

    def __init__(
        self,
        *,
        categorical: Sequence[str] = (),
        fiscal_year_start_month: int = 1,
        max_horizon_days: int = 728,
        max_training_rows: int = 400_000,
        calibration: str = "logistic_age",
        n_estimators: int = 600,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 200,
        n_jobs: int = 2,
        random_state: int = 0,
    ) -> None:
        self.categorical = categorical
        self.fiscal_year_start_month = fiscal_year_start_month
        self.max_horizon_days = max_horizon_days
        self.max_training_rows = max_training_rows
        self.calibration = calibration
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.n_jobs = n_jobs
        self.random_state = random_state

    # --- training rows ------------------------------------------------------------------
    def risk_set_rows(
        self,
        X: pd.DataFrame,
        *,
        as_of: Any,
        closed_at: Any,
        won: Any,
        censor_at: Any,
        horizon_days: int | None = None,
        max_rows: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """Each snapshot stacked with the intervals in which its deal was at risk.

        Parameters
        ----------
        X
            Snapshot features (deal open at the end of ``as_of``).
        as_of
            The snapshot day of each row.
        closed_at, won
            Close day (NaT while open) and outcome (1 won, 0 lost, NaN open) as recorded.
        censor_at
            The last day whose outcomes may be read (the end of it), one or per row: an
            interval counts only if it ends by then, and a close after it is unknown.
        horizon_days
            Longest landmark horizon (default ``max_horizon_days``).
        max_rows
            Keep at most about this many rows: each at-risk row is kept with the same
            probability, drawn independently of its outcome, so the hazards stay unbiased.

        Returns
        -------
        (features + interval columns, outcome per row (OPEN/WON/LOST), snapshot row per row)
        """
        n = len(X)
        horizon = int(horizon_days or self.max_horizon_days)
        d0 = _day_numbers(as_of)
        closed = pd.to_datetime(pd.Series(np.asarray(closed_at).ravel())).dt.normalize()
        c_day = np.where(
            closed.isna().to_numpy(),
            np.iinfo(np.int64).max // 2,
            closed.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64),
        )
        censor = _per_row_days(censor_at, n)
        wonv = np.asarray(won, dtype="float64")
        # a close after the censoring day is not known yet: the deal is open as far as we know
        known_close = c_day <= censor
        rows_all: list[np.ndarray] = []
        frames: list[pd.DataFrame] = []
        labels: list[np.ndarray] = []
        rng = rng or np.random.default_rng(self.random_state)

        def risk(day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            idx = np.flatnonzero(d0 == day)
            ends = interval_ends(int(day), horizon)
            starts = np.r_[0, ends[:-1]]
            # row r is at risk in interval k: open at its start, and its end is observed or
            # the deal closed (observed) inside it
            c_off = c_day[idx] - day
            cens_off = censor[idx] - day
            closes_in = (
                known_close[idx][:, None] & (c_off[:, None] > starts) & (c_off[:, None] <= ends)
            )
            open_at_start = c_off[:, None] > starts
            observed = ends[None, :] <= cens_off[:, None]
            return idx, ends, closes_in, open_at_start & (observed | closes_in)

        days = np.unique(d0)
        keep_share = 1.0
        if max_rows is not None:
            total = sum(int(risk(int(day))[3].sum()) for day in days)
            keep_share = min(1.0, max_rows / max(total, 1))
        for day in days:
            idx, ends, closes_in, at_risk = risk(int(day))
            if keep_share < 1.0:
                at_risk &= rng.random(at_risk.shape) < keep_share
            r, k = np.nonzero(at_risk)
            if not len(r):
                continue
            lab = np.where(closes_in[r, k], np.where(wonv[idx[r]] == 1.0, WON, LOST), OPEN).astype(
                np.int64
            )
            frames.append(interval_frame(int(day), ends, self.fiscal_year_start_month).iloc[k])
            rows_all.append(idx[r])
            labels.append(lab)
        if not rows_all:
            empty = X.iloc[:0].copy()
            for c in INTERVAL_COLUMNS:
                empty[c] = pd.Series(dtype="float64")
            return empty, np.zeros(0, np.int64), np.zeros(0, np.int64)
        rows = np.concatenate(rows_all)
        stacked = self._with_intervals(X.iloc[rows], pd.concat(frames, ignore_index=True))
        return stacked, np.concatenate(labels), rows

    def _with_intervals(self, X: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
        out = X.reset_index(drop=True).copy()
        for c in intervals.columns:
            out[c] = intervals[c].to_numpy()
        age = (
            pd.to_numeric(out["age_days"], errors="coerce").to_numpy(dtype="float64")
            if "age_days" in out.columns
            else np.full(len(out), np.nan)
        )
        out["age_at_interval_end"] = (
            age + out["days_ahead"].to_numpy() + out["interval_days"].to_numpy()
        )
        return out

    # --- fitting ------------------------------------------------------------------------
    def fit(
        self,
        X: pd.DataFrame,
        y: Any = None,
        *,
        as_of: Any,
        closed_at: Any,
        won: Any,
        censor_at: Any,
        X_cal: pd.DataFrame | None = None,
        as_of_cal: Any = None,
        closed_at_cal: Any = None,
        won_cal: Any = None,
        censor_at_cal: Any = None,
    ) -> CompetingRisksCloseModel:
        """Fit the hazards on every open snapshot of the training slice; calibrate on a later one.

        Parameters
        ----------
        X
            Snapshot features of every deal open at each snapshot (closed or not since).
        y
            Ignored (the outcome comes from ``closed_at`` / ``won``).
        as_of, closed_at, won, censor_at
            See :meth:`risk_set_rows`. ``censor_at`` is the end of the training slice: nothing
            recorded later is read.
        X_cal, as_of_cal, closed_at_cal, won_cal, censor_at_cal
            The same for the later calibration slice (early stopping and calibration).
        """
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        rng = np.random.default_rng(self.random_state)
        self.classes_ = np.array([0, 1])
        self.feature_names_ = [str(c) for c in X.columns]
        Xs, ys, _ = self.risk_set_rows(
            X,
            as_of=as_of,
            closed_at=closed_at,
            won=won,
            censor_at=censor_at,
            max_rows=self.max_training_rows,
            rng=rng,
        )
        if not (ys == WON).any():
            raise ValueError("no deal was won in the training slice: nothing to learn from")
        event_ahead = Xs["days_ahead"].to_numpy()[ys != OPEN]
        self.support_days_ = int(event_ahead.max()) + 7 if event_ahead.size else 7
        self.long_horizon_days_ = int(min(self.max_horizon_days, self.support_days_ + 91))
        self.training_rows_ = int(len(ys))
        capacity = scaled_capacity(
            len(ys), min_child_samples=self.min_child_samples, min_category_count=20
        )
        self.encoder_ = FeatureEncoder(
            categorical=self.categorical, min_category_count=capacity["min_category_count"]
        ).fit(Xs)
        cats = self.encoder_.categorical_
        params = {
            "objective": "multiclass",
            "num_class": 3,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": capacity["min_child_samples"],
            "min_data_per_group": capacity["min_data_per_group"],
            "cat_smooth": capacity["cat_smooth"],
            "lambda_l2": 1.0,
            "feature_fraction": 0.9,
            "num_threads": self.n_jobs,
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }
        train = lgb.Dataset(self.encoder_.transform(Xs), label=ys, categorical_feature=cats)
        has_cal = X_cal is not None and len(X_cal) > 0
        valid_sets: list[lgb.Dataset] = []
        callbacks: list[Any] = []
        if has_cal:
            assert X_cal is not None
            Xc, yc, _ = self.risk_set_rows(
                X_cal,
                as_of=as_of_cal,
                closed_at=closed_at_cal,
                won=won_cal,
                censor_at=censor_at_cal,
                max_rows=self.max_training_rows // 2,
                rng=rng,
            )
            if len(yc) and (yc == WON).any():
                valid_sets.append(
                    lgb.Dataset(
                        self.encoder_.transform(Xc),
                        label=yc,
                        categorical_feature=cats,
                        reference=train,
                    )
                )
                callbacks.append(lgb.early_stopping(30, verbose=False))
        self.booster_ = lgb.train(
            params,
            train,
            num_boost_round=self.n_estimators,
            valid_sets=valid_sets or None,
            callbacks=callbacks,
        )
        best = self.booster_.best_iteration
        self.n_iter_ = int(best) if best and best > 0 else int(self.booster_.current_iteration())
        self.calibrator_: IsotonicRegression | LogisticRegression | None = None
        self.calibration_pairs_ = 0
        self.calibration_method_ = "none"
        if has_cal and self.calibration != "none":
            assert X_cal is not None
            self._calibrate(X_cal, as_of_cal, closed_at_cal, won_cal, censor_at_cal)
        return self

    def _calibrate(
        self, X: pd.DataFrame, as_of: Any, closed_at: Any, won: Any, censor_at: Any
    ) -> None:
        """Map of P(won by t) → observed, on the month / quarter / next quarter / ever."""
        n = len(X)
        d0 = _per_row_days(as_of, n)
        closed = pd.to_datetime(pd.Series(np.asarray(closed_at).ravel())).dt.normalize()
        c_off = (
            closed.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64) - d0
        ).astype("float64")
        c_off[closed.isna().to_numpy()] = np.inf
        censor = _per_row_days(censor_at, n)
        cens_off = (censor - d0).astype("float64")
        wonv = np.asarray(won, dtype="float64") == 1.0
        cal = _calendar(d0, self.fiscal_year_start_month)
        q_end = cal["days_to_quarter_end"]
        nq_end = (
            q_end
            + _calendar(d0 + q_end.astype(np.int64) + 1, self.fiscal_year_start_month)[
                "days_to_quarter_end"
            ]
            + 1
        )
        m_end = np.asarray(
            (
                (d0.astype("datetime64[D]").astype("datetime64[M]") + np.timedelta64(1, "M"))
                .astype("datetime64[D]")
                .astype(np.int64)
                - 1
            )
            - d0,
            dtype="float64",
        )
        H = np.maximum(
            np.column_stack([m_end, q_end, nq_end, np.full(n, float(self.long_horizon_days_))]),
            1.0,
        )
        # only horizons the slice has seen to their end: keeping a later horizon for the deals
        # that happened to close by the censoring day (and dropping those still open, mostly
        # not won) would teach the map that deals win more often than they do
        known = cens_off[:, None] >= H
        label = wonv[:, None] & (c_off[:, None] <= H)
        # a sample of the slice's snapshots is plenty for a one-dimensional map
        rows = np.flatnonzero(known.any(axis=1))
        if len(rows) > MAX_CALIBRATION_SNAPSHOTS:
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.choice(rows, MAX_CALIBRATION_SNAPSHOTS, replace=False))
        if not len(rows):
            return
        p = self._won_by_raw(
            X.iloc[rows], as_of=d0[rows].astype("datetime64[D]"), horizon_days=H[rows]
        )
        k = known[rows]
        p_all, y_all = p[k], label[rows][k].astype("float64")
        self.calibration_pairs_ = int(len(p_all))
        if len(p_all) < MIN_CALIBRATION_PAIRS:
            log.info("competing risks: %d calibration pairs, too few to calibrate", len(p_all))
            return
        if self.calibration == "logistic_age":
            age = np.broadcast_to(_ages(X.iloc[rows])[:, None], k.shape)[k]
            known_age = age[np.isfinite(age)]
            # a missing age is taken as the typical one; ages beyond those seen are held at
            # the oldest (so the map stays increasing wherever it is used)
            self.calibration_age_fill_ = float(np.median(known_age)) if known_age.size else 0.0
            self.calibration_max_age_ = float(known_age.max()) if known_age.size else 0.0
            fitted = LogisticRegression(C=1e6, max_iter=1000).fit(
                self._age_terms(p_all, age), y_all
            )
            slope, _, interaction = (float(v) for v in fitted.coef_[0])
            top = np.log1p(self.calibration_max_age_)
            if slope > 0 and slope + interaction * top > 0:
                self.calibrator_ = fitted
                self.calibration_method_ = "logistic_age"
                return
            log.warning("competing risks: age calibration not increasing; Platt scaling instead")
        if self.calibration in ("sigmoid", "logistic_age"):
            # Platt scaling on the log-odds: near-zero stays near zero (isotonic pools the many
            # tiny probabilities of stale deals into one block and lifts them all)
            z = _logit(p_all).reshape(-1, 1)
            platt = LogisticRegression(C=1e6).fit(z, y_all)
            if float(platt.coef_[0, 0]) <= 0:  # a decreasing map would break coherence
                log.warning("competing risks: sigmoid calibration not increasing; left out")
                return
            self.calibrator_ = platt
            self.calibration_method_ = "sigmoid"
            return
        self.calibrator_ = IsotonicRegression(
            out_of_bounds="clip", y_min=0.0, y_max=1.0, increasing=True
        ).fit(p_all, y_all)
        self.calibration_method_ = "isotonic"

    def _age_terms(self, p: np.ndarray, age: np.ndarray) -> np.ndarray:
        """The calibration map's inputs: logit p, log(1 + age) and their product."""
        a = np.where(np.isfinite(age), age, self.calibration_age_fill_)
        la = np.log1p(np.clip(a, 0.0, self.calibration_max_age_))
        z = _logit(np.asarray(p, dtype="float64"))
        return np.column_stack([z, la, z * la])

    # --- prediction ---------------------------------------------------------------------
    def _as_of_days(self, X: pd.DataFrame, as_of: Any) -> np.ndarray:
        """The landmark day of each row: ``as_of`` when given, else rebuilt from the quarter end.

        Without ``as_of``, a fiscal quarter end is placed ``days_left_in_quarter`` days after the
        row's landmark (exact for the quarter end; months inside may be off by a day or two).
        """
        n = len(X)
        if as_of is not None:
            return _per_row_days(as_of, n)
        if "days_left_in_quarter" not in X.columns:
            raise ValueError(
                "the competing-risks model needs as_of or the days_left_in_quarter feature"
            )
        left = pd.to_numeric(X["days_left_in_quarter"], errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )
        left = np.nan_to_num(left, nan=45.0).astype(np.int64)
        anchor = pd.Timestamp(year=2030, month=self.fiscal_year_start_month, day=1)
        q_end = _day_numbers([anchor])[0] - 1
        return q_end - left

    def _booster_matrix(self, encoded: pd.DataFrame) -> np.ndarray:
        """Encoded rows (``encoder_.transform``) as the booster reads them: float64 numbers.

        The table turned into numbers exactly as LightGBM turns a data frame (category codes of
        the training levels, a missing or unknown category as NaN), so that the (deal,
        interval) rows can be stacked in numpy instead of as a data frame: the same numbers
        reach the booster, at a fraction of the cost. Interval columns absent from the deals'
        table are NaN here; :meth:`_interval_rows` fills them.
        """
        levels = list(getattr(self.booster_, "pandas_categorical", None) or [])
        out = np.empty((len(encoded), encoded.shape[1]), dtype="float64")
        k = 0
        for j, name in enumerate(encoded.columns):
            s = encoded[name]
            if isinstance(s.dtype, pd.CategoricalDtype):
                if k >= len(levels):
                    raise ValueError("the booster and the encoder disagree on category columns")
                if list(s.cat.categories) != list(levels[k]):
                    s = s.cat.set_categories(levels[k])
                codes = s.cat.codes.to_numpy()
                out[:, j] = np.where(codes < 0, np.nan, codes)
                k += 1
            else:
                out[:, j] = s.to_numpy(dtype="float64", na_value=np.nan)
        if k != len(levels):
            raise ValueError("the booster and the encoder disagree on category columns")
        return out

    def _interval_rows(
        self, deals: np.ndarray, ages: np.ndarray, intervals: pd.DataFrame
    ) -> np.ndarray:
        """Each deal row (:meth:`_booster_matrix`) stacked with every interval: (n·m, features).

        Row ``i·m + k`` is deal ``i`` in interval ``k``, with the values
        :meth:`_with_intervals` gives it (the interval's calendar, the age at its end).
        """
        n, m = len(deals), len(intervals)
        stacked = np.repeat(deals, m, axis=0)
        cube = stacked.reshape(n, m, deals.shape[1])
        where = {name: j for j, name in enumerate(self.encoder_.columns_)}
        for name in intervals.columns:
            if name in where:
                cube[:, :, where[name]] = intervals[name].to_numpy(dtype="float64")[None, :]
        if "age_at_interval_end" in where:
            ahead = intervals["days_ahead"].to_numpy(dtype="float64")
            length = intervals["interval_days"].to_numpy(dtype="float64")
            # summed in the order _with_intervals sums them: the same float64 result
            cube[:, :, where["age_at_interval_end"]] = ages[:, None] + ahead[None, :] + length
        return stacked

    def _hazards(
        self, X: pd.DataFrame, as_of_day: int, ends: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(h_won, h_lost), each (len(X), len(ends)), for one landmark day.

        The deals are encoded once and stacked with the intervals in numpy, a block of deals
        per booster call (:data:`HAZARD_BLOCK_ROWS` rows at most): memory stays flat in the
        pipeline's size and every (deal, interval) row is predicted exactly once.
        """
        n, m = len(X), len(ends)
        prob = np.empty((n, m, 3), dtype="float64")
        if not n or not m:
            return prob[:, :, WON], prob[:, :, LOST]
        intervals = interval_frame(as_of_day, ends, self.fiscal_year_start_month)
        deals = self._booster_matrix(self.encoder_.transform(X))
        ages = _ages(X)
        forest = self._interval_forest()
        if forest is not None:
            # each split decided once per deal or per interval (models.interval_trees): the
            # same probabilities, without walking every stacked row through every tree
            prob = forest.probabilities(
                deals,
                *self._interval_parts(deals, intervals, ages),
                threads=max(1, int(self.n_jobs)),
            )
            return prob[:, :, WON], prob[:, :, LOST]
        step = max(1, HAZARD_BLOCK_ROWS // m)
        for start in range(0, n, step):
            stop = min(n, start + step)
            rows = self._interval_rows(deals[start:stop], ages[start:stop], intervals)
            block = self.booster_.predict(rows, num_iteration=self.n_iter_)
            prob[start:stop] = np.asarray(block, dtype="float64").reshape(stop - start, m, 3)
        return prob[:, :, WON], prob[:, :, LOST]

    def cumulative_incidence(
        self, X: pd.DataFrame, *, as_of: Any = None, horizon_days: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Uncalibrated P(won by the end of each interval) for rows sharing one landmark.

        Returns
        -------
        (interval ends in days after as_of, P(won by each end) (n, m), P(still open) (n, m))
        """
        days = self._as_of_days(X, as_of)
        if len(np.unique(days)) > 1:
            raise ValueError("cumulative_incidence takes rows of one as_of day")
        horizon = int(horizon_days or self.long_horizon_days_)
        ends = interval_ends(int(days[0]) if len(days) else 0, horizon)
        hw, hl = self._hazards(X, int(days[0]) if len(days) else 0, ends)
        return (ends, *incidence_from_hazards(hw, hl))

    def _won_by_raw(self, X: pd.DataFrame, *, as_of: Any, horizon_days: Any) -> np.ndarray:
        """Uncalibrated P(won within ``horizon_days`` days after as_of), per row.

        ``horizon_days`` may be (n,) or (n, k): k horizons per row from one pass of hazards.
        """
        n = len(X)
        h = np.asarray(horizon_days, dtype="float64")
        if h.ndim < 2:
            h = np.broadcast_to(h.reshape(-1) if h.ndim else h, (n,)).reshape(n, 1)
        h = h.copy()
        h = np.minimum(h, float(self.long_horizon_days_))
        out = np.zeros(h.shape)
        days = self._as_of_days(X, as_of)
        for day in np.unique(days):
            idx = np.flatnonzero((days == day) & (h > 0).any(axis=1))
            if not len(idx):
                continue
            top = max(int(np.ceil(h[idx].max())), 1)
            ends = interval_ends(int(day), top)
            hw, hl = self._hazards(X.iloc[idx], int(day), ends)
            cif, surv = incidence_from_hazards(hw, hl)
            for j in range(h.shape[1]):
                out[idx, j] = _at_horizon(ends, cif, surv, hw, h[idx, j])
        out = np.where(h > 0, out, 0.0)
        return out if np.ndim(horizon_days) == 2 else out[:, 0]

    def predict_won_by(
        self,
        X: pd.DataFrame,
        horizon_days: Any,
        *,
        p_win: np.ndarray | None = None,
        as_of: Any = None,
    ) -> np.ndarray:
        """P(won within ``horizon_days`` days after the end of as_of); 0 for horizons ≤ 0.

        Non-decreasing in the horizon and never above ``p_win`` (the long horizon). ``as_of``
        (one day or one per row) places the future weeks in the fiscal calendar; without it,
        the rows' ``days_left_in_quarter`` does.
        """
        n = len(X)
        h = np.broadcast_to(np.asarray(horizon_days, dtype="float64"), (n,)).copy()
        raw = self._won_by_raw(X, as_of=as_of, horizon_days=h)
        out = self._calibrated(raw, X)
        out = np.where(h <= 0, 0.0, out)
        if p_win is not None:
            out = np.minimum(out, np.asarray(p_win, dtype="float64"))
        return out

    def _calibrated(self, raw: np.ndarray, X: pd.DataFrame) -> np.ndarray:
        """The calibrated probability of each row (its deal age at as_of read from ``X``)."""
        if self.calibrator_ is None:
            return raw
        if (
            isinstance(self.calibrator_, LogisticRegression)
            and self.calibrator_.n_features_in_ == 3
        ):
            terms = self._age_terms(np.asarray(raw, dtype="float64"), _ages(X))
            return np.asarray(self.calibrator_.predict_proba(terms)[:, 1], dtype="float64")
        if isinstance(self.calibrator_, LogisticRegression):
            z = _logit(np.asarray(raw, dtype="float64")).reshape(-1, 1)
            return np.asarray(self.calibrator_.predict_proba(z)[:, 1], dtype="float64")
        return np.asarray(self.calibrator_.predict(raw), dtype="float64")

    def predict_p_win(self, X: pd.DataFrame, *, as_of: Any = None) -> np.ndarray:
        """P(won eventually): won within the long horizon (``long_horizon_days_``)."""
        return self.predict_won_by(X, self.long_horizon_days_, as_of=as_of)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.predict_p_win(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_p_win(X) >= 0.5).astype("int64")

    def predict_in_period(
        self,
        X: pd.DataFrame,
        *,
        start_days: Any,
        end_days: Any,
        p_win: np.ndarray | None = None,
        as_of: Any = None,
    ) -> np.ndarray:
        """P(won inside a period), its first and last days given in days after as_of.

        A period that has already started (``start_days ≤ 0``) counts every win from the end of
        as_of to its end; a later one only wins after its first day. ``as_of`` as in
        :meth:`predict_won_by`.
        """
        n = len(X)
        start = np.broadcast_to(np.asarray(start_days, dtype="float64"), (n,))
        end = np.broadcast_to(np.asarray(end_days, dtype="float64"), (n,))
        # one pass for both ends: the rows stacked twice
        both = pd.concat([X, X], ignore_index=True)
        as_both = as_of if as_of is None or np.ndim(as_of) == 0 else np.r_[as_of, as_of]
        g = self.predict_won_by(both, np.r_[end, start - 1], as_of=as_both)
        out = np.clip(g[:n] - g[n:], 0.0, 1.0)
        if p_win is not None:
            out = np.minimum(out, np.asarray(p_win, dtype="float64"))
        return out

    def predict_close(
        self, X: pd.DataFrame, *, start_days: Any, end_days: Any, as_of: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(p_win, p_win_in_period) of each row from one pass of hazards.

        The same numbers as :meth:`predict_p_win` followed by :meth:`predict_in_period` with
        that ``p_win``: the interval grid depends only on the landmark, so the hazards up to the
        long horizon hold those of the period's ends, and each (deal, interval) row is predicted
        once instead of three times (the long horizon, the period's end, the day before its
        start).

        Parameters
        ----------
        X
            Snapshot features as of ``as_of`` (one row per open deal).
        start_days, end_days
            First and last day of the period in days after the end of as_of (one or per row).
        as_of
            One day or one per row (end of day); without it, ``days_left_in_quarter`` places it.
        """
        n = len(X)
        long = float(self.long_horizon_days_)
        start = np.broadcast_to(np.asarray(start_days, dtype="float64"), (n,))
        end = np.broadcast_to(np.asarray(end_days, dtype="float64"), (n,))
        h = np.column_stack([np.full(n, long), end, start - 1])
        raw = self._won_by_raw(X, as_of=as_of, horizon_days=h)
        g = [np.where(h[:, j] <= 0, 0.0, self._calibrated(raw[:, j], X)) for j in range(3)]
        p_win = g[0]
        in_period = np.minimum(np.clip(g[1] - g[2], 0.0, 1.0), p_win)
        return p_win, in_period

    def _won_lost_booster(self) -> tuple[lgb.Booster, int, int]:
        """A booster of the won and lost trees alone, and where each class sits in it.

        Built once per model from the booster's own text (:func:`class_trees`); TreeSHAP of a
        class is the sum over that class's trees in iteration order, so the contributions it
        gives are those of the full booster, number for number. A booster whose text cannot
        be split is used whole.
        """
        cached = self.__dict__.get("_won_lost")
        if cached is not None and cached[0] is self.booster_:
            return cast(tuple[lgb.Booster, int, int], cached[1:])
        try:
            found = (class_trees(self.booster_, [WON, LOST], num_iteration=self.n_iter_), 0, 1)
        except ValueError:
            log.warning("competing risks: booster text not split by class; explaining with all")
            found = (self.booster_, WON, LOST)
        self.__dict__["_won_lost"] = (self.booster_, *found)
        return found

    def prepare_for_serving(self) -> None:
        """Build the tabulated trees the pipeline-wide predictions and explanations read.

        They are built on first use otherwise, which makes the first forecast after a (re)load
        some 0.6 CPU s slower; a server calls this when it loads the model instead.
        """
        self._interval_forest()
        self._pattern_shap()

    def _interval_forest(self) -> IntervalForest | None:
        """The booster tabulated per (deal, interval) split (built once per model), or
        ``None`` when its trees cannot be read so (the stacked rows are predicted then)."""
        cached = self.__dict__.get("_forest_of")
        if cached is not None and cached[0] is self.booster_:
            return cast(IntervalForest | None, cached[1])
        forest: IntervalForest | None
        try:
            forest = IntervalForest(
                self.booster_,
                num_iteration=self.n_iter_,
                columns=list(self.encoder_.columns_),
                interval_columns=[c for c in INTERVAL_COLUMNS if c != "age_at_interval_end"],
                cross_column="age_at_interval_end",
            )
        except ValueError:
            log.warning("competing risks: trees not tabulated; predicting stacked rows")
            forest = None
        self.__dict__["_forest_of"] = (self.booster_, forest)
        return forest

    def _interval_parts(
        self, deals: np.ndarray, intervals: pd.DataFrame, ages: np.ndarray
    ) -> tuple[np.ndarray, tuple[np.ndarray, list[np.ndarray]] | None]:
        """The intervals' rows and the age at each interval's end as :meth:`_interval_rows`
        sets them, for :meth:`IntervalForest.probabilities`."""
        where = {name: j for j, name in enumerate(self.encoder_.columns_)}
        calendar = np.full((len(intervals), deals.shape[1]), np.nan)
        for name in intervals.columns:
            if name in where:
                calendar[:, where[name]] = intervals[name].to_numpy(dtype="float64")
        if "age_at_interval_end" not in where:
            return calendar, None
        ahead = intervals["days_ahead"].to_numpy(dtype="float64")
        length = intervals["interval_days"].to_numpy(dtype="float64")
        return calendar, (ages, [ahead, length])

    def _pattern_shap(self) -> PatternTreeShap | None:
        """The won-minus-lost TreeSHAP of :meth:`_won_lost_booster` tabulated per tree
        pattern (built once per model), or ``None`` when its trees cannot be read so."""
        booster, won_at, lost_at = self._won_lost_booster()
        cached = self.__dict__.get("_pattern_shap_of")
        if cached is not None and cached[0] is booster:
            return cast(PatternTreeShap | None, cached[1])
        weights = [0.0] * booster.num_model_per_iteration()
        weights[won_at], weights[lost_at] = 1.0, -1.0
        explainer: PatternTreeShap | None
        try:
            explainer = PatternTreeShap(
                booster, num_iteration=self.n_iter_, class_weights=tuple(weights)
            )
        except ValueError:
            log.warning("competing risks: trees not tabulated; explaining with LightGBM")
            explainer = None
        self.__dict__["_pattern_shap_of"] = (booster, explainer)
        return explainer

    def _won_minus_lost(self, rows: np.ndarray, n_columns: int) -> np.ndarray:
        """TreeSHAP of the won class minus that of the lost class, per row and column."""
        booster, won_at, lost_at = self._won_lost_booster()
        explainer = self._pattern_shap() if len(rows) >= PATTERN_SHAP_MIN_ROWS else None
        if explainer is not None:
            phi, leaves = explainer.contributions(rows)
            # the ways through the trees taken as LightGBM takes them, checked on these very
            # rows; any difference and LightGBM explains them itself
            taken = booster.predict(rows, num_iteration=self.n_iter_, pred_leaf=True)
            if np.array_equal(leaves, taken):
                return phi[:, :n_columns]
            log.warning("competing risks: tabulated trees disagree with LightGBM; using it")
        width = n_columns + 1
        classes = booster.num_model_per_iteration()
        raw = np.asarray(
            booster.predict(rows, num_iteration=self.n_iter_, pred_contrib=True),
            dtype="float64",
        ).reshape(len(rows), classes * width)
        won = raw[:, won_at * width : won_at * width + n_columns]
        lost = raw[:, lost_at * width : lost_at * width + n_columns]
        return np.asarray(won - lost)

    def __getstate__(self) -> dict[str, Any]:
        # the won/lost booster and its tables are rebuilt on demand, never stored with the model
        state = dict(super().__getstate__())
        state.pop("_won_lost", None)
        state.pop("_pattern_shap_of", None)
        state.pop("_forest_of", None)
        return state

    def win_contributions(
        self, X: pd.DataFrame, *, as_of: Any = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """What pushes each deal towards won rather than lost, per feature (SHAP, log-odds).

        A deal's eventual outcome, once it closes, is set by how its won hazard compares with
        its lost hazard; the contributions here are those of the log-odds won-vs-lost in the
        interval right after as_of (``margin_won − margin_lost`` of the multiclass booster), so a
        positive value raises ``p_win``. The calendar of that interval is the same for every deal
        of a day and is left out; the deal's age at its end is credited to ``age_days``.

        Parameters
        ----------
        X
            Snapshot features as of ``as_of`` (one row per open deal).
        as_of
            One day or one per row (end of day); without it, ``days_left_in_quarter`` places it.

        Returns
        -------
        (contributions, encoded)
            Contributions indexed like ``X``, one column per deal feature of the model, and the
            encoded deal features (unknown categories are missing there).
        """
        n = len(X)
        columns = list(self.encoder_.columns_)
        deal = [c for c in columns if c not in INTERVAL_COLUMNS]
        out = np.zeros((n, len(columns)))
        encoded = self.encoder_.transform(X)
        days = self._as_of_days(X, as_of) if n else np.zeros(0, np.int64)
        rows_of_deals = self._booster_matrix(encoded) if n else np.zeros((0, len(columns)))
        ages = _ages(X)
        # TreeSHAP of the won and lost trees only: the still-open class is never read, and its
        # trees were a third of the work
        for day in np.unique(days):
            idx = np.flatnonzero(days == day)
            ends = interval_ends(int(day), 1)[:1]
            intervals = interval_frame(int(day), ends, self.fiscal_year_start_month)
            rows = self._interval_rows(rows_of_deals[idx], ages[idx], intervals)
            out[idx] = self._won_minus_lost(rows, len(columns))
        table = pd.DataFrame(out, index=X.index, columns=columns)
        if "age_days" in deal and "age_at_interval_end" in columns:
            table["age_days"] = table["age_days"] + table["age_at_interval_end"]
        return table[deal], encoded

    @property
    def feature_importances_(self) -> pd.Series:
        """Total gain per feature (all three classes), largest first."""
        gain = self.booster_.feature_importance(importance_type="gain", iteration=self.n_iter_)
        return pd.Series(gain, index=self.encoder_.columns_, name="gain").sort_values(
            ascending=False
        )


def _ages(X: pd.DataFrame) -> np.ndarray:
    """Days open at as_of of each row (NaN where unknown)."""
    if "age_days" not in X.columns:
        return np.full(len(X), np.nan)
    return np.asarray(
        pd.to_numeric(X["age_days"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan),
        dtype="float64",
    )


_TREE_HEADER = re.compile(r"^Tree=\d+\n", flags=re.MULTILINE)


def class_trees(booster: lgb.Booster, classes: Sequence[int], *, num_iteration: int) -> lgb.Booster:
    """A booster holding only the trees of ``classes`` of a multiclass ``booster``.

    Parameters
    ----------
    booster
        A multiclass LightGBM booster (one tree per class and iteration).
    classes
        The classes kept, in the order they take in the new booster.
    num_iteration
        Iterations kept (the first ones).

    Returns
    -------
    lgb.Booster
        ``len(classes)`` trees per iteration, each the original tree unchanged, in the original
        order: a class's raw score and its TreeSHAP contributions are those of the original
        booster, number for number, at the cost of its trees alone.

    Raises
    ------
    ValueError
        The booster's text is not the multiclass model format this expects.
    """
    text = booster.model_to_string(num_iteration=num_iteration)
    per_iteration = booster.num_model_per_iteration()
    head, found, rest = text.partition("\nTree=0\n")
    body, end, _ = rest.partition("end of trees")
    classes_ok = all(0 <= c < per_iteration for c in classes)
    if not found or not end or per_iteration < 2 or not classes_ok:
        raise ValueError("not a multiclass LightGBM model text")
    blocks = _TREE_HEADER.split("Tree=0\n" + body)[1:]
    if len(blocks) != per_iteration * num_iteration:
        raise ValueError(f"{len(blocks)} trees for {num_iteration} iterations of {per_iteration}")
    k = len(classes)
    lines = []
    for line in head.split("\n"):
        if line.startswith("tree_sizes="):
            continue  # the sizes of the trees left out; the loader reads the trees in order
        if line.startswith(("num_class=", "num_tree_per_iteration=")):
            line = f"{line.split('=')[0]}={k}"
        elif line.startswith("objective="):
            line = re.sub(r"num_class:\d+", f"num_class:{k}", line)
        lines.append(line)
    trees = [
        f"Tree={i * k + j}\n{blocks[i * per_iteration + c]}"
        for i in range(num_iteration)
        for j, c in enumerate(classes)
    ]
    return lgb.Booster(model_str="\n".join(lines) + "\n" + "".join(trees) + "end of trees\n")


def incidence_from_hazards(h_won: np.ndarray, h_lost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative incidence of winning and survival from interval hazards.

    Parameters
    ----------
    h_won, h_lost
        (n, m) probabilities of being won / lost in interval k given open at its start.

    Returns
    -------
    (CIF_won, S)
        ``CIF_won[:, k] = Σ_{j≤k} S(j−1) h_won(j)`` and ``S[:, k] = Π_{j≤k} (1 − h_won − h_lost)``,
        the probability of being open at the end of interval k (S(−1) = 1).
    """
    stay = np.clip(1.0 - h_won - h_lost, 0.0, 1.0)
    surv = np.cumprod(stay, axis=1)
    before = np.concatenate([np.ones((surv.shape[0], 1)), surv[:, :-1]], axis=1)
    return np.cumsum(before * h_won, axis=1), surv


def _at_horizon(
    ends: np.ndarray, cif: np.ndarray, surv: np.ndarray, h_won: np.ndarray, h: np.ndarray
) -> np.ndarray:
    """CIF at day ``h`` per row: exact at interval ends, linear inside an interval."""
    k = np.searchsorted(ends, h, side="left")  # the interval containing day h
    k = np.minimum(k, len(ends) - 1)
    rows = np.arange(len(h))
    start = np.where(k > 0, ends[np.maximum(k - 1, 0)], 0)
    length = ends[k] - start
    frac = np.clip((h - start) / np.maximum(length, 1), 0.0, 1.0)
    cif_before = np.where(k > 0, cif[rows, np.maximum(k - 1, 0)], 0.0)
    s_before = np.where(k > 0, surv[rows, np.maximum(k - 1, 0)], 1.0)
    return np.asarray(cif_before + frac * s_before * h_won[rows, k], dtype="float64")


def fit_on_time_split(
    X: pd.DataFrame,
    *,
    as_of: Any,
    closed_at: Any,
    won: Any,
    train_end: pd.Timestamp,
    calibration_end: pd.Timestamp | None,
    label_date: pd.Timestamp,
    fiscal_year_start_month: int,
    categorical: Sequence[str] = (),
    **params: Any,
) -> CompetingRisksCloseModel:
    """Fit the competing-risks model on snapshots split by time, as training does.

    Every snapshot up to ``train_end`` trains the hazards, deals still open then included and
    censored at ``train_end`` (nothing later is read: closed deals alone over-represent quick
    closes and miss the quarter-end rush). The snapshots after it, up to ``calibration_end``,
    fit the calibration map with their outcomes as known at ``label_date``. No calibration
    slice (``calibration_end`` None) leaves the model uncalibrated.

    Parameters
    ----------
    X
        Point-in-time features of each snapshot (as known at its ``as_of``).
    as_of, closed_at, won
        Per snapshot: its day, its deal's close day and outcome (NaN / NaT while open).
    train_end, calibration_end, label_date
        The time split's boundaries.
    fiscal_year_start_month, categorical, params
        Passed to :class:`CompetingRisksCloseModel`.
    """
    day = pd.to_datetime(pd.Series(np.asarray(as_of)))
    tr = (day <= train_end).to_numpy(dtype=bool)
    closed = pd.Series(closed_at).reset_index(drop=True)
    wins = pd.Series(won).reset_index(drop=True)
    cal_args: dict[str, Any] = {}
    if calibration_end is not None:
        cr = ((day > train_end) & (day <= calibration_end)).to_numpy(dtype=bool)
        cal_args = {
            "X_cal": X[cr],
            "as_of_cal": day[cr],
            "closed_at_cal": closed[cr],
            "won_cal": wins[cr],
            "censor_at_cal": label_date,
        }
    model = CompetingRisksCloseModel(
        categorical=list(categorical),
        fiscal_year_start_month=fiscal_year_start_month,
        **params,
    )
    return model.fit(
        X[tr],
        as_of=day[tr],
        closed_at=closed[tr],
        won=wins[tr],
        censor_at=train_end,
        **cal_args,
    )
