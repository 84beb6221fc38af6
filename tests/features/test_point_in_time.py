"""Property tests of the point-in-time rule: features at D see nothing recorded after D.

Two properties, for opportunity and lead features, on small random exports drawn by hypothesis:

* the cut-export invariant: ``build(full, as_of=D)`` equals ``build(cut_export(full, D), as_of=D)``;
* appending events dated after D (history rows, activities, closes, new deals and leads, later
  SQOs and meetings) does not change the features at D.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import lead, opportunity
from features._examples import EXPORTED_AT, SPAN_DAYS, START, example_export, typed
from features.io import Export
from features.snapshots import cut_export

PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def exports(draw: st.DrawFn) -> Export:
    """A small export: a handful of deals with history and activities, a few leads."""

    def randint(lo: int, hi: int) -> int:
        return draw(st.integers(lo, hi))

    return example_export(
        randint,
        n_opportunities=draw(st.integers(0, 6)),
        n_leads=draw(st.integers(0, 8)),
        history=draw(st.booleans()),
        activities=draw(st.booleans()),
        declared_stages=draw(st.booleans()),
        extras=draw(st.booleans()),
    )


def as_of_days(lo: int = -10, hi: int = SPAN_DAYS + 30) -> st.SearchStrategy[pd.Timestamp]:
    return st.integers(lo, hi).map(lambda d: START + pd.Timedelta(days=d))


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


# ----------------------------------------------------------------------------------------
# the cut-export invariant
# ----------------------------------------------------------------------------------------


@PROPERTY
@given(export=exports(), day=as_of_days())
def test_opportunity_features_equal_on_the_export_cut_at_d(
    export: Export, day: pd.Timestamp
) -> None:
    _assert_same(
        opportunity.build(export, as_of=day), opportunity.build(cut_export(export, day), as_of=day)
    )


@PROPERTY
@given(export=exports(), day=as_of_days())
def test_lead_features_equal_on_the_export_cut_at_d(export: Export, day: pd.Timestamp) -> None:
    if export.leads is None:
        return
    _assert_same(lead.build(export, as_of=day), lead.build(cut_export(export, day), as_of=day))


@PROPERTY
@given(export=exports(), day=as_of_days())
def test_cutting_twice_changes_nothing(export: Export, day: pd.Timestamp) -> None:
    once = cut_export(export, day)
    twice = cut_export(once, day)
    for name, table in once.tables().items():
        pd.testing.assert_frame_equal(table, twice.table(name), obj=name)
    assert twice.config == once.config


# ----------------------------------------------------------------------------------------
# appending the future
# ----------------------------------------------------------------------------------------


def append_future(export: Export, day: pd.Timestamp, randint: Callable[[int, int], int]) -> Export:
    """The same CRM some weeks later: events dated after ``day`` added, current values moved.

    Deals open at ``day`` get new history rows (their current row follows), some close; new
    deals and leads appear; leads get later SQOs, meetings and contacts; next steps are
    rewritten. The export date moves past every new event.
    """
    later = max(EXPORTED_AT, day) + pd.Timedelta(days=randint(1, 90))
    span = int((later - day).days)

    def when() -> pd.Timestamp:
        return day + pd.Timedelta(
            days=randint(1, span), hours=randint(0, 23), minutes=randint(0, 59)
        )

    opps = export.opportunities.copy() if export.opportunities is not None else None
    hist = export.stage_history.copy() if export.stage_history is not None else None
    acts = export.activities.copy() if export.activities is not None else None
    leads = export.leads.copy() if export.leads is not None else None
    new_hist, new_acts = [], []
    if opps is not None:
        stages = ["Discovery", "Solution", "Proposal", "Negotiation"]
        for i in range(len(opps)):
            is_open = opps.at[i, "status"] == "open" or opps.at[i, "closed_at"] > day
            if opps.at[i, "created_at"] > day or not is_open or opps.at[i, "status"] != "open":
                continue
            oid = opps.at[i, "opportunity_id"]
            times = sorted(when() for _ in range(randint(0, 3)))
            for t in times:
                stage, amount = stages[randint(0, 3)], float(randint(1, 60) * 1000)
                ecd = t.normalize() + pd.Timedelta(days=randint(1, 90))
                new_hist.append((oid, t, stage, amount, ecd, "commit"))
                opps.loc[i, ["stage", "amount", "expected_close_date"]] = [stage, amount, ecd]
            for _ in range(randint(0, 3)):
                new_acts.append((oid, None, when(), "meeting", "inbound"))
            if randint(0, 1):
                closed = max([when(), *times]).normalize()
                won = bool(randint(0, 1))
                opps.loc[i, ["status", "stage", "closed_at"]] = [
                    "won" if won else "lost",
                    "Closed Won" if won else "Closed Lost",
                    closed,
                ]
                opps.loc[i, "amount"] = float(randint(1, 90) * 1000)
                new_hist.append(
                    (
                        oid,
                        closed + pd.Timedelta(hours=12),
                        "Closed Won" if won else "Closed Lost",
                        opps.at[i, "amount"],
                        pd.NaT,
                        "closed",
                    )
                )
        if "next_step" in opps.columns:
            opps["next_step"] = pd.Series(["call back", None] * len(opps), dtype="string")[
                : len(opps)
            ].to_numpy()
        extra = []
        for k in range(randint(0, 3)):
            created = when().normalize()
            extra.append(
                {
                    "opportunity_id": f"NEW{k}",
                    "account_id": f"A{randint(0, 4)}",
                    "created_at": created,
                    "stage": "Discovery",
                    "status": "open",
                    "closed_at": pd.NaT,
                    "amount": 5000.0,
                    "expected_close_date": created + pd.Timedelta(days=30),
                    "owner_id": "AE0",
                    "sdr_id": "SDR0",
                    "lead_id": f"L{randint(0, 9)}",
                }
            )
            new_hist.append(
                (
                    f"NEW{k}",
                    created + pd.Timedelta(hours=9),
                    "Discovery",
                    5000.0,
                    created + pd.Timedelta(days=30),
                    "pipeline",
                )
            )
            new_acts.append((f"NEW{k}", None, created + pd.Timedelta(hours=10), "call", "outbound"))
        if extra:
            # the new deals carry only the columns the export has
            new = typed(pd.DataFrame(extra)).reindex(columns=opps.columns)
            opps = typed(pd.concat([opps, new], ignore_index=True))
    if hist is not None and new_hist:
        cols = [
            "opportunity_id",
            "changed_at",
            "stage",
            "amount",
            "expected_close_date",
            "forecast_category",
        ]
        hist = typed(
            pd.concat([hist, typed(pd.DataFrame(new_hist, columns=cols))], ignore_index=True)
        )
    if leads is not None:
        for j in range(len(leads)):
            if leads.at[j, "created_at"] > day:
                continue
            if pd.isna(leads.at[j, "sqo_at"]) and randint(0, 1):
                leads.loc[j, "sqo_at"] = when().normalize()
            if pd.isna(leads.at[j, "meeting_at"]) and randint(0, 1):
                leads.loc[j, "meeting_at"] = when().normalize()
            if "last_contacted_at" in leads.columns and randint(0, 1):
                leads.loc[j, "last_contacted_at"] = when().normalize()
            new_acts.append((None, leads.at[j, "lead_id"], when(), "email", "inbound"))
        extra = [
            {
                "lead_id": f"NEWL{k}",
                "account_id": f"A{randint(0, 4)}",
                "created_at": when().normalize(),
                "sdr_id": "SDR0",
                "source": "inbound",
                "industry": "software",
            }
            for k in range(randint(0, 3))
        ]
        if extra:
            new = typed(pd.DataFrame(extra)).reindex(columns=leads.columns)
            leads = typed(pd.concat([leads, new], ignore_index=True))
    if acts is not None and new_acts:
        cols = ["opportunity_id", "lead_id", "occurred_at", "type", "direction"]
        acts = typed(
            pd.concat([acts, typed(pd.DataFrame(new_acts, columns=cols))], ignore_index=True)
        )
    config = export.config.__class__(**{**export.config.__dict__, "exported_at": later})
    return Export(
        opportunities=opps, stage_history=hist, activities=acts, leads=leads, config=config
    )


@PROPERTY
@given(export=exports(), day=as_of_days(hi=SPAN_DAYS - 1), data=st.data())
def test_events_after_d_do_not_change_features_at_d(
    export: Export, day: pd.Timestamp, data: st.DataObject
) -> None:
    def randint(lo: int, hi: int) -> int:
        return data.draw(st.integers(lo, hi))

    future = append_future(export, day, randint)
    _assert_same(opportunity.build(export, as_of=day), opportunity.build(future, as_of=day))
    if export.leads is not None:
        _assert_same(lead.build(export, as_of=day), lead.build(future, as_of=day))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cut_invariant_on_seeded_exports_at_many_days(seed: int) -> None:
    from features._examples import random_export

    export = random_export(
        seed, n_opportunities=25, n_leads=30, declared_stages=seed != 1, history=seed != 2
    )
    for offset in np.linspace(0, SPAN_DAYS + 5, 5).astype(int):
        day = START + pd.Timedelta(days=int(offset))
        cut = cut_export(export, day)
        _assert_same(opportunity.build(export, as_of=day), opportunity.build(cut, as_of=day))
        _assert_same(lead.build(export, as_of=day), lead.build(cut, as_of=day))
