"""The LightGBM models on small synthetic tables: contract, coherence, robustness to new exports."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from models.calibration import expected_calibration_error
from models.close_probability import CloseProbabilityModel, stack_horizons
from models.lgbm import FeatureEncoder, LGBMProbability, fit_calibrator, scaled_capacity
from models.sqo_likelihood import SQOLikelihoodModel


def _deals(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    stage = rng.choice(["Discovery", "Proposal", "Negotiation"], n)
    owner = rng.choice([f"AE-{i}" for i in range(8)], n)
    amount = rng.lognormal(10, 1, n)
    lp = (
        -1.0
        + np.select([stage == "Proposal", stage == "Negotiation"], [1.0, 2.0], 0.0)
        - 0.3 * (np.log(amount) - 10)
    )
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-lp))).astype(int)
    days = np.ceil(rng.exponential(np.where(stage == "Negotiation", 20, 80))).astype(float) + 1
    X = pd.DataFrame(
        {
            "stage": pd.array(stage, dtype="string"),
            "owner_id": pd.array(owner, dtype="string"),
            "amount": amount,
            "age_days": rng.integers(0, 300, n).astype(float),
        }
    )
    return X, y, days


@pytest.fixture(scope="module")
def fitted() -> CloseProbabilityModel:
    X, y, d = _deals(6000, 0)
    Xc, yc, dc = _deals(3000, 1)
    return CloseProbabilityModel(
        categorical=["stage", "owner_id"], n_estimators=80, num_leaves=8, min_child_samples=40
    ).fit(
        X,
        y,
        days_to_close=d,
        X_cal=Xc,
        y_cal=yc,
        days_to_close_cal=dc,
        groups_cal=np.arange(len(Xc)),
    )


def test_sklearn_contract() -> None:
    model = CloseProbabilityModel(categorical=["stage"], n_estimators=10)
    params = model.get_params()
    assert params["n_estimators"] == 10
    assert not [k for k in vars(model) if k.endswith("_")]
    clone(model)
    with pytest.raises(TypeError):
        CloseProbabilityModel(["stage"])  # type: ignore[misc]
    X, y, d = _deals(500, 3)
    assert model.fit(X, y, days_to_close=d) is model


def test_predictions_are_coherent(fitted: CloseProbabilityModel) -> None:
    X, _, _ = _deals(2000, 2)
    proba = fitted.predict_proba(X)
    assert proba.shape == (2000, 2)
    assert np.allclose(proba.sum(axis=1), 1)
    pw = proba[:, 1]
    prev = np.zeros(len(X))
    for h in (0, 7, 30, 90, 180, 365, 2000):
        q = fitted.predict_won_by(X, h)
        assert (q >= prev - 1e-12).all(), f"not monotone at {h} days"
        assert (q <= pw + 1e-12).all()
        prev = q
    assert (fitted.predict_won_by(X, 0) == 0).all()
    period = fitted.predict_in_period(X, start_days=31, end_days=90)
    assert np.allclose(period, fitted.predict_won_by(X, 90) - fitted.predict_won_by(X, 30))


def test_calibrated_on_the_later_slice(fitted: CloseProbabilityModel) -> None:
    X, y, _ = _deals(4000, 5)
    assert expected_calibration_error(y, fitted.predict_proba(X)[:, 1]) < 0.05
    assert set(fitted.calibration_method_) == {"p_win", "timing"}


def test_new_export_new_owner_missing_column_extra_column(fitted: CloseProbabilityModel) -> None:
    X, _, _ = _deals(50, 4)
    X = X.drop(columns=["age_days"])
    X["owner_id"] = pd.array(["AE-new"] * 50, dtype="string")
    X["stage"] = X["stage"].astype(object)
    X["brand_new_column"] = 1.0
    p = fitted.predict_proba(X)[:, 1]
    assert np.isfinite(p).all()
    assert np.isfinite(fitted.predict_won_by(X, 45)).all()


def test_round_trips_through_pickle(fitted: CloseProbabilityModel) -> None:
    X, _, _ = _deals(20, 6)
    again = pickle.loads(pickle.dumps(fitted))
    assert np.allclose(again.predict_proba(X), fitted.predict_proba(X))


def test_stack_horizons_labels() -> None:
    X = pd.DataFrame({"a": [1.0, 2.0]})
    stacked, label, rows = stack_horizons(X, [10, 50], np.array([[5, 10], [np.nan, 100]]))
    assert list(stacked["horizon_days"]) == [5, 10, 100]
    assert list(label) == [0, 1, 1] and list(rows) == [0, 0, 1]


def test_encoder_handles_unseen_levels_and_dates() -> None:
    X = pd.DataFrame(
        {
            "c": pd.array(["a"] * 30 + ["b"] * 30, dtype="string"),
            "when": pd.date_range("2026-01-01", periods=60),
            "flag": pd.array([True, False] * 30, dtype="boolean"),
        }
    )
    enc = FeatureEncoder(min_category_count=5).fit(X)
    assert enc.columns_ == ["c", "flag"]
    out = enc.transform(pd.DataFrame({"c": ["a", "zzz", None]}))
    assert list(out["c"].isna()) == [False, True, True]
    assert out["flag"].isna().all()


def test_lgbm_probability_and_calibrator_choice() -> None:
    X, y, _ = _deals(3000, 7)
    clf = LGBMProbability(categorical=["stage"], n_estimators=30, num_leaves=4).fit(X, y)
    assert clf.predict_proba(X).shape == (3000, 2)
    assert clf.feature_importances_.index[0] in X.columns
    cal, method, scores = fit_calibrator(clf, X, y)
    assert method in {"sigmoid", "isotonic"} and set(scores) == {"sigmoid", "isotonic"}
    small, method, _ = fit_calibrator(clf, X.head(300), y[:300])
    assert method == "sigmoid"  # isotonic is not tried on a small slice


def test_sqo_model() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    X = pd.DataFrame(
        {
            "source": pd.array(rng.choice(["outbound", "event"], n), dtype="string"),
            "employees": rng.lognormal(5, 1, n),
        }
    )
    y = (rng.uniform(size=n) < np.where(X["source"] == "event", 0.3, 0.1)).astype(int)
    m = SQOLikelihoodModel(categorical=["source"], n_estimators=30).fit(
        X[:3000], y[:3000], X_cal=X[3000:], y_cal=y[3000:]
    )
    p = m.predict_proba(X)
    assert p.shape == (n, 2) and m.calibration_method_["sqo"] in {"sigmoid", "isotonic"}


@pytest.fixture(scope="module")
def three_hundred_closed_deals() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.DataFrame]:
    """Snapshots of 300 closed deals of a simulated export (at most two per deal), a later
    calibration slice of other closed deals, and the open deals at the export date."""
    from features import labels, opportunity, synthetic
    from features.snapshots import snapshot_dates

    # a CRM where every deal gets closed: this model learns from closed deals only, and the
    # deals it is measured on are the same 300 as when the simulator had no never-closing deals
    export = synthetic.simulate(seed=21, n_opportunities=700, n_leads=100, stale_share=0.0).export
    table = opportunity.build_training_set(export, dates=snapshot_dates(export))
    lab = labels.opportunity_labels(export, table[["opportunity_id", "as_of"]])
    known = ~lab["censored"].to_numpy(dtype=bool)
    ids = table["opportunity_id"].to_numpy(dtype=object)
    closed = pd.unique(ids[known])
    assert len(closed) >= 450
    # the two latest snapshots of each training deal: a few hundred rows, as a young CRM has
    latest = table.assign(_k=known).loc[known].groupby("opportunity_id").tail(2).index
    in_train = np.isin(ids, closed[:300]) & table.index.isin(latest)
    in_cal = np.isin(ids, closed[300:]) & known
    X = table.drop(columns=["opportunity_id", "as_of"])
    y = lab["won"].to_numpy(dtype="float64")
    days = (pd.to_datetime(lab["closed_at"]) - pd.to_datetime(table["as_of"])).dt.days
    d = days.to_numpy(dtype="float64", na_value=np.nan)
    open_now = opportunity.build(export, as_of=export.exported_at)
    fit = {
        "X": X[in_train],
        "y": y[in_train].astype(int),
        "days_to_close": d[in_train],
        "X_cal": X[in_cal],
        "y_cal": y[in_cal].astype(int),
        "days_to_close_cal": d[in_cal],
        "groups_cal": ids[in_cal],
    }
    return fit, opportunity.categorical_columns(X), open_now  # type: ignore[return-value]


def test_three_hundred_closed_deals_give_varied_probabilities(
    three_hundred_closed_deals: tuple[dict, list[str], pd.DataFrame],
) -> None:
    fit, categorical, open_now = three_hundred_closed_deals
    assert len(fit["X"]) < 800 and len(open_now) >= 20
    model = CloseProbabilityModel(categorical=categorical).fit(**fit)
    p = model.predict_p_win(open_now)
    assert len(np.unique(np.round(p, 6))) >= 8
    assert p.std() > 0.05 and 0.0 < p.min() < p.max() < 1.0
    # over the snapshots of other deals, the probabilities take many values
    later = model.predict_p_win(fit["X_cal"])
    assert len(np.unique(np.round(later, 6))) >= 30 and later.std() > 0.05
    # the cause it fixes: a fixed 400-row minimum leaf cannot split a table this small
    fixed = LGBMProbability(
        categorical=categorical,
        num_leaves=model.num_leaves,
        min_child_samples=model.min_child_samples,
        scale_to_data=False,
    ).fit(fit["X"], fit["y"])
    assert np.ptp(fixed.predict_proba(open_now)[:, 1]) == 0.0
    scaled = model.win_.capacity_
    assert scaled["min_child_samples"] < len(fit["X"]) / 10


def test_capacity_is_the_setting_on_large_tables_and_scales_down_on_small() -> None:
    big = scaled_capacity(100_000, min_child_samples=400, min_category_count=20)
    assert big == {
        "min_child_samples": 400,
        "min_category_count": 20,
        "min_data_per_group": 50,
        "cat_smooth": 20.0,
    }
    small = scaled_capacity(3_000, min_child_samples=400, min_category_count=20)
    assert small["min_child_samples"] == 30 and small["min_category_count"] == 6
    assert small["min_data_per_group"] == 30
    # smoothing of category levels is never relaxed: small data needs it most
    assert small["cat_smooth"] == 20.0
    tiny = scaled_capacity(50, min_child_samples=400, min_category_count=20)
    assert tiny["min_child_samples"] == 10 and tiny["min_category_count"] == 5
