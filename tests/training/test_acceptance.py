"""Acceptance on the default simulated export (seed 7): the models against the truth and baselines.

``slow``: simulates the full default export and runs the whole ``pipecast train``
(a few minutes on two cores). The numbers are those of the test slice; the truth is the
simulator's exact probability of the same rows.
"""

from __future__ import annotations

import pytest

from features import synthetic
from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from pipecast.config import Settings
from training.train import TrainingSummary, run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> TrainingSummary:
    root = tmp_path_factory.mktemp("acceptance")
    synthetic.write_simulation(synthetic.simulate(seed=7), root / "export")
    settings = Settings(mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    return run_training(settings, data_dir=root / "export")


def test_p_win(summary: TrainingSummary) -> None:
    m = summary.model(CLOSE_MODEL_NAME).metrics["p_win"]
    model, truth = m["model"], m["truth"]
    assert model["auc"] >= truth["auc"] - 0.03
    assert model["brier"] <= truth["brier"] * 1.10
    assert model["ece"] <= 0.03
    assert model["brier_skill_vs_stage_probability"] >= 0.20


def test_p_win_in_period(summary: TrainingSummary) -> None:
    m = summary.model(CLOSE_MODEL_NAME).metrics["p_win_in_period_quarter"]
    model = m["model"]
    assert model["ece"] <= 0.03
    # the baseline here is the stage probability × the historical in-period share
    assert model["brier_skill_vs_stage_probability"] >= 0.20


def test_sqo_likelihood(summary: TrainingSummary) -> None:
    m = summary.model(SQO_MODEL_NAME).metrics["sqo"]
    assert m["model"]["auc"] >= m["truth"]["auc"] - 0.03
    assert m["model"]["ece"] <= 0.02
    assert m["model"]["top_decile_lift"] >= 2.5


def test_both_promoted_on_a_fresh_registry(summary: TrainingSummary) -> None:
    for report in summary.models:
        assert report.gate is not None and report.gate.passed, report.gate
        assert report.version == "1"
