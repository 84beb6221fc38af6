"""A real MLflow registry (sqlite, in a temporary folder) with a champion close model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from models import CHAMPION_ALIAS, CLOSE_MODEL_NAME
from pipecast.config import Settings

PROVENANCE = {
    "data_start": "2024-02-01",
    "data_end": "2026-06-30",
    "trained_at": "2026-07-01T08:00:00",
    "data_fingerprint": "sha256:0f3a",
}
METRICS = {"brier": 0.162, "auc": 0.781}


@dataclass(frozen=True)
class Registry:
    uri: str
    version: str
    run_id: str


def settings_for(uri: str, tmp: Path, **overrides: object) -> Settings:
    """Settings on the given registry, with data and local state in ``tmp``."""
    values: dict[str, object] = {
        "mlflow_tracking_uri": uri,
        "data_dir": tmp / "data",
        "var_dir": tmp / "var",
        "database_url": f"sqlite:///{tmp / 'pipecast.db'}",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry for all serving tests: a tiny real sklearn model as the close champion."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment(
            "tests", artifact_location=(root / "artifacts").as_uri()
        )
        rng = np.random.default_rng(0)
        x = rng.normal(size=(40, 2))
        y = (x[:, 0] + rng.normal(scale=0.5, size=40) > 0).astype(int)
        model = LogisticRegression().fit(x, y)
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_metrics(METRICS)
            mlflow.log_param("data_end", "1999-01-01")  # the version tag must win over this
            logged = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=CLOSE_MODEL_NAME,
                input_example=x[:2],
                pip_requirements=["scikit-learn"],  # skips the slow requirement inference
            )
        version = str(logged.registered_model_version)
        for key, value in PROVENANCE.items():
            client.set_model_version_tag(CLOSE_MODEL_NAME, version, key, value)
        client.set_registered_model_alias(CLOSE_MODEL_NAME, CHAMPION_ALIAS, version)
        yield Registry(uri=uri, version=version, run_id=run.info.run_id)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
