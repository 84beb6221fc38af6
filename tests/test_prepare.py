"""``pipecast serve --prepare`` (pipecast/prepare.py): demo data and first training only when needed."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from pipecast.config import Settings
from pipecast.prepare import prepare
from tests.serving.conftest import Registry, build_registry, settings_for


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
