"""``pipecast train`` and ``pipecast score`` end to end on a small simulated export.

The whole flow runs twice: with the MLflow tracking store and registry in sqlite (the
default) and in PostgreSQL (marked ``postgres``; ``.ci/run`` starts a server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from features import synthetic
from features.io import write_table
from models import CHAMPION_ALIAS, CLOSE_MODEL_NAME, SQO_MODEL_NAME
from pipecast.cli import app
from pipecast.config import Settings
from serving.app import create_app

runner = CliRunner()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def workspace(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("train")
    if request.param == "postgres":
        uri = request.getfixturevalue("postgres_database")
    else:
        uri = f"sqlite:///{root / 'var' / 'mlflow.db'}"
    sim = synthetic.simulate(seed=5, n_opportunities=1500, n_leads=5000)
    synthetic.write_simulation(sim, root / "export")
    return {"root": root, "data": root / "export", "uri": uri}


def _env(ws: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": str(ws["uri"]),
        "PIPECAST_DATA_DIR": str(ws["data"]),
        "PIPECAST_VAR_DIR": str(ws["root"] / "var"),
        **extra,
    }


def test_scoring_before_training_says_what_to_do(workspace: dict[str, Any]) -> None:
    result = runner.invoke(
        app,
        [
            "score",
            "opportunities",
            "--data",
            str(workspace["data"]),
            "--out",
            str(workspace["root"] / "x.csv"),
        ],
        env=_env(workspace),
    )
    assert result.exit_code == 2
    assert "no model trained yet" in result.output and "make train" in result.output


def test_train_twice_then_score(workspace: dict[str, Any]) -> None:
    env = _env(workspace)
    first = runner.invoke(app, ["train", "--data", str(workspace["data"])], env=env)
    assert first.exit_code == 0, first.output
    assert "close probability" in first.output and "CRM stage %" in first.output
    # in-period wins by third of the quarter, printed compactly beside the metric tables
    assert "by third of the quarter" in first.output and "weeks 10-13" in first.output
    uri = str(workspace["uri"])
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in (CLOSE_MODEL_NAME, SQO_MODEL_NAME):
        v1 = client.get_model_version(name, "1")
        for tag in ("trained_at", "data_start", "data_end", "data_fingerprint", "gate"):
            assert v1.tags.get(tag), (name, tag)
        assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == "1"

    # a challenger that must be refused: no tolerance at all against the champion
    second = runner.invoke(
        app,
        ["train", "--data", str(workspace["data"])],
        env={**env, "PIPECAST_GATE_TOLERANCE": "-1"},
    )
    assert second.exit_code == 0, second.output
    assert "NOT promoted" in second.output
    for name in (CLOSE_MODEL_NAME, SQO_MODEL_NAME):
        v2 = client.get_model_version(name, "2")
        assert v2.tags["gate"].startswith("refused")
        assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == "1"

    # score the open pipeline, for the default quarter and for a named period
    out = workspace["root"] / "scores.csv"
    result = runner.invoke(
        app,
        ["score", "opportunities", "--data", str(workspace["data"]), "--out", str(out)],
        env=env,
    )
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(out)
    assert list(scores.columns) == [
        "opportunity_id",
        "p_win",
        "p_win_in_period",
        "expected_value",
        "flags",
        "top_factors",
        "model_version",
    ]
    assert len(scores) > 0 and (scores["p_win_in_period"] <= scores["p_win"] + 1e-9).all()
    assert (scores["model_version"] == 1).all()
    # the competing-risks champion explains its p_win (won rather than lost)
    assert scores["top_factors"].fillna("").str.len().gt(0).mean() > 0.9
    later = runner.invoke(
        app,
        [
            "score",
            "opportunities",
            "--data",
            str(workspace["data"]),
            "--period",
            "2026-11-01:2027-12-31",
            "--out",
            str(out),
        ],
        env=env,
    )
    assert later.exit_code == 0, later.output
    assert (
        pd.read_csv(out)["p_win_in_period"]
        >= scores.set_index("opportunity_id")["p_win_in_period"]
        .reindex(pd.read_csv(out)["opportunity_id"])
        .to_numpy()
        - 1e-9
    ).all()


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--as-of", "2099-01-01"], "after the export date"),
        (["--period", "2020-Q1"], "ended before the as-of day"),
    ],
)
def test_scoring_outside_the_export_is_refused(
    workspace: dict[str, Any], option: list[str], says: str
) -> None:
    out = workspace["root"] / "refused.csv"
    result = runner.invoke(
        app,
        ["score", "opportunities", "--data", str(workspace["data"]), *option, "--out", str(out)],
        env=_env(workspace),
    )
    assert result.exit_code == 2, result.output
    assert says in result.output and not out.exists()


def test_the_training_run_holds_everything(workspace: dict[str, Any]) -> None:
    """Params, metrics, data fingerprint, code version, charts and tables, the model with its
    signature and input example: all in the registered version's run (after the train above)."""
    uri = str(workspace["uri"])
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name in (CLOSE_MODEL_NAME, SQO_MODEL_NAME):
        version = client.get_model_version(name, "1")
        run = client.get_run(version.run_id)
        parent = client.get_run(run.data.tags["mlflow.parentRunId"])
        for key in ("as_of", "data_start", "data_fingerprint", "gate_tolerance", "n_opportunities"):
            assert parent.data.params.get(key), key
        for tag in ("data_fingerprint", "data_start", "data_end", "git_commit", "package_version"):
            assert parent.data.tags.get(tag), tag
        assert len(parent.data.tags["data_fingerprint"]) == 64  # sha-256 of the export
        assert {"test_auc", "test_brier", "test_ece", "test_log_loss"} <= set(run.data.metrics)
        assert 0.5 < run.data.metrics["test_auc"] <= 1.0
        artifacts = {
            a.path
            for folder in ("evaluation", "charts")
            for a in client.list_artifacts(run.info.run_id, folder)
        }
        assert {
            "evaluation/evaluation.csv",
            "evaluation/metrics.json",
            "evaluation/feature_importance.csv",
            "charts/feature_importance.png",
        } <= artifacts
        assert any(a.startswith("charts/reliability_") and a.endswith(".png") for a in artifacts)
        table = pd.read_csv(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id,
                artifact_path="evaluation/evaluation.csv",
                tracking_uri=uri,
            )
        )
        assert len(table) > 0
        if name == CLOSE_MODEL_NAME:
            # the competing-risks model, or the plain challenger when it did better on p_win
            assert version.tags["model_kind"] in ("competing_risks", "plain")
            by_time = pd.read_csv(
                mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id,
                    artifact_path="evaluation/in_period_by_time.csv",
                    tracking_uri=uri,
                )
            )
            thirds = by_time[(by_time["cut"] == "quarter third") & (by_time["model"] == "model")]
            assert set(thirds["group"]) == {"weeks 1-4", "weeks 5-9", "weeks 10-13"}
            # beside the stage baseline, the time-aware one (win incidence by deal age)
            assert {"model", "plain", "stage_probability", "incidence_by_age"} <= set(
                by_time["model"]
            )
            assert (thirds["actual_wins"] > 0).all() and thirds["ece"].between(0, 1).all()
            # the same rows in every cut: the thirds add up to the whole
            whole = by_time[(by_time["cut"] == "all") & (by_time["model"] == "model")]
            assert thirds["rows"].sum() == int(whole["rows"].iloc[0])
        info = mlflow.models.get_model_info(f"models:/{name}/1")
        assert info.signature is not None and info.signature.inputs is not None
        assert info.saved_input_example_info is not None


def test_the_api_lists_the_champions_from_the_same_registry(workspace: dict[str, Any]) -> None:
    """GET /models reads the registry the CLI trained into (sqlite or PostgreSQL)."""
    settings = Settings(
        mlflow_tracking_uri=str(workspace["uri"]),
        data_dir=workspace["data"],
        var_dir=workspace["root"] / "var",
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/models")
    assert response.status_code == 200, response.text
    by_name = {m["name"]: m for m in response.json()["models"]}
    for name in (CLOSE_MODEL_NAME, SQO_MODEL_NAME):
        assert by_name[name]["status"] == "champion" and by_name[name]["version"] == "1"
        assert 0.5 < by_name[name]["metrics"]["test_auc"] <= 1.0


def test_score_a_foreign_lead_list(workspace: dict[str, Any]) -> None:
    """A list from elsewhere: new SDRs, an unseen industry, optional columns missing."""
    leads = pd.read_csv(workspace["data"] / "leads.csv", dtype=str, keep_default_na=False).head(300)
    leads = leads.drop(
        columns=[
            c
            for c in ("seniority", "sequence", "sqo_at", "meeting_at", "is_sqo")
            if c in leads.columns
        ]
    )
    leads["sdr_id"] = "SDR-NEW"
    leads.loc[:50, "industry"] = "Space mining"
    leads["do_not_contact"] = ["true"] + ["false"] * (len(leads) - 1)
    path = workspace["root"] / "list.csv"
    leads.to_csv(path, index=False)
    out = workspace["root"] / "ranked.csv"
    result = runner.invoke(
        app, ["score", "leads", str(path), "--out", str(out)], env=_env(workspace)
    )
    assert result.exit_code == 0, result.output
    ranked = pd.read_csv(out)
    assert list(ranked.columns[:6]) == [
        "lead_id",
        "sqo_probability",
        "rank",
        "tier",
        "reasons",
        "model_version",
    ]
    assert len(ranked) == 300
    assert ranked["sqo_probability"].iloc[:-1].is_monotonic_decreasing
    assert ranked["excluded_reason"].iloc[-1] == "do not contact"
    assert ranked["rank"].iloc[0] == 1


def test_score_opportunities_with_new_owners_and_missing_columns(
    workspace: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "other"
    data.mkdir()
    for f in ("stage_history.csv", "dataset.yaml"):
        (data / f).write_bytes((workspace["data"] / f).read_bytes())
    opps = pd.read_csv(workspace["data"] / "opportunities.csv", dtype=str, keep_default_na=False)
    opps = opps.drop(columns=["signal_type", "region"])
    opps["owner_id"] = "AE-NEW"
    write_table(opps.replace("", pd.NA), data / "opportunities.csv")
    out = tmp_path / "s.csv"
    result = runner.invoke(
        app, ["score", "opportunities", "--data", str(data), "--out", str(out)], env=_env(workspace)
    )
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(out)
    assert len(scores) > 0 and scores["p_win"].between(0, 1).all()


def test_score_leads_without_any_crm_history(workspace: dict[str, Any], tmp_path: Path) -> None:
    """No export to look accounts up in: the list is scored on its own columns."""
    leads = pd.read_csv(workspace["data"] / "leads.csv", dtype=str, keep_default_na=False).head(50)
    path = tmp_path / "list.csv"
    leads[["lead_id", "created_at", "industry", "source", "title"]].to_csv(path, index=False)
    out = tmp_path / "ranked.csv"
    env = _env(workspace, PIPECAST_DATA_DIR=str(tmp_path / "no-such-export"))
    result = runner.invoke(app, ["score", "leads", str(path), "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    ranked = pd.read_csv(out)
    assert len(ranked) == 50 and ranked["sqo_probability"].between(0, 1).all()
