"""Metrics of models.calibration against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models import calibration as cal


def test_brier_and_log_loss_by_hand() -> None:
    y = [1, 0, 1, 0]
    p = [0.8, 0.2, 0.6, 0.4]
    assert cal.brier_score(y, p) == pytest.approx((0.04 + 0.04 + 0.16 + 0.16) / 4)
    expected = -np.mean(np.log([0.8, 0.8, 0.6, 0.6]))
    assert cal.log_loss(y, p) == pytest.approx(expected)


def test_auc_and_degenerate_cases() -> None:
    assert cal.auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert math.isnan(cal.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(cal.brier_score([], []))


def test_brier_skill_is_relative_improvement() -> None:
    y = np.array([1, 0, 1, 0])
    ref = np.full(4, 0.5)  # Brier 0.25
    p = np.array([0.9, 0.1, 0.9, 0.1])  # Brier 0.01
    assert cal.brier_skill(y, p, ref) == pytest.approx(1 - 0.01 / 0.25)
    assert cal.brier_skill(y, ref, ref) == pytest.approx(0.0)


def test_wilson_interval_matches_known_values() -> None:
    low, high = cal.wilson_interval(np.array([5]), np.array([10]))
    # Wilson 95% for 5/10: 0.2366 .. 0.7634
    assert low[0] == pytest.approx(0.2366, abs=1e-4)
    assert high[0] == pytest.approx(0.7634, abs=1e-4)
    low, high = cal.wilson_interval(np.array([0]), np.array([0]))
    assert np.isnan(low[0]) and np.isnan(high[0])


def test_reliability_table_counts_and_rates() -> None:
    y = np.array([0, 1, 1, 1, 0, 0])
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55])
    t = cal.reliability_table(y, p, n_bins=10)
    assert len(t) == 10 and t["count"].sum() == 6
    first = t.iloc[0]
    assert (
        first["count"] == 2
        and first["observed_rate"] == 0.5
        and first["mean_predicted"] == pytest.approx(0.05)
    )
    last = t.iloc[9]
    assert last["count"] == 2 and last["observed_rate"] == 1.0
    assert (t.loc[t["count"] > 0, "ci_low"] <= t.loc[t["count"] > 0, "observed_rate"]).all()
    # a probability of exactly 1 lands in the last bin
    assert cal.reliability_table([1], [1.0])["count"].iloc[-1] == 1


def test_ece_zero_for_perfect_calibration_and_positive_otherwise() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert cal.expected_calibration_error(y, p) < 0.01
    assert cal.expected_calibration_error(y, np.clip(p + 0.1, 0, 1)) > 0.05


def test_top_decile_lift() -> None:
    y = np.array([1] * 10 + [0] * 90)
    p = np.linspace(1, 0, 100)
    assert cal.top_decile_lift(y, p) == pytest.approx(10.0)
    assert cal.top_decile_lift(y, np.full(100, 0.5)) == pytest.approx(
        10.0
    )  # stable order: ties keep row order


def test_summarize_by_group_with_reference() -> None:
    y = np.array([1, 0, 1, 0, 1, 1])
    p = np.array([0.9, 0.1, 0.8, 0.3, 0.7, 0.6])
    groups = pd.Series(["a", "a", "b", "b", None, None])
    table = cal.summarize_by(y, p, groups, reference={"flat": np.full(6, 0.5)})
    assert set(table["group"]) == {"a", "b", "(missing)"}
    assert "brier_skill_vs_flat" in table.columns
    overall = cal.summarize(y, p)
    assert overall["n"] == 6 and 0 < overall["brier"] < 0.25
