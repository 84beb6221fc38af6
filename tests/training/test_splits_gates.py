"""Time splits and the promotion gate."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training import gates, splits


def _snapshots() -> tuple[pd.DataFrame, pd.Series]:
    """Deal i is created in week i and open for 10 weeks, closing at the end of it."""
    rows, closed = [], []
    start = pd.Timestamp("2025-01-05")
    for i in range(60):
        created = start + pd.Timedelta(weeks=i)
        close = created + pd.Timedelta(weeks=10)
        for w in range(10):
            rows.append({"opportunity_id": f"D{i:02d}", "as_of": created + pd.Timedelta(weeks=w)})
            closed.append(close if i < 55 else pd.NaT)  # the last five are still open
    return pd.DataFrame(rows), pd.Series(closed, dtype="datetime64[ns]")


def test_split_is_by_time_with_a_gap_and_no_deal_on_both_sides() -> None:
    snaps, closed = _snapshots()
    label_date = pd.Timestamp("2026-05-01")
    split = splits.plan_opportunity_split(snaps["as_of"], label_date=label_date, gap_days=70)
    s = splits.assign_opportunity_slices(snaps, closed, split)
    train, cal, test = (
        (s == "train").fillna(False),
        (s == "calibration").fillna(False),
        (s == "test").fillna(False),
    )
    assert train.any() and cal.any() and test.any()
    # every training label was known at the training cut-off
    assert (closed[train.to_numpy()] <= split.train_end).all()
    assert (snaps.loc[train, "as_of"] <= split.train_snapshot_end).all()
    # later slices are later in time
    assert snaps.loc[train, "as_of"].max() < snaps.loc[cal, "as_of"].min()
    assert snaps.loc[cal, "as_of"].max() < snaps.loc[test, "as_of"].min()
    assert (snaps.loc[test, "as_of"] <= label_date - pd.Timedelta(days=70)).all()
    # no deal in both train and test; censored deals are never used
    assert not set(snaps.loc[train, "opportunity_id"]) & set(snaps.loc[test, "opportunity_id"])
    assert s[closed.isna().to_numpy()].isna().all()


def test_test_window_keeps_open_deals_for_targets_known_without_a_close() -> None:
    snaps, closed = _snapshots()
    split = splits.plan_opportunity_split(
        snaps["as_of"], label_date=pd.Timestamp("2026-05-01"), gap_days=70
    )
    s = splits.assign_opportunity_slices(snaps, closed, split)
    test = (s == "test").fillna(False).to_numpy()
    window = splits.holdout_window(snaps, closed, split)
    assert (window >= test).all()
    extra = window & ~test
    # the window adds the snapshots of deals still open at the label date, nothing else
    assert extra.any() and closed[extra].isna().all()
    train_ids = set(snaps.loc[(s == "train").fillna(False), "opportunity_id"])
    assert not train_ids & set(snaps.loc[window, "opportunity_id"])
    as_of = snaps.loc[window, "as_of"]
    assert (as_of > split.calibration_end).all() and (as_of <= split.test_end).all()


def test_cycle_gap_is_clipped() -> None:
    created = pd.Series(pd.to_datetime(["2025-01-01"] * 10))
    assert splits.cycle_gap_days(created, created + pd.Timedelta(days=1)) == splits.MIN_GAP_DAYS
    assert splits.cycle_gap_days(created, created + pd.Timedelta(days=1000)) == splits.MAX_GAP_DAYS
    assert (
        splits.cycle_gap_days(
            created, pd.Series(pd.NaT, index=created.index, dtype="datetime64[ns]")
        )
        == splits.MIN_GAP_DAYS
    )


def test_thin_weeks_keeps_every_other_date() -> None:
    dates = pd.Series(pd.date_range("2025-01-05", periods=6, freq="W-SUN").repeat(2))
    keep = splits.thin_weeks(dates, every=2)
    assert keep.sum() == 6 and dates[keep].max() == dates.max()


def test_lead_split_by_creation_with_window_gap() -> None:
    created = pd.Series(pd.date_range("2025-01-01", periods=1000, freq="D"))
    s, info = splits.split_leads(created, window_days=30)
    train = created[(s == "train").to_numpy(dtype=bool, na_value=False)]
    cal = created[(s == "calibration").to_numpy(dtype=bool, na_value=False)]
    test = created[(s == "test").to_numpy(dtype=bool, na_value=False)]
    assert train.max() + pd.Timedelta(days=30) <= cal.min()
    assert cal.max() < test.min()
    assert info["split_by"] == "created_at" and info["split"] == "time"


def test_undated_leads_get_a_stratified_random_split() -> None:
    y = np.r_[np.ones(100), np.zeros(900)]
    s, info = splits.split_leads(None, window_days=30, n_rows=1000, y=y)
    assert info["split"] == "random" and info["split_note"] == splits.RANDOM_SPLIT_NOTE
    counts = pd.crosstab(s.to_numpy(), y)
    assert counts.loc["train"].tolist() == [540, 60]
    assert counts.loc["calibration"].tolist() == [180, 20]
    assert counts.loc["test"].tolist() == [180, 20]
    # not in row order: the test slice is spread over the file
    test_rows = np.flatnonzero((s == "test").to_numpy())
    assert test_rows.min() < 100 and test_rows.max() > 900
    again, _ = splits.split_leads(None, window_days=30, n_rows=1000, y=y)
    assert again.equals(s)


def test_partly_dated_leads_use_their_dates_and_train_on_the_undated() -> None:
    created = pd.Series(pd.date_range("2025-01-01", periods=1000, freq="D"))
    created[::10] = pd.NaT
    s, info = splits.split_leads(created, window_days=30)
    assert info["split"] == "time" and info["undated_train_rows"] == 100
    assert (s[created.isna()] == "train").all()
    dated_test = created[(s == "test").to_numpy(dtype=bool, na_value=False)]
    assert dated_test.notna().all() and len(dated_test) > 150


def test_gate_rules() -> None:
    ok = gates.decide(
        challenger_brier=0.18, baseline_brier=0.25, champion_brier=None, tolerance=0.002
    )
    assert ok.passed and ok.tag.startswith("passed")
    assert not gates.decide(
        challenger_brier=0.26, baseline_brier=0.25, champion_brier=None, tolerance=0.002
    ).passed
    within = gates.decide(
        challenger_brier=0.181, baseline_brier=0.25, champion_brier=0.18, tolerance=0.002
    )
    assert within.passed
    worse = gates.decide(
        challenger_brier=0.19,
        baseline_brier=0.25,
        champion_brier=0.18,
        tolerance=0.002,
        champion_version="3",
    )
    assert not worse.passed and "v3" in worse.reason and worse.tag.startswith("refused")
    # a negative tolerance refuses even an equal or slightly better challenger
    assert not gates.decide(
        challenger_brier=0.17, baseline_brier=0.25, champion_brier=0.18, tolerance=-1
    ).passed
    # the historical fallback only fills an empty registry
    assert gates.decide(
        challenger_brier=0.2, baseline_brier=0.2, champion_brier=None, tolerance=0.0, fallback=True
    ).passed
    assert not gates.decide(
        challenger_brier=0.2, baseline_brier=0.2, champion_brier=0.3, tolerance=0.0, fallback=True
    ).passed
    assert not gates.decide(
        challenger_brier=np.nan, baseline_brier=0.2, champion_brier=None, tolerance=0.0
    ).passed
