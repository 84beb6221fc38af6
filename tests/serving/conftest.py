"""A real MLflow registry with a champion close model; an empty prediction store (SQLite or
PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from features import labels, lead
from features.io import Export
from models import CHAMPION_ALIAS, CLOSE_MODEL_NAME, SQO_MODEL_NAME
from models.sqo_likelihood import SQOLikelihoodModel
from pipecast.config import Settings
from serving.store import metadata

PROVENANCE = {
    "data_start": "2024-02-01",
    "data_end": "2026-06-30",
    "trained_at": "2026-07-01T08:00:00",
    "data_fingerprint": "sha256:0f3a",
}
METRICS = {"brier": 0.162, "auc": 0.781}


def fit_small_sqo_model(export: Export, **params: Any) -> SQOLikelihoodModel:
    """An SQO model fitted on every decided lead of ``export`` (small, fast: ``params`` are
    the model's, e.g. ``n_estimators=60``); for tests that score lists, not judge the model."""
    table = lead.build_training_set(export)
    lab = labels.lead_labels(export)
    decided = lab["decided"].reindex(table.index).to_numpy(dtype=bool, na_value=False)
    X = table.loc[decided].drop(columns=["as_of"], errors="ignore").reset_index(drop=True)
    y = lab.loc[table.index[decided], "is_sqo"].to_numpy(dtype=int)
    return SQOLikelihoodModel(categorical=lead.categorical_columns(X), **params).fit(X, y)


@dataclass(frozen=True)
class Registry:
    uri: str
    version: str
    run_id: str


def posted_leads(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` leads of the export in ``data_dir`` as ``POST /score/leads`` takes them
    (a few of their columns, as a BDR tool would post them)."""
    leads = pd.read_csv(data_dir / "leads.csv", dtype=str).head(n)
    return [
        {k: v for k, v in row.items() if k in ("lead_id", "account_id", "source", "title")}
        for row in leads.to_dict(orient="records")
    ]


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


def build_registry(root: Path) -> Registry:
    """A sqlite MLflow registry in ``root`` with a tiny real sklearn model as the close champion."""
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
        return Registry(uri=uri, version=version, run_id=run.info.run_id)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """One registry for all serving tests: a tiny real sklearn model as the close champion."""
    return build_registry(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty prediction store: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url: str = request.getfixturevalue("postgres_database")
    engine = sa.create_engine(url)
    try:
        _drop_everything(engine)
        yield url
        _drop_everything(engine)
    finally:
        engine.dispose()


def _drop_everything(engine: sa.Engine) -> None:
    # the database lives for the module: each test starts from no schema at all
    with engine.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))


@dataclass(frozen=True)
class ScoringSetup:
    """A CRM export on disk, a registry with both champions, and the day the pipeline is scored."""

    data_dir: Path
    registry_uri: str
    as_of: str
    close_version: str
    sqo_version: str


#: the day the round trip scores the pipeline: four months before the simulator's export date
SCORED_AS_OF = "2026-07-01"


@pytest.fixture(scope="session")
def scoring_setup(tmp_path_factory: pytest.TempPathFactory, small_simulation: Any) -> ScoringSetup:
    """The small simulated export and two real (historical-rate) champions fitted on its past.

    The close model is fitted on deals open at an earlier day with their final outcomes, the
    lead model on leads decided by then: real fitted models, fast enough for every test run.
    """
    from features import lead as lead_features
    from features import opportunity as opportunity_features
    from features.labels import lead_labels
    from features.synthetic import write_simulation
    from models.baselines import HistoricalCloseModel, HistoricalLeadModel

    root = tmp_path_factory.mktemp("scoring")
    export = small_simulation.export
    write_simulation(small_simulation, root / "data")
    fit_day = pd.Timestamp("2025-10-01")
    X = opportunity_features.build(export, as_of=fit_day)
    opps = export.opportunities.set_index(export.opportunities["opportunity_id"].astype("string"))
    final = opps.reindex(X.index)
    closed = final["status"].astype("string").isin(["won", "lost"]).to_numpy(dtype=bool)
    y = (final["status"].astype("string") == "won").to_numpy(dtype=bool).astype(int)
    days = (final["closed_at"] - fit_day).dt.days.to_numpy(dtype="float64", na_value=np.nan)
    close = HistoricalCloseModel().fit(X.loc[closed], y[closed], days_to_close=days[closed])
    leads = export.leads
    decided = lead_labels(export)
    early = leads.loc[(leads["created_at"] <= fit_day).to_numpy(dtype=bool, na_value=False)]
    early_ids = early["lead_id"].astype("string")
    labels = decided.reindex(early_ids.to_numpy())
    keep = labels["decided"].fillna(False).to_numpy(dtype=bool)
    LX = lead_features.build(export, as_of=fit_day, leads=early.loc[keep])
    sqo = HistoricalLeadModel().fit(LX, labels["is_sqo"].to_numpy()[keep])

    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment(
            "scoring", artifact_location=(root / "artifacts").as_uri()
        )
        versions = {}
        for name, model in ((CLOSE_MODEL_NAME, close), (SQO_MODEL_NAME, sqo)):
            with mlflow.start_run(experiment_id=experiment):
                logged = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    registered_model_name=name,
                    pip_requirements=["pandas"],
                    serialization_format="cloudpickle",  # as training logs them
                )
            versions[name] = str(logged.registered_model_version)
            client.set_registered_model_alias(name, CHAMPION_ALIAS, versions[name])
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    return ScoringSetup(
        data_dir=root / "data",
        registry_uri=uri,
        as_of=SCORED_AS_OF,
        close_version=versions[CLOSE_MODEL_NAME],
        sqo_version=versions[SQO_MODEL_NAME],
    )
