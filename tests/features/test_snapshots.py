"""Cut exports, the state of deals at a past day, and weekly snapshots, on hand-built exports."""

from __future__ import annotations

import pandas as pd
import pytest

from features._examples import typed
from features.io import DatasetConfig, Export, StageDef
from features.snapshots import (
    cut_export,
    opportunity_snapshots,
    snapshot_dates,
    state_as_of,
)

T = pd.Timestamp
STAGES = [
    StageDef("Discovery"),
    StageDef("Proposal"),
    StageDef("Won", won=True),
    StageDef("Lost", lost=True),
]


def hand_export(*, history: bool = True) -> Export:
    """Three deals over March 2026, exported at the end of 2026-03-31.

    O1: created 03-01, Discovery → Proposal on 03-10 (amount 10k → 12k, close date pushed
        from 03-20 to 04-15 on 03-12), won 03-20.
    O2: created 03-05, still open in Discovery at export, next step recorded.
    O3: created 03-25, lost 03-25 (same day).
    """
    opps = typed(
        pd.DataFrame(
            [
                (
                    "O1",
                    "A1",
                    T("2026-03-01"),
                    "Won",
                    "won",
                    T("2026-03-20"),
                    12000.0,
                    T("2026-04-15"),
                    "AE1",
                    "call",
                    "SMB",
                ),
                (
                    "O2",
                    "A1",
                    T("2026-03-05"),
                    "Discovery",
                    "open",
                    pd.NaT,
                    5000.0,
                    T("2026-05-01"),
                    "AE1",
                    "demo",
                    "SMB",
                ),
                (
                    "O3",
                    "A2",
                    T("2026-03-25"),
                    "Lost",
                    "lost",
                    T("2026-03-25"),
                    800.0,
                    T("2026-03-25"),
                    "AE2",
                    None,
                    "Enterprise",
                ),
            ],
            columns=[
                "opportunity_id",
                "account_id",
                "created_at",
                "stage",
                "status",
                "closed_at",
                "amount",
                "expected_close_date",
                "owner_id",
                "next_step",
                "segment",
            ],
        )
    )
    hist = typed(
        pd.DataFrame(
            [
                ("O1", T("2026-03-01 09:00"), "Discovery", 10000.0, T("2026-03-20"), "pipeline"),
                ("O1", T("2026-03-10 23:59:59"), "Proposal", 12000.0, None, "best_case"),
                ("O1", T("2026-03-12 08:00"), "Proposal", None, T("2026-04-15"), None),
                ("O1", T("2026-03-20 17:00"), "Won", None, None, "closed"),
                ("O2", T("2026-03-05 10:00"), "Discovery", 5000.0, T("2026-05-01"), "pipeline"),
                ("O3", T("2026-03-25 10:00"), "Discovery", 800.0, T("2026-03-25"), "pipeline"),
                ("O3", T("2026-03-25 16:00"), "Lost", None, None, "omitted"),
            ],
            columns=[
                "opportunity_id",
                "changed_at",
                "stage",
                "amount",
                "expected_close_date",
                "forecast_category",
            ],
        )
    )
    acts = typed(
        pd.DataFrame(
            [
                ("O1", None, T("2026-03-02 10:00"), "call", "outbound"),
                ("O1", None, T("2026-03-15 10:00"), "meeting", "inbound"),
                (None, "L1", T("2026-03-03 10:00"), "email", "outbound"),
                ("O3", None, T("2026-03-25 11:00"), "email", "inbound"),
            ],
            columns=["opportunity_id", "lead_id", "occurred_at", "type", "direction"],
        )
    )
    leads = typed(
        pd.DataFrame(
            [
                (
                    "L1",
                    "A1",
                    T("2026-03-01"),
                    T("2026-03-05"),
                    T("2026-03-03"),
                    T("2026-03-02"),
                    True,
                ),
                ("L2", "A2", T("2026-03-20"), pd.NaT, T("2026-03-28"), T("2026-03-29"), False),
            ],
            columns=[
                "lead_id",
                "account_id",
                "created_at",
                "sqo_at",
                "meeting_at",
                "last_contacted_at",
                "is_sqo",
            ],
        )
    )
    config = DatasetConfig(exported_at=T("2026-03-31"), stages=STAGES, sqo_window_days=10)
    return Export(
        opportunities=opps,
        stage_history=hist if history else None,
        activities=acts,
        leads=leads,
        config=config,
    )


def test_cut_export_follows_the_contract() -> None:
    cut = cut_export(hand_export(), "2026-03-10")
    opps = cut.opportunities.set_index("opportunity_id")
    assert list(opps.index) == ["O1", "O2"]  # O3 created later
    # O1 closed after D: shown open, with the values in force at the end of 03-10
    assert opps.loc["O1", "status"] == "open" and pd.isna(opps.loc["O1", "closed_at"])
    assert opps.loc["O1", "stage"] == "Proposal"  # changed at 23:59:59 on D: known
    assert opps.loc["O1", "amount"] == 12000.0
    assert opps.loc["O1", "expected_close_date"] == T("2026-03-20")  # pushed only on 03-12
    assert "next_step" not in opps.columns  # current-only
    assert cut.stage_history["changed_at"].max() == T("2026-03-10 23:59:59")
    assert set(cut.stage_history["opportunity_id"]) == {"O1", "O2"}
    assert cut.activities["occurred_at"].max() < T("2026-03-11")
    leads = cut.leads.set_index("lead_id")
    assert list(leads.index) == ["L1"]
    assert leads.loc["L1", "sqo_at"] == T("2026-03-05") and leads.loc["L1", "is_sqo"]
    assert "last_contacted_at" not in leads.columns
    assert cut.config.exported_at == T("2026-03-10") and cut.exported_at == T("2026-03-10")


def test_cut_export_empties_later_sqos_and_undecided_labels() -> None:
    cut = cut_export(hand_export(), "2026-03-03")
    leads = cut.leads.set_index("lead_id")
    assert pd.isna(leads.loc["L1", "sqo_at"])  # became an SQO on 03-05
    assert leads.loc["L1", "meeting_at"] == T("2026-03-03")
    assert pd.isna(leads.loc["L1", "is_sqo"])  # not decided on 03-03


def test_cut_on_or_after_the_export_date_only_moves_the_date() -> None:
    export = hand_export()
    cut = cut_export(export, "2026-04-30")
    for name, table in export.tables().items():
        pd.testing.assert_frame_equal(table, cut.table(name))
    assert cut.config.exported_at == T("2026-04-30")


def test_state_as_of_uses_history_in_force() -> None:
    state = state_as_of(hand_export(), "2026-03-12")
    assert list(state.index) == ["O1", "O2"]
    assert state.loc["O1", "expected_close_date"] == T("2026-04-15")  # pushed on 03-12
    assert state.loc["O1", "forecast_category"] == "best_case"  # empty cell = unchanged
    assert state.loc["O1", "amount"] == 12000.0
    assert list(state.columns) == [
        "stage",
        "amount",
        "expected_close_date",
        "forecast_category",
        "account_id",
        "created_at",
        "owner_id",
        "segment",
    ]
    assert state.loc["O2", "segment"] == "SMB" and str(state["segment"].dtype) == "string"
    early = state_as_of(hand_export(), "2026-03-09")
    assert early.loc["O1", "stage"] == "Discovery" and early.loc["O1", "amount"] == 10000.0


def test_state_without_history_is_unknown_before_the_export_date() -> None:
    export = hand_export(history=False)
    past = state_as_of(export, "2026-03-12")
    assert list(past.index) == ["O1", "O2"]
    assert past["stage"].isna().all() and past["amount"].isna().all()
    now = state_as_of(export, "2026-03-31")
    assert list(now.index) == ["O2"]
    assert now.loc["O2", "stage"] == "Discovery" and now.loc["O2", "amount"] == 5000.0
    assert pd.isna(now.loc["O2", "forecast_category"])


def test_open_at_end_of_day_boundaries() -> None:
    snaps = opportunity_snapshots(
        hand_export(), ["2026-03-20", "2026-03-19", "2026-03-25", "2026-03-01"]
    )
    got = snaps.groupby("as_of")["opportunity_id"].apply(list).to_dict()
    assert got == {
        T("2026-03-01"): ["O1"],  # created on D: open at its end
        T("2026-03-19"): ["O1", "O2"],
        T("2026-03-20"): ["O2"],  # closed on D: not open at its end
        T("2026-03-25"): ["O2"],  # created and lost on D
    }
    assert str(snaps["as_of"].dtype) == "datetime64[ns]"


def test_snapshot_dates_are_sundays_up_to_the_export() -> None:
    dates = snapshot_dates(hand_export())
    assert dates[0] == T("2026-03-01") and dates[-1] == T("2026-03-29")
    assert (dates.day_of_week == 6).all()
    assert list(snapshot_dates(hand_export(), start="2026-03-10", end="2026-03-20")) == [
        T("2026-03-15")
    ]


def test_empty_as_of_is_refused() -> None:
    from features.errors import InputError

    with pytest.raises(InputError):
        cut_export(hand_export(), None)
