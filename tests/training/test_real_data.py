"""Training on the shared real datasets: the models must beat their baselines' Brier score.

Maven CRM (deals of a fictitious B2B company, time split by snapshot date) for the close
probability; UCI bank marketing (calls ordered by their rebuilt dates) for the SQO likelihood.
The metrics are logged and printed so that a run shows AUC, Brier and ECE side by side.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from features.adapters import bank_marketing, maven_crm
from features.io import write_export
from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from pipecast.config import Settings
from training.train import ModelReport, run_training

pytestmark = pytest.mark.real_data
log = logging.getLogger(__name__)


def _report(name: str, metrics: dict[str, dict[str, float]]) -> None:
    for model, m in metrics.items():
        log.warning(
            "%s %-26s AUC %.3f  Brier %.4f  ECE %.3f",
            name,
            model,
            m.get("auc", float("nan")),
            m["brier"],
            m["ece"],
        )


def test_maven_crm_close_probability(real_data_dir: Path, tmp_path: Path) -> None:
    src = real_data_dir / "maven_crm"
    if not src.is_dir():
        pytest.skip("maven_crm is not in the real data folder")
    write_export(maven_crm.convert(src), tmp_path / "export")
    settings = Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    summary = run_training(settings, data_dir=tmp_path / "export")
    report = summary.model(CLOSE_MODEL_NAME)
    metrics = report.metrics["p_win"]
    _report("maven p_win", metrics)
    assert report.fallback_reason is None
    # what is served is the better of the engineered model and the plain challenger: on Maven
    # (no stage history, amounts only on closed deals) the competing-risks model's p_win
    # measured Brier 0.235 against the plain model's 0.217, so the plain one is registered
    served = min(metrics["model"]["brier"], metrics["plain"]["brier"])
    for baseline in ("stage_probability", "historical_stage", "historical_stage_segment"):
        assert served < metrics[baseline]["brier"], baseline
    _check_plain_challenger(report, "p_win", settings)


def test_bank_marketing_sqo_likelihood(real_data_dir: Path, tmp_path: Path) -> None:
    src = real_data_dir / "uci_bank_marketing"
    if not src.is_dir():
        pytest.skip("uci_bank_marketing is not in the real data folder")
    write_export(bank_marketing.convert(src), tmp_path / "export")
    settings = Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    summary = run_training(settings, data_dir=tmp_path / "export")
    report = summary.model(SQO_MODEL_NAME)
    metrics = report.metrics["sqo"]
    _report("bank sqo", metrics)
    assert report.fallback_reason is None
    # the model is judged against baselines of the training and calibration leads it learned
    # from; on the latest bank leads it does not beat them (test_real_data_leads.py says why),
    # so what is served must be the best of the model and the baselines on the test slice
    served = (
        report.registered if report.champion_version == report.version else None
    ) or report.baseline_champion
    assert served is not None
    for other in ("model", "source_signal_rate", "overall_rate"):
        assert metrics[served]["brier"] <= metrics[other]["brier"], other
    _check_plain_challenger(report, "sqo", settings)


def _check_plain_challenger(report: ModelReport, target: str, settings: Settings) -> None:
    """The plain LightGBM is in the report, and the champion is not worse than it on the test
    slice by more than the gate tolerance; the test slice is also reported by month."""
    metrics = report.metrics[target]
    assert "plain" in metrics and report.challenger_note
    assert report.version is not None and report.champion_version is not None
    champion = (
        report.registered if report.champion_version == report.version else None
    ) or report.baseline_champion
    assert champion is not None
    assert metrics[champion]["brier"] <= metrics["plain"]["brier"] + settings.gate_tolerance
    assert report.by_month is not None and len(report.by_month) >= 2
