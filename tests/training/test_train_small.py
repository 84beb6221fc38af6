"""Too little history: the fallbacks are registered instead, flagged, and they score — for the
close probability the win incidence by deal age (it knows time), for leads the historical rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features import opportunity, synthetic
from features.io import read_export
from features.periods import fiscal_quarter
from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from models.registry import load_champion
from pipecast.config import Settings
from serving.scoring import score_opportunities
from training.train import run_training


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    root = tmp_path_factory.mktemp("tiny")
    synthetic.write_simulation(
        synthetic.simulate(seed=11, n_opportunities=120, n_leads=400), root / "export"
    )
    return Settings(mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}"), root / "export"


def test_fallback_to_baselines_that_know_time(tiny: tuple[Settings, Path]) -> None:
    settings, data = tiny
    summary = run_training(settings, data_dir=data)
    client = MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    kinds = {
        CLOSE_MODEL_NAME: "cumulative_incidence_baseline",
        SQO_MODEL_NAME: "historical_baseline",
    }
    for name, kind in kinds.items():
        report = summary.model(name)
        assert report.fallback_reason
        assert report.kind == kind
        assert report.gate is not None and report.gate.passed  # nothing else to serve yet
        assert report.version is not None
        tags = client.get_model_version(name, report.version).tags
        assert tags["model_kind"] == kind and tags["fallback"] != "no"

    model, info = load_champion(settings, CLOSE_MODEL_NAME)
    export = read_export(data)
    day = export.exported_at
    feats = opportunity.build(export, as_of=day)
    table = score_opportunities(
        model, feats, as_of=day, period=fiscal_quarter(day, 2), model_version=info["version"]
    )
    assert len(table) == len(feats)
    assert np.all(table["p_win_in_period"] <= table["p_win"] + 1e-12)
    # the served fallback knows time: the same deal open for a year and a half gets less than
    # when it was new
    probe = feats.iloc[[0, 0]].copy()
    probe.index = pd.Index(["fresh", "lingering"], name=feats.index.name)
    probe["age_days"] = [0.0, 540.0]
    scored = score_opportunities(
        model, probe, as_of=day, period=fiscal_quarter(day, 2), model_version=info["version"]
    )
    p = scored["p_win_in_period"].to_numpy()
    assert p[1] < p[0]

    # a second run cannot replace a champion with another fallback
    again = run_training(settings, data_dir=data)
    assert not again.model(CLOSE_MODEL_NAME).promoted


def test_the_lead_fallback_learns_from_the_training_and_calibration_leads(
    tmp_path: Path,
) -> None:
    """The SQO model learns from the training leads and, through early stopping, calibration
    and its regrown trees, from the calibration leads: the historical rate served in its place
    (and the baselines it is judged against) learn from both slices, the latest before the
    test leads."""
    synthetic.write_simulation(
        synthetic.simulate(seed=11, n_opportunities=120, n_leads=400), tmp_path / "export"
    )
    settings = Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    report = run_training(settings, data_dir=tmp_path / "export").model(SQO_MODEL_NAME)
    assert report.fallback_reason and report.champion_version == report.version
    counts = report.counts
    assert counts["calibration_rows"] > 0 and counts["test_rows"] > 0
    model, _ = load_champion(settings, SQO_MODEL_NAME)
    seen_rate = (counts["train_sqos"] + counts["calibration_sqos"]) / (
        counts["train_rows"] + counts["calibration_rows"]
    )
    assert model.rate_.overall_rate_ == pytest.approx(seen_rate, rel=1e-12)
    # ... which is not the training leads' rate alone on this export
    assert counts["train_sqos"] / counts["train_rows"] != pytest.approx(seen_rate, rel=1e-3)
