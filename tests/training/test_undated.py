"""An export whose leads have an outcome but no dates: a stratified random split, said plainly.

``pipecast train`` trains on it, the summary, the MLflow run, the registered version and
``/models`` all say "no dates: a random split; these figures cannot show drift", and
``pipecast score leads`` ranks a list with the model. Built from the simulator (fast) and from
UCI bank marketing with its dates removed (``real_data``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from features import synthetic
from features.adapters import bank_marketing
from features.config import DatasetConfig
from features.io import Export, read_export, write_export
from features.labels import lead_label_values
from models import CHAMPION_ALIAS, SQO_MODEL_NAME
from pipecast.cli import app
from pipecast.config import Settings
from serving.app import create_app
from training.splits import RANDOM_SPLIT_NOTE

runner = CliRunner()
DATES = ("created_at", "sqo_at", "meeting_at", "last_contacted_at")


def _undated(leads: pd.DataFrame, window_days: int, features: dict[str, list[str]]) -> Export:
    label = lead_label_values(leads, window_days)
    out = leads.drop(columns=[c for c in DATES if c in leads.columns])
    out = out.assign(is_sqo=label.astype("boolean"))[label.notna().to_numpy()]
    return Export(leads=out.reset_index(drop=True), config=DatasetConfig(features=features))


def _train_and_score(export: Export, root: Path) -> dict[str, object]:
    data = root / "export"
    write_export(export, data)
    assert read_export(data).export_date is None  # truly undated: no dates, no exported_at
    uri = f"sqlite:///{root / 'var' / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "PIPECAST_VAR_DIR": str(root / "var")}
    # an as-of day cannot cut an export that has no dates: refused before anything is written
    refused = runner.invoke(app, ["train", "--data", str(data), "--as-of", "2026-01-31"], env=env)
    assert refused.exit_code == 2 and "no dates" in refused.output
    assert not (root / "var").exists()
    trained = runner.invoke(app, ["train", "--data", str(data)], env=env)
    assert trained.exit_code == 0, trained.output
    assert RANDOM_SPLIT_NOTE in " ".join(trained.output.split())

    leads = export.leads
    assert leads is not None
    listing = leads.drop(columns=["is_sqo"]).head(300)
    list_file = root / "list.csv"
    listing.to_csv(list_file, index=False)
    out = root / "ranked.csv"
    scored = runner.invoke(
        app,
        ["score", "leads", str(list_file), "--data", str(data), "--out", str(out)],
        env=env,
    )
    assert scored.exit_code == 0, scored.output
    ranked = pd.read_csv(out)
    assert len(ranked) == len(listing)
    p = ranked["sqo_probability"].to_numpy()
    assert np.isfinite(p).all() and np.unique(np.round(p, 6)).size > 10
    return {"uri": uri, "root": root}


def _check_reported(uri: str, root: Path) -> None:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias(SQO_MODEL_NAME, CHAMPION_ALIAS)
    assert version.tags["split"] == "random"
    assert version.tags["split_note"] == RANDOM_SPLIT_NOTE
    run = client.get_run(version.run_id)
    assert run.data.tags["split"] == "random"
    assert run.data.params["split"] == "random"
    assert run.data.params["split_note"] == RANDOM_SPLIT_NOTE
    # the training slices are drawn at random, stratified: every slice has the same SQO rate
    params = {k: float(v) for k, v in run.data.params.items() if k.endswith(("_rows", "sqos"))}
    n_test, n_train = params["test_rows"], params["train_rows"]
    assert n_test > 0 and n_train > 2 * n_test
    overall = params["sqos"] / (n_train + params["calibration_rows"] + n_test)
    assert params["train_sqos"] / n_train == pytest.approx(overall, abs=0.002)

    settings = Settings(mlflow_tracking_uri=uri, var_dir=root / "var")
    with TestClient(create_app(settings)) as http:
        models = {m["model"]: m for m in http.get("/models").json()["models"]}
    sqo = models["sqo_likelihood"]
    assert sqo["status"] == "champion"
    assert sqo["split"] == "random" and sqo["split_note"] == RANDOM_SPLIT_NOTE
    assert sqo["kind"] in ("lightgbm", "plain") and sqo["data_end"] in (None, "")


def test_an_undated_simulated_lead_export_trains_scores_and_says_so(tmp_path: Path) -> None:
    sim = synthetic.simulate(seed=8, n_opportunities=50, n_leads=4000)
    export = _undated(sim.export.leads, sim.export.config.sqo_window_days, {})
    ws = _train_and_score(export, tmp_path)
    _check_reported(str(ws["uri"]), tmp_path)


@pytest.mark.real_data
@pytest.mark.slow
def test_uci_bank_marketing_without_its_dates(real_data_dir: Path, tmp_path: Path) -> None:
    src = real_data_dir / "uci_bank_marketing"
    if not src.is_dir():
        pytest.skip("uci_bank_marketing is not in the real data folder")
    bank = bank_marketing.convert(src)
    assert bank.leads is not None
    export = _undated(bank.leads, bank.config.sqo_window_days, dict(bank.config.features))
    ws = _train_and_score(export, tmp_path)
    _check_reported(str(ws["uri"]), tmp_path)
