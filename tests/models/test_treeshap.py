"""TreeSHAP tabulated per tree pattern (models.treeshap) against LightGBM's own."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from models.treeshap import PatternTreeShap


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Numbers with missing values and zeros, a category column (codes 0-5), a 3-class label."""
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.normal(size=n),
            rng.integers(0, 6, n).astype(float),  # category
            rng.exponential(size=n),
            rng.choice([0.0, 1.0, 2.5, 4.0], n),
            rng.normal(size=n),
        ]
    )
    X[rng.random(n) < 0.15, 0] = np.nan
    X[rng.random(n) < 0.1, 2] = 0.0
    score = X[:, 2] + np.nan_to_num(X[:, 0]) + (X[:, 1] % 3 == 0) - 0.3 * X[:, 3]
    y = np.digitize(score + rng.normal(scale=0.7, size=n), [0.5, 1.8])
    return X, y


def _booster(params: dict[str, object], X: np.ndarray, y: np.ndarray) -> lgb.Booster:
    base = {
        "num_leaves": 15,
        "min_data_in_leaf": 10,
        "learning_rate": 0.2,
        "verbosity": -1,
        "seed": 0,
        "deterministic": True,
        "num_threads": 1,
        "max_cat_to_onehot": 2,
        "cat_smooth": 1.0,
        "min_data_per_group": 5,
    }
    data = lgb.Dataset(X, label=y, categorical_feature=[1], free_raw_data=False)
    return lgb.train({**base, **params}, data, num_boost_round=25)


def _scoring_rows(seed: int) -> np.ndarray:
    X, _ = _data(700, seed)
    # categories the trees never saw, negative and missing ones, values past every threshold
    X[:5, 1] = [7.0, 40.0, -1.0, np.nan, 2.7]
    X[5:8, 2] = [1e9, -1e9, 1e-40]
    X[8:10, 0] = [np.inf, -np.inf]
    return X


@pytest.mark.parametrize("zero_as_missing", [False, True])
def test_multiclass_won_minus_lost_is_lightgbms(zero_as_missing: bool) -> None:
    X, y = _data(3_000, seed=1)
    params = {"objective": "multiclass", "num_class": 3, "zero_as_missing": zero_as_missing}
    booster = _booster(params, X, y)
    rows = _scoring_rows(seed=2)
    explainer = PatternTreeShap(booster, num_iteration=20, class_weights=(1.0, -1.0, 0.0))
    phi, leaves = explainer.contributions(rows)

    raw = np.asarray(booster.predict(rows, num_iteration=20, pred_contrib=True))
    raw = raw.reshape(len(rows), 3, -1)
    expected = raw[:, 0, :-1] - raw[:, 1, :-1]
    np.testing.assert_allclose(phi, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(leaves, booster.predict(rows, num_iteration=20, pred_leaf=True))
    # the splits read missing values and zeros apart, and category sets
    text = booster.model_to_string()
    assert "cat_threshold=" in text
    assert np.abs(expected).max() > 0.1


def test_binary_booster_with_default_weights_and_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.treeshap as treeshap

    monkeypatch.setattr(treeshap, "BLOCK_ROWS", 97)  # rows in several blocks
    X, y = _data(2_000, seed=3)
    booster = _booster({"objective": "binary"}, X, (y == 2).astype(int))
    rows = _scoring_rows(seed=4)
    phi, leaves = PatternTreeShap(booster, num_iteration=25).contributions(rows)
    raw = np.asarray(booster.predict(rows, pred_contrib=True))
    np.testing.assert_allclose(phi, raw[:, :-1], rtol=0, atol=1e-12)
    # contributions and the bias add up to the raw score
    np.testing.assert_allclose(
        phi.sum(axis=1) + raw[:, -1], booster.predict(rows, raw_score=True), atol=1e-9
    )
    np.testing.assert_array_equal(leaves, booster.predict(rows, pred_leaf=True))


def test_weights_must_match_the_classes() -> None:
    X, y = _data(500, seed=5)
    booster = _booster({"objective": "multiclass", "num_class": 3}, X, y)
    with pytest.raises(ValueError, match="2 class weights for 3 classes"):
        PatternTreeShap(booster, num_iteration=5, class_weights=(1.0, -1.0))
