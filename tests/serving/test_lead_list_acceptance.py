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


@pytest.fixture(scope="module")
def held_back() -> pd.DataFrame:
    sim = synthetic.simulate(seed=7, n_opportunities=2000, n_leads=20000)
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
    model = SQOLikelihoodModel(categorical=lead.categorical_columns(X)).fit(
        X[~late].reset_index(drop=True),
        y[~late],
        X_cal=X[late].reset_index(drop=True),
        y_cal=y[late],
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
    # measured 95.9% of the truth's ceiling (96.3-97.1% on seeds 11, 13 and 21; 95.4% when
    # the trees learned from the earlier leads only, 94.0% when trees combined features)
    assert expected >= 0.945 * oracle
    assert realised >= 0.55


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured (seed 7, 3,840 leads listed, 267 SQOs): the top 30% holds 59.9% of the "
    "SQOs (160; 161 would make 60%), where the simulator's truth expects it to hold 59.9%; "
    "ranking by the truth itself would hold 62.5% expected, 61.0% realised, and by the truth "
    "without its per-lead noise (the most any model of these columns can know) 61.6% expected. "
    "Growing the served trees again on the calibration leads took it from 58.4% (59.6% "
    "expected); 60% realised sits at this simulator's ceiling and a few SQOs decide it: the same "
    "recipe realises 62.8%, 61.8% and 61.8% on seeds 11, 13 and 21 (expected 61.6%, 58.8%, "
    "59.6%), and 59.2% on the full-size default export (expected 60.8% against a ceiling of "
    "62.3%; 57.9% and 60.5% before). LightGBM settings do not move the ranking: on seeds 7, "
    "11, 13 and 21 the truth-expected top-30% share averages 60.0% (96.4% of the ceiling) "
    "with cat_l2 1, feature_fraction 1, path_smooth 10, max_bin 63, learning rate 0.015 or "
    "0.06 alike (each seed within 0.15 points; at most 15 levels per category column, so "
    "cat_smooth 50 and max_cat_threshold 8 score seed 7 exactly as before); cat_l2 1 and path_smooth 10 "
    "happen to realise 161 SQOs on seed 7 with no more expected, so neither was kept. Nor do "
    "learned pairwise effects (GA²M: five feature pairs chosen FAST-style by the earlier "
    "leads' remaining error, each with trees of its own; tried and not kept): boosted on top "
    "of the main effects, the expected share "
    "averages 59.9% over seeds 7, 11, 13 and 21 (59.9%, 61.5%, 58.0%, 60.0%; seed 13 0.8 "
    "points lower, seed 21 0.3 higher), grown alongside them 59.8%, against 60.0%; seed 7 "
    "realises 159 and 158 SQOs",
)
def test_the_top_of_the_list_holds_most_of_its_sqos(held_back: pd.DataFrame) -> None:
    realised, _, _ = _top_share(held_back)
    assert realised >= 0.60


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
