"""Lead features: account history and similar-lead rates from the past only, the training set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import lead
from features._examples import random_export, typed
from features.io import DatasetConfig, Export
from tests.features.test_snapshots import hand_export

T = pd.Timestamp


def account_export() -> Export:
    """One account, four leads; L1 became an SQO on its first day and that became deal O1."""
    leads = typed(
        pd.DataFrame(
            {
                "lead_id": ["L1", "L2", "L3", "L4"],
                "account_id": ["A", "A", "A", "B"],
                "created_at": pd.to_datetime(
                    ["2026-01-01", "2026-01-05", "2026-03-01", "2026-01-01"]
                ),
                "sqo_at": pd.to_datetime(["2026-01-01", None, None, "2026-01-20"]),
                "meeting_at": pd.to_datetime(["2026-01-01", "2026-01-06", None, None]),
                "source": ["inbound", "inbound", "inbound", "outbound"],
                "signal_type": ["funding", "funding", "funding", None],
                "industry": ["retail", "retail", "retail", "retail"],
                "sdr_id": ["S1", "S1", "S1", "S2"],
                "title": ["VP of Sales", "Head of IT", "CFO", None],
                "last_contacted_at": pd.to_datetime(["2025-12-01", None, "2026-03-10", None]),
            }
        )
    )
    opps = typed(
        pd.DataFrame(
            {
                "opportunity_id": ["O1", "O2"],
                "account_id": ["A", "A"],
                "created_at": pd.to_datetime(["2026-01-01", "2025-11-01"]),
                "stage": ["Won", "Won"],
                "status": ["won", "won"],
                "closed_at": pd.to_datetime(["2026-02-01", "2025-12-15"]),
                "amount": [1000.0, 2000.0],
                "lead_id": ["L1", None],
            }
        )
    )
    return Export(
        opportunities=opps,
        leads=leads,
        config=DatasetConfig(exported_at=T("2026-03-31"), sqo_window_days=30),
    )


def test_account_history_excludes_the_lead_itself() -> None:
    table = lead.build(account_export(), as_of="2026-01-01")
    l1 = table.loc["L1"]
    # at the end of 01-01 L1 is an SQO with its own open deal: neither counts for L1
    assert l1["account_leads_before"] == 0 and l1["account_sqos_before"] == 0
    assert l1["account_open_opportunities"] == 0 and l1["account_won_opportunities"] == 1  # O2
    later = lead.build(account_export(), as_of="2026-03-01")
    l3 = later.loc["L3"]
    assert l3["account_leads_before"] == 2 and l3["account_sqos_before"] == 1
    assert l3["account_open_opportunities"] == 0 and l3["account_won_opportunities"] == 2


def test_similar_lead_rates_count_complete_windows_only() -> None:
    export = account_export()  # SQO window 30 days
    k = lead.RATE_PRIOR_STRENGTH
    # 01-10: L1 is already an SQO but no lead's window has ended: no rate yet
    t = lead.build(export, as_of="2026-01-10")
    assert t["sdr_sqo_rate"].isna().all() and t["industry_sqo_rate"].isna().all()
    # 03-01: windows of L1 (SQO), L4 (SQO, 01-20) and L2 (none) have ended: prior 2/3
    t = lead.build(export, as_of="2026-03-01")
    prior = 2 / 3
    assert t.loc["L3", "sdr_sqo_rate"] == pytest.approx((1 + k * prior) / (2 + k))  # L1, L2
    assert t.loc["L3", "source_signal_sqo_rate"] == pytest.approx((1 + k * prior) / (2 + k))
    assert t.loc["L3", "industry_sqo_rate"] == pytest.approx((2 + k * prior) / (3 + k))
    # a lead never counts in its own rates: for L2, L1 and L4 remain (2 of 2, prior 1)
    assert t.loc["L2", "industry_sqo_rate"] == pytest.approx(1.0)
    assert t.loc["L2", "sdr_sqo_rate"] == pytest.approx((1 + k * 1.0) / (1 + k))


def test_title_flags_and_no_post_list_columns() -> None:
    table = lead.build(account_export(), as_of="2026-03-31")
    assert table.loc["L1", "title_vp"] == 1 and table.loc["L1", "title_sales"] == 1
    assert table.loc["L2", "title_head"] == 1 and table.loc["L2", "title_it"] == 1
    assert table.loc["L3", "title_chief"] == 1 and table.loc["L3", "title_finance"] == 1
    assert np.isnan(table.loc["L4", "title_vp"])
    assert "title" not in table.columns
    for leaked in ("meeting", "sqo_at", "is_sqo", "contacted"):
        assert not [c for c in table.columns if leaked in c and c != "days_since_last_contacted"]
    assert set(lead.categorical_columns(table)) == {"source", "signal_type", "industry", "sdr_id"}


def test_spelled_out_chief_titles_name_their_function() -> None:
    flags = lead._title_flags(
        pd.Series(
            [
                "Chief Information Officer",
                "Chief Operating Officer",
                "Operations Manager",
                "Chief Marketing Officer",
                "Digital Marketing Specialist",
            ],
            dtype="string",
        )
    )
    assert flags["title_it"].tolist() == [1, 0, 0, 0, 0]
    assert flags["title_operations"].tolist() == [0, 1, 1, 0, 0]
    assert flags["title_chief"].tolist() == [1, 1, 0, 1, 0]
    assert flags["title_marketing"].tolist() == [0, 0, 0, 1, 1]


def test_last_contacted_only_at_the_export_date() -> None:
    assert (
        "days_since_last_contacted" not in lead.build(account_export(), as_of="2026-03-15").columns
    )
    now = lead.build(account_export(), as_of="2026-03-31")
    assert now.loc["L3", "days_since_last_contacted"] == 21 and np.isnan(
        now.loc["L2", "days_since_last_contacted"]
    )


def test_later_outcomes_do_not_change_features() -> None:
    export = account_export()
    before = lead.build(export, as_of="2026-01-10")
    leads = export.leads.copy()
    leads.loc[leads["lead_id"] == "L2", ["sqo_at", "meeting_at"]] = [
        T("2026-01-11"),
        T("2026-01-11"),
    ]
    pd.testing.assert_frame_equal(
        before, lead.build(export.replace(leads=leads), as_of="2026-01-10")
    )


def test_scoring_a_new_list() -> None:
    new = typed(
        pd.DataFrame(
            {
                "lead_id": ["N1", "L2"],
                "account_id": ["A", "A"],
                "industry": ["retail", None],
                "sdr_id": ["S1", "S9"],
            }
        )
    )
    table = lead.build(account_export(), as_of="2026-03-31", leads=new)
    assert list(table.index) == ["N1", "L2"]
    assert (
        table.loc["N1", "account_leads_before"] == 3
        and table.loc["L2", "account_leads_before"] == 2
    )
    assert table.loc["N1", "account_sqos_before"] == 1
    assert "employees" not in table.columns


def test_a_history_indexed_once_describes_its_own_day_only() -> None:
    """The history a server keeps for (export, day) gives what the uncached build gives, for
    each of two days, and is refused for any other day or export (no leakage across days)."""
    export = account_export()
    new = typed(
        pd.DataFrame(
            {
                "lead_id": ["N1", "L3", "L1"],
                "account_id": ["A", "A", "A"],
                "industry": ["retail", "retail", "retail"],
                "source": ["inbound", "inbound", "inbound"],
                "signal_type": ["funding", "funding", "funding"],
                "sdr_id": ["S1", "S1", "S1"],
            }
        )
    )
    answers = {}
    for day in ("2026-01-10", "2026-03-01"):
        history = lead.history_as_of(export, day)
        cached = lead.build(export, as_of=day, leads=new, history=history)
        pd.testing.assert_frame_equal(cached, lead.build(export, as_of=day, leads=new))
        # the same history again (as a server reuses it) gives the same answer
        again = lead.build(export, as_of=day, leads=new.iloc[[1]], history=history)
        pd.testing.assert_frame_equal(again, cached.iloc[[1]])
        answers[day] = cached
    early, late = answers["2026-01-10"], answers["2026-03-01"]
    # what became known between the days shows on the later day only
    assert early.loc["N1", "account_sqos_before"] == 1 and early["sdr_sqo_rate"].isna().all()
    assert late.loc["N1", "account_leads_before"] == 3 and late["sdr_sqo_rate"].notna().all()
    with pytest.raises(ValueError, match="another export or day"):
        lead.build(
            export, as_of="2026-03-01", leads=new, history=lead.history_as_of(export, "2026-01-10")
        )
    with pytest.raises(ValueError, match="another export or day"):
        lead.build(
            account_export(),
            as_of="2026-01-10",
            leads=new,
            history=lead.history_as_of(export, "2026-01-10"),
        )


def test_a_history_never_counts_what_was_recorded_after_its_day() -> None:
    """Appending leads and deals after the day changes nothing a history of that day gives."""
    export = account_export()
    before = lead.build(
        export, as_of="2026-01-10", history=lead.history_as_of(export, "2026-01-10")
    )
    assert export.leads is not None and export.opportunities is not None
    late_leads = typed(
        pd.DataFrame(
            {
                "lead_id": ["L9"],
                "account_id": ["A"],
                "created_at": [T("2026-01-11")],
                "sqo_at": [T("2026-01-11")],
                "source": ["inbound"],
                "industry": ["retail"],
                "sdr_id": ["S1"],
            }
        )
    )
    more = export.replace(leads=pd.concat([export.leads, late_leads], ignore_index=True))
    after = lead.build(more, as_of="2026-01-10", history=lead.history_as_of(more, "2026-01-10"))
    pd.testing.assert_frame_equal(before, after)


def test_training_set_rows_equal_build_at_creation() -> None:
    export = random_export(4, n_opportunities=30, n_leads=60)
    batch = lead.build_training_set(export)
    assert batch.index.name == "lead_id" and batch.columns[0] == "as_of"
    assert "days_since_last_contacted" not in batch.columns
    for lead_id in batch.index[::4]:
        day = batch.loc[lead_id, "as_of"]
        one = lead.build(export, as_of=day, leads=export.leads[export.leads["lead_id"] == lead_id])
        one = one.drop(columns=["days_since_last_contacted"], errors="ignore")
        pd.testing.assert_frame_equal(batch.loc[[lead_id]].drop(columns="as_of"), one)


def test_leads_without_dates_or_opportunities() -> None:
    leads = typed(
        pd.DataFrame(
            {
                "lead_id": ["a", "b"],
                "is_sqo": [True, False],
                "industry": ["x", "y"],
                "employees": [10.0, None],
            }
        )
    )
    export = Export(leads=leads, config=DatasetConfig(exported_at=T("2026-03-31")))
    batch = lead.build_training_set(export)
    assert list(batch.columns) == ["as_of", "employees", "industry"]
    table = lead.build(export, as_of="2026-03-31")
    assert list(table.columns) == ["employees", "industry"]


def test_hand_export_leads() -> None:
    table = lead.build(hand_export(), as_of="2026-03-10")
    assert list(table.index) == ["L1"]
    assert table.loc["L1", "account_open_opportunities"] == 2  # O1 (closed after D) and O2


@pytest.mark.real_data
def test_bank_marketing_leads(real_data_dir: Path) -> None:
    folder = real_data_dir / "uci_bank_marketing"
    if not (folder / "bank-additional-full.csv").is_file():
        pytest.skip(f"{folder} is absent")
    bank_marketing = pytest.importorskip("features.adapters.bank_marketing")
    export = bank_marketing.convert(folder)
    batch = lead.build_training_set(export)
    assert len(batch) == len(export.leads)
    # only is_sqo, no sqo_at: a label is known once the window has passed, so the first
    # window's leads have no rate at all
    first = batch["as_of"] < batch["as_of"].min() + pd.Timedelta(days=export.config.sqo_window_days)
    assert batch.loc[first, "source_signal_sqo_rate"].isna().all()
    assert batch.loc[~first, "source_signal_sqo_rate"].notna().mean() > 0.9
    for name in export.config.features["leads"]:
        assert name in batch.columns
