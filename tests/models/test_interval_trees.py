"""Probabilities of (deal, interval) pairs split by split (models.interval_trees) against
LightGBM on the stacked rows."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from models.interval_trees import IntervalForest

#: columns: deal features 0-2 (1 a category), calendar 3-4, the cross feature 5
COLUMNS = ["amount", "stage", "pushes", "week", "quarter_end", "age_at_end"]


def _stacked(deals: np.ndarray, calendar: np.ndarray, ages: np.ndarray, ahead: np.ndarray):  # type: ignore[no-untyped-def]
    """Every (deal, interval) row, deal-major, as a stacked table has it."""
    n, m = len(deals), len(calendar)
    rows = np.repeat(deals, m, axis=0).reshape(n, m, -1)
    rows[:, :, 3:5] = calendar[None, :, 3:5]
    rows[:, :, 5] = ages[:, None] + ahead[None, :]
    return rows.reshape(n * m, -1)


def _world(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    deals = np.full((n, len(COLUMNS)), np.nan)
    deals[:, 0] = rng.lognormal(10, 1, n)
    deals[:, 1] = rng.integers(0, 5, n)
    deals[:, 2] = rng.choice([0.0, 1.0, 2.0, 3.0], n)
    deals[rng.random(n) < 0.2, 0] = np.nan
    calendar = np.full((m, len(COLUMNS)), np.nan)
    calendar[:, 3] = np.arange(m) % 13
    calendar[:, 4] = (np.arange(m) % 13 == 12).astype(float)
    ages = rng.integers(0, 300, n).astype(float)
    ages[rng.random(n) < 0.1] = np.nan
    ahead = 7.0 * np.arange(m)
    return deals, calendar, ages, ahead


@pytest.fixture(scope="module", params=[True, False], ids=["missing apart", "missing as 0"])
def booster(request: pytest.FixtureRequest) -> lgb.Booster:
    deals, calendar, ages, ahead = _world(400, 20, seed=1)
    X = _stacked(deals, calendar, ages, ahead)
    rng = np.random.default_rng(2)
    score = (
        0.4 * np.nan_to_num(np.log(X[:, 0]) - 10)
        + (X[:, 1] == 2)
        + 0.6 * X[:, 4]
        - 0.004 * np.nan_to_num(X[:, 5], nan=100.0)
    )
    y = np.digitize(score + rng.normal(scale=0.8, size=len(X)), [-0.6, 0.6])
    params = {
        "objective": "multiclass",
        "num_class": 3,
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "learning_rate": 0.2,
        "verbosity": -1,
        "seed": 0,
        "deterministic": True,
        "num_threads": 1,
        "max_cat_to_onehot": 2,
        "min_data_per_group": 10,
        # without: a missing value is read as 0 at every split
        "use_missing": request.param,
    }
    data = lgb.Dataset(X, label=y, categorical_feature=[1], feature_name=COLUMNS)
    return lgb.train(params, data, num_boost_round=15)


def test_probabilities_are_lightgbms_to_the_bit(
    booster: lgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.interval_trees as interval_trees

    deals, calendar, ages, ahead = _world(150, 23, seed=3)
    deals[:3, 1] = [9.0, -1.0, np.nan]  # a category never seen, a negative and a missing one
    monkeypatch.setattr(interval_trees, "BLOCK_PAIRS", 23 * 7 + 5)  # several blocks of deals
    forest = IntervalForest(
        booster,
        num_iteration=12,
        columns=COLUMNS,
        interval_columns=["week", "quarter_end"],
        cross_column="age_at_end",
    )
    got = forest.probabilities(deals, calendar, (ages, [ahead]))
    expected = np.asarray(booster.predict(_stacked(deals, calendar, ages, ahead), num_iteration=12))
    np.testing.assert_array_equal(got, expected.reshape(150, 23, 3))
    # splits on the deal, the calendar and the pair, and category splits, were all read
    splits = [t for t in forest.trees if t["constant"] is None]
    sources = set(np.concatenate([t["source"] for t in splits]).tolist())
    assert sources == {0, 1, 2}
    assert any(t["categorical"].any() for t in splits)


def test_refuses_trees_too_large_to_tabulate(
    booster: lgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.interval_trees as interval_trees

    monkeypatch.setattr(interval_trees, "MAX_SPLITS", 3)
    with pytest.raises(ValueError, match="too many to tabulate"):
        IntervalForest(
            booster, num_iteration=5, columns=COLUMNS, interval_columns=[], cross_column=None
        )
