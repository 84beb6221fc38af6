"""Outcome labels of opportunity snapshots and SQO labels of leads."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features._examples import typed
from features.io import DatasetConfig, Export
from features.labels import lead_labels, opportunity_labels, won_by
from features.report import lead_labels as report_lead_labels
from tests.features.test_snapshots import hand_export

T = pd.Timestamp


def snaps(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "opportunity_id": [r[0] for r in rows],
            "as_of": pd.to_datetime([r[1] for r in rows]).astype("datetime64[ns]"),
        }
    )


def test_opportunity_labels() -> None:
    export = hand_export()  # exported 2026-03-31; O1 won 03-20, O2 open, O3 lost 03-25
    s = snaps(
        ("O1", "2026-03-05"), ("O2", "2026-03-05"), ("O3", "2026-03-24"), ("O2", "2026-02-10")
    )
    labels = opportunity_labels(export, s)
    assert list(labels.index) == list(s.index)
    np.testing.assert_array_equal(labels["won"], [1.0, np.nan, 0.0, np.nan])
    np.testing.assert_array_equal(labels["lost"], [0.0, np.nan, 1.0, np.nan])
    assert list(labels["censored"]) == [False, True, False, True]
    assert labels.loc[0, "closed_at"] == T("2026-03-20") and pd.isna(labels.loc[1, "closed_at"])
    # calendar quarters (fiscal_year_start_month 1)
    assert labels.loc[0, "quarter_end"] == T("2026-03-31") and labels.loc[
        0, "next_quarter_end"
    ] == T("2026-06-30")
    assert labels.loc[3, "quarter_end"] == T("2026-03-31")
    # O2 still open at the end of the export day 03-31 = the quarter end: known not won by then
    np.testing.assert_array_equal(labels["won_by_quarter_end"], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(labels["won_by_next_quarter_end"], [1.0, np.nan, 0.0, np.nan])


def test_fiscal_quarters_follow_the_config() -> None:
    export = hand_export()
    export = export.replace(
        config=DatasetConfig(exported_at=T("2026-03-31"), fiscal_year_start_month=2)
    )
    labels = opportunity_labels(export, snaps(("O1", "2026-03-05")))
    assert labels.loc[0, "quarter_end"] == T("2026-04-30") and labels.loc[
        0, "next_quarter_end"
    ] == T("2026-07-31")


def test_won_by_arbitrary_ends_and_horizons() -> None:
    export = hand_export()
    s = snaps(
        ("O1", "2026-03-05"), ("O1", "2026-03-05"), ("O2", "2026-03-05"), ("O2", "2026-03-05")
    )
    ends = pd.Series(pd.to_datetime(["2026-03-19", "2026-03-20", "2026-03-30", "2026-04-01"]))
    np.testing.assert_array_equal(won_by(export, s, ends), [0.0, 1.0, 0.0, np.nan])
    labels = opportunity_labels(export, s, horizons={"march": T("2026-03-31"), "custom": ends})
    np.testing.assert_array_equal(labels["won_by_march"], [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(labels["won_by_custom"], [0.0, 1.0, 0.0, np.nan])


def test_lead_labels_use_the_window() -> None:
    leads = typed(
        pd.DataFrame(
            {
                "lead_id": ["in", "late", "never", "young", "young_sqo"],
                "created_at": pd.to_datetime(
                    ["2026-01-01", "2026-01-01", "2026-01-01", "2026-03-25", "2026-03-25"]
                ),
                "sqo_at": pd.to_datetime(["2026-01-11", "2026-01-12", None, None, "2026-03-30"]),
            }
        )
    )
    export = Export(
        leads=leads, config=DatasetConfig(exported_at=T("2026-03-31"), sqo_window_days=10)
    )
    labels = lead_labels(export)
    assert labels.index.name == "lead_id"
    np.testing.assert_array_equal(labels["is_sqo"], [1.0, 0.0, 0.0, np.nan, 1.0])
    assert list(labels["decided"]) == [True, True, True, False, True]


def test_lead_labels_without_dates_use_is_sqo() -> None:
    leads = typed(pd.DataFrame({"lead_id": ["a", "b", "c"], "is_sqo": [True, False, None]}))
    export = Export(leads=leads, config=DatasetConfig(exported_at=T("2026-03-31")))
    labels = lead_labels(export)
    np.testing.assert_array_equal(labels["is_sqo"], [1.0, 0.0, np.nan])
    assert list(labels["decided"]) == [True, True, False]


def test_is_sqo_with_a_created_date_waits_for_the_window() -> None:
    """The flag does not say when the SQO happened: a young positive is not decided early.

    Otherwise the most recent leads would be positives only (every negative still waiting),
    and an export cut at D would count SQOs that happened after D.
    """
    leads = typed(
        pd.DataFrame(
            {
                "lead_id": ["old_yes", "old_no", "young_yes", "young_no"],
                "created_at": pd.to_datetime(
                    ["2026-01-01", "2026-01-01", "2026-03-25", "2026-03-25"]
                ),
                "is_sqo": [True, False, True, False],
            }
        )
    )
    export = Export(
        leads=leads, config=DatasetConfig(exported_at=T("2026-03-31"), sqo_window_days=10)
    )
    labels = lead_labels(export)
    np.testing.assert_array_equal(labels["is_sqo"], [1.0, 0.0, np.nan, np.nan])
    assert list(labels["decided"]) == [True, True, False, False]
    # validate's SQO rates follow the same rule
    shown = report_lead_labels(leads, T("2026-03-31"), 10)
    assert shown is not None
    assert list(shown.astype("object").where(shown.notna(), None)) == [True, False, None, None]
