"""A champion after every ``pipecast train``: when the learned model misses the gate on a fresh
registry, the best baseline serves (flagged), and ``pipecast score opportunities`` works.

The gate is made to fail by the data, not by patching it: in the simulated history every deal
that closes after the calibration slice is lost (a market that collapsed in the last months),
and the CRM's declared stage probabilities are low. A model that learned the earlier months
cannot beat that on the test slice; the CRM stage baseline can.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from features import labels, opportunity, synthetic
from features.config import StageDef
from features.io import Export, write_export
from features.snapshots import snapshot_dates
from models import CHAMPION_ALIAS, CLOSE_MODEL_NAME
from pipecast.cli import app
from pipecast.config import Settings
from training import splits
from training.train import AGE_BASELINE, STAGE_BASELINE, TrainingSummary, run_training

pytestmark = pytest.mark.slow
runner = CliRunner()


def _collapsed_export(seed: int) -> Export:
    export = synthetic.simulate(seed=seed, n_opportunities=1200, n_leads=100).export
    opps = export.opportunities
    assert opps is not None and export.stage_history is not None
    # the same time split as training's (outcomes do not move snapshot dates or cycles)
    table = opportunity.build_training_set(export, dates=snapshot_dates(export))
    lab = labels.opportunity_labels(export, table[["opportunity_id", "as_of"]])
    gap = splits.cycle_gap_days(opps["created_at"], opps["closed_at"])
    split = splits.plan_opportunity_split(
        table["as_of"], label_date=export.exported_at, gap_days=gap
    )
    assert lab["closed_at"].notna().any()
    late_wins = (opps["status"] == "won") & (opps["closed_at"] > split.calibration_end)
    late_wins &= opps.index.to_series().mod(10).ne(0).to_numpy()  # a few wins remain
    ids = set(opps.loc[late_wins, "opportunity_id"])
    assert len(ids) >= 30
    opps = opps.copy()
    opps.loc[late_wins, "status"] = "lost"
    opps.loc[late_wins, "stage"] = "Closed Lost"
    history = export.stage_history.copy()
    flip = history["opportunity_id"].isin(ids) & (history["stage"] == "Closed Won")
    history.loc[flip, "stage"] = "Closed Lost"
    # the CRM's own probabilities: low for every open stage
    stages = [
        StageDef(
            name=s.name,
            probability=0.0 if s.lost else (1.0 if s.won else 0.05),
            won=s.won,
            lost=s.lost,
        )
        for s in export.config.stages
    ]
    config = dataclasses.replace(export.config, stages=stages)
    return Export(
        opportunities=opps,
        stage_history=history,
        activities=export.activities,
        config=config,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path, TrainingSummary]:
    root = tmp_path_factory.mktemp("collapse")
    write_export(_collapsed_export(seed=12), root / "export")
    settings = Settings(mlflow_tracking_uri=f"sqlite:///{root / 'var' / 'mlflow.db'}")
    return settings, root, run_training(settings, data_dir=root / "export")


def test_a_baseline_is_champion_when_the_model_misses_the_gate(
    trained: tuple[Settings, Path, TrainingSummary],
) -> None:
    settings, _, summary = trained
    report = summary.model(CLOSE_MODEL_NAME)
    assert report.fallback_reason is None
    assert report.gate is not None and not report.gate.passed
    metrics = report.metrics["p_win"]
    baselines = (STAGE_BASELINE, "historical_stage", "historical_stage_segment", AGE_BASELINE)
    assert set(baselines) <= set(metrics)  # the time-aware baseline is among the candidates
    best = min(baselines, key=lambda b: metrics[b]["brier"])
    assert report.baseline_champion == best
    assert metrics[best]["brier"] <= metrics[report.registered]["brier"]
    client = MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    champion = client.get_model_version_by_alias(CLOSE_MODEL_NAME, CHAMPION_ALIAS)
    assert str(champion.version) == report.baseline_version != report.version
    assert champion.tags["kind"] == "baseline" and champion.tags["baseline"] == best
    refused = client.get_model_version(CLOSE_MODEL_NAME, report.version)
    assert refused.tags["gate"].startswith("refused")
    assert refused.tags["kind"] in ("lightgbm", "plain")


def test_the_test_slice_is_reported_by_month(
    trained: tuple[Settings, Path, TrainingSummary],
) -> None:
    settings, _, summary = trained
    report = summary.model(CLOSE_MODEL_NAME)
    by_month = report.by_month
    assert by_month is not None and len(by_month) >= 2
    assert by_month["month"].is_monotonic_increasing
    assert {"model_brier", "plain_brier", f"{STAGE_BASELINE}_brier"} <= set(by_month.columns)
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    assert report.run_id is not None
    files = {f.path for f in client.list_artifacts(report.run_id, "evaluation")}
    assert "evaluation/test_by_month.csv" in files
    local = client.download_artifacts(report.run_id, "evaluation/test_by_month.csv")
    logged = pd.read_csv(local)
    assert list(logged["month"]) == list(by_month["month"])
    run = client.get_run(report.run_id)
    assert "plain_brier" in run.data.metrics and "test_brier" in run.data.metrics


def test_score_opportunities_works_with_the_baseline_champion(
    trained: tuple[Settings, Path, TrainingSummary],
) -> None:
    settings, root, summary = trained
    out = root / "scores.csv"
    env: dict[str, Any] = {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "PIPECAST_VAR_DIR": str(root / "var"),
    }
    result = runner.invoke(
        app,
        ["score", "opportunities", "--data", str(root / "export"), "--out", str(out)],
        env=env,
    )
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(out)
    assert len(scores) > 0
    assert set(scores["model_version"].astype(str)) == {
        summary.model(CLOSE_MODEL_NAME).baseline_version
    }
    assert (scores["p_win_in_period"] <= scores["p_win"] + 1e-9).all()
