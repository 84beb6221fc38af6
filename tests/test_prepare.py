"""``pipecast serve --prepare`` (pipecast/prepare.py): demo data and first training only when needed."""

from __future__ import annotations

import importlib.util
import itertools
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from features.io import read_export
from pipecast.config import Settings
from pipecast.prepare import backfill, backfill_days, prepare
from serving.app import create_app
from serving.store import (
    Store,
    deal_scores,
    forecasts,
    lead_scores,
    outcome_history,
    prediction_batches,
)
from tests.serving.conftest import (  # noqa: F401 — scoring_setup is a fixture used here
    Registry,
    ScoringSetup,
    build_registry,
    scoring_setup,
    settings_for,
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A registry where the close-probability model has a champion."""
    return build_registry(tmp_path_factory.mktemp("mlflow"))


class Trainings:
    """Records the training runs ``prepare`` asks for."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, settings: Settings, **kwargs: Any) -> None:
        self.calls.append({"settings": settings, **kwargs})


def test_trains_when_no_model_has_a_champion(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}", tmp_path)
    settings.data_dir.mkdir()
    train = Trainings()
    prepare(settings, train=train)
    assert len(train.calls) == 1
    call = train.calls[0]
    assert call["data_dir"] == settings.data_dir and call["as_of"] is None


def test_does_not_train_over_a_champion(registry: Registry, tmp_path: Path) -> None:
    settings = settings_for(registry.uri, tmp_path)
    settings.data_dir.mkdir()
    train = Trainings()
    prepare(settings, train=train)
    assert train.calls == []


def test_a_configured_but_missing_data_dir_is_not_filled_with_demo_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    train = Trainings()
    with caplog.at_level(logging.WARNING, logger="pipecast.prepare"):
        prepare(settings, train=train)
    assert not settings.data_dir.exists()
    assert train.calls == []
    assert "no data" in caplog.text


def test_serves_without_models_when_training_is_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes ``import training.train`` fail, as in a tree without training
    monkeypatch.setitem(sys.modules, "training.train", None)
    settings = settings_for(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)
    settings.data_dir.mkdir()
    with caplog.at_level(logging.WARNING, logger="pipecast.prepare"):
        prepare(settings)
    assert "serving without models" in caplog.text


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("features.synthetic") is None, reason="no simulator in the tree"
)
def test_generates_the_default_demo_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert settings.demo_data_is_default
    train = Trainings()
    prepare(settings, train=train)
    assert (tmp_path / "data" / "demo" / "opportunities.csv").exists()
    assert len(train.calls) == 1


# --- the demo back-fill: the weekly predictions of the last quarters and their outcomes -------


@pytest.mark.slow
def test_backfill_gives_the_calibration_page_real_numbers(
    scoring_setup: ScoringSetup,  # noqa: F811 — the fixture imported above
    tmp_path: Path,
) -> None:
    settings = settings_for(scoring_setup.registry_uri, tmp_path, data_dir=scoring_setup.data_dir)
    export = read_export(settings.data_dir)
    first = backfill(settings)
    # every 7th day back from the export date through the two previous fiscal quarters
    assert len(first.days) >= 20
    assert all(d < export.exported_at for d in first.days)
    assert {(b - a).days for a, b in itertools.pairwise(first.days)} == {7}
    assert first.skipped == 0 and first.deal_scores > 0 and first.lead_scores > 0
    assert first.forecasts == len(first.days)
    assert first.outcomes["opportunities"]["inserted"] > 0

    store = Store(settings.database_url)
    # point in time: each stored deal score is of a deal open at the end of its as-of day
    with store.engine.connect() as conn:
        scored = pd.DataFrame(
            conn.execute(
                sa.select(deal_scores.c.opportunity_id, prediction_batches.c.as_of).join(
                    prediction_batches, deal_scores.c.batch_id == prediction_batches.c.id
                )
            ).all(),
            columns=["opportunity_id", "as_of"],
        )
    opps = export.opportunities.set_index(export.opportunities["opportunity_id"].astype("string"))
    deals = opps.reindex(scored["opportunity_id"].astype("string").to_numpy())
    as_of = pd.to_datetime(scored["as_of"]).to_numpy()
    assert (deals["created_at"].to_numpy() <= as_of + np.timedelta64(1, "D")).all()
    closed = deals["closed_at"].to_numpy()
    assert not (pd.notna(closed) & (closed <= as_of)).any()
    assert len(scored) == first.deal_scores
    counts = {
        t.name: store.count(t) for t in (deal_scores, lead_scores, forecasts, outcome_history)
    }

    with TestClient(create_app(settings)) as client:
        for model in ("close_probability", "sqo_likelihood"):
            page = client.get("/calibration", params={"model": model})
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["n_with_outcome"] > 0
            assert body["overall"]["brier"] is not None and 0 <= body["overall"]["brier"] <= 1
            assert len(body["by_week_of_quarter"]) > 1
        made = client.get("/calibration").json()["forecasts"]
    # the quarters that have ended: each weekly forecast beside what the quarter brought
    assert made and {f["period_label"] for f in made} >= {"2026-Q2"}
    assert all(f["actual_won"] is not None and f["expected"] > 0 for f in made)

    # a second run (the next `make serve`) stores nothing twice
    second = backfill(settings)
    assert second.skipped == len(second.days) == len(first.days)
    assert second.deal_scores == second.lead_scores == second.forecasts == 0
    assert second.outcomes["opportunities"]["inserted"] == 0
    assert second.outcomes["opportunities"]["updated"] == 0
    after = {t.name: store.count(t) for t in (deal_scores, lead_scores, forecasts, outcome_history)}
    assert after == counts
    store.dispose()


def test_backfill_days_cover_the_previous_quarters() -> None:
    # fiscal year from February: the export date 2026-11-01 opens Q4; Q2 starts on 2026-05-01
    days = backfill_days(pd.Timestamp("2026-11-01"), 2, 2)
    assert days[0] == pd.Timestamp("2026-05-03") and days[-1] == pd.Timestamp("2026-10-25")
    assert len(days) == 26


def test_prepare_back_fills_only_with_a_readable_export(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(registry.uri, tmp_path)
    settings.data_dir.mkdir()  # empty: nothing to back-fill from, and the start goes on
    with caplog.at_level(logging.WARNING, logger="pipecast.prepare"):
        prepare(settings, train=Trainings())
    assert "no history back-filled" in caplog.text
