"""Optional feature groups: kept when they help the trees predict later leads, else left out."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from models.feature_selection import MIN_LEADS, select_feature_groups
from models.sqo_likelihood import SQOLikelihoodModel

GROUPS = {"useful": ("useful",), "noise": ("noise_a", "noise_b"), "absent": ("not_there",)}


def _leads(n: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Leads over 400 days whose SQO depends on a signal and on ``useful``, not on noise."""
    rng = np.random.default_rng(seed)
    signal = rng.choice(["hiring", "funding", "none"], n, p=[0.2, 0.2, 0.6])
    useful = rng.normal(0, 1, n)
    logit = -2.2 + 1.2 * (signal != "none") + 0.8 * useful
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X = pd.DataFrame(
        {
            "signal_type": pd.array(signal, dtype="string"),
            "useful": useful,
            "noise_a": rng.normal(0, 1, n),
            "noise_b": rng.integers(0, 5, n).astype(float),
        }
    )
    days = np.datetime64("2025-01-01") + np.sort(rng.integers(0, 400, n)).astype("timedelta64[D]")
    return X, y, days.astype("datetime64[ns]")


def _judge(columns: list[str]) -> SQOLikelihoodModel:
    return SQOLikelihoodModel(
        categorical=["signal_type"], columns=columns, calibration="none", refit=False, n_jobs=1
    )


def test_a_group_that_predicts_later_leads_stays_and_noise_goes() -> None:
    X, y, days = _leads()
    chosen = select_feature_groups(X, y, days, GROUPS, make_model=_judge)
    assert chosen.skipped is None and chosen.base_loss is not None
    assert chosen.dropped == ["noise"]
    assert chosen.columns == ["signal_type", "useful"]  # ungrouped columns always stay
    # leaving the useful column out costs the folds a clear amount of log loss
    assert chosen.loss_change["useful"] > 0.005
    assert chosen.loss_change["noise"] <= 0.0
    assert "absent" not in chosen.loss_change  # a group with no column is not judged
    summary = chosen.as_dict()
    assert summary["dropped"] == ["noise"]
    assert set(summary["kept_groups_loss_change"]) == {"useful"}


def test_rows_in_any_order_make_the_same_choice() -> None:
    X, y, days = _leads()
    order = np.random.default_rng(1).permutation(len(X))
    shuffled = select_feature_groups(
        X.iloc[order].reset_index(drop=True), y[order], days[order], GROUPS, make_model=_judge
    )
    assert shuffled.dropped == ["noise"]
    assert shuffled.columns == ["signal_type", "useful"]


@pytest.mark.parametrize(
    ("n", "why"),
    [(MIN_LEADS - 1, "dated leads"), (2500, "SQOs")],
)
def test_too_little_history_keeps_every_column(n: int, why: str) -> None:
    X, y, days = _leads(n)
    if why == "SQOs":  # enough leads, but a fold with a handful of SQOs
        y = np.zeros(n, dtype=int)
        y[:: n // 40] = 1
    chosen = select_feature_groups(X, y, days, GROUPS, make_model=_judge)
    assert chosen.dropped == [] and chosen.columns == list(X.columns)
    assert chosen.skipped is not None and why in chosen.skipped


def test_no_dates_keeps_every_column() -> None:
    X, y, _ = _leads()
    chosen = select_feature_groups(X, y, None, GROUPS, make_model=_judge)
    assert chosen.columns == list(X.columns) and "dates" in str(chosen.skipped)
    undated = np.full(len(X), np.datetime64("NaT"), dtype="datetime64[ns]")
    chosen = select_feature_groups(X, y, undated, GROUPS, make_model=_judge)
    assert chosen.columns == list(X.columns) and "dated leads" in str(chosen.skipped)


def test_the_model_leaves_out_what_the_folds_left_out_and_scores_lists_without_it() -> None:
    X, y, days = _leads()
    late = days >= np.quantile(days.astype("int64"), 0.8).astype("datetime64[ns]")
    model = SQOLikelihoodModel(categorical=["signal_type"], optional_groups=GROUPS, n_jobs=1).fit(
        X[~late].reset_index(drop=True),
        y[~late],
        X_cal=X[late].reset_index(drop=True),
        y_cal=y[late],
        days=days[~late],
        days_cal=days[late],
    )
    assert model.feature_selection_ is not None
    assert model.feature_selection_.dropped == ["noise"]
    assert model.feature_names_ == ["signal_type", "useful"]
    p = model.predict_proba(X)[:, 1]
    # a list without the left-out columns scores the same
    assert np.array_equal(model.predict_proba(X.drop(columns=["noise_a", "noise_b"]))[:, 1], p)
    # and the choice travels with the pickled model
    again = pickle.loads(pickle.dumps(model))
    assert again.feature_selection_.dropped == ["noise"]
    assert np.array_equal(again.predict_proba(X)[:, 1], p)


def test_without_days_or_groups_the_model_uses_every_column() -> None:
    X, y, days = _leads(3000)
    late = days >= np.quantile(days.astype("int64"), 0.8).astype("datetime64[ns]")
    parts = {
        "X": X[~late].reset_index(drop=True),
        "y": y[~late],
        "X_cal": X[late].reset_index(drop=True),
        "y_cal": y[late],
    }
    plain = SQOLikelihoodModel(categorical=["signal_type"], n_jobs=1).fit(
        parts["X"], parts["y"], X_cal=parts["X_cal"], y_cal=parts["y_cal"]
    )
    assert plain.feature_selection_ is None and plain.feature_names_ == list(X.columns)
    undated = SQOLikelihoodModel(categorical=["signal_type"], optional_groups=GROUPS, n_jobs=1).fit(
        parts["X"], parts["y"], X_cal=parts["X_cal"], y_cal=parts["y_cal"]
    )
    assert undated.feature_selection_ is not None
    assert undated.feature_selection_.skipped == "no creation days given"
    assert undated.feature_names_ == list(X.columns)
    # the same trees as without the option
    assert np.array_equal(plain.predict_proba(X), undated.predict_proba(X))


def test_an_older_saved_model_loads_without_the_option() -> None:
    model = SQOLikelihoodModel()
    state = model.__getstate__()
    del state["optional_groups"]
    fresh = SQOLikelihoodModel.__new__(SQOLikelihoodModel)
    fresh.__setstate__(state)
    assert fresh.optional_groups is None
