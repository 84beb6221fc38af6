"""Acceptance on the simulator: a held-back list, scored, tiered and cut as a BDR team would.

The model learns from the leads settled by 2026-01-01 (early-stopped and calibrated on the
latest fifth of them, then grown again on all of them); the list is the leads created in the
next six months, scored as of 2026-06-30 (the export's history cut there by the features), and
judged against what became of them (realised SQOs, all settled by the export date) and against
the simulator's own probabilities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import labels, lead, synthetic
from features.snapshots import cut_export
from models.calibration import expected_calibration_error
from models.sqo_likelihood import SQOLikelihoodModel
from serving.lead_list import ListRules
from serving.scoring import score_lead_list

TRAIN_UNTIL = pd.Timestamp("2026-01-01")
LIST_DAY = pd.Timestamp("2026-06-30")


def _held_back_list(seed: int) -> pd.DataFrame:
    """The held-back list of simulated world ``seed``, scored and ruled, its workable leads
    best first with their outcome (``sqo``) and the simulator's probability (``p_true``)."""
    sim = synthetic.simulate(seed=seed, n_opportunities=2000, n_leads=20000)
    export = sim.export
    known = cut_export(export, TRAIN_UNTIL)
    table = lead.build_training_set(known)
    lab = labels.lead_labels(known)
    decided = lab["decided"].reindex(table.index).to_numpy(dtype=bool, na_value=False).copy()
    # as training selects its rows: leads whose whole SQO window has passed (an early SQO is
    # decided sooner, and keeping those alone from the last window would over-count SQOs in
    # the calibration slice), never a do-not-contact lead
    window = pd.Timedelta(days=known.config.sqo_window_days)
    decided &= (table["as_of"] + window <= TRAIN_UNTIL).to_numpy(dtype=bool, na_value=False)
    assert known.leads is not None
    dnc = known.leads.set_index(known.leads["lead_id"].astype("string"))["do_not_contact"]
    decided &= ~dnc.reindex(table.index).fillna(False).to_numpy(dtype=bool)
    X = table.loc[decided].drop(columns=["as_of"]).reset_index(drop=True)
    y = lab.loc[table.index[decided], "is_sqo"].to_numpy(dtype=int)
    # early-stop and calibrate on the latest fifth, as training does
    day = table.loc[decided, "as_of"].to_numpy(dtype="datetime64[ns]")
    late = day >= np.quantile(day.astype("int64"), 0.8).astype("datetime64[ns]")
    # and, as training does, the optional feature groups judged on time folds of these leads
    model = SQOLikelihoodModel(
        categorical=lead.categorical_columns(X), optional_groups=lead.OPTIONAL_GROUPS
    ).fit(
        X[~late].reset_index(drop=True),
        y[~late],
        X_cal=X[late].reset_index(drop=True),
        y_cal=y[late],
        days=day[~late],
        days_cal=day[late],
    )
    assert export.leads is not None
    leads = export.leads
    listed = leads.loc[(leads["created_at"] > TRAIN_UNTIL) & (leads["created_at"] <= LIST_DAY)]
    ranked, _ = score_lead_list(
        model,
        listed.drop(columns=["sqo_at", "meeting_at"]),
        model_version="test",
        as_of=LIST_DAY,
        history=export,
        rules=ListRules(),
    )
    outcome = labels.lead_labels(export)["is_sqo"]
    truth = sim.truth["leads"].set_index("lead_id")["p_sqo"]
    kept = ranked.loc[ranked["excluded_reason"].isna()].copy()
    kept["sqo"] = outcome.reindex(kept["lead_id"]).to_numpy()
    kept["p_true"] = truth.reindex(kept["lead_id"]).to_numpy()
    assert kept["sqo"].notna().all() and len(kept) > 3000
    return kept


@pytest.fixture(scope="module")
def held_back() -> pd.DataFrame:
    return _held_back_list(7)


def _top_share(held_back: pd.DataFrame) -> tuple[float, float, float]:
    """Share of the list's SQOs in its top 30%: realised, expected (by the simulator's truth),
    and what ranking by the truth itself would expect (the ceiling)."""
    n_top = int(np.ceil(0.3 * len(held_back)))
    top = held_back.head(n_top)  # the list is best first
    realised = top["sqo"].sum() / held_back["sqo"].sum()
    expected = top["p_true"].sum() / held_back["p_true"].sum()
    oracle = held_back.nlargest(n_top, "p_true")["p_true"].sum() / held_back["p_true"].sum()
    return float(realised), float(expected), float(oracle)


@pytest.mark.slow
def test_the_top_of_the_list_ranks_near_the_simulators_own_ranking(
    held_back: pd.DataFrame,
) -> None:
    realised, expected, oracle = _top_share(held_back)
    # measured 96.9% of the truth's ceiling (95.9% before the optional feature groups were
    # judged; 95.4% when the trees learned from the earlier leads only, 94.0% when trees
    # combined features)
    assert expected >= 0.945 * oracle
    assert realised >= 0.55


@pytest.mark.slow
def test_the_top_of_the_list_holds_most_of_its_sqos(held_back: pd.DataFrame) -> None:
    """Measured (seed 7, 3,840 leads listed, 267 SQOs): the top 30% holds 61.0% of the SQOs
    (163), where the simulator's truth expects 60.6% of them; ranking by the truth itself would
    hold 62.5% expected (61.0% realised), by the truth without its per-lead noise (the most any
    model of these columns can know) 61.6%. A few SQOs decide the line at this simulator's
    ceiling: before the optional feature groups were judged on time folds (the model here leaves
    out the account history, the similar-lead rates, the location and the revenue, none of which
    the simulator's leads depend on) it held 160 (59.9%; 59.9% expected). Over sixteen seeds
    that judgement adds 0.12 points of expected share on average (better on 10, the same on 2,
    worse on 4 by at most 0.14 points): most of seed 7's three SQOs are this seed's luck in
    which groups go."""
    realised, expected, _ = _top_share(held_back)
    assert realised >= 0.60
    assert expected >= 0.595


@pytest.mark.slow
def test_across_simulated_worlds_the_list_ranks_nearly_as_the_truth_does() -> None:
    """Six more worlds, the same recipe: one list decides the 60% line by a few SQOs, so the
    ranking itself is judged against the simulator's own, world by world.

    Measured: the model's top 30% expects 96.7-97.4% of what ranking by the truth expects
    (97.0% on average) and realises 59.6% of the SQOs on average, where ranking by the truth
    realises 60.8% (58.2%, 61.0%, 61.3%, 62.7%, 54.6% and 67.0%: the truth itself misses 60%
    on two of the six worlds)."""
    ratios, realised, by_truth = [], [], []
    for seed in (1, 2, 3, 4, 5, 6):
        listed = _held_back_list(seed)
        top_realised, expected, oracle = _top_share(listed)
        ratios.append(expected / oracle)
        realised.append(top_realised)
        n_top = int(np.ceil(0.3 * len(listed)))
        best = listed.nlargest(n_top, "p_true")
        by_truth.append(best["sqo"].sum() / listed["sqo"].sum())
    assert min(ratios) >= 0.955
    assert np.mean(ratios) >= 0.96
    assert np.mean(realised) >= np.mean(by_truth) - 0.02


@pytest.mark.slow
def test_the_lists_scores_add_up_to_the_sqos_it_will_hold(held_back: pd.DataFrame) -> None:
    """What a manager plans on: the sum of the scores is the list's expected SQOs (within 10%
    of the simulator's own expectation), and each score band converts at about its score."""
    planned = held_back["sqo_probability"].sum()
    assert abs(planned / held_back["p_true"].sum() - 1.0) <= 0.10
    assert abs(planned / held_back["sqo"].sum() - 1.0) <= 0.15
    p = held_back["sqo_probability"].to_numpy(dtype=float)
    assert expected_calibration_error(held_back["sqo"].to_numpy(dtype=int), p) <= 0.02


@pytest.mark.slow
def test_tier_a_converts_at_five_times_tier_d(held_back: pd.DataFrame) -> None:
    by_tier = held_back.groupby("tier").agg(rate=("sqo", "mean"), p_true=("p_true", "mean"))
    assert by_tier.loc["A", "rate"] >= 5 * by_tier.loc["D", "rate"]
    assert by_tier.loc["A", "p_true"] >= 5 * by_tier.loc["D", "p_true"]
    assert by_tier["p_true"].is_monotonic_decreasing  # A > B > C > D by the simulator's truth


@pytest.mark.slow
def test_the_top_leads_reasons_name_the_simulators_drivers(held_back: pd.DataFrame) -> None:
    """What drives an SQO in the simulator: a buying signal, the buyer's seniority and
    function, the industry's fit, the company's size, the source and the BDR's skill."""
    drivers = (
        r"buying signal|no buying signal|VP|C-level|Director|Manager|individual contributor"
        r"|in sales|in RevOps|in marketing|in finance|in IT|-person company|industry"
        r"|inbound|outbound|event|webinar|content|BDR SDR-"
    )
    top = held_back.head(100)["reasons"]
    first = top.str.split("; ").str[0]
    assert first.str.contains(drivers).all()
    assert top.str.contains("buying signal: ").mean() >= 0.8  # the strongest driver
    assert top.str.contains(r"(?:VP|C-level|Director) in ").mean() >= 0.5  # senior buyers
