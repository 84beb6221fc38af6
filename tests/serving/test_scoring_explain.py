"""Scoring with explanations: top factors for every open deal, reasons for every ranked lead,
richer flags, and scoring that never fails for want of an explanation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import labels, lead, opportunity
from features.io import Export
from features.periods import fiscal_quarter
from features.snapshots import snapshot_dates
from models.close_probability import CloseProbabilityModel
from models.sqo_likelihood import SQOLikelihoodModel
from serving.scoring import (
    explanation_texts,
    score_leads,
    score_opportunities,
    simple_flags,
    won_stage_days,
)
from tests.features.test_snapshots import hand_export
from tests.serving.conftest import fit_small_sqo_model


@pytest.fixture(scope="module")
def close_model(small_export: Export) -> CloseProbabilityModel:
    table = opportunity.build_training_set(
        small_export, dates=snapshot_dates(small_export, freq="MS")
    )
    lab = labels.opportunity_labels(small_export, table[["opportunity_id", "as_of"]])
    known = ~lab["censored"].to_numpy(dtype=bool)
    X = table.loc[known].drop(columns=["opportunity_id", "as_of"]).reset_index(drop=True)
    y = lab.loc[known, "won"].to_numpy(dtype=int)
    days = (lab.loc[known, "closed_at"] - table.loc[known, "as_of"]).dt.days.to_numpy(dtype=float)
    return CloseProbabilityModel(
        categorical=opportunity.categorical_columns(X),
        n_estimators=100,
        learning_rate=0.1,
        min_child_samples=50,
        calibration="none",
    ).fit(X, y, days_to_close=days)


@pytest.fixture(scope="module")
def sqo_model(small_export: Export) -> SQOLikelihoodModel:
    return fit_small_sqo_model(
        small_export,
        n_estimators=100,
        learning_rate=0.1,
        min_child_samples=50,
        calibration="none",
    )


def test_every_open_deal_gets_top_factors_and_flags(
    small_export: Export, close_model: CloseProbabilityModel
) -> None:
    day = small_export.exported_at
    features = opportunity.build(small_export, as_of=day)
    assert len(features) > 0
    table = score_opportunities(
        close_model,
        features,
        as_of=day,
        period=fiscal_quarter(day, small_export.config.fiscal_year_start_month),
        model_version="1",
        stage_days_won=won_stage_days(small_export, as_of=day),
    )
    factors = table["top_factors"]
    assert factors.notna().all() and (factors.str.len() > 0).all()
    assert factors.str.split("; ").map(len).between(1, 3).all()
    assert factors.str.contains(r"\((?:\+|\u2212)\)").all()
    assert table["flags"].str.contains("stale in stage").any()


def test_every_ranked_lead_gets_reasons(
    small_export: Export, sqo_model: SQOLikelihoodModel
) -> None:
    assert small_export.leads is not None
    leads = small_export.leads.head(150)
    features = lead.build(small_export, as_of=small_export.exported_at, leads=leads)
    ranked = score_leads(sqo_model, features, model_version="1")
    assert len(ranked) == 150 and ranked["rank"].notna().all()
    assert (ranked["reasons"].str.len() > 0).all()
    assert ranked["sqo_probability"].is_monotonic_decreasing


def test_scoring_never_fails_for_want_of_an_explanation() -> None:
    class OldChampion:
        """A registered model from before explanations: a booster without an encoder."""

        booster_ = None
        win_ = property(lambda self: (_ for _ in ()).throw(RuntimeError("broken")))

        def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
            p = np.full(len(X), 0.3)
            return np.column_stack([1 - p, p])

    X = pd.DataFrame({"stage": pd.array(["A", "B"], dtype="string")}, index=["o1", "o2"])
    assert list(explanation_texts(OldChampion(), X)) == ["", ""]
    ranked = score_leads(OldChampion(), X, model_version="1")
    assert list(ranked["reasons"]) == ["", ""]


def test_won_stage_days_are_point_in_time() -> None:
    export = hand_export()
    # O1 won on 03-20: Discovery 03-01 09:00 → 03-10 23:59:59, Proposal → 03-20 17:00
    medians = won_stage_days(export, as_of="2026-03-31", min_deals=1)
    assert set(medians) == {"Discovery", "Proposal"}  # closing stages are not spells
    assert medians["Discovery"] == pytest.approx(
        (pd.Timestamp("2026-03-10 23:59:59") - pd.Timestamp("2026-03-01 09:00"))
        / pd.Timedelta(days=1)
    )
    assert medians["Proposal"] == pytest.approx(
        (pd.Timestamp("2026-03-20 17:00") - pd.Timestamp("2026-03-10 23:59:59"))
        / pd.Timedelta(days=1)
    )
    assert won_stage_days(export, as_of="2026-03-19", min_deals=1) == {}  # not won yet
    assert won_stage_days(export, as_of="2026-03-31") == {}  # one won deal is too few to trust
    assert won_stage_days(export.replace(stage_history=None), as_of="2026-03-31") == {}


def test_flags_stale_in_stage_and_no_activity_recorded() -> None:
    X = pd.DataFrame(
        {
            "stage": pd.array(["Proposal", "Proposal", "Discovery", "Legal"], dtype="string"),
            "days_in_stage": [25.0, 15.0, 40.0, 400.0],
            "activities_total": [0.0, 3.0, 5.0, 2.0],
            "activities_30d": [0.0, 0.0, 2.0, 1.0],
        },
        index=pd.Index(["o1", "o2", "o3", "o4"], name="opportunity_id"),
    )
    flags = simple_flags(X, stage_days_won={"Proposal": 10.0, "Discovery": 30.0})
    assert flags["o1"] == "no activity recorded; stale in stage"
    assert flags["o2"] == "no activity in 30 days"
    assert flags["o3"] == ""
    assert flags["o4"] == ""  # no median for this stage: not judged
    assert (
        simple_flags(X)
        == pd.Series(["no activity recorded", "no activity in 30 days", "", ""], index=X.index)
    ).all()
