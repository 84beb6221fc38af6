"""Opportunity features: a brute-force reference, the batch training set, degraded exports, CLI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import opportunity
from features._examples import START, random_export
from features.io import Export, write_export
from features.snapshots import snapshot_dates
from tests.features.test_snapshots import hand_export

T = pd.Timestamp
DAYS = [T("2025-02-16"), T("2025-05-04"), T("2025-08-31"), T("2025-11-09"), T("2025-12-31")]


@pytest.fixture(scope="module")
def export() -> Export:
    return random_export(5, n_opportunities=60, n_leads=40)


# ----------------------------------------------------------------------------------------
# brute force: the same numbers with plain loops over the raw rows
# ----------------------------------------------------------------------------------------


def _reference(export: Export, day: pd.Timestamp) -> dict[str, dict[str, float]]:
    end = day + pd.Timedelta(days=1)
    opps = export.opportunities.to_dict("records")
    hist = export.stage_history.to_dict("records")
    acts = export.activities.to_dict("records")
    exported = export.exported_at
    closed = [o for o in opps if o["status"] in ("won", "lost") and o["closed_at"] < end]
    prior = sum(o["status"] == "won" for o in closed) / len(closed) if closed else float("nan")
    out: dict[str, dict[str, float]] = {}
    for o in opps:
        if not (o["created_at"] < end and (pd.isna(o["closed_at"]) or o["closed_at"] >= end)):
            continue
        rows = sorted(
            (
                h
                for h in hist
                if h["opportunity_id"] == o["opportunity_id"] and h["changed_at"] < end
            ),
            key=lambda h: h["changed_at"],
        )
        # days in stage: back from the last row to where the current run of the stage began
        days_in_stage = float("nan")
        if rows:
            k = len(rows) - 1
            while k > 0 and rows[k - 1]["stage"] == rows[-1]["stage"]:
                k -= 1
            days_in_stage = float((day - rows[k]["changed_at"].normalize()).days)
        pushes, ecd = 0, None
        for h in rows:
            if pd.notna(h["expected_close_date"]):
                if ecd is not None and h["expected_close_date"] > ecd:
                    pushes += 1
                ecd = h["expected_close_date"]
        if day >= exported:
            ecd = o["expected_close_date"]
        to_close = float((ecd - day).days) if ecd is not None and pd.notna(ecd) else float("nan")
        recent = sum(
            1
            for a in acts
            if a["opportunity_id"] == o["opportunity_id"]
            and day - pd.Timedelta(days=29) <= a["occurred_at"].normalize() <= day
        )
        mine = (
            [c for c in closed if c["owner_id"] == o["owner_id"]]
            if pd.notna(o["owner_id"])
            else None
        )
        if mine is None:
            rate = float("nan")
        else:
            wins = sum(c["status"] == "won" for c in mine)
            rate = (wins + 10 * prior) / (len(mine) + 10)
        out[o["opportunity_id"]] = {
            "days_in_stage": days_in_stage,
            "close_date_pushes": float(pushes) if rows else float("nan"),
            "days_to_expected_close": to_close,
            "activities_30d": float(recent),
            "owner_win_rate": rate,
        }
    return out


@pytest.mark.parametrize("day", DAYS)
def test_features_match_a_brute_force_reference(export: Export, day: pd.Timestamp) -> None:
    table = opportunity.build(export, as_of=day)
    expected = pd.DataFrame.from_dict(_reference(export, day), orient="index")
    assert list(table.index) == list(expected.index)
    got = table[expected.columns]
    pd.testing.assert_frame_equal(
        got, expected, check_names=False, check_index_type=False, rtol=1e-12
    )


def test_training_set_equals_stacking_build(export: Export) -> None:
    dates = list(snapshot_dates(export)[::3]) + [export.exported_at]
    batch = opportunity.build_training_set(export, dates=dates)
    frames = []
    for day in sorted(dates):
        one = opportunity.build(export, as_of=day).reset_index()
        one.insert(1, "as_of", pd.Series([day] * len(one), dtype="datetime64[ns]"))
        frames.append(one)
    stacked = pd.concat(frames, ignore_index=True)
    assert "has_next_step" in batch.columns  # the export day is among the dates
    pd.testing.assert_frame_equal(batch, stacked)


def test_feature_types(export: Export) -> None:
    table = opportunity.build(export, as_of=DAYS[2])
    cats = opportunity.categorical_columns(table)
    assert set(cats) == {
        "stage",
        "forecast_category",
        "segment",
        "source",
        "signal_type",
        "industry",
        "region",
        "product",
        "competitor",
    }
    assert set(opportunity.CATEGORICAL) <= set(table.columns)
    for name in table.columns:
        expected = "string" if name in cats else "float64"
        assert str(table[name].dtype) == expected, name
    assert table.index.name == "opportunity_id"


def test_next_step_is_used_only_at_the_export_date(export: Export) -> None:
    assert "has_next_step" not in opportunity.build(export, as_of=DAYS[3]).columns
    now = opportunity.build(export, as_of=export.exported_at)
    assert now.columns[-1] == "has_next_step"
    opps = export.opportunities.set_index("opportunity_id").loc[now.index]
    assert (now["has_next_step"] == opps["next_step"].notna().astype(float)).all()


def test_hand_export_values() -> None:
    table = opportunity.build(hand_export(), as_of="2026-03-12")
    o1 = table.loc["O1"]
    assert o1["age_days"] == 11 and o1["days_in_stage"] == 2 and o1["stage"] == "Proposal"
    assert o1["stage_order"] == 1 and o1["stage_moves"] == 1 and o1["stage_regressions"] == 0
    assert (
        o1["amount"] == 12000 and o1["amount_change"] == 2000 and o1["amount_change_ratio"] == 1.2
    )
    assert o1["close_date_pushes"] == 1 and o1["close_date_push_days"] == 26
    assert o1["days_to_expected_close"] == 34 and o1["forecast_category"] == "best_case"
    assert (
        o1["activities_7d"] == 0
        and o1["activities_30d"] == 1
        and o1["days_since_last_activity"] == 10
    )
    assert o1["outbound_30d"] == 1 and o1["inbound_30d"] == 0 and o1["inbound_share_30d"] == 0
    assert o1["days_left_in_quarter"] == 19  # calendar quarters: ends 03-31
    assert np.isnan(o1["owner_win_rate"])  # nothing closed yet: no prior to speak of
    later = opportunity.build(hand_export(), as_of="2026-03-26").loc["O2"]
    # AE1 closed O1 (won), AE2 closed O3 (lost): prior 1/2, AE1 has 1 win in 1
    assert later["owner_closed_deals"] == 1 and later["owner_win_rate"] == pytest.approx(
        (1 + 10 * 0.5) / 11
    )


def test_regressions_count_moves_back_in_the_funnel() -> None:
    export = hand_export()
    hist = export.stage_history
    extra = hist.iloc[[1]].copy()
    extra["changed_at"] = T("2026-03-15 09:00")
    extra["stage"] = "Discovery"
    export = export.replace(stage_history=pd.concat([hist, extra], ignore_index=True))
    o1 = opportunity.build(export, as_of="2026-03-16").loc["O1"]
    assert o1["stage"] == "Discovery" and o1["stage_regressions"] == 1 and o1["stage_moves"] == 2
    assert o1["days_in_stage"] == 1


def test_without_history_stage_and_amount_are_unknown_in_the_past() -> None:
    export = hand_export(history=False)
    past = opportunity.build(export, as_of="2026-03-12")
    for absent in (
        "days_in_stage",
        "stage_moves",
        "close_date_pushes",
        "amount_change",
        "forecast_category",
    ):
        assert absent not in past.columns
    assert (
        past["stage"].isna().all()
        and past["amount"].isna().all()
        and past["stage_order"].isna().all()
    )
    assert past["days_to_expected_close"].isna().all()
    assert list(past["age_days"]) == [11, 7]
    now = opportunity.build(export, as_of="2026-03-31").loc["O2"]
    assert (
        now["stage"] == "Discovery"
        and now["amount"] == 5000
        and now["days_to_expected_close"] == 31
    )


def test_without_activities_there_are_no_activity_columns() -> None:
    export = hand_export().replace(activities=None)
    table = opportunity.build(export, as_of="2026-03-12")
    assert not [
        c for c in table.columns if "activit" in c or c.endswith("_30d") or c.endswith("_7d")
    ]
    no_direction = hand_export()
    no_direction = no_direction.replace(
        activities=no_direction.activities.drop(columns="direction")
    )
    table = opportunity.build(no_direction, as_of="2026-03-12")
    assert "activities_30d" in table.columns and "inbound_30d" not in table.columns


def test_minimal_export_degrades_gracefully() -> None:
    opps = hand_export().opportunities[
        ["opportunity_id", "account_id", "created_at", "stage", "status", "closed_at", "amount"]
    ]
    export = Export(opportunities=opps)
    table = opportunity.build(export, as_of="2026-03-12")
    assert list(table.columns) == [
        "age_days",
        "stage",
        "stage_order",
        "amount",
        "days_left_in_quarter",
    ]
    assert table["amount"].isna().all()  # no history, a past day


def test_inferred_stage_order_uses_only_the_past() -> None:
    export = random_export(8, n_opportunities=40, n_leads=0, declared_stages=False)
    day = START + pd.Timedelta(days=150)
    batch = opportunity.build_training_set(export, dates=[day])
    single = opportunity.build(export, as_of=day).reset_index()
    pd.testing.assert_frame_equal(batch.drop(columns="as_of"), single)


# ----------------------------------------------------------------------------------------
# command line and real data
# ----------------------------------------------------------------------------------------


def test_cli_features(tmp_path: Path, export: Export) -> None:
    from pipecast.cli import app

    folder = write_export(export, tmp_path / "export")
    out = tmp_path / "features.csv"
    result = CliRunner().invoke(
        app, ["features", "--data", str(folder), "--as-of", "2025-08-31", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert table.columns[0] == "opportunity_id"
    assert len(table) == len(opportunity.build(export, as_of="2025-08-31"))
    leads_out = tmp_path / "leads.parquet"
    result = CliRunner().invoke(
        app,
        [
            "features",
            "--data",
            str(folder),
            "--as-of",
            "2025-08-31",
            "--out",
            str(leads_out),
            "--leads",
        ],
    )
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(leads_out).columns[0] == "lead_id"


@pytest.fixture(scope="module")
def maven_dir(request: pytest.FixtureRequest) -> Path:
    try:
        root = Path(request.getfixturevalue("real_data_dir"))
    except pytest.FixtureLookupError:
        root = Path(
            os.environ.get(
                "PIPECAST_REAL_DATA_DIR", Path(__file__).resolve().parents[2] / "../shared/data"
            )
        ).resolve()
    folder = root / "maven_crm"
    if not (folder / "sales_pipeline.csv").is_file():
        pytest.skip(f"{folder} is absent")
    return folder


@pytest.mark.real_data
def test_maven_crm_export_without_history(maven_dir: Path) -> None:
    maven_crm = pytest.importorskip("features.adapters.maven_crm")
    export = maven_crm.convert(maven_dir)
    dates = snapshot_dates(export)[::4]
    batch = opportunity.build_training_set(export, dates=dates)
    assert len(batch) > 1000
    assert "days_in_stage" not in batch.columns and "activities_30d" not in batch.columns
    past = batch[batch["as_of"] < export.exported_at]
    assert past["stage"].isna().all() and past["amount"].isna().all()
    assert past["owner_win_rate"].notna().mean() > 0.5
    now = opportunity.build(export, as_of=export.exported_at)
    assert (
        now["stage"].notna().all() and len(now) == (export.opportunities["status"] == "open").sum()
    )
    day = dates[len(dates) // 2]
    from features.snapshots import cut_export

    pd.testing.assert_frame_equal(
        opportunity.build(export, as_of=day), opportunity.build(cut_export(export, day), as_of=day)
    )


def test_training_set_on_the_simulated_export(small_export: Export) -> None:
    dates = snapshot_dates(small_export)
    picked = [dates[5], dates[len(dates) // 2], dates[-1]]
    batch = opportunity.build_training_set(small_export, dates=picked)
    for day, rows in batch.groupby("as_of", sort=True):
        single = opportunity.build(small_export, as_of=day).reset_index()
        rows = rows.drop(columns="as_of").reset_index(drop=True)
        # has_next_step exists in the batch because the export day is among the dates
        extra = [c for c in rows.columns if c not in single.columns]
        assert extra == ([] if day == small_export.exported_at else ["has_next_step"])
        assert rows[extra].isna().all().all()
        pd.testing.assert_frame_equal(rows[single.columns], single)
    assert batch["stage"].notna().all() and batch["days_in_stage"].ge(0).all()


def test_missing_tables_are_input_errors() -> None:
    from features import lead
    from features.errors import InputError

    with pytest.raises(InputError, match="opportunities"):
        opportunity.build(Export(leads=hand_export().leads), as_of="2026-03-01")
    with pytest.raises(InputError, match="leads"):
        lead.build(hand_export().replace(leads=None), as_of="2026-03-01")
