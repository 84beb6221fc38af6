"""Aalen–Johansen cumulative incidence of winning by deal age: the time-aware historical rate.

A flat historical win rate says the same for a deal opened yesterday and one open for a year.
The cumulative incidence of winning by age ``a``,

    CIF_won(a) = Σ_{t ≤ a} S(t−1) · d_won(t) / n(t),   S(t) = Π_{u ≤ t} (1 − d(u) / n(u)),

(n(t) deals still open at the start of age t days, d_won / d_lost of them won / lost at age t,
d = d_won + d_lost) is estimated from every deal, including those still open when the history
was read (censored at their age then) and those that never close: a deal that stays open
only ever adds to the risk sets. A deal open at age ``a`` wins within the next ``h`` days with

    P(won in (a, a + h] | open at a) = (CIF_won(a + h) − CIF_won(a)) / S(a),

which falls as a deal lingers when lingering deals rarely win. Strata (stage at the snapshot,
segment) are used where they hold enough deals, else the coarser level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

#: ages (days) beyond this are treated as this: the curves are flat past it
MAX_AGE_DAYS = 1500


def aalen_johansen(
    entry: Any, exit: Any, cause: Any, *, max_age: int = MAX_AGE_DAYS
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative incidence of a win and survival on a daily age grid 0..``max_age``.

    Parameters
    ----------
    entry
        Age (days) at the end of which each deal is seen open: its age at a snapshot (left
        truncation: at risk from the next day on), or −1 for a deal followed from creation.
    exit
        Age (days) at which it closed, or the last age it was seen open (censored); > entry.
    cause
        1 won, 2 lost, 0 censored (still open when last seen).

    Returns
    -------
    (cif_won, survival)
        Arrays of length ``max_age + 1``: ``cif_won[a]`` = P(won at an age ≤ a), ``survival[a]``
        = P(open at the end of age a), both for a deal entering at age 0.
    """
    en = np.clip(np.asarray(entry, dtype="float64"), -1, max_age).astype(np.int64)
    ex = np.clip(np.asarray(exit, dtype="float64"), 0, max_age).astype(np.int64)
    c = np.asarray(cause, dtype=np.int64)
    size = max_age + 2
    # at risk at age t: entered before t (entry < t) and not gone before t (exit >= t)
    starts = np.bincount(en + 1, minlength=size + 1)[:size]
    stops = np.bincount(ex + 1, minlength=size + 1)[:size]
    at_risk = np.cumsum(starts) - np.cumsum(stops)
    d_won = np.bincount(ex[c == 1], minlength=size)[:size].astype("float64")
    d_lost = np.bincount(ex[c == 2], minlength=size)[:size].astype("float64")
    n = at_risk.astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        hw = np.where(n > 0, d_won / n, 0.0)
        hl = np.where(n > 0, d_lost / n, 0.0)
    surv = np.cumprod(1.0 - hw - hl)
    before = np.r_[1.0, surv[:-1]]
    cif = np.cumsum(before * hw)
    return cif[: max_age + 1], surv[: max_age + 1]


def kaplan_meier(exit: Any, event: Any, *, max_age: int = MAX_AGE_DAYS) -> np.ndarray:
    """Kaplan–Meier survival on the daily age grid (``event`` 1 = closed, 0 = censored),
    deals followed from creation."""
    _, surv = aalen_johansen(
        np.full(len(np.asarray(exit)), -1),
        exit,
        np.where(np.asarray(event) == 1, 2, 0),
        max_age=max_age,
    )
    return surv


def censored_outcomes(
    as_of: Any, closed_at: Any, won: Any, censor_at: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Days from each snapshot to its close as known at ``censor_at``, and the outcome then.

    Parameters
    ----------
    as_of
        Snapshot day of each row (the deal is open at its end).
    closed_at, won
        Close day (NaT while open) and outcome (1 won, 0 lost, NaN open) as recorded.
    censor_at
        The last day whose outcomes may be read (the end of it), one or one per row. A close
        after it is not known yet: the deal counts as open, seen up to that day.

    Returns
    -------
    (days_to_close, won)
        Days from as_of to the close, or to ``censor_at`` for a deal open then (negative for a
        snapshot after ``censor_at``); the outcome, NaN for a deal open at ``censor_at``.
    """
    day = pd.to_datetime(pd.Series(np.asarray(as_of).ravel())).dt.normalize()
    closed = pd.to_datetime(pd.Series(np.asarray(closed_at).ravel())).dt.normalize()
    if np.ndim(censor_at) == 0:
        censor = pd.Series(pd.Timestamp(censor_at).normalize(), index=day.index)
    else:
        censor = pd.to_datetime(pd.Series(np.asarray(censor_at).ravel())).dt.normalize()
    known = (closed.notna() & (closed <= censor)).to_numpy(dtype=bool)
    to_close = (closed - day).dt.days.to_numpy(dtype="float64", na_value=np.nan)
    to_censor = (censor - day).dt.days.to_numpy(dtype="float64", na_value=np.nan)
    days = np.where(known, to_close, to_censor)
    outcome = np.where(known, np.asarray(won, dtype="float64"), np.nan)
    return days, outcome


class CumulativeIncidenceCloseModel(ClassifierMixin, BaseEstimator):
    """Win probability by deal age (Aalen–Johansen), per stratum: baseline and fallback.

    It has the interface of :class:`models.close_probability.CloseProbabilityModel`
    (``predict_proba``, ``predict_won_by``, ``predict_in_period``), so it can be served when
    the history is too short to learn from.

    Parameters
    ----------
    by
        Stratum columns, coarsest first (e.g. ``("stage", "segment")``); a stratum with fewer
        than ``min_deals`` deals (or ``min_wins`` wins) uses its parent's curve.
    min_deals, min_wins
        The least a stratum needs for a curve of its own.
    max_age
        Days of age the curves cover (flat beyond).
    """

    kind = "cumulative_incidence_baseline"

    def __init__(
        self,
        *,
        by: Sequence[str] = ("stage", "segment"),
        min_deals: int = 50,
        min_wins: int = 10,
        max_age: int = MAX_AGE_DAYS,
    ) -> None:
        self.by = by
        self.min_deals = min_deals
        self.min_wins = min_wins
        self.max_age = max_age

    def fit(
        self,
        X: pd.DataFrame,
        y: Any = None,
        *,
        days_to_close: Any,
        won: Any,
        groups: Any = None,
    ) -> CumulativeIncidenceCloseModel:
        """Fit on snapshots: each row is observed from its age at as_of (``age_days``).

        Parameters
        ----------
        X
            Snapshot features with ``age_days`` and the stratum columns (every deal open at
            each snapshot, closed since or not).
        y
            Ignored.
        days_to_close
            Days from as_of to the close, or to the end of observation for a deal still open.
        won
            1 won, 0 lost, NaN still open when last seen (censored).
        groups
            The deal of each row, when rows are weekly snapshots: a stratum's deals and wins
            are then counted once per deal (without it, once per row).
        """
        self.classes_ = np.array([0, 1])
        age = pd.to_numeric(X["age_days"], errors="coerce").to_numpy(dtype="float64", na_value=0)
        age = np.nan_to_num(age, nan=0.0)
        dtc = np.asarray(days_to_close, dtype="float64")
        wv = np.asarray(won, dtype="float64")
        cause = np.where(np.isnan(wv), 0, np.where(wv == 1.0, 1, 2))
        exit_age = age + np.nan_to_num(dtc, nan=0.0)
        deal = None if groups is None else pd.factorize(pd.Series(np.asarray(groups)))[0]
        self.curves_: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        self.overall_ = aalen_johansen(age, exit_age, cause, max_age=self.max_age)
        for depth in range(1, len(self.by) + 1):
            key = _key(X, list(self.by)[:depth])
            table: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for k in pd.unique(key):
                rows = key == k
                if (
                    _count(rows, deal) < self.min_deals
                    or _count(rows & (cause == 1), deal) < self.min_wins
                ):
                    continue
                table[str(k)] = aalen_johansen(
                    age[rows], exit_age[rows], cause[rows], max_age=self.max_age
                )
            self.curves_.append(table)
        self.feature_names_ = ["age_days", *[c for c in self.by if c in X.columns]]
        return self

    def fit_snapshots(
        self,
        X: pd.DataFrame,
        *,
        as_of: Any,
        closed_at: Any,
        won: Any,
        censor_at: Any,
        groups: Any = None,
    ) -> CumulativeIncidenceCloseModel:
        """Fit on the weekly snapshots known at ``censor_at`` (the end of that day).

        Snapshots dated after ``censor_at`` are left out, and a close after it is not read:
        such a deal counts as open, seen up to ``censor_at`` — as are deals that never close.

        Parameters
        ----------
        X
            Snapshot features with ``age_days`` and the stratum columns.
        as_of, closed_at, won, censor_at
            See :func:`censored_outcomes`.
        groups
            The deal of each snapshot (see :meth:`fit`).
        """
        days, outcome = censored_outcomes(as_of, closed_at, won, censor_at)
        rows = np.isfinite(days) & (days >= 0)
        if not (outcome[rows] == 1.0).any():
            raise ValueError(
                "no deal was won by the censoring day: no cumulative incidence to estimate"
            )
        return self.fit(
            X.loc[rows],
            days_to_close=days[rows],
            won=outcome[rows],
            groups=None if groups is None else np.asarray(groups)[rows],
        )

    def _curve_index(
        self, X: pd.DataFrame
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
        curves = [self.overall_]
        which = np.zeros(len(X), dtype=np.int64)
        for depth, table in enumerate(self.curves_, start=1):
            key = _key(X, list(self.by)[:depth])
            for k, curve in table.items():
                rows = key == k
                if rows.any():
                    curves.append(curve)
                    which[rows] = len(curves) - 1
        return curves, which

    def predict_won_by(
        self, X: pd.DataFrame, horizon_days: Any, *, p_win: np.ndarray | None = None, **_: Any
    ) -> np.ndarray:
        """P(won within ``horizon_days`` days after as_of | open at its age then)."""
        n = len(X)
        h = np.broadcast_to(np.asarray(horizon_days, dtype="float64"), (n,))
        age = pd.to_numeric(X["age_days"], errors="coerce").to_numpy(dtype="float64", na_value=0)
        a = np.clip(np.nan_to_num(age, nan=0.0), 0, self.max_age).astype(np.int64)
        b = np.clip(a + np.maximum(np.nan_to_num(h, nan=0.0), 0), 0, self.max_age).astype(np.int64)
        curves, which = self._curve_index(X)
        out = np.zeros(n)
        for i, (cif, surv) in enumerate(curves):
            rows = which == i
            if not rows.any():
                continue
            s = surv[a[rows]]
            gain = cif[b[rows]] - cif[a[rows]]
            out[rows] = np.where(s > 0, gain / np.where(s > 0, s, 1.0), 0.0)
        out = np.clip(np.where(h <= 0, 0.0, out), 0.0, 1.0)
        if p_win is not None:
            out = np.minimum(out, np.asarray(p_win, dtype="float64"))
        return out

    def predict_p_win(self, X: pd.DataFrame) -> np.ndarray:
        """P(won eventually | open at the row's age): the curves' last value."""
        return self.predict_won_by(X, self.max_age)

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
        **_: Any,
    ) -> np.ndarray:
        """P(won inside the period whose first/last days are ``start_days``/``end_days`` after
        as_of); a started period (``start_days ≤ 0``) counts wins from as_of on."""
        start = np.asarray(start_days, dtype="float64")
        before = self.predict_won_by(X, start - 1)
        out = np.clip(self.predict_won_by(X, end_days) - before, 0.0, 1.0)
        if p_win is not None:
            out = np.minimum(out, np.asarray(p_win, dtype="float64"))
        return out


def _count(rows: np.ndarray, deal: np.ndarray | None) -> int:
    """Rows selected, or distinct deals among them when the rows are snapshots of deals."""
    if deal is None:
        return int(rows.sum())
    return int(np.unique(deal[rows]).size)


def _key(X: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """One text key per row (absent column or missing value → "(missing)")."""
    parts = []
    for c in columns:
        s = (
            X[c].astype("string")
            if c in X.columns
            else pd.Series(pd.NA, index=X.index, dtype="string")
        )
        parts.append(s.fillna("(missing)").to_numpy(dtype=object))
    out = (
        np.array(
            ["\x1f".join(str(v) for v in vals) for vals in zip(*parts, strict=True)], dtype=object
        )
        if parts
        else np.full(len(X), "", dtype=object)
    )
    return out


def incidence_on_snapshots(
    X: pd.DataFrame, snapshots: pd.DataFrame, labels: pd.DataFrame, censor_at: pd.Timestamp
) -> CumulativeIncidenceCloseModel | None:
    """The win incidence by deal age, stage and segment, fitted on weekly snapshots.

    The too-little-data fallback and the time-aware baseline of training and the backtest.
    ``snapshots`` holds each row's ``opportunity_id`` and ``as_of``, ``labels`` its deal's
    ``closed_at`` and ``won``; only what is known at the end of ``censor_at`` is read (deals
    still open then, stale ones included, stay in the risk sets). Strata are the stage and
    segment at the snapshot where they hold enough deals. None when no deal had been won by
    ``censor_at``.
    """
    try:
        return CumulativeIncidenceCloseModel(by=("stage", "segment")).fit_snapshots(
            X,
            as_of=snapshots["as_of"],
            closed_at=labels["closed_at"],
            won=labels["won"],
            censor_at=censor_at,
            groups=snapshots["opportunity_id"].to_numpy(dtype=object),
        )
    except ValueError:
        return None
