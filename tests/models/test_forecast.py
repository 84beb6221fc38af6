"""The bookings distribution, quota odds, new business and roll-ups (models.forecast)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from features.periods import Period, parse_period
from models import forecast as forecast_module
from models.forecast import (
    NEW_BUSINESS_GROUP,
    TOLERANCE,
    NewBusiness,
    NewBusinessStream,
    comparable_periods,
    estimate_new_business,
    exact_distribution,
    forecast_bookings,
    monte_carlo_draws,
    probability_category,
)

T = pd.Timestamp


def _brute_force(amounts: list[float], probs: list[float]) -> dict[float, float]:
    """Every win/loss combination enumerated: {bookings: probability}."""
    out: dict[float, float] = {}
    for wins in itertools.product([0, 1], repeat=len(amounts)):
        pr = float(np.prod([p if w else 1 - p for w, p in zip(wins, probs, strict=True)]))
        total = float(sum(a for w, a in zip(wins, amounts, strict=True) if w))
        out[total] = out.get(total, 0.0) + pr
    return out


def test_three_deals_by_hand() -> None:
    # 100 @ 0.5, 200 @ 0.2, 300 @ 0.9: outcomes worked out by hand
    d = exact_distribution([100, 200, 300], [0.5, 0.2, 0.9])
    assert d is not None and d.method == "exact"
    expected = {
        0: 0.5 * 0.8 * 0.1,  # 0.04
        100: 0.5 * 0.8 * 0.1,  # 0.04
        200: 0.5 * 0.2 * 0.1,  # 0.01
        300: 0.5 * 0.8 * 0.9 + 0.5 * 0.2 * 0.1,  # 100+200 or 300: 0.37
        400: 0.5 * 0.8 * 0.9,  # 100+300: 0.36
        500: 0.5 * 0.2 * 0.9,  # 200+300: 0.09
        600: 0.5 * 0.2 * 0.9,  # all three: 0.09
    }
    assert dict(zip(d.values.tolist(), d.weights.tolist(), strict=True)) == pytest.approx(expected)
    assert d.mean() == pytest.approx(0.5 * 100 + 0.2 * 200 + 0.9 * 300)  # 360
    # CDF: 0.04, 0.08, 0.09, 0.46, 0.82, 0.91, 1.0
    assert d.percentiles() == {"p10": 300.0, "p50": 400.0, "p90": 500.0}
    assert d.prob_at_least(400) == pytest.approx(0.54)
    assert d.prob_at_least(401) == pytest.approx(0.18)
    assert d.prob_at_least(0) == pytest.approx(1.0)

    f = forecast_bookings([100, 200, 300], [0.5, 0.2, 0.9], won_amounts=[50.0], quota=450)
    assert f.method == "exact" and f.draws == 0
    assert f.expected == pytest.approx(410.0)
    assert f.open.percentiles() == {"p10": 300.0, "p50": 400.0, "p90": 500.0}
    assert f.total.percentiles() == {"p10": 350.0, "p50": 450.0, "p90": 550.0}
    # the won 50 is certain: reaching 450 needs 400 from the open deals
    assert f.prob_attain_quota == pytest.approx(0.54)


def test_equal_amounts_merge_and_certain_deals() -> None:
    d = exact_distribution([100, 100, 40, 0], [0.5, 0.5, 1.0, 0.3])
    assert d is not None
    assert d.values.tolist() == [40.0, 140.0, 240.0]
    assert d.weights.tolist() == pytest.approx([0.25, 0.5, 0.25])
    empty = exact_distribution([], [])
    assert empty is not None and empty.values.tolist() == [0.0] and empty.weights.tolist() == [1.0]
    none = forecast_bookings([], [], quota=0.0)
    assert none.expected == 0.0 and none.prob_attain_quota == 1.0
    assert none.total.percentiles() == {"p10": 0.0, "p50": 0.0, "p90": 0.0}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exact_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    amounts = rng.choice([5_000, 12_000, 20_000, 50_000, 80_000], size=9).astype(float)
    probs = rng.uniform(0, 1, size=9)
    d = exact_distribution(amounts, probs)
    assert d is not None
    truth = _brute_force(amounts.tolist(), probs.tolist())
    assert d.values.tolist() == sorted(truth)
    assert d.weights.tolist() == pytest.approx([truth[v] for v in sorted(truth)])


def test_poisson_binomial_counts_exactly() -> None:
    # equal amounts: the number of wins is Poisson-binomial; compare with the textbook recursion
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 1, 300)
    pmf = np.array([1.0])
    for pi in p:
        pmf = np.concatenate([pmf * (1 - pi), [0.0]]) + np.concatenate([[0.0], pmf * pi])
    d = exact_distribution(np.ones(300), p)
    assert d is not None
    np.testing.assert_allclose(d.weights, pmf[d.values.astype(int)], atol=1e-12)
    assert d.mean() == pytest.approx(p.sum())
    assert d.var() == pytest.approx((p * (1 - p)).sum())


def test_large_pipeline_mean_and_variance() -> None:
    rng = np.random.default_rng(11)
    n = 3_000
    amounts = rng.lognormal(10, 1, n)
    probs = rng.beta(1, 3, n)
    mean = float(np.dot(amounts, probs))
    var = float(np.dot(amounts**2, probs * (1 - probs)))
    f = forecast_bookings(amounts, probs, seed=0)
    assert f.method == "monte_carlo" and f.draws >= 2_000
    draws = f.total.draws
    # within 4 standard errors of the Poisson-binomial mean and variance
    assert abs(f.total.mean() - mean) < 4 * np.sqrt(var / draws)
    assert abs(f.total.var() / var - 1) < 4 * np.sqrt(2 / draws)
    assert f.expected == pytest.approx(mean)  # the reported expected is exact, not simulated
    # near-normal: the percentiles sit where the normal ones are (skew is small at this size)
    sd = np.sqrt(var)
    assert f.total.quantile(0.5) == pytest.approx(mean, abs=0.05 * sd)
    assert f.total.quantile(0.9) - f.total.quantile(0.1) == pytest.approx(2 * 1.2816 * sd, rel=0.05)


def test_monte_carlo_matches_exact_within_tolerance() -> None:
    # 14 deals of different sizes: 16,384 outcomes, so the exact answer is known
    rng = np.random.default_rng(3)
    amounts = rng.integers(10, 400, 14).astype(float) * 1000
    probs = rng.uniform(0.1, 0.9, 14)
    exact = forecast_bookings(amounts, probs, quota=float(amounts.sum() / 2))
    assert exact.method == "exact"
    for seed in range(3):
        mc = forecast_bookings(
            amounts, probs, quota=float(amounts.sum() / 2), seed=seed, max_exact_support=10
        )
        assert mc.method == "monte_carlo"
        for name, value in exact.total.percentiles().items():
            assert abs(mc.total.percentiles()[name] - value) <= TOLERANCE * exact.expected, name
        assert mc.prob_attain_quota == pytest.approx(exact.prob_attain_quota, abs=0.01)


def test_monte_carlo_is_stable_across_seeds() -> None:
    # a lumpy pipeline: a few large deals among many small ones
    rng = np.random.default_rng(8)
    amounts = np.concatenate([rng.lognormal(9.5, 0.7, 200), [400_000, 650_000, 900_000]])
    probs = np.concatenate([rng.beta(2, 3, 200), [0.5, 0.35, 0.6]])
    runs = [forecast_bookings(amounts, probs, seed=s) for s in range(4)]
    assert all(r.method == "monte_carlo" for r in runs)
    for name in ("p10", "p50", "p90"):
        values = [r.total.percentiles()[name] for r in runs]
        assert max(values) - min(values) <= TOLERANCE * runs[0].expected, (name, values)
    again = forecast_bookings(amounts, probs, seed=0)
    assert again.total.percentiles() == runs[0].total.percentiles()  # a fixed seed repeats


def test_monte_carlo_draws_by_group() -> None:
    rng = np.random.default_rng(0)
    out = monte_carlo_draws(
        [10.0, 20.0, 5.0],
        [1.0, 0.0, 0.5],
        draws=4_000,
        rng=rng,
        groups=np.array([0, 1, 1]),
        n_groups=2,
    )
    assert out.shape == (4_000, 2)
    assert (out[:, 0] == 10.0).all()  # certain deal
    assert set(np.unique(out[:, 1])) == {0.0, 5.0}  # the 20 never wins
    assert out[:, 1].mean() == pytest.approx(2.5, abs=0.2)


#: win probabilities of the sampler test: rare wins, likely wins (simulated by their losses)
#: and near even odds (simulated period by period), with the extremes of each
SAMPLER_PROBS = [0.001, 0.02, 0.1, 0.3, 0.39, 0.4, 0.45, 0.5, 0.55, 0.6, 0.61, 0.7, 0.9, 0.999]


@pytest.mark.parametrize("small_chunks", [False, True])
def test_monte_carlo_draws_are_independent_bernoulli_wins(
    small_chunks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # amounts 1, 2, 4, …: each simulated sum spells out which deals won in that period
    if small_chunks:
        # chunks of a few deals, and too few gaps drawn at first: the passes that finish a
        # deal's periods and the chunk boundaries must not change the law
        monkeypatch.setattr(forecast_module, "CHUNK_NUMBERS", 3_000)
        monkeypatch.setattr(forecast_module, "EVENT_MARGIN_SD", 0.0)
    p = np.array(SAMPLER_PROBS)
    amounts = 2.0 ** np.arange(p.size)
    groups = np.arange(p.size) % 2
    n = 60_000
    out = monte_carlo_draws(
        amounts, p, draws=n, rng=np.random.default_rng(5), groups=groups, n_groups=2
    )
    total = out.sum(axis=1).astype(np.int64)
    wins = (total[:, None] >> np.arange(p.size)) & 1
    # the group sums hold exactly their own deals' wins
    np.testing.assert_array_equal(out[:, 0], wins[:, groups == 0] @ amounts[groups == 0])
    sd = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(wins.mean(axis=0) - p) < 5 * sd), wins.mean(axis=0) - p
    # independent of each other deal in the same period, and of itself in the next period
    pairs = [(0, 7), (2, 12), (3, 5), (6, 8), (10, 11), (9, 13)]
    for i, j in pairs:
        both = p[i] * p[j]
        both_sd = np.sqrt(both * (1 - both) / n)
        assert abs((wins[:, i] & wins[:, j]).mean() - both) < 5 * both_sd, (i, j)
    for i in range(p.size):
        again = p[i] ** 2
        again_sd = np.sqrt(again * (1 - again) / n)
        assert abs((wins[1:, i] & wins[:-1, i]).mean() - again) < 5 * again_sd, i
    # the same seed repeats
    repeat = monte_carlo_draws(
        amounts, p, draws=n, rng=np.random.default_rng(5), groups=groups, n_groups=2
    )
    np.testing.assert_array_equal(out, repeat)


def _stream(
    segment: str, rate: float, amounts: list[float], variance: float = 0.0
) -> NewBusinessStream:
    return NewBusinessStream(segment, rate, variance, np.array(amounts, dtype=float))


@pytest.mark.parametrize("exact_open", [True, False])
def test_rollups_add_up_to_the_total(exact_open: bool) -> None:
    rng = np.random.default_rng(4)
    n = 8 if exact_open else 400
    amounts = rng.integers(1, 50, n).astype(float) * 1000
    probs = rng.uniform(0, 1, n)
    owners = rng.choice(["AE-1", "AE-2", None], n)
    new = NewBusiness(
        streams=(_stream("SMB", 3.0, [10_000, 20_000]), _stream("ENT", 0.5, [90_000], 0.2))
    )
    f = forecast_bookings(
        amounts,
        probs,
        groups=owners,
        won_amounts=[30_000.0, 5_000.0],
        won_groups=["AE-1", "AE-3"],
        new_business=new,
        quota=500_000,
    )
    g = f.groups.set_index("group")
    assert g["expected"].sum() == pytest.approx(f.expected)
    assert f.expected == pytest.approx(35_000 + np.dot(amounts, probs) + 3 * 15_000 + 0.5 * 90_000)
    assert g.loc[NEW_BUSINESS_GROUP, "expected"] == pytest.approx(f.expected_new)
    assert g.loc["AE-3", "expected"] == pytest.approx(5_000)  # won only, no open deal
    assert g.loc["(unassigned)", "n_deals"] == int(pd.isna(pd.Series(owners)).sum())
    assert g["n_deals"].sum() == n
    assert (g["p10"] <= g["p50"]).all() and (g["p50"] <= g["p90"]).all()
    assert f.total.quantile(0.1) <= f.expected <= f.total.quantile(0.9)
    # by segment, new business goes to the segments' own rows
    seg = forecast_bookings(
        amounts,
        probs,
        groups=np.where(probs > 0.5, "SMB", "ENT"),
        new_business=new,
        new_business_by_group=True,
    )
    s = seg.groups.set_index("group")
    assert NEW_BUSINESS_GROUP not in s.index
    assert s["expected"].sum() == pytest.approx(seg.expected)
    assert s.loc["SMB", "expected_new"] == pytest.approx(45_000)


def test_quota_odds_use_the_total() -> None:
    # one deal of 100 at 50%, 60 already won, new business certain-ish: Poisson(λ=2) × 10
    f = forecast_bookings(
        [100.0],
        [0.5],
        won_amounts=[60.0],
        new_business=NewBusiness(streams=(_stream("all", 2.0, [10.0]),)),
        quota=160.0,
        seed=1,
    )
    # total ≥ 160 ⇔ the deal is won (60 + 100 = 160 already) — whatever new business adds
    assert f.prob_attain_quota == pytest.approx(0.5, abs=0.02)
    g = forecast_bookings([100.0], [0.5], won_amounts=[60.0], quota=100.0)
    assert g.prob_attain_quota == pytest.approx(0.5)
    assert (
        forecast_bookings([100.0], [0.5], won_amounts=[60.0], quota=50.0).prob_attain_quota == 1.0
    )
    with pytest.raises(ValueError, match="quota"):
        forecast_bookings([100.0], [0.5], quota=-1.0)


def test_new_business_stream_sampling() -> None:
    s = _stream("SMB", 4.0, [10.0, 30.0], variance=2.0)
    draws = s.sample(40_000, np.random.default_rng(0))
    assert s.expected == pytest.approx(80.0)
    assert draws.mean() == pytest.approx(80.0, rel=0.03)
    # gamma-Poisson count: variance of the count is rate + rate variance = 6 (plain Poisson: 4)
    counts_var = draws.var() - 4.0 * 100.0  # compound: Var = E[N]·Var(X) + Var(N)·E[X]²
    assert counts_var / 400.0 == pytest.approx(6.0, rel=0.1)


def _opps(rows: list[tuple[str, str, str | None, str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["created_at", "status", "closed_at", "segment", "amount", "opportunity_id"]
    ).assign(
        created_at=lambda d: pd.to_datetime(d["created_at"]),
        closed_at=lambda d: pd.to_datetime(d["closed_at"]),
    )


def test_new_business_rate_from_comparable_periods() -> None:
    # quarters Jan–Mar …; forecast Q3 2026 on 2026-07-15 (day 14 of the quarter)
    period = parse_period("2026-Q3")
    as_of = T("2026-07-15")
    rows = [("2025-01-01", "lost", "2025-01-05", "SMB", 1.0, "seed")]  # the export starts here
    # per past quarter: deals created after day 14 and won inside the quarter count
    for q_start, n in (("2026-04-01", 3), ("2026-01-01", 1), ("2025-10-01", 2), ("2025-07-01", 2)):
        s = T(q_start)
        for k in range(n):
            rows.append(
                (
                    (s + pd.Timedelta(days=20)).date().isoformat(),
                    "won",
                    (s + pd.Timedelta(days=40)).date().isoformat(),
                    "SMB",
                    1000.0 * (k + 1),
                    f"{q_start}-{k}",
                )
            )
        # not counted: created before the cut, won after the quarter, lost
        rows.append(
            (
                (s + pd.Timedelta(days=5)).date().isoformat(),
                "won",
                (s + pd.Timedelta(days=40)).date().isoformat(),
                "SMB",
                99.0,
                f"{q_start}-early",
            )
        )
        rows.append(
            (
                (s + pd.Timedelta(days=60)).date().isoformat(),
                "won",
                (s + pd.Timedelta(days=100)).date().isoformat(),
                "SMB",
                99.0,
                f"{q_start}-late",
            )
        )
        rows.append(
            (
                (s + pd.Timedelta(days=20)).date().isoformat(),
                "lost",
                (s + pd.Timedelta(days=40)).date().isoformat(),
                "SMB",
                99.0,
                f"{q_start}-lost",
            )
        )
    new = estimate_new_business(_opps(rows), as_of=as_of, period=period, min_segment_deals=1)
    assert new.windows == (
        "2026-04-01:2026-06-30",
        "2026-01-01:2026-03-31",
        "2025-10-01:2025-12-31",
        "2025-07-01:2025-09-30",
    )
    (s,) = new.streams
    assert s.segment == "SMB" and s.counts == (3, 1, 2, 2)
    assert s.rate == pytest.approx(2.0)
    assert sorted(s.amounts.tolist()) == sorted(
        [1000.0, 2000.0, 3000.0, 1000.0, 1000.0, 2000.0, 1000.0, 2000.0]
    )
    assert s.rate_variance == pytest.approx(max(np.var([3, 1, 2, 2], ddof=1) - 2.0, 0.0) + 2.0 / 4)
    assert new.expected == pytest.approx(2.0 * 13_000 / 8)
    # too few deals in a segment: pooled with the others
    pooled = estimate_new_business(_opps(rows), as_of=as_of, period=period, min_segment_deals=50)
    assert [x.segment for x in pooled.streams] == ["(all)"]
    # nothing to read when the export does not reach back a whole period
    late = estimate_new_business(_opps(rows[1:5]), as_of=as_of, period=period)
    assert late.streams == () and late.note


def test_comparable_periods() -> None:
    q = Period(T("2026-08-01"), T("2026-10-31"), "2026-Q3")
    got = comparable_periods(q, as_of=T("2026-08-20"), n=2)
    assert [(p.start, p.end) for p in got] == [
        (T("2026-05-01"), T("2026-07-31")),
        (T("2026-02-01"), T("2026-04-30")),
    ]
    month = comparable_periods(
        Period(T("2026-03-01"), T("2026-03-31"), "m"), as_of=T("2026-03-02"), n=1
    )
    assert (month[0].start, month[0].end) == (T("2026-02-01"), T("2026-02-28"))
    span = comparable_periods(
        Period(T("2026-03-05"), T("2026-03-14"), "r"), as_of=T("2026-03-05"), n=1
    )
    assert (span[0].start, span[0].end) == (T("2026-02-23"), T("2026-03-04"))


def test_probability_categories() -> None:
    cats = probability_category([0.95, 0.7, 0.69, 0.4, 0.39, 0.0])
    assert cats.tolist() == ["commit", "commit", "best_case", "best_case", "pipeline", "pipeline"]
    assert probability_category([0.5], commit=0.5, best_case=0.2).tolist() == ["commit"]
    with pytest.raises(ValueError, match="best case"):
        probability_category([0.5], commit=0.3, best_case=0.6)
