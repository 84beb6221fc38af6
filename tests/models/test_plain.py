"""The plain challenger: the same models restricted to the raw declared columns."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
from sklearn.base import clone

from features import lead, opportunity, synthetic
from models.plain import (
    PlainCloseModel,
    PlainSQOModel,
    raw_lead_columns,
    raw_opportunity_columns,
)


def _opportunity_table() -> pd.DataFrame:
    export = synthetic.simulate(seed=4, n_opportunities=300, n_leads=300).export
    return opportunity.build(export, as_of=export.exported_at)


def test_raw_opportunity_columns_are_the_state_at_the_snapshot() -> None:
    table = _opportunity_table()
    table["competitor"] = pd.array(["acme"] * len(table), dtype="string")
    raw = raw_opportunity_columns(table, declared=["competitor", "not_in_table"])
    assert {"stage", "amount", "segment"} <= set(raw)
    assert raw[-1] == "competitor" and "not_in_table" not in raw
    engineered = {
        "owner_win_rate",
        "owner_closed_deals",
        "stage_moves",
        "close_date_pushes",
        "activities_30d",
        "days_in_stage",
        "days_left_in_quarter",
    }
    assert not engineered & set(raw)


def test_raw_lead_columns_are_the_lead_s_own() -> None:
    export = synthetic.simulate(seed=4, n_opportunities=100, n_leads=400).export
    table = lead.build(export, as_of=export.exported_at)
    raw = raw_lead_columns(table, declared=["landing_page"])
    assert {"source", "industry", "employees"} <= set(raw)
    assert not [c for c in raw if c.startswith(("title_", "account_")) or c.endswith("_rate")]


def _deals(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    stage = rng.choice(["Discovery", "Proposal", "Negotiation"], n)
    history = rng.normal(size=n)
    lp = np.select([stage == "Proposal", stage == "Negotiation"], [1.0, 2.0], 0.0) - 1 + history
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-lp))).astype(int)
    days = np.ceil(rng.exponential(40, n)) + 1
    X = pd.DataFrame(
        {
            "stage": pd.array(stage, dtype="string"),
            "amount": rng.lognormal(10, 1, n),
            "owner_win_rate": history,  # an engineered column the plain model must not use
        }
    )
    return X, y, days


def test_plain_close_model_uses_only_its_columns_and_scores_the_full_table() -> None:
    X, y, d = _deals(4000, 0)
    Xc, yc, dc = _deals(2000, 1)
    model = PlainCloseModel(
        categorical=["stage"], columns=["stage", "amount"], n_estimators=60
    ).fit(X, y, days_to_close=d, X_cal=Xc, y_cal=yc, days_to_close_cal=dc)
    assert model.kind == "plain"
    assert model.feature_names_ == ["stage", "amount"]
    assert set(model.win_.feature_importances_.index) == {"stage", "amount"}
    Xt, _, _ = _deals(500, 2)
    p = model.predict_proba(Xt)[:, 1]
    # the engineered column, present in the table it is given, changes nothing
    shuffled = Xt.assign(owner_win_rate=np.random.default_rng(3).normal(size=len(Xt)))
    assert np.array_equal(p, model.predict_proba(shuffled)[:, 1])
    q = model.predict_won_by(Xt, 90)
    assert (q <= p + 1e-12).all() and (model.predict_won_by(Xt, 180) >= q - 1e-12).all()
    period = model.predict_in_period(Xt, start_days=0, end_days=90)
    assert np.allclose(period, q)
    again = pickle.loads(pickle.dumps(model))
    assert np.allclose(again.predict_proba(Xt), model.predict_proba(Xt))
    assert clone(model).get_params()["columns"] == ["stage", "amount"]


def test_plain_sqo_model() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    X = pd.DataFrame(
        {
            "source": pd.array(rng.choice(["outbound", "event"], n), dtype="string"),
            "source_signal_sqo_rate": rng.uniform(size=n),
        }
    )
    y = (rng.uniform(size=n) < np.where(X["source"] == "event", 0.3, 0.1)).astype(int)
    m = PlainSQOModel(categorical=["source"], columns=["source"], n_estimators=30).fit(
        X[:2000], y[:2000], X_cal=X[2000:], y_cal=y[2000:]
    )
    assert m.feature_names_ == ["source"] and m.kind == "plain"
    p = m.predict_proba(X)[:, 1]
    assert len(np.unique(np.round(p, 6))) == 2  # one column with two levels: two scores
