"""A few leads (one request) are described cell by cell: the very table of the batch core."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import lead, synthetic
from features.io import Export

T = pd.Timestamp


@pytest.fixture(scope="module")
def export() -> Export:
    return synthetic.simulate(seed=5, n_opportunities=300, n_leads=1200).export  # type: ignore[no-any-return]


def _varied(export: Export, rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Leads of the export (their own history excluded) beside new ones, with values missing,
    categories and accounts never seen, repeated accounts and titles, contacts after the day."""
    pool = export.leads
    assert pool is not None
    rows = pool.iloc[rng.choice(len(pool), size=n, replace=False)].reset_index(drop=True)
    rows = rows.drop(columns=[c for c in ("sqo_at", "is_sqo", "meeting_at") if c in rows])
    new = rng.random(n) < 0.4
    ids = rows["lead_id"].astype("string").to_numpy(dtype=object)
    ids[new] = [f"NEW-{i}" for i in range(int(new.sum()))]
    rows["lead_id"] = pd.array(ids, dtype="string")
    for column in ("account_id", "industry", "source", "signal_type", "sdr_id", "title"):
        if column not in rows:
            continue
        values = rows[column].astype("string").to_numpy(dtype=object, na_value=None)
        pick = rng.random(n)
        values[pick < 0.1] = None
        values[(pick >= 0.1) & (pick < 0.2)] = f"never-seen {column}"
        if column == "title":
            values[(pick >= 0.2) & (pick < 0.3)] = "Chief Information Officer, Ops & Growth"
        rows[column] = pd.array(values, dtype="string")
    for column in ("employees", "annual_revenue"):
        values = rows[column].to_numpy(dtype=np.float64, na_value=np.nan).copy()
        values[rng.random(n) < 0.15] = np.nan
        if column == "annual_revenue":
            values[rng.random(n) < 0.05] = -5.0
        rows[column] = values
    contacted = rows["last_contacted_at"].to_numpy(dtype="datetime64[ns]").copy()
    late = rng.random(n) < 0.2
    contacted[late] = np.datetime64("2027-01-05T10:00:00", "ns")
    rows["last_contacted_at"] = contacted
    return rows


@pytest.mark.parametrize("day", ["2026-11-01", "2026-06-30", "2025-03-15"])
def test_a_few_leads_get_the_table_of_the_batch_core(
    export: Export, day: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    history = lead.history_as_of(export, day)
    compared = 0
    for size in (1, 1, 2, 3, 5, 16) * 12:
        leads = _varied(export, rng, size)
        few = lead.build(export, as_of=day, leads=leads, history=history)
        with monkeypatch.context() as m:
            m.setattr(lead, "FEW_LEADS", 0)
            batch = lead.build(export, as_of=day, leads=leads, history=history)
        pd.testing.assert_frame_equal(few, batch, check_exact=True)
        compared += size
    assert compared > 300


def test_a_few_leads_see_nothing_after_the_day(export: Export) -> None:
    """Moving everything recorded after D further into the future changes no feature of D."""
    day = T("2026-06-30")
    leads = _varied(export, np.random.default_rng(8), 5)
    before = lead.build(export, as_of=day, leads=leads)
    assert export.leads is not None and export.opportunities is not None
    later_leads = export.leads.copy()
    for column in ("created_at", "sqo_at"):
        t = later_leads[column]
        later_leads[column] = t.where(t <= day + lead.DAY, t + pd.Timedelta(days=400))
    opps = export.opportunities.copy()
    for column in ("created_at", "closed_at"):
        t = opps[column]
        opps[column] = t.where(t <= day + lead.DAY, t + pd.Timedelta(days=400))
    moved = Export(
        opportunities=opps, leads=later_leads, activities=export.activities, config=export.config
    )
    after = lead.build(moved, as_of=day, leads=leads)
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    # and the features do read the history (not a vacuous comparison)
    assert before["account_leads_before"].notna().any()
    assert before["source_signal_sqo_rate"].notna().all()
