"""The model-uncertainty term of the bookings forecast (models.forecast): one factor shared by
every open deal, and its estimate from past periods known at as_of."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.io import Export
from features.periods import Period, parse_period
from features.snapshots import state_as_of
from features.training_table import as_known_at
from models.forecast import (
    ModelUncertainty,
    comparable_periods,
    estimate_model_uncertainty,
    forecast_bookings,
    in_period,
    model_predictor,
)

#: the small export (fiscal year from February) ends 2026-11-01; 2026-Q3 is August–October
DAY = pd.Timestamp("2026-08-28")
QUARTER = "2026-Q3"


def _moments(amounts: np.ndarray, probs: np.ndarray, sigma: float) -> tuple[float, float]:
    """Mean and variance of F·S: S a sum of independent deals, F mean one with sd σ."""
    mean = float(np.dot(amounts, probs))
    var = float(np.dot(amounts**2, probs * (1 - probs)))
    return mean, var * (1 + sigma**2) + sigma**2 * mean**2


# ----------------------------------------------------------------------------------------
# the shared factor in the distribution
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 500])
def test_no_uncertainty_gives_the_independent_deal_distribution(n: int) -> None:
    rng = np.random.default_rng(5)
    amounts = rng.integers(1, 90, n).astype(float) * 1000
    probs = rng.uniform(0, 1, n)
    plain = forecast_bookings(amounts, probs, won_amounts=[7_000.0], seed=2)
    zero = forecast_bookings(amounts, probs, won_amounts=[7_000.0], seed=2, model_uncertainty=0.0)
    assert plain.method == ("exact" if n == 3 else "monte_carlo")
    assert zero.method == plain.method and zero.draws == plain.draws
    np.testing.assert_array_equal(zero.total.values, plain.total.values)
    np.testing.assert_array_equal(zero.total.weights, plain.total.weights)
    np.testing.assert_array_equal(zero.open.values, plain.open.values)
    assert zero.model_uncertainty == 0.0


def test_three_deals_with_a_shared_factor() -> None:
    # 100 @ 0.5, 200 @ 0.2, 300 @ 0.9 (the hand-worked case) with σ = 0.2
    amounts, probs = np.array([100.0, 200.0, 300.0]), np.array([0.5, 0.2, 0.9])
    f = forecast_bookings(amounts, probs, won_amounts=[50.0], model_uncertainty=0.2, seed=3)
    assert f.method == "monte_carlo" and f.model_uncertainty == 0.2
    assert f.expected == pytest.approx(50 + 360)  # exact, not simulated
    mean, var = _moments(amounts, probs, 0.2)  # 360 and 17,000·1.04 + 0.04·360² = 22,864
    assert var == pytest.approx(22_864)
    n = f.open.draws
    assert f.open.mean() == pytest.approx(mean, abs=4 * math.sqrt(var / n))
    assert f.open.var() == pytest.approx(var, rel=0.06)
    # the factor scales what is won, never whether anything is: nothing won stays 0, P = 0.04
    assert f.open.cdf(0.0) == pytest.approx(0.5 * 0.8 * 0.1, abs=4 * math.sqrt(0.04 * 0.96 / n))
    # won to date is certain: the total is the open deals plus 50, shock and all
    assert f.total.quantile(0.04 / 2) == pytest.approx(50.0)


def test_shared_factor_keeps_the_mean_and_widens_the_range_as_the_moments_say() -> None:
    rng = np.random.default_rng(11)
    amounts = rng.lognormal(10, 1, 3_000)
    probs = rng.beta(1, 3, 3_000)
    sigma = 0.08
    f = forecast_bookings(amounts, probs, seed=0, model_uncertainty=sigma)
    plain = forecast_bookings(amounts, probs, seed=0)
    mean, var = _moments(amounts, probs, sigma)
    assert f.expected == pytest.approx(plain.expected) == pytest.approx(mean)
    n = f.total.draws
    assert f.total.mean() == pytest.approx(mean, abs=4 * math.sqrt(var / n))
    assert f.total.var() == pytest.approx(var, rel=0.08)
    width = f.total.quantile(0.9) - f.total.quantile(0.1)
    plain_width = plain.total.quantile(0.9) - plain.total.quantile(0.1)
    assert width == pytest.approx(2 * 1.2816 * math.sqrt(var), rel=0.06)
    assert width > 1.5 * plain_width  # σ·E is well above the deal-by-deal spread here
    # still stable across seeds to the module's tolerance
    other = forecast_bookings(amounts, probs, seed=1, model_uncertainty=sigma)
    for name, value in f.total.percentiles().items():
        assert abs(other.total.percentiles()[name] - value) <= 0.005 * f.expected, name


def test_roll_up_groups_share_the_factor() -> None:
    rng = np.random.default_rng(4)
    n = 600
    amounts = rng.integers(5, 60, n).astype(float) * 1000
    probs = rng.uniform(0.2, 0.8, n)
    owners = np.where(np.arange(n) % 2 == 0, "AE-1", "AE-2")

    def widths(sigma: float) -> tuple[float, float]:
        f = forecast_bookings(amounts, probs, groups=owners, seed=1, model_uncertainty=sigma)
        g = f.groups.set_index("group")
        assert g["expected"].sum() == pytest.approx(f.expected)
        total = f.total.quantile(0.9) - f.total.quantile(0.1)
        return total, float(np.sqrt(((g["p90"] - g["p10"]) ** 2).sum()))

    # independent groups: widths add in quadrature; one shared factor: nearly linearly (two
    # equal groups: √2 apart)
    total, quadrature = widths(0.0)
    assert total == pytest.approx(quadrature, rel=0.08)
    total, quadrature = widths(0.15)
    assert total > 1.25 * quadrature


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf")])
def test_bad_uncertainty_is_refused(sigma: float) -> None:
    with pytest.raises(ValueError, match="model uncertainty"):
        forecast_bookings([100.0], [0.5], model_uncertainty=sigma)


# ----------------------------------------------------------------------------------------
# the estimate: past comparable periods at the same point, all known at as_of
# ----------------------------------------------------------------------------------------


def _won_in(export: Export, period: Period) -> set[str]:
    opps = export.opportunities
    assert opps is not None
    won = (opps["status"] == "won").to_numpy(dtype=bool) & in_period(opps["closed_at"], period)
    return set(opps.loc[won, "opportunity_id"].astype(str))


def test_estimate_matches_a_direct_computation(small_export: Export) -> None:
    known = as_known_at(small_export, DAY)
    quarter = parse_period(QUARTER, small_export.config.fiscal_year_start_month)
    calls: list[tuple[pd.Timestamp, Period, int]] = []

    def flat(X: pd.DataFrame, day: pd.Timestamp, period: Period) -> np.ndarray:
        calls.append((day, period, len(X)))
        return np.full(len(X), 0.3)

    u = estimate_model_uncertainty(known, flat, as_of=DAY, period=quarter, windows=4)
    assert len(u.windows) == 4 and u.note == ""
    # the four latest quarters that ended by the forecast day, each at day 28 of its quarter
    past = comparable_periods(quarter, as_of=DAY, n=4)
    assert [c[1] for c in calls] == past
    assert [c[0] for c in calls] == [w.start + (DAY - quarter.start) for w in past]
    assert all(day <= DAY and period.end <= DAY for day, period, _ in calls)
    # rebuilt by hand: the deals open at each past day, their amounts then, what they booked
    num = den = 0.0
    for (day, period, n), e, a in zip(calls, u.expected, u.actual, strict=True):
        state = state_as_of(known, day)
        assert len(state) == n
        amount = pd.to_numeric(state["amount"], errors="coerce").fillna(0.0).to_numpy(float)
        won = state.index.astype(str).isin(_won_in(small_export, period))
        assert e == pytest.approx(0.3 * amount.sum())
        assert a == pytest.approx(float(amount[won].sum()))
        v = 0.21 * float((amount**2).sum())
        num += (a - e) ** 2 - v
        den += v + e**2
    assert u.sigma == pytest.approx(math.sqrt(max(num / den, 0.0)))
    assert u.sigma > 0.05  # a flat 30% is far from what these deals booked
    assert "±" in u.describe() and "4 past periods" in u.describe()


def test_a_model_that_was_right_has_no_uncertainty(small_export: Export) -> None:
    known = as_known_at(small_export, DAY)
    quarter = parse_period(QUARTER, small_export.config.fiscal_year_start_month)

    def oracle(X: pd.DataFrame, day: pd.Timestamp, period: Period) -> np.ndarray:
        return X.index.astype(str).isin(_won_in(known, period)).astype(float)

    u = estimate_model_uncertainty(known, oracle, as_of=DAY, period=quarter)
    assert u.sigma == 0.0 and len(u.windows) >= 2
    assert u.actual == pytest.approx(u.expected)
    assert all(sd == 0.0 for sd in u.chance_sd)


def test_estimate_uses_nothing_recorded_after_as_of(small_export: Export) -> None:
    """Outcomes after the forecast day (the quarter being forecast) cannot move σ."""
    quarter = parse_period(QUARTER, small_export.config.fiscal_year_start_month)
    opps = small_export.opportunities
    assert opps is not None
    later = (opps["closed_at"] > DAY).to_numpy(dtype=bool, na_value=False)
    flipped = opps.copy()
    flipped.loc[later, "amount"] = flipped.loc[later, "amount"] * 10
    flipped.loc[later, "status"] = np.where(flipped.loc[later, "status"] == "won", "lost", "won")

    def flat(X: pd.DataFrame, day: pd.Timestamp, period: Period) -> np.ndarray:
        return np.full(len(X), 0.25)

    a = estimate_model_uncertainty(as_known_at(small_export, DAY), flat, as_of=DAY, period=quarter)
    b = estimate_model_uncertainty(
        as_known_at(small_export.replace(opportunities=flipped), DAY),
        flat,
        as_of=DAY,
        period=quarter,
    )
    assert a == b and a.sigma > 0


def test_too_short_a_history_gives_no_estimate(small_export: Export) -> None:
    opps = small_export.opportunities
    assert opps is not None
    # from March 2026 on: of the quarters that ended by 28 August only May–July is covered
    young = small_export.replace(opportunities=opps.loc[opps["created_at"] >= "2026-03-01"])
    quarter = parse_period(QUARTER, small_export.config.fiscal_year_start_month)
    u = estimate_model_uncertainty(
        as_known_at(young, DAY), lambda X, d, p: np.full(len(X), 0.3), as_of=DAY, period=quarter
    )
    assert u == ModelUncertainty(note=u.note) and u.sigma == 0.0
    assert "comparable past period" in u.note and "not estimated" in u.describe()


class _Dated:
    """A close model whose hazards read the calendar: it takes ``as_of``."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    def predict_in_period(
        self, X: pd.DataFrame, *, start_days: int, end_days: int, p_win=None, as_of=None
    ) -> np.ndarray:
        self.calls.append({"start": start_days, "end": end_days, "as_of": as_of, "p_win": p_win})
        return np.full(len(X), 0.2)


class _Undated:
    def predict_in_period(
        self, X: pd.DataFrame, *, start_days: int, end_days: int, p_win=None
    ) -> np.ndarray:
        return np.full(len(X), float(end_days))


def test_model_predictor_counts_the_period_from_the_end_of_the_day() -> None:
    X = pd.DataFrame({"amount": [1.0, 2.0]}, index=["a", "b"])
    quarter = Period(start=pd.Timestamp("2026-08-01"), end=pd.Timestamp("2026-10-31"), label="Q")
    dated = _Dated()
    p = model_predictor(dated)(X, pd.Timestamp("2026-08-28"), quarter)
    assert p.tolist() == [0.2, 0.2]
    # started 27 days before the end of 28 August, ends 64 days after it; no p_win bound passed
    assert dated.calls == [
        {"start": -27, "end": 64, "as_of": pd.Timestamp("2026-08-28"), "p_win": None}
    ]
    undated = model_predictor(_Undated())(X, pd.Timestamp("2026-07-31"), quarter)
    assert undated.tolist() == [92.0, 92.0]
    assert model_predictor(dated)(X.iloc[:0], pd.Timestamp("2026-08-28"), quarter).size == 0


def test_a_pipeline_of_open_deals_alone_gives_no_estimate(small_export: Export) -> None:
    """Deals open today were not won in past periods: without the closed deals of those periods
    the export cannot say how far the model strayed (and must not say σ is huge)."""
    opps = small_export.opportunities
    assert opps is not None
    open_now = opps.loc[(opps["status"] == "open").to_numpy(dtype=bool)]
    pipeline = small_export.replace(opportunities=open_now, stage_history=None, activities=None)
    quarter = parse_period(QUARTER, small_export.config.fiscal_year_start_month)
    calls: list[int] = []

    def flat(X: pd.DataFrame, day: pd.Timestamp, period: Period) -> np.ndarray:
        calls.append(len(X))
        return np.full(len(X), 0.3)

    u = estimate_model_uncertainty(pipeline, flat, as_of=DAY, period=quarter)
    assert u.sigma == 0.0 and "closed deals" in u.note and calls == []
    # the same export with its closed deals does give an estimate
    full = estimate_model_uncertainty(
        as_known_at(small_export, DAY), flat, as_of=DAY, period=quarter
    )
    assert full.note == "" and len(full.windows) >= 2
