"""MLflow tracking against a real sqlite store in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from features.errors import InputError
from models.baselines import HistoricalLeadModel
from models.registry import champion_info, load_champion
from pipecast.config import Settings
from training import evaluate, plots, tracking


def _model() -> tuple[HistoricalLeadModel, pd.DataFrame]:
    X = pd.DataFrame(
        {
            "source": pd.array(["outbound", "event"] * 50, dtype="string"),
            "employees": np.arange(100.0),
        }
    )
    y = np.r_[np.ones(30), np.zeros(70)]
    return HistoricalLeadModel().fit(X, y), X


def test_log_register_tag_alias_and_load_back(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'reg' / 'mlflow.db'}"
    settings = Settings(mlflow_tracking_uri=uri)
    client = tracking.configure(uri)
    model, X = _model()
    with pytest.raises(InputError, match="no model trained yet"):
        load_champion(settings, "pipecast-test")
    with tracking.training_run(
        client, tracking.artifact_location(settings), run_name="t", tags={"data_fingerprint": "abc"}
    ) as run_id:
        tracking.log_params({"a": 1, "when": pd.Timestamp("2026-01-01")})
        with tracking.model_run("child") as child_id:
            tracking.log_metrics({"brier": 0.2, "bad": float("nan"), "text": "x"})
            tracking.log_table(pd.DataFrame({"a": [1]}), "evaluation/table.csv")
            tracking.log_json(
                {"x": np.float64(1.5), "nan": float("nan")}, "evaluation/metrics.json"
            )
            version = tracking.log_and_register(
                model,
                registered_name="pipecast-test",
                input_example=X,
                version_tags={
                    "trained_at": "2026-01-02T00:00:00",
                    "data_start": "2025-01-01",
                    "data_end": "2026-01-01",
                    "data_fingerprint": "abc",
                    "gate": "passed: test",
                },
                client=client,
            )
    assert version == "1"
    assert tracking.champion_version(client, "pipecast-test") is None
    tracking.set_champion(client, "pipecast-test", version)
    assert tracking.champion_version(client, "pipecast-test") == "1"

    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    child = c.get_run(child_id)
    assert child.info.experiment_id == c.get_run(run_id).info.experiment_id
    assert child.data.metrics == {"brier": 0.2}
    mv = c.get_model_version("pipecast-test", "1")
    assert mv.tags["gate"] == "passed: test" and mv.tags["data_fingerprint"] == "abc"
    # artifacts live beside the database, not in the working directory
    assert (tmp_path / "reg" / "mlartifacts").is_dir()

    info = champion_info(settings, "pipecast-test")
    assert info is not None and info["version"] == "1" and info["data_start"] == "2025-01-01"
    loaded, info = load_champion(settings, "pipecast-test")
    assert np.allclose(loaded.predict_proba(X), model.predict_proba(X))


def test_fingerprint_ignores_truth_and_changes_with_data(tmp_path: Path) -> None:
    (tmp_path / "truth").mkdir()
    (tmp_path / "opportunities.csv").write_text("a\n1\n")
    first = tracking.data_fingerprint(tmp_path)
    (tmp_path / "truth" / "x.csv").write_text("whatever")
    assert tracking.data_fingerprint(tmp_path) == first
    (tmp_path / "opportunities.csv").write_text("a\n2\n")
    assert tracking.data_fingerprint(tmp_path) != first
    assert tracking.code_version()["package_version"]


def test_evaluation_table_and_charts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=400) < 0.4).astype(float)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.6, 400), 0, 1)
    seg = pd.Series(rng.choice(["SMB", "Enterprise"], 400))
    table = evaluate.evaluation_table(
        "p_win",
        y,
        {"model": p, "stage_probability": np.full(400, 0.4)},
        baselines=["stage_probability"],
        groups={"segment": seg},
    )
    assert set(table["group_by"]) == {"all", "segment"}
    head = evaluate.headline(table, "p_win", "model")
    assert head["brier_skill_vs_stage_probability"] > 0
    rel = evaluate.reliability(y, p)
    png = plots.reliability_diagram({"model": rel}, tmp_path / "r.png", title="t")
    imp = plots.feature_importance_chart(
        pd.Series({"a": 3.0, "b": 1.0}), tmp_path / "f.png", title="t"
    )
    assert png.stat().st_size > 1000 and imp.stat().st_size > 1000
    coh = evaluate.in_period_coherence([0.5, 0.4], [0.2, 0.5], [0.3, 0.45])
    assert coh["share_above_p_win"] == 0.5 and coh["share_not_monotone"] == 0.5


def test_artifact_location_follows_the_tracking_store(tmp_path: Path) -> None:
    def where(uri: str, **extra: str) -> str | None:
        settings = Settings(mlflow_tracking_uri=uri, var_dir=tmp_path / "var", **extra)
        return tracking.artifact_location(settings)

    assert where(f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}") == (
        (tmp_path / "db" / "mlartifacts").as_uri()
    )
    # a database server has no folder of its own: artifacts go under var_dir
    assert where("postgresql+psycopg://u@db.example:5432/mlflow") == (
        (tmp_path / "var" / "mlartifacts").as_uri()
    )
    assert where("https://mlflow.example.com") is None  # the server decides
    assert where("sqlite:///x.db", mlflow_artifact_location="s3://bucket/pipecast") == (
        "s3://bucket/pipecast"
    )
