"""``pipecast score leads`` with list rules and ``pipecast report funnel``, end to end.

A real MLflow registry (sqlite in a temporary folder) holds a small SQO-likelihood champion
trained on the simulated export the commands read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from features import labels, lead, synthetic
from models import CHAMPION_ALIAS, SQO_MODEL_NAME
from models.sqo_likelihood import SQOLikelihoodModel
from pipecast.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory, small_simulation: synthetic.Simulation
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("leadlist")
    synthetic.write_simulation(small_simulation, root / "export")
    export = small_simulation.export
    table = lead.build_training_set(export)
    lab = labels.lead_labels(export)
    decided = lab["decided"].reindex(table.index).to_numpy(dtype=bool, na_value=False)
    X = table.loc[decided].drop(columns=["as_of"]).reset_index(drop=True)
    y = lab.loc[table.index[decided], "is_sqo"].to_numpy(dtype=int)
    model = SQOLikelihoodModel(
        categorical=lead.categorical_columns(X),
        n_estimators=80,
        learning_rate=0.1,
        min_child_samples=50,
        calibration="none",
    ).fit(X, y)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.create_experiment(
            "leadlist", artifact_location=(root / "artifacts").as_uri()
        )
        with mlflow.start_run(experiment_id=experiment):
            logged = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=SQO_MODEL_NAME,
                pip_requirements=["scikit-learn"],
                serialization_format="cloudpickle",  # as pipecast train logs it
            )
        client.set_registered_model_alias(
            SQO_MODEL_NAME, CHAMPION_ALIAS, str(logged.registered_model_version)
        )
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    assert export.leads is not None
    listed = export.leads.tail(600).drop(columns=["sqo_at", "meeting_at"])
    path = root / "list.csv"
    listed.to_csv(path, index=False)
    return {"root": root, "data": root / "export", "uri": uri, "list": path, "n": len(listed)}


def _env(ws: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": str(ws["uri"]),
        "PIPECAST_DATA_DIR": str(ws["data"]),
        "PIPECAST_VAR_DIR": str(ws["root"] / "var"),
        **extra,
    }


def test_a_list_cut_by_every_rule(workspace: dict[str, Any]) -> None:
    out = workspace["root"] / "ranked.csv"
    bdrs = workspace["root"] / "bdrs.csv"
    bdrs.write_text("sdr_id,capacity\nSDR-01,30\nSDR-02,30\nSDR-03,30\n")
    result = runner.invoke(
        app,
        [
            "score",
            "leads",
            str(workspace["list"]),
            "--data",
            str(workspace["data"]),
            "--out",
            str(out),
            "--recontact-days",
            "30",
            "--skip-customers",
            "--max-per-account",
            "1",
            "--top",
            "200",
            "--bdrs",
            str(bdrs),
            "--json",
        ],
        env=_env(workspace),
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    ranked = pd.read_csv(out)
    assert list(ranked.columns[:8]) == [
        "lead_id",
        "sqo_probability",
        "rank",
        "tier",
        "reasons",
        "model_version",
        "excluded_reason",
        "assigned_bdr",
    ]
    assert len(ranked) == workspace["n"] and ranked["lead_id"].is_unique
    assert summary["kept"] == 90 == ranked["excluded_reason"].isna().sum()
    assert ranked["excluded_reason"].value_counts().to_dict() == summary["excluded_by_reason"]
    assert "do not contact" in summary["excluded_by_reason"]
    kept = ranked.loc[ranked["excluded_reason"].isna()]
    assert set(kept["assigned_bdr"]) == {"SDR-01", "SDR-02", "SDR-03"}
    assert kept["reasons"].str.len().gt(0).all() and kept["tier"].isin(list("ABCD")).all()
    # a lead cut for its rank is not explained; one cut for what it is, is
    by_rank = ranked["excluded_reason"].isin(["beyond the top 200", "over the BDRs' capacity"])
    assert by_rank.sum() > 0 and ranked.loc[by_rank, "reasons"].isna().all()
    other = ranked["excluded_reason"].notna() & ~by_rank
    assert other.sum() > 0 and ranked.loc[other, "reasons"].str.len().gt(0).all()
    assert summary["reasons_for"] == len(ranked) - by_rank.sum()
    assert summary["allocation"]["balanced_within_one_lead"]
    assert [t["tier"] for t in summary["by_tier"]] == ["A", "B", "C", "D"]


def test_a_broken_list_is_refused_before_any_model_is_needed(
    workspace: dict[str, Any], tmp_path: Path
) -> None:
    broken = tmp_path / "list.csv"
    broken.write_text("name,email\nAda,ada@example.com\n")
    env = _env(workspace, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'empty.db'}")
    result = runner.invoke(
        app, ["score", "leads", str(broken), "--out", str(tmp_path / "o.csv")], env=env
    )
    assert result.exit_code == 2
    assert "lead_id" in result.output and "no model trained yet" not in result.output
    assert not (tmp_path / "o.csv").exists()


def test_a_mistyped_year_is_refused_with_its_line_and_nothing_written(
    workspace: dict[str, Any], tmp_path: Path
) -> None:
    lines = workspace["list"].read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    cells = lines[40].split(",")
    cells[header.index("created_at")] = "1025-05-01"  # 2025 mistyped: not a day pandas holds
    lines[40] = ",".join(cells)
    broken = tmp_path / "list.csv"
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = runner.invoke(
        app,
        ["score", "leads", str(broken), "--out", str(tmp_path / "o.csv")],
        env=_env(workspace),
    )
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "lead list" in said and "list.csv" in said and "created_at" in said
    assert "line 41" in said or "lines 41" in said, said
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == [broken]  # no output, no spool left behind


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tiers-by", "probability"], "needs --tier-cuts"),
        (["--tier-cuts", "0.3,0.1,0.6"], "increasing"),
        (["--tier-cuts", "a,b,c"], "three numbers"),
        (["--bdrs", "missing.csv"], "no such file"),
        (["--bdrs", "x.csv", "--bdr-capacity", "5"], "not both"),
    ],
)
def test_bad_list_options_exit_2_with_what_to_fix(
    workspace: dict[str, Any], tmp_path: Path, options: list[str], message: str
) -> None:
    (tmp_path / "x.csv").write_text("sdr_id,capacity\nSDR-01,3\n")
    opts = [str(tmp_path / o) if o.endswith(".csv") else o for o in options]
    result = runner.invoke(
        app,
        ["score", "leads", str(workspace["list"]), "--out", str(tmp_path / "o.csv"), *opts],
        env=_env(workspace),
    )
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ")


def test_account_rules_need_the_export(workspace: dict[str, Any], tmp_path: Path) -> None:
    env = _env(workspace, PIPECAST_DATA_DIR=str(tmp_path / "none"))
    result = runner.invoke(
        app,
        [
            "score",
            "leads",
            str(workspace["list"]),
            "--out",
            str(tmp_path / "o.csv"),
            "--skip-customers",
        ],
        env=env,
    )
    assert result.exit_code == 2 and "--data" in result.output


def test_report_funnel_table_json_and_chart(workspace: dict[str, Any], tmp_path: Path) -> None:
    chart = tmp_path / "funnel.png"
    result = runner.invoke(
        app,
        ["report", "funnel", "--data", str(workspace["data"]), "--json", "--chart", str(chart)],
        env=_env(workspace),
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    dims = {r["dimension"] for r in doc["rates"]}
    assert dims == {"all", "segment", "source", "signal", "sequence", "bdr", "month"}
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(
        app,
        [
            "report",
            "funnel",
            "--data",
            str(workspace["data"]),
            "--since",
            "2025-06-01",
            "--by",
            "bdr",
        ],
        env=_env(workspace),
    )
    assert result.exit_code == 0, result.output
    assert "by bdr" in result.output and "by source" not in result.output
    for options, message in (
        (["--by", "colour"], "--by colour"),
        (["--chart", str(tmp_path / "f.jpg")], ".png"),
        (["--since", "soon"], "not a date"),
    ):
        result = runner.invoke(
            app,
            ["report", "funnel", "--data", str(workspace["data"]), *options],
            env=_env(workspace),
        )
        assert result.exit_code == 2 and message in result.output, result.output
