"""``pipecast backtest``: forecasts replayed at past days against what was actually won.

Fast tests run on the small seeded export (one quarter, two cuts); the acceptance test on the
default simulated export is ``slow``; the Maven CRM import is ``real_data``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from features import synthetic
from features.errors import InputError
from features.io import Export
from features.periods import parse_period
from features.snapshots import state_as_of
from features.training_table import as_known_at
from models.forecast import stage_probabilities
from models.time_to_close import CompetingRisksCloseModel
from pipecast.cli import app
from training import backtest
from training.backtest import (
    COLUMNS,
    BacktestResult,
    backtest_cuts,
    check_periods,
    parse_weeks,
    render_backtest,
    run_backtest,
)
from training.backtest_plots import plot_backtest

log = logging.getLogger(__name__)
runner = CliRunner()

#: the small export ends 2026-11-01: its last whole quarter is 2026-Q3
LAST_QUARTER = "2026-Q3"
WEEKS = (4, 12)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backtest_cache")


@pytest.fixture(scope="module")
def small_result(small_export: Export, cache_dir: Path) -> BacktestResult:
    """One quarter forecast at weeks 4 and 12 of the small export, models cached."""
    return run_backtest(small_export, periods=1, weeks=WEEKS, cache_dir=cache_dir)


# ----------------------------------------------------------------------------------------
# the cuts and the refusals
# ----------------------------------------------------------------------------------------


def test_cuts_are_week_ends_of_the_last_whole_quarters(small_export: Export) -> None:
    cuts, notes = backtest_cuts(small_export, periods=2, weeks=(1, 13))
    # the fiscal year starts in February: Q2 is May–July, Q3 August–October (92 days each)
    assert [(c.period.label, c.week, str(c.day.date())) for c in cuts] == [
        ("2026-Q2", 1, "2026-05-07"),
        ("2026-Q2", 13, "2026-07-30"),
        ("2026-Q3", 1, "2026-08-07"),
        ("2026-Q3", 13, "2026-10-30"),
    ]
    assert notes == []
    # 2026-Q1 (February–April) has 89 days: its week 13 would end on 2 May, after the quarter
    cuts, notes = backtest_cuts(small_export, periods=3, weeks=(13,))
    assert [c.period.label for c in cuts] == ["2026-Q2", "2026-Q3"]
    assert len(notes) == 1 and notes[0].startswith("2026-Q1 week 13")


@pytest.mark.parametrize("text", ["", "0", "14", "1,x", "4;8", "-1"])
def test_bad_weeks_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="--weeks"):
        parse_weeks(text)


def test_weeks_are_sorted_without_repeats() -> None:
    assert parse_weeks(" 12,1, 4,4 ") == (1, 4, 12)


@pytest.mark.parametrize("periods", [0, -3])
def test_bad_periods_are_refused(periods: int) -> None:
    with pytest.raises(InputError, match="--periods"):
        check_periods(periods)


def test_export_shorter_than_the_quarters_is_refused(small_export: Export) -> None:
    opps = small_export.opportunities
    assert opps is not None
    young = small_export.replace(opportunities=opps.loc[opps["created_at"] >= "2026-10-15"])
    with pytest.raises(InputError, match="fewer --periods"):
        backtest_cuts(young, periods=1, weeks=(1,))


# ----------------------------------------------------------------------------------------
# the table: structure, arithmetic against a direct computation, the cache
# ----------------------------------------------------------------------------------------


def test_structure(small_result: BacktestResult) -> None:
    t = small_result.table
    assert list(t.columns) == COLUMNS
    assert t["period"].tolist() == [LAST_QUARTER, LAST_QUARTER]
    assert t["week"].tolist() == list(WEEKS)
    assert t["as_of"].tolist() == ["2026-08-28", "2026-10-23"]
    # the small export has enough closed deals by mid-2026 for the learned (competing-risks) model
    assert set(t["model"]) == {"competing_risks"}
    assert (t["p10"] <= t["forecast"]).all() and (t["forecast"] <= t["p90"]).all()
    assert (t["open_p10"] <= t["open_p90"]).all()
    # the shared model uncertainty is read from the past quarters of each cut: a number ≥ 0
    assert np.isfinite(t["model_uncertainty"]).all() and (t["model_uncertainty"] >= 0).all()
    # more of the quarter is won, and less is left to forecast, at week 12 than at week 4
    assert t["won_to_date"].is_monotonic_increasing
    assert t["expected_new"].iloc[1] < t["expected_new"].iloc[0]
    assert small_result.fitted == 2 and small_result.cached == 0
    s = small_result.summary
    assert s["forecasts"] == 2 and s["quarters"] == 1 and s["weeks"] == list(WEEKS)
    assert len(small_result.by_week) == 2


def test_actuals_and_errors_match_a_direct_computation(
    small_export: Export, small_result: BacktestResult
) -> None:
    opps = small_export.opportunities
    assert opps is not None
    quarter = parse_period(LAST_QUARTER, small_export.config.fiscal_year_start_month)
    won = opps.loc[
        (opps["status"] == "won")
        & (opps["closed_at"] >= quarter.start)
        & (opps["closed_at"] <= quarter.end)
    ]
    actual = float(won["amount"].sum())
    for row in small_result.table.itertuples(index=False):
        day = pd.Timestamp(row.as_of)
        assert row.actual == pytest.approx(actual)
        # won to date: the deals won in the quarter on or before the cut day
        by_day = won.loc[won["closed_at"] < day + pd.Timedelta(days=1), "amount"].sum()
        assert row.won_to_date == pytest.approx(float(by_day))
        # the deals open at the cut that were won in the quarter
        open_then = (opps["created_at"] < day + pd.Timedelta(days=1)) & ~(
            opps["closed_at"] < day + pd.Timedelta(days=1)
        )
        open_ids = set(opps.loc[open_then, "opportunity_id"])
        assert row.open_deals == len(open_ids)
        assert row.actual_open == pytest.approx(
            float(won.loc[won["opportunity_id"].isin(open_ids), "amount"].sum())
        )
        # stage-weighted: Σ amount × stage probability of the deals open at the cut whose
        # expected close date (both as known at the cut) falls in the quarter, + won to date
        known = as_known_at(small_export, day)
        state = state_as_of(known, day)
        probs = stage_probabilities(known)
        closing = (state["expected_close_date"] >= quarter.start) & (
            state["expected_close_date"] <= quarter.end
        )
        pipeline = sum(
            float(a) * probs[str(s)]
            for a, s, c in zip(state["amount"], state["stage"], closing, strict=True)
            if bool(c) and pd.notna(a)
        )
        assert row.stage_pipeline == pytest.approx(pipeline)
        assert row.stage_weighted == pytest.approx(by_day + pipeline)
        # the total is won + open + new; errors are forecast − actual, and ÷ actual
        assert row.forecast == pytest.approx(row.won_to_date + row.open_expected + row.expected_new)
        assert row.error == pytest.approx(row.forecast - actual)
        assert row.pct_error == pytest.approx((row.forecast - actual) / actual)
        assert row.stage_error == pytest.approx(row.stage_weighted - actual)
        assert row.stage_pct_error == pytest.approx((row.stage_weighted - actual) / actual)
        assert row.open_error == pytest.approx(row.open_expected - row.actual_open)
        assert row.inside_p10_p90 == (row.p10 <= actual <= row.p90)
    t = small_result.table
    s = small_result.summary
    assert s["pipecast_mape"] == pytest.approx(float(t["pct_error"].abs().mean()))
    assert s["stage_weighted_mape"] == pytest.approx(float(t["stage_pct_error"].abs().mean()))
    assert s["mape_ratio"] == pytest.approx(s["pipecast_mape"] / s["stage_weighted_mape"])
    assert s["inside_p10_p90"] == pytest.approx(float(t["inside_p10_p90"].mean()))
    week = small_result.by_week.set_index("week")
    for row in t.itertuples(index=False):
        assert week.loc[row.week, "pipecast_bias"] == pytest.approx(row.pct_error)


def test_second_run_fits_nothing(
    small_export: Export, small_result: BacktestResult, cache_dir: Path, monkeypatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached cut was trained again")

    monkeypatch.setattr(backtest, "fit_close_model", refuse)
    again = run_backtest(small_export, periods=1, weeks=WEEKS, cache_dir=cache_dir)
    assert again.fitted == 0 and again.cached == 2
    assert again.table["model_from_cache"].all()
    cols = [c for c in COLUMNS if c != "model_from_cache"]
    pd.testing.assert_frame_equal(again.table[cols], small_result.table[cols])
    # another export is another cache key: its cuts would be trained, not read
    opps = small_export.opportunities
    assert opps is not None
    other = small_export.replace(opportunities=opps.assign(amount=opps["amount"] * 2))
    with pytest.raises(AssertionError, match="trained again"):
        run_backtest(other, periods=1, weeks=(4,), cache_dir=cache_dir)


def test_unreadable_cache_file_is_trained_again(small_export: Export, tmp_path: Path) -> None:
    kwargs = {"periods": 1, "weeks": (12,), "cache_dir": tmp_path, "min_closed_deals": 10**9}
    first = run_backtest(small_export, **kwargs)  # type: ignore[arg-type]
    (cached,) = tmp_path.rglob("*.pkl")
    cached.write_bytes(b"not a model")
    again = run_backtest(small_export, **kwargs)  # type: ignore[arg-type]
    assert again.fitted == 1 and first.table["forecast"].equals(again.table["forecast"])
    assert not list(tmp_path.rglob("*.tmp"))


def test_forecast_uses_nothing_recorded_after_its_day(small_export: Export) -> None:
    """Outcomes after the cut (bigger final amounts) change the actual, never the forecast."""
    kwargs = {"periods": 1, "weeks": (4,), "min_closed_deals": 10**9}
    before = run_backtest(small_export, **kwargs).table  # type: ignore[arg-type]
    day = pd.Timestamp(before["as_of"].iloc[0])
    opps = small_export.opportunities
    assert opps is not None
    later = (opps["closed_at"] >= day + pd.Timedelta(days=1)).to_numpy(dtype=bool, na_value=False)
    bigger = opps.copy()
    bigger.loc[later, "amount"] = bigger.loc[later, "amount"] * 10
    after = run_backtest(small_export.replace(opportunities=bigger), **kwargs).table  # type: ignore[arg-type]
    forecast_cols = [
        "open_deals",
        "won_to_date",
        "open_expected",
        "open_p10",
        "open_p90",
        "model_uncertainty",
        "expected_new",
        "forecast",
        "p10",
        "p90",
        "stage_weighted",
    ]
    pd.testing.assert_frame_equal(after[forecast_cols], before[forecast_cols])
    assert after["actual"].iloc[0] > before["actual"].iloc[0]


def test_console_tables(small_result: BacktestResult) -> None:
    console = Console(record=True, width=200)
    render_backtest(small_result, console)
    text = console.export_text()
    assert "By week of the quarter" in text and "2026-08-28" in text
    assert f"{small_result.summary['forecasts']} forecasts" in text


def test_chart_is_a_png(small_result: BacktestResult, tmp_path: Path) -> None:
    path = plot_backtest(small_result.table, tmp_path / "backtest.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


# ----------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("backtest_cli") / "export"
    synthetic.write_simulation(
        synthetic.simulate(seed=5, n_opportunities=500, n_leads=1000), folder
    )
    return folder


def _env(tmp_path: Path) -> dict[str, str]:
    # the historical baseline keeps the command test fast: the LightGBM cuts are tested above
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PIPECAST_VAR_DIR": str(tmp_path / "var"),
        "PIPECAST_MIN_CLOSED_DEALS": "1000000",
    }


def test_command_writes_csv_chart_json_and_an_mlflow_run(export_dir: Path, tmp_path: Path) -> None:
    out, chart = tmp_path / "backtest.csv", tmp_path / "backtest.png"
    args = ["backtest", "--data", str(export_dir), "--periods", "2", "--weeks", "2,10"]
    result = runner.invoke(
        app, [*args, "--out", str(out), "--chart", str(chart), "--json"], env=_env(tmp_path)
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["summary"]["forecasts"] == 4 and doc["models_trained"] == 4
    assert [f["week"] for f in doc["forecasts"]] == [2, 10, 2, 10]
    table = pd.read_csv(out)
    assert list(table.columns) == COLUMNS and len(table) == 4
    assert np.allclose(table["forecast"], [f["forecast"] for f in doc["forecasts"]])
    assert chart.read_bytes()[:4] == b"\x89PNG"
    run = mlflow.MlflowClient(tracking_uri=_env(tmp_path)["MLFLOW_TRACKING_URI"]).get_run(
        doc["mlflow_run_id"]
    )
    assert run.data.tags["run_kind"] == "backtest"
    assert run.data.metrics["pipecast_mape"] == pytest.approx(doc["summary"]["pipecast_mape"])
    assert run.data.metrics["week2_inside_p10_p90"] == pytest.approx(
        doc["by_week"][0]["inside_p10_p90"]
    )
    # the second run reads every cut model from the cache
    again = runner.invoke(app, [*args, "--json"], env=_env(tmp_path))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["models_from_cache"] == 4


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--weeks", "0,4", "--weeks"),
        ("--weeks", "four", "--weeks"),
        ("--periods", "0", "--periods"),
        ("--chart", "chart.svg", ".png"),
    ],
)
def test_command_refuses_bad_options_and_writes_nothing(
    export_dir: Path, tmp_path: Path, option: str, value: str, message: str
) -> None:
    out = tmp_path / "backtest.csv"
    if option == "--chart":
        value = str(tmp_path / value)
    result = runner.invoke(
        app,
        ["backtest", "--data", str(export_dir), "--out", str(out), option, value],
        env=_env(tmp_path),
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "mlflow.db").exists()


# ----------------------------------------------------------------------------------------
# acceptance: the default simulated export, and the Maven CRM import
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_backtest(tmp_path_factory: pytest.TempPathFactory) -> backtest.BacktestResult:
    """Every quarter of the default export (seed 7, 16,000 opportunities) whose forecasts all
    have a trained close model: 2024-Q4 to 2026-Q3, 8 quarters × weeks 1, 4, 8, 12.

    The history starts in May 2024; a cut inside 2024-Q3 knows too few closed deals and gets
    the win incidence by deal age instead (``fit_close_model``), so that quarter would judge
    the fallback, not the model. Eight quarters, not the four the acceptance allows at least:
    a quarter's open-pipeline bookings turn on a few big deals, so four quarters cannot tell a
    bias of the forecast from chance. Measured with the simulator's own true probabilities
    (``truth/opportunity_snapshots``, the Sundays of weeks 1–2): the open deals of 2026-Q1,
    2026-Q2 and 2026-Q3 booked 9%, 5% and 11% more than their true expectation (the largest
    fifth of the deals by amount 24%, 2% and 15% more), while week by week of the quarter
    (weeks 1–12, the 8 quarters pooled) the truth is within 2% of what was booked.
    """
    export = synthetic.simulate(seed=7).export.replace(leads=None)
    cache = tmp_path_factory.mktemp("backtest-cache")
    result = run_backtest(export, periods=8, weeks=(1, 4, 8, 12), cache_dir=cache)
    s = result.summary
    log.warning(
        "backtest default export: MAPE pipecast %.3f vs stage-weighted %.3f (ratio %.2f); "
        "inside P10–P90 %.0f%%; bias by week %s; model uncertainty σ mean %.3f (%s); %.0f s",
        s["pipecast_mape"],
        s["stage_weighted_mape"],
        s["mape_ratio"],
        100 * s["inside_p10_p90"],
        dict(zip(result.by_week["week"], result.by_week["pipecast_bias"].round(3), strict=True)),
        s["model_uncertainty"],
        result.table["model_uncertainty"].round(3).tolist(),
        result.seconds,
    )
    return result


@pytest.mark.slow
def test_acceptance_error_beats_the_stage_weighted_number(
    default_backtest: backtest.BacktestResult,
) -> None:
    s = default_backtest.summary
    assert s["forecasts"] == 32 and s["quarters"] == 8
    assert set(s["models"]) == {CompetingRisksCloseModel.kind}  # no cut fell back
    assert s["pipecast_mape"] <= 0.6 * s["stage_weighted_mape"]


@pytest.mark.slow
def test_acceptance_range_holds_the_actual(default_backtest: backtest.BacktestResult) -> None:
    """P10–P90 with the model's own uncertainty (a factor shared by the open deals) holds the
    quarter's bookings in 65–95% of the forecasts (measured: 81%, 26 of 32, on the default export
    with 15% never-closing deals; 31–50% with independent deals and known probabilities)."""
    s = default_backtest.summary
    assert 0.65 <= s["inside_p10_p90"] <= 0.95
    # the uncertainty is read from each cut's past, and it is there: not 0 everywhere
    assert (default_backtest.table["model_uncertainty"] > 0).sum() >= 8


@pytest.mark.slow
def test_acceptance_no_bias_by_week(default_backtest: backtest.BacktestResult) -> None:
    """Mean signed error within ±5% at each week of the quarter (measured over the 8 quarters:
    −4.6%, −2.1%, +0.3%, −0.8% at weeks 1, 4, 8, 12; over the last four alone week 1 is −5.3%,
    the luck of those quarters' big deals described in the fixture)."""
    by_week = default_backtest.by_week
    assert list(by_week["week"]) == [1, 4, 8, 12]
    assert (by_week["forecasts"] == 8).all()
    assert (by_week["pipecast_bias"].abs() <= 0.05).all()


@pytest.mark.real_data
@pytest.mark.slow
def test_maven_crm_backtest_reports_both_errors(real_data_dir: Path, tmp_path: Path) -> None:
    from features.adapters import maven_crm

    src = real_data_dir / "maven_crm"
    if not src.is_dir():
        pytest.skip("maven_crm is not in the real data folder")
    result = run_backtest(maven_crm.convert(src), periods=4, cache_dir=tmp_path)
    s = result.summary
    log.warning(
        "backtest Maven CRM (%d forecasts, %s): MAPE pipecast %.3f vs stage-weighted %.3f; "
        "inside P10–P90 %.0f%%; notes %s",
        s["forecasts"],
        s["models"],
        s["pipecast_mape"],
        s["stage_weighted_mape"],
        100 * s["inside_p10_p90"],
        result.notes,
    )
    assert s["forecasts"] >= 4
    for key in ("pipecast_mape", "stage_weighted_mape", "pipecast_mae", "stage_weighted_mae"):
        assert np.isfinite(s[key]) and s[key] >= 0, key
    assert (result.table["actual"] > 0).all()


def test_too_little_history_fits_the_win_incidence_by_deal_age(small_export: Export) -> None:
    from features import opportunity
    from models.survival import CumulativeIncidenceCloseModel

    day = pd.Timestamp("2026-08-02")
    known = as_known_at(small_export, day)
    model = backtest.fit_close_model(known, min_closed_deals=10**9)
    assert isinstance(model, CumulativeIncidenceCloseModel)
    # it knows time: the same open deal gets less as it lingers
    X = opportunity.build(known, as_of=day)
    probe = X.iloc[[0, 0]].copy()
    probe["age_days"] = [0.0, 500.0]
    p = model.predict_in_period(probe, start_days=0, end_days=60)
    assert p[1] < p[0]
    assert np.all(p <= model.predict_proba(probe)[:, 1] + 1e-12)
