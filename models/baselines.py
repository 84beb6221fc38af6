"""The yardsticks a learned model must beat, and the fallback when data is too thin to learn.

* :class:`StageProbabilityBaseline` — the CRM's own probability per stage (``dataset.yaml``);
  without declared probabilities, each stage's historical win rate.
* :class:`HistoricalRateBaseline` — the historical outcome rate by one or more columns (stage,
  stage × segment; source × signal for leads), shrunk towards the coarser level when a cell has
  few rows, so that a rare combination does not get an extreme rate.
* :class:`InPeriodShareBaseline` — among deals that were eventually won, the share that closed
  within ``h`` days of a snapshot in the same stage; "stage probability × in-period share" is the
  naive ``p_win_in_period``.
* :class:`HistoricalCloseModel` / :class:`HistoricalLeadModel` — the same rates wrapped in the
  interface of the learned models, registered instead of them when there is too little data.

All are fitted on the training slice only and follow the scikit-learn contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

#: a cell is blended with its parent level as if the parent contributed this many rows
PRIOR_STRENGTH = 20.0


def _key(X: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One text key per row from ``columns`` (absent column or missing value → "(missing)")."""
    parts = []
    for c in columns:
        s = (
            X[c].astype("string")
            if c in X.columns
            else pd.Series(pd.NA, index=X.index, dtype="string")
        )
        parts.append(s.fillna("(missing)"))
    if not parts:
        return pd.Series("", index=X.index, dtype="string")
    key = parts[0]
    for p in parts[1:]:
        key = key + "\x1f" + p
    return key


def _as_proba(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype="float64"), 0.0, 1.0)
    return np.column_stack([1.0 - p, p])


class HistoricalRateBaseline(ClassifierMixin, BaseEstimator):
    """Outcome rate by ``by`` columns, learned on the training slice.

    Parameters
    ----------
    by
        Columns, coarsest first (e.g. ``("stage", "segment")``). The rate of a cell is shrunk
        towards the rate of its prefix (``stage``), which is shrunk towards the overall rate.
    prior_strength
        Pseudo-count of the shrinkage.
    """

    def __init__(
        self, *, by: Sequence[str] = ("stage",), prior_strength: float = PRIOR_STRENGTH
    ) -> None:
        self.by = by
        self.prior_strength = prior_strength

    def fit(self, X: pd.DataFrame, y: Any) -> HistoricalRateBaseline:
        yv = np.asarray(y, dtype="float64")
        self.classes_ = np.array([0, 1])
        self.overall_rate_ = float(np.nanmean(yv)) if yv.size else 0.0
        self.rates_: list[dict[str, float]] = []
        parent = pd.Series(self.overall_rate_, index=X.index, dtype="float64")
        for depth in range(1, len(self.by) + 1):
            key = _key(X, list(self.by)[:depth]).to_numpy()
            frame = pd.DataFrame({"key": key, "y": yv, "prior": parent.to_numpy()})
            g = frame.groupby("key", sort=False).agg(
                n=("y", "size"), k=("y", "sum"), prior=("prior", "first")
            )
            rate = (g["k"] + self.prior_strength * g["prior"]) / (g["n"] + self.prior_strength)
            table = {str(k): float(v) for k, v in rate.items()}
            self.rates_.append(table)
            parent = pd.Series(key, index=X.index).map(table).astype("float64")
        return self

    def predict_rate(self, X: pd.DataFrame) -> np.ndarray:
        """The rate of each row's finest known cell (unknown cells fall back to coarser ones)."""
        out = np.full(len(X), self.overall_rate_)
        for depth, table in enumerate(self.rates_, start=1):
            key = _key(X, list(self.by)[:depth])
            found = key.map(table).astype("float64").to_numpy()
            out = np.where(np.isnan(found), out, found)
        return out

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return _as_proba(self.predict_rate(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_rate(X) >= 0.5).astype("int64")


class StageProbabilityBaseline(ClassifierMixin, BaseEstimator):
    """The CRM's stage probability: what a stage-weighted pipeline uses.

    Parameters
    ----------
    probabilities
        ``{stage: probability}`` from ``dataset.yaml`` (``Export.stage_probabilities()``). Stages
        without one — or all stages when none are declared — use the stage's historical win rate
        learned in :meth:`fit`.
    stage_column
        Column holding the stage as of the snapshot.
    """

    def __init__(
        self, *, probabilities: Mapping[str, float] | None = None, stage_column: str = "stage"
    ) -> None:
        self.probabilities = probabilities
        self.stage_column = stage_column

    def fit(self, X: pd.DataFrame, y: Any) -> StageProbabilityBaseline:
        self.classes_ = np.array([0, 1])
        self.history_ = HistoricalRateBaseline(by=(self.stage_column,)).fit(X, y)
        self.declared_ = dict(self.probabilities or {})
        return self

    def predict_rate(self, X: pd.DataFrame) -> np.ndarray:
        learned = self.history_.predict_rate(X)
        if not self.declared_ or self.stage_column not in X.columns:
            return learned
        declared = (
            X[self.stage_column].astype("string").map(self.declared_).astype("float64").to_numpy()
        )
        return np.where(np.isnan(declared), learned, declared)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return _as_proba(self.predict_rate(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_rate(X) >= 0.5).astype("int64")


class InPeriodShareBaseline(BaseEstimator):
    """Share of eventually-won deals that closed within ``h`` days of a snapshot, by stage.

    Fitted on the won rows of the training slice: ``days_to_close`` is the number of days from
    the snapshot's ``as_of`` to the close date (≥ 1 for a deal open at ``as_of``).
    """

    def __init__(self, *, by: str = "stage", min_rows: int = 30) -> None:
        self.by = by
        self.min_rows = min_rows

    def fit(self, X: pd.DataFrame, days_to_close: Any) -> InPeriodShareBaseline:
        days = np.asarray(days_to_close, dtype="float64")
        keep = np.isfinite(days)
        self.overall_ = np.sort(days[keep])
        self.by_group_: dict[str, np.ndarray] = {}
        if self.by in X.columns:
            key = X[self.by].astype("string").fillna("(missing)").to_numpy()
            for k in np.unique(key[keep]):
                d = np.sort(days[keep & (key == k)])
                if d.size >= self.min_rows:
                    self.by_group_[str(k)] = d
        return self

    def share(self, X: pd.DataFrame, horizon_days: Any) -> np.ndarray:
        """Empirical P(closed within ``horizon_days`` | won), per row; 0 for horizons ≤ 0."""
        h = np.broadcast_to(np.asarray(horizon_days, dtype="float64"), (len(X),)).copy()
        out = np.empty(len(X))
        if self.overall_.size:
            out[:] = np.searchsorted(self.overall_, h, side="right") / self.overall_.size
        else:
            out[:] = 1.0
        if self.by_group_ and self.by in X.columns:
            key = X[self.by].astype("string").fillna("(missing)").to_numpy()
            for k, d in self.by_group_.items():
                rows = key == k
                if rows.any():
                    out[rows] = np.searchsorted(d, h[rows], side="right") / d.size
        return np.where(h <= 0, 0.0, out)


class HistoricalCloseModel(ClassifierMixin, BaseEstimator):
    """Fallback close-probability model: win rate by stage × segment, timing by stage.

    It has the interface of :class:`models.close_probability.CloseProbabilityModel`, so serving
    does not care which one is the champion. Used when the history holds too few closed deals to
    train a trustworthy model.
    """

    #: what serving and /models report
    kind = "historical_baseline"

    def __init__(
        self,
        *,
        by: Sequence[str] = ("stage", "segment"),
        stage_column: str = "stage",
        probabilities: Mapping[str, float] | None = None,
    ) -> None:
        self.by = by
        self.stage_column = stage_column
        self.probabilities = probabilities

    def fit(self, X: pd.DataFrame, y: Any, *, days_to_close: Any = None) -> HistoricalCloseModel:
        """Rates on the closed snapshots ``(X, y)``; timing on the won ones' ``days_to_close``.

        With ``probabilities`` (the CRM's stage probabilities), ``p_win`` is the declared
        probability of the snapshot's stage (its historical win rate where none is declared):
        the CRM stage baseline as a servable model.
        """
        yv = np.asarray(y, dtype="float64")
        self.classes_ = np.array([0, 1])
        self.rate_ = HistoricalRateBaseline(by=self.by).fit(X, yv)
        self.declared_: StageProbabilityBaseline | None = (
            StageProbabilityBaseline(
                probabilities=self.probabilities, stage_column=self.stage_column
            ).fit(X, yv)
            if self.probabilities
            else None
        )
        won = yv == 1
        days = (
            np.full(len(X), np.nan)
            if days_to_close is None
            else np.asarray(days_to_close, dtype="float64")
        )
        self.timing_ = InPeriodShareBaseline(by=self.stage_column).fit(X.loc[won], days[won])
        self.feature_names_ = [c for c in self.by if c in X.columns]
        return self

    def _p_win(self, X: pd.DataFrame) -> np.ndarray:
        declared = getattr(self, "declared_", None)
        return declared.predict_rate(X) if declared is not None else self.rate_.predict_rate(X)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return _as_proba(self._p_win(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self._p_win(X) >= 0.5).astype("int64")

    def predict_won_by(
        self, X: pd.DataFrame, horizon_days: Any, *, p_win: np.ndarray | None = None
    ) -> np.ndarray:
        """P(won within ``horizon_days`` days of ``as_of``)."""
        pw = self._p_win(X) if p_win is None else np.asarray(p_win, dtype="float64")
        return pw * self.timing_.share(X, horizon_days)

    def predict_in_period(
        self, X: pd.DataFrame, *, start_days: Any, end_days: Any, p_win: np.ndarray | None = None
    ) -> np.ndarray:
        """P(won inside the period whose first/last days are ``start_days``/``end_days`` after as_of)."""
        start = np.asarray(start_days, dtype="float64")
        before = self.predict_won_by(X, start - 1, p_win=p_win)
        return np.clip(self.predict_won_by(X, end_days, p_win=p_win) - before, 0.0, 1.0)


class HistoricalLeadModel(ClassifierMixin, BaseEstimator):
    """Fallback SQO-likelihood model: historical SQO rate by source × signal."""

    kind = "historical_baseline"

    def __init__(self, *, by: Sequence[str] = ("source", "signal_type")) -> None:
        self.by = by

    def fit(self, X: pd.DataFrame, y: Any) -> HistoricalLeadModel:
        self.classes_ = np.array([0, 1])
        self.rate_ = HistoricalRateBaseline(by=self.by).fit(X, y)
        self.feature_names_ = [c for c in self.by if c in X.columns]
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return _as_proba(self.rate_.predict_rate(X))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.rate_.predict_rate(X) >= 0.5).astype("int64")
