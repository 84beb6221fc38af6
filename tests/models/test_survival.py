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
