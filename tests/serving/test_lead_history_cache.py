"""Scoring one lead after another reuses the export's lead history, per day and never across."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import lead
from features.io import Export
from models.sqo_likelihood import SQOLikelihoodModel
from serving import scoring
from tests.serving.conftest import fit_small_sqo_model


@pytest.fixture(scope="module")
def model(small_export: Export) -> SQOLikelihoodModel:
    # trees over several features, so that the lead's score moves with its history between
    # the two days (the additive default can put both days' values in the same step)
    return fit_small_sqo_model(
        small_export, additive=False, num_leaves=7, n_estimators=60, min_child_samples=50
    )


def _one_lead(export: Export, row: int) -> pd.DataFrame:
    assert export.leads is not None
    leads = export.leads.sort_values("created_at", kind="stable")
    return leads.iloc[[row]].drop(columns=["sqo_at", "meeting_at"]).reset_index(drop=True)


def test_each_day_gets_its_own_history_and_the_uncached_answer(
    small_export: Export, model: SQOLikelihoodModel
) -> None:
    scoring._HISTORIES.clear()
    day = small_export.exported_at
    earlier = day - pd.Timedelta(days=120)
    got: dict[pd.Timestamp, float] = {}
    for as_of in (day, earlier, day):  # back to the first day: served from the cache
        for row in (-1, -2):
            leads = _one_lead(small_export, row)
            table, _ = scoring.score_lead_list(
                model, leads, model_version="1", as_of=as_of, history=small_export
            )
            # the same probability as features built from scratch, without any cache
            fresh = lead.build(small_export, as_of=as_of, leads=leads)
            expected = model.predict_proba(fresh)[:, 1]
            assert table["sqo_probability"].to_numpy() == pytest.approx(expected, abs=1e-12)
            if row == -1:
                got.setdefault(as_of, float(table["sqo_probability"].iloc[0]))
                assert float(table["sqo_probability"].iloc[0]) == got[as_of]
    # what the CRM learnt in those 120 days moves the lead's score: the days differ
    assert got[day] != got[earlier]
    first = scoring.lead_history(small_export, day)
    assert scoring.lead_history(small_export, day) is first  # indexed once per (export, day)
    other = scoring.lead_history(small_export, earlier)
    assert other is not first and other.day == earlier and first.day == day
    # the features of the two days differ where history grew, and each matches its own build
    leads = _one_lead(small_export, -1)
    for history, as_of in ((first, day), (other, earlier)):
        pd.testing.assert_frame_equal(
            lead.build(small_export, as_of=as_of, leads=leads, history=history),
            lead.build(small_export, as_of=as_of, leads=leads),
        )
    with pytest.raises(ValueError, match="another export or day"):
        lead.build(small_export, as_of=earlier, leads=leads, history=first)


def test_a_changed_export_is_never_served_the_old_history(
    small_export: Export, model: SQOLikelihoodModel
) -> None:
    day = small_export.exported_at
    old = scoring.lead_history(small_export, day)
    assert small_export.leads is not None
    # a new read of the export (a file changed): a new object, a new history
    changed = small_export.replace(leads=small_export.leads.iloc[: len(small_export.leads) // 2])
    fresh = scoring.lead_history(changed, day)
    assert fresh is not old and fresh.source is changed
    leads = _one_lead(small_export, -1)
    table, _ = scoring.score_lead_list(model, leads, model_version="1", as_of=day, history=changed)
    expected = model.predict_proba(lead.build(changed, as_of=day, leads=leads))[:, 1]
    assert table["sqo_probability"].to_numpy() == pytest.approx(expected, abs=1e-12)


def test_the_cache_keeps_a_few_days_only(small_export: Export) -> None:
    scoring._HISTORIES.clear()
    day = small_export.exported_at
    days = [day - pd.Timedelta(days=d) for d in range(scoring.LEAD_HISTORIES_KEPT + 2)]
    kept = [scoring.lead_history(small_export, d) for d in days]
    assert scoring.lead_history(small_export, days[-1]) is kept[-1]
    # the oldest pairs were dropped: asking again indexes again
    assert scoring.lead_history(small_export, days[0]) is not kept[0]
    assert len(np.unique([id(h) for h in kept])) == len(days)
