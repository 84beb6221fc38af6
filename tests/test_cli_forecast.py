"""``pipecast forecast``: the table, ``--json``, ``--out`` and the refusals (exit 2, nothing written)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from features import synthetic
from models import CHAMPION_ALIAS, CLOSE_MODEL_NAME
from pipecast.cli import app
from serving.forecasting import DEAL_COLUMNS
from tests.serving.test_forecasting import fit_history_model

runner = CliRunner()
AS_OF = "2026-06-14"


@dataclass(frozen=True)
class Workspace:
    data: Path
    env: dict[str, str]
    version: str


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory, small_simulation: synthetic.Simulation
) -> Iterator[Workspace]:
    """The small export on disk and a sqlite registry whose close champion is the fallback model."""
    root = tmp_path_factory.mktemp("forecast_cli")
    data = root / "export"
    synthetic.write_simulation(small_simulation, data)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment(
            "forecast-cli", artifact_location=(root / "artifacts").as_uri()
        )
        with mlflow.start_run(experiment_id=experiment):
            logged = mlflow.sklearn.log_model(
                fit_history_model(small_simulation.export),
                name="model",
                registered_model_name=CLOSE_MODEL_NAME,
                pip_requirements=["scikit-learn"],
                serialization_format="cloudpickle",  # as pipecast train logs it
            )
        version = str(logged.registered_model_version)
        client.set_registered_model_alias(CLOSE_MODEL_NAME, CHAMPION_ALIAS, version)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    env = {"MLFLOW_TRACKING_URI": uri, "PIPECAST_VAR_DIR": str(root / "var")}
    yield Workspace(data=data, env=env, version=version)


def _run(ws: Workspace, *args: str) -> object:
    return runner.invoke(
        app, ["forecast", "--data", str(ws.data), "--as-of", AS_OF, *args], env=ws.env
    )


def test_table_json_and_deal_lines(workspace: Workspace, tmp_path: Path) -> None:
    table = _run(workspace, "--period", "2026-Q2", "--quota", "1500000", "--by", "owner_id")
    assert table.exit_code == 0, table.output  # type: ignore[attr-defined]
    text = table.stdout  # type: ignore[attr-defined]
    for part in (
        "Forecast 2026-Q2",
        "total = won + open + new",
        "Quota",
        "By owner_id",
        "(new business)",
        "Deals that carry the period",
        "Red flags",
    ):
        assert part in text, part

    out = tmp_path / "deals.csv"
    got = _run(
        workspace,
        "--period",
        "2026-Q2",
        "--quota",
        "1500000",
        "--by",
        "segment",
        "--json",
        "--out",
        str(out),
        "--compare-to",
        "2026-05-31",
    )
    assert got.exit_code == 0, got.output  # type: ignore[attr-defined]
    doc = json.loads(got.stdout)  # type: ignore[attr-defined]  # stdout holds only the JSON
    for key in (
        "as_of",
        "period",
        "model_version",
        "expected",
        "p10",
        "p50",
        "p90",
        "stage_weighted",
        "prob_attain_quota",
        "coverage_ratio",
        "groups",
        "deals",
        "won_to_date",
        "expected_new",
        "total",
        "changes",
    ):
        assert key in doc, key
    assert doc["as_of"] == AS_OF and doc["period"]["start"] == "2026-05-01"
    assert doc["model_version"] == workspace.version
    assert set(doc["total"]) == {"expected", "p10", "p50", "p90"}
    assert sum(g["expected"] for g in doc["groups"]) == pytest.approx(doc["total"]["expected"])
    # by segment, new business lands in the segments' rows
    assert "(new business)" not in {g["group"] for g in doc["groups"]}
    for deal in doc["deals"]:
        assert set(deal) >= {
            "opportunity_id",
            "p_win",
            "p_win_in_period",
            "expected_value",
            "flags",
            "top_factors",
        }
    lines = pd.read_csv(out)
    assert list(lines.columns) == ["opportunity_id", "segment", *DEAL_COLUMNS[1:]]
    assert len(lines) == doc["n_open_deals"]
    assert lines["expected_value"].sum() == pytest.approx(doc["expected"])
    assert set(lines["opportunity_id"]) == {d["opportunity_id"] for d in doc["deals"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period", "2026-Q7"], "2026-Q3"),
        ([], "needs a period"),
        (["--period", "2026-Q1"], "ended before"),
        (["--period", "2026-Q2", "--by", "colour"], "owner_id"),
        (["--period", "2026-Q2", "--quota", "-5"], "≥ 0"),
        (["--period", "2026-Q2", "--compare-to", "2026-07-01"], "earlier day"),
        (["--period", "2026-Q2", "--commit", "0.2"], "best case"),
        (["--period", "2026-Q2", "--neglect-days", "0"], "≥ 1"),
        (["--period", "2026-Q2", "--change-points", "-3"], "percentage points"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(
    workspace: Workspace, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "deals.csv"
    got = _run(workspace, *args, "--out", str(out))
    assert got.exit_code == 2, got.output  # type: ignore[attr-defined]
    assert message in " ".join(got.output.split())  # type: ignore[attr-defined]
    assert "Traceback" not in got.output  # type: ignore[attr-defined]
    assert not out.exists()


def test_without_a_champion_says_to_train(workspace: Workspace, tmp_path: Path) -> None:
    env = {**workspace.env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}"}
    got = runner.invoke(
        app, ["forecast", "--data", str(workspace.data), "--period", "2026-Q4"], env=env
    )
    assert got.exit_code == 2, got.output
    assert "train" in got.output
