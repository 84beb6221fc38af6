"""The plain challenger decision and how the summary shows it (with the feature groups left
out), the test slice by month."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from models.feature_selection import GroupSelection
from training import evaluate
from training.train import ModelReport, TrainingSummary, _choose_challenger, render_summary


def _report(model_brier: float, plain_brier: float) -> ModelReport:
    report = ModelReport("pipecast-sqo-likelihood", "SQO likelihood")
    report.metrics["sqo"] = {
        "model": {"brier": model_brier, "auc": 0.7, "n": 100.0},
        "plain": {"brier": plain_brier, "auc": 0.71, "n": 100.0},
        "source_signal_rate": {"brier": 0.2, "auc": 0.6, "n": 100.0},
    }
    return report


def test_the_plain_model_is_registered_only_when_its_brier_is_lower() -> None:
    better = _report(0.1500, 0.1490)
    assert _choose_challenger(better, "sqo") == "plain"
    assert better.registered == "plain" and better.kind == "plain"
    assert better.challenger_note is not None
    assert "plain LightGBM on the raw columns beat the engineered model" in better.challenger_note
    assert "0.1490 against 0.1500" in better.challenger_note

    tie = _report(0.1500, 0.1500)
    assert _choose_challenger(tie, "sqo") == "model" and tie.registered == "model"
    assert tie.challenger_note is not None and "engineered model beat" in tie.challenger_note

    worse = _report(0.1400, 0.1500)
    assert _choose_challenger(worse, "sqo") == "model" and worse.kind == "lightgbm"


def test_the_close_challenger_must_also_win_on_what_the_forecast_reads() -> None:
    """p_win is judged on deals closed by the label date (those that never close are left
    out); the in-period probability, which the forecast reads, on every deal: the plain model
    is registered only when it wins on both."""
    report = _report(0.1700, 0.1610)
    report.metrics["p_win"] = report.metrics.pop("sqo")
    report.metrics["p_win_in_period_quarter"] = {
        "model": {"brier": 0.0284, "n": 300.0},
        "plain": {"brier": 0.0811, "n": 300.0},
    }
    assert _choose_challenger(report, "p_win", also="p_win_in_period_quarter") == "model"
    assert report.registered == "model" and report.challenger_note is not None
    assert "but not on p_win_in_period_quarter (Brier 0.0811 against 0.0284)" in (
        report.challenger_note
    )
    report.metrics["p_win_in_period_quarter"]["plain"]["brier"] = 0.0280
    assert _choose_challenger(report, "p_win", also="p_win_in_period_quarter") == "plain"
    assert "p_win_in_period_quarter Brier 0.0280 against 0.0284" in report.challenger_note
    # not measured on the second target: the first decides alone
    del report.metrics["p_win_in_period_quarter"]
    fresh = _report(0.1700, 0.1610)
    assert _choose_challenger(fresh, "sqo", also="p_win_in_period_quarter") == "plain"


def test_summary_shows_the_challenger_the_months_and_a_random_split() -> None:
    report = _report(0.1500, 0.1490)
    _choose_challenger(report, "sqo")
    report.split, report.split_note = (
        "random",
        "no dates: a random split; these figures cannot show drift",
    )
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    months = np.repeat(["2026-01", "2026-02", "2026-03", "2026-04"], 100)
    preds = {"model": rng.uniform(size=400), "plain": rng.uniform(size=400)}
    table = evaluate.evaluation_table(
        "sqo", y, preds, baselines=["plain"], groups={"month": pd.Series(months)}
    )
    report.by_month = evaluate.by_month(table, "sqo")
    assert list(report.by_month["month"]) == ["2026-01", "2026-02", "2026-03", "2026-04"]
    assert report.by_month["n"].tolist() == [100, 100, 100, 100]
    first = months == "2026-01"
    brier = np.mean((preds["model"][first] - y[first]) ** 2)
    assert report.by_month.loc[0, "model_brier"] == pytest.approx(brier)
    text = _rendered(report, as_of=None)
    assert "(no dates)" in text
    assert "no dates: a random split; these figures cannot show drift" in text
    assert "plain LightGBM" in text and "the plain model is the one registered" in text
    assert "test slice by month" in text and "2026-04" in text


def test_the_summary_says_which_feature_groups_the_model_left_out() -> None:
    report = ModelReport("pipecast-sqo", "SQO likelihood")
    report.feature_groups = GroupSelection(
        ["industry", "source"],
        dropped=["location", "similar-lead rates"],
        loss_change={"location": -0.0004, "similar-lead rates": -0.0001, "revenue": 0.0002},
        base_loss=0.21,
    )
    text = _rendered(report, as_of=pd.Timestamp("2026-11-01"))
    assert "SQO likelihood: left out location, similar-lead rates" in text
    assert "revenue" not in text  # a kept group is not named
    # nothing left out: nothing said
    report.feature_groups = GroupSelection(["industry"], loss_change={"revenue": 0.0002})
    assert "left out" not in _rendered(report, as_of=pd.Timestamp("2026-11-01"))


def _rendered(report: ModelReport, *, as_of: pd.Timestamp | None) -> str:
    """What ``pipecast train`` prints for a run of this one model."""
    summary = TrainingSummary(
        data_dir=Path("export"),
        as_of=as_of,
        run_id="r",
        fingerprint="f",
        models=[report],
        seconds=1.0,
        tracking_uri="sqlite:///x.db",
    )
    console = Console(record=True, width=200)
    render_summary(summary, console)
    return console.export_text()
