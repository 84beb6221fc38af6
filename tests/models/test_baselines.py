"""Historical-rate and stage baselines, and the fallback models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.baselines import (
    HistoricalCloseModel,
    HistoricalLeadModel,
    HistoricalRateBaseline,
    InPeriodShareBaseline,
    StageProbabilityBaseline,
)


def _frame() -> tuple[pd.DataFrame, np.ndarray]:
    X = pd.DataFrame(
        {
            "stage": pd.array(["A"] * 100 + ["B"] * 100, dtype="string"),
            "segment": pd.array((["S"] * 50 + ["E"] * 50) * 2, dtype="string"),
        }
    )
    y = np.r_[
        np.r_[np.ones(40), np.zeros(10)],
        np.r_[np.ones(10), np.zeros(40)],
        np.ones(50),
        np.zeros(50),
    ]
    return X, y


def test_rate_by_stage_and_shrinkage_by_segment() -> None:
    X, y = _frame()
    by_stage = HistoricalRateBaseline(by=("stage",), prior_strength=0).fit(X, y)
    assert by_stage.predict_rate(X.iloc[[0, 150]]) == pytest.approx([0.5, 0.5])
    cell = HistoricalRateBaseline(by=("stage", "segment"), prior_strength=20).fit(X, y)
    p = cell.predict_rate(X.iloc[[0, 60]])
    # A×S: 40/50 shrunk toward A's rate 0.5 (itself shrunk toward overall 0.5)
    assert p[0] == pytest.approx((40 + 20 * 0.5) / 70)
    assert p[1] == pytest.approx((10 + 20 * 0.5) / 70)
    assert cell.predict_proba(X).shape == (200, 2)


def test_unseen_and_missing_values_fall_back_to_coarser_rates() -> None:
    X, y = _frame()
    model = HistoricalRateBaseline(by=("stage", "segment"), prior_strength=0).fit(X, y)
    new = pd.DataFrame({"stage": pd.array(["A", "Z"], dtype="string")})  # no segment column at all
    p = model.predict_rate(new)
    assert p[0] == pytest.approx(0.5) and p[1] == pytest.approx(y.mean())


def test_stage_probability_uses_declared_values_then_history() -> None:
    X, y = _frame()
    base = StageProbabilityBaseline(probabilities={"A": 0.1}).fit(X, y)
    p = base.predict_rate(pd.DataFrame({"stage": pd.array(["A", "B"], dtype="string")}))
    assert p[0] == 0.1 and p[1] == pytest.approx((50 + 20 * 0.5) / 120)


def test_in_period_share_is_an_empirical_cdf_by_stage() -> None:
    X = pd.DataFrame({"stage": pd.array(["A"] * 40 + ["B"] * 40, dtype="string")})
    days = np.r_[np.arange(1, 41), np.arange(1, 41) * 10]
    share = InPeriodShareBaseline(min_rows=10).fit(X, days)
    q = pd.DataFrame({"stage": pd.array(["A", "B", "C"], dtype="string")})
    s = share.share(q, 20)
    assert (
        s[0] == pytest.approx(0.5)
        and s[1] == pytest.approx(2 / 40)
        and s[2] == pytest.approx(22 / 80)
    )
    assert (share.share(q, 0) == 0).all()


def test_fallback_close_model_is_coherent() -> None:
    rng = np.random.default_rng(1)
    X = pd.DataFrame(
        {
            "stage": pd.array(rng.choice(["A", "B"], 500), dtype="string"),
            "segment": pd.array(rng.choice(["S", "E"], 500), dtype="string"),
        }
    )
    y = (rng.uniform(size=500) < 0.4).astype(int)
    days = rng.integers(1, 200, 500)
    m = HistoricalCloseModel().fit(X, y, days_to_close=days)
    pw = m.predict_proba(X)[:, 1]
    q1 = m.predict_won_by(X, 30)
    q2 = m.predict_won_by(X, 120)
    assert (q1 <= q2 + 1e-12).all() and (q2 <= pw + 1e-12).all()
    later = m.predict_in_period(X, start_days=31, end_days=120)
    assert np.allclose(later, q2 - q1)


def test_fallback_lead_model() -> None:
    X = pd.DataFrame({"source": pd.array(["a", "b"] * 50, dtype="string")})
    y = np.r_[np.ones(50), np.zeros(50)].reshape(2, 50).T.ravel()
    m = HistoricalLeadModel(by=("source", "signal_type")).fit(X, y)
    assert m.predict_proba(X).shape == (100, 2)
