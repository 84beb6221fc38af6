"""Aalen–Johansen cumulative incidence: hand computations, Kaplan–Meier, the age baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.survival import CumulativeIncidenceCloseModel, aalen_johansen, kaplan_meier


def test_aalen_johansen_matches_a_hand_computation() -> None:
    # five deals followed from creation: won at 2, lost at 3, open when last seen at 3,
    # won at 5, lost at 7
    exit_age = [2, 3, 3, 5, 7]
    cause = [1, 2, 0, 1, 2]
    cif, surv = aalen_johansen([-1] * 5, exit_age, cause, max_age=10)
    # t=2: 5 at risk, 1 won → CIF 0.2, S 0.8; t=3: 4 at risk, 1 lost → S 0.6 (the censored
    # deal leaves after 3); t=5: 2 at risk, 1 won → CIF 0.2 + 0.6·½ = 0.5, S 0.3; t=7: S 0
    assert cif[:2] == pytest.approx([0.0, 0.0])
    assert cif[2] == pytest.approx(0.2)
    assert cif[4] == pytest.approx(0.2)
    assert cif[5] == pytest.approx(0.5)
    assert cif[10] == pytest.approx(0.5)
    assert surv[2] == pytest.approx(0.8)
    assert surv[3] == pytest.approx(0.6)
    assert surv[5] == pytest.approx(0.3)
    assert surv[7] == pytest.approx(0.0)


def test_one_cause_is_the_kaplan_meier_complement() -> None:
    rng = np.random.default_rng(0)
    exit_age = rng.integers(1, 200, 500)
    event = (rng.random(500) < 0.7).astype(int)
    cif, _ = aalen_johansen(np.full(500, -1), exit_age, np.where(event == 1, 1, 0), max_age=250)
    km = kaplan_meier(exit_age, event, max_age=250)
    np.testing.assert_allclose(cif, 1.0 - km, atol=1e-12)


def test_left_truncation_counts_a_deal_only_from_its_snapshot() -> None:
    # a deal first seen open at age 10 and won at 12 is not in the risk set before age 11
    cif, surv = aalen_johansen([-1, 10], [5, 12], [2, 1], max_age=20)
    assert surv[5] == pytest.approx(0.0)  # the only deal at risk at age 5 was lost
    assert cif[20] == pytest.approx(0.0)  # the survival is 0 by then: the later win adds 0 × ½


def _age_table(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Snapshots of deals that win early or never: wins at 10–40 days, stale ones stay open."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        stage = "Proposal" if i % 2 else "Discovery"
        fate = rng.random()
        if fate < 0.4:
            close, won = int(rng.integers(10, 41)), 1.0
        elif fate < 0.7:
            close, won = int(rng.integers(5, 60)), 0.0
        else:
            close, won = 400, np.nan  # never closes: open when the history was read
        for age in range(0, close, 7):
            rows.append((age, stage, close - age, won))
    t = pd.DataFrame(rows, columns=["age_days", "stage", "days_to_close", "won"])
    return t[["age_days", "stage"]], t["days_to_close"].to_numpy(), t["won"].to_numpy()


def test_age_baseline_gives_lingering_deals_a_low_probability() -> None:
    X, dtc, won = _age_table(600, 1)
    model = CumulativeIncidenceCloseModel(by=("stage",), min_deals=20, min_wins=5).fit(
        X, days_to_close=dtc, won=won
    )
    probe = pd.DataFrame({"age_days": [0, 200], "stage": ["Proposal", "Proposal"]})
    p = model.predict_in_period(probe, start_days=0, end_days=60)
    assert p[0] > 0.3
    assert p[1] < 0.02  # nobody won after 40 days
    # coherent: in-period ≤ p_win, non-decreasing in the period end
    pw = model.predict_proba(probe)[:, 1]
    assert np.all(p <= pw + 1e-12)
    ends = [model.predict_won_by(probe, h)[0] for h in (1, 10, 20, 30, 60, 400)]
    assert np.all(np.diff(ends) >= -1e-12)
    # a later period counts only wins after its start
    later = model.predict_in_period(probe, start_days=21, end_days=60)
    assert later[0] == pytest.approx(
        model.predict_won_by(probe, 60)[0] - model.predict_won_by(probe, 20)[0]
    )


def test_age_baseline_falls_back_to_coarser_strata() -> None:
    X, dtc, won = _age_table(300, 2)
    model = CumulativeIncidenceCloseModel(by=("stage",), min_deals=10**6).fit(
        X, days_to_close=dtc, won=won
    )
    probe = pd.DataFrame({"age_days": [0, 0], "stage": ["Proposal", "Discovery"]})
    p = model.predict_in_period(probe, start_days=0, end_days=30)
    assert p[0] == pytest.approx(p[1])  # both on the overall curve
    assert 0.05 < p[0] < 0.9


def test_censored_outcomes_read_nothing_after_the_censoring_day() -> None:
    from models.survival import censored_outcomes

    as_of = pd.to_datetime(["2026-03-01", "2026-03-01", "2026-03-01", "2026-04-05"])
    closed = pd.to_datetime(["2026-03-10", "2026-04-20", None, None])
    won = np.array([1.0, 1.0, np.nan, np.nan])
    days, outcome = censored_outcomes(as_of, closed, won, pd.Timestamp("2026-03-31"))
    # closed by the censoring day: known; closed after it or never: open, seen up to 31 Mar
    # (a snapshot after the censoring day gets a negative time and is left out by the fit)
    np.testing.assert_array_equal(days, [9.0, 30.0, 30.0, -5.0])
    assert outcome[0] == 1.0 and np.isnan(outcome[1:]).all()


def test_fit_on_snapshots_learns_that_never_closing_deals_do_not_win() -> None:
    # deals created every other day; half win after 20 days, the other half never close (left
    # open for ever); weekly snapshots up to the export
    rng = np.random.default_rng(3)
    created = pd.Timestamp("2025-01-01") + pd.to_timedelta(np.arange(0, 600, 2), unit="D")
    winner = rng.random(len(created)) < 0.5
    export_day = pd.Timestamp("2026-12-31")
    rows = []
    for c, w in zip(created, winner, strict=True):
        closed = c + pd.Timedelta(days=20) if w else pd.NaT
        day = c
        while day <= export_day and (pd.isna(closed) or day < closed):
            rows.append((day, (day - c).days, "Proposal", closed, 1.0 if w else np.nan))
            day += pd.Timedelta(days=7)
    t = pd.DataFrame(rows, columns=["as_of", "age_days", "stage", "closed_at", "won"])
    model = CumulativeIncidenceCloseModel(by=("stage",)).fit_snapshots(
        t[["age_days", "stage"]],
        as_of=t["as_of"],
        closed_at=t["closed_at"],
        won=t["won"],
        censor_at=pd.Timestamp("2026-06-30"),
    )
    probe = pd.DataFrame({"age_days": [0.0, 200.0], "stage": ["Proposal", "Proposal"]})
    p = model.predict_in_period(probe, start_days=0, end_days=42)
    # a new deal wins within six weeks about half the time; one open for 200 days never does
    assert 0.4 < p[0] < 0.6
    assert p[1] == pytest.approx(0.0, abs=1e-12)
    # and the never-closing deals are not counted as future wins: p_win of a new deal ≈ ½
    assert model.predict_proba(probe)[0, 1] == pytest.approx(p[0], abs=0.02)


def test_fit_on_snapshots_needs_a_win_by_the_censoring_day() -> None:
    X = pd.DataFrame({"age_days": [0.0, 7.0], "stage": ["Proposal", "Proposal"]})
    with pytest.raises(ValueError, match="no deal was won"):
        CumulativeIncidenceCloseModel(by=("stage",)).fit_snapshots(
            X,
            as_of=pd.to_datetime(["2026-01-04", "2026-01-11"]),
            closed_at=pd.to_datetime(["2026-03-01", "2026-03-01"]),
            won=np.array([1.0, 1.0]),
            censor_at=pd.Timestamp("2026-02-01"),
        )


def test_strata_count_deals_not_snapshots() -> None:
    # 12 Proposal deals seen at 10 weekly snapshots each: 120 rows, but only 12 deals
    rows = []
    for deal in range(12):
        for week in range(10):
            rows.append(
                (f"D{deal}", 7.0 * week, "Proposal", 70 - 7 * week, 1.0 if deal % 2 else 0.0)
            )
    for deal in range(200):  # plenty of Discovery deals for the overall curve
        rows.append((f"E{deal}", 0.0, "Discovery", 30 + deal % 50, float(deal % 3 == 0)))
    t = pd.DataFrame(rows, columns=["deal", "age_days", "stage", "days_to_close", "won"])
    fit = {"days_to_close": t["days_to_close"], "won": t["won"]}
    X = t[["age_days", "stage"]]
    by_row = CumulativeIncidenceCloseModel(by=("stage",), min_deals=50, min_wins=5).fit(X, **fit)
    by_deal = CumulativeIncidenceCloseModel(by=("stage",), min_deals=50, min_wins=5).fit(
        X, groups=t["deal"], **fit
    )
    # counted by row, the 12 Proposal deals look like 120 and get a curve of their own
    assert "Proposal" in by_row.curves_[0] and "Discovery" in by_row.curves_[0]
    assert "Proposal" not in by_deal.curves_[0] and "Discovery" in by_deal.curves_[0]
