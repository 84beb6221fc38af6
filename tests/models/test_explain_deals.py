"""Top factors of many deals at once: the same factors, values and texts as reading each deal's
cells one by one, for every kind of column (numbers with gaps, categories the model never saw,
the funnel step beside the stage's name, dates, integers, flags)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.baselines import HistoricalCloseModel
from models.explain import (
    HIDDEN_FEATURES,
    MIN_CONTRIBUTION,
    MINUS,
    PLUS,
    TOP_K,
    Factor,
    contributions,
    explain,
    factor_text,
)
from models.lgbm import LGBMProbability

STAGES = ["Discovery", "Demo", "Proposal", "Negotiation"]


def _deals(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Deals whose outcome leans on stage, activity and amount; some cells missing."""
    rng = np.random.default_rng(seed)
    stage_order = rng.integers(0, len(STAGES), n)
    days = rng.integers(0, 120, n).astype("float64")
    days[rng.uniform(size=n) < 0.1] = np.nan
    amount = np.round(rng.lognormal(10, 0.8, n), -2)
    X = pd.DataFrame(
        {
            "stage": pd.array([STAGES[i] for i in stage_order], dtype="string"),
            "stage_order": stage_order.astype("float64"),
            "days_since_last_activity": days,
            "amount": amount,
            "close_date_pushes": pd.array(rng.integers(0, 4, n), dtype="Int64"),
            "has_next_step": rng.integers(0, 2, n).astype(bool),
            "segment": pd.array(rng.choice(["SMB", "Mid-Market", "Enterprise"], n), dtype="string"),
            "horizon_days": np.full(n, 30.0),
        },
        index=pd.Index([f"D-{i:04d}" for i in range(n)], name="opportunity_id"),
    )
    margin = 0.8 * stage_order - 0.03 * np.nan_to_num(days, nan=90.0) - 0.3 * (amount > 4e4)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-margin))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def model() -> LGBMProbability:
    X, y = _deals(3000, 0)
    return LGBMProbability(
        categorical=["stage", "segment"], n_estimators=60, num_leaves=7, min_child_samples=30
    ).fit(X, y)


def _cell(X: pd.DataFrame, name: str, i: int) -> Any:
    """One cell as a plain Python value, read on its own (None when missing or absent)."""
    if name not in X.columns:
        return None
    v = X[name].iloc[i]
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _one_by_one(clf: LGBMProbability, X: pd.DataFrame, k: int = TOP_K) -> list[list[Factor]]:
    """The factors as the definition reads: per deal, per factor, the deal's own cells."""
    contrib, _ = contributions(clf, X)
    encoded = clf.encoder_.transform(X)
    shown = [c for c in contrib.columns if c not in HIDDEN_FEATURES]
    values = contrib[shown].to_numpy(dtype="float64")
    out: list[list[Factor]] = []
    for i in range(len(X)):
        row = []
        for j in np.argsort(-np.abs(values[i]), kind="stable")[:k]:
            c = float(values[i, j])
            if not math.isfinite(c) or abs(c) < MIN_CONTRIBUTION:
                continue
            name = shown[j]
            value = _cell(X, name, i)
            unseen = (
                name in clf.encoder_.levels_
                and value is not None
                and bool(pd.isna(encoded[name].iloc[i]))
            )
            text = factor_text(name, value, c, unseen=unseen)
            stage = _cell(X, "stage", i)
            if name == "stage_order" and value is not None and stage is not None:
                step = f"step {int(round(float(value))) + 1} of the funnel"
                text = f"stage {stage} ({step}) {PLUS if c >= 0 else MINUS}"
            row.append(Factor(name, value, c, text))
        out.append(row)
    return out


def test_many_deals_get_the_factors_of_reading_each_deal_alone(model: LGBMProbability) -> None:
    X, _ = _deals(400, 1)
    # a segment and a stage the model never saw, and deals with no stage at all
    X.loc[X.index[:5], "segment"] = "Public Sector"
    X.loc[X.index[5:10], "stage"] = "Legal review"
    X.loc[X.index[10:15], "stage"] = pd.NA
    got = explain(model, X)
    expected = _one_by_one(model, X)
    assert got.factors == expected
    assert list(got.index) == list(X.index)
    texts = got.texts()
    assert texts.iloc[0] == "; ".join(f.text for f in expected[0])
    # the cases the per-deal reading has to get right are there
    all_factors = [f for row in got.factors for f in row]
    assert any("(new to the model)" in f.text for f in all_factors)
    assert any(f.text.startswith("stage ") and "of the funnel" in f.text for f in all_factors)
    assert any(f.value is None for f in all_factors)
    assert all(f.feature != "horizon_days" for f in all_factors)
    assert all(type(f.value) in (int, float, bool, str, type(None)) for f in all_factors)


def test_a_missing_stage_leaves_the_funnel_step_on_its_own(model: LGBMProbability) -> None:
    X, _ = _deals(300, 2)
    X["stage"] = pd.array([pd.NA] * len(X), dtype="string")
    got = explain(model, X)
    assert got.factors == _one_by_one(model, X)
    assert not any("of the funnel)" in f.text for row in got.factors for f in row)


def test_no_rows_and_fewer_features_than_factors(model: LGBMProbability) -> None:
    X, _ = _deals(50, 3)
    assert explain(model, X.iloc[:0]).factors == []
    assert explain(model, X, k=1).factors == _one_by_one(model, X, k=1)
    assert all(len(row) <= 1 for row in explain(model, X, k=1).factors)


def test_the_rate_fallback_names_the_cell_of_each_deal() -> None:
    X, y = _deals(600, 4)
    close = HistoricalCloseModel().fit(X, y, days_to_close=np.full(len(X), 20.0))
    X = X.copy()
    X.loc[X.index[:3], "stage"] = pd.NA
    X.loc[X.index[3:6], "stage"] = "Legal review"
    got = explain(close, X)
    rates = close.rate_
    for i in [0, 3, 7, 8, 599]:
        (factor,) = got.factors[i]
        stage = _cell(X, "stage", i)
        if stage is None or stage == "Legal review":
            assert factor.text.startswith(("historical win rate overall", "historical win rate of"))
        else:
            assert factor.text.startswith(f"historical win rate of stage {stage}")
            assert factor.feature in rates.by
            assert factor.value == _cell(X, factor.feature, i)
    # the same deal gives the same text wherever it sits in the table
    again = explain(close, X.iloc[::-1])
    assert again.texts().loc[X.index].tolist() == got.texts().tolist()
