"""``pipecast serve --prepare``: get a fresh clone ready to serve (demo data, first models).

Orchestration, so it belongs to the front door: it may call both training (to train the first
models) and the simulator, which the API itself never does. The CLI calls it before starting
the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from models.registry import champion_info, ensure_default_registry_dir
from pipecast.config import DEMO_SEED, Settings

log = logging.getLogger(__name__)

__all__ = ["DEMO_SEED", "prepare"]

TrainFn = Callable[..., Any]


def prepare(settings: Settings, *, progress: Any = None, train: TrainFn | None = None) -> None:
    """Generate the demo export if it is missing, then train if no model has a champion.

    Parameters
    ----------
    settings
        Where the data and the registry are.
    progress
        A rich progress display handed to the simulator and the training run.
    train
        The training entry point, ``train(settings, data_dir=, as_of=, progress=)``;
        default ``training.train.run_training``.

    Notes
    -----
    The demo export is only generated when the data dir is the default one: a configured data
    dir that does not exist is the operator's mistake, not something to fill with fake deals.
    Training runs only when neither model has a champion, so that a model that failed its gates
    does not make every start retrain. When the simulator or the trainer is not available the
    server starts anyway, without models.
    """
    data_dir = Path(settings.data_dir)
    if settings.demo_data_is_default and not data_dir.exists():
        _generate_demo(data_dir, progress)
    if any(champion_info(settings, name) for name in (CLOSE_MODEL_NAME, SQO_MODEL_NAME)):
        log.info("a champion model is registered: no training needed")
        return
    if not data_dir.exists():
        log.warning(
            "no champion model and no data in %s to train one: serving without models", data_dir
        )
        return
    if train is None:
        try:
            # imported late: a tree without training still serves (without models)
            from training.train import run_training
        except ImportError as exc:
            log.warning("training is not available (%s): serving without models", exc)
            return
        train = run_training
    ensure_default_registry_dir(settings)
    log.info("no champion model registered: training on %s", data_dir)
    train(settings, data_dir=data_dir, as_of=None, progress=progress)


def _generate_demo(data_dir: Path, progress: Any) -> None:
    try:
        from features.synthetic import simulate, write_simulation
    except ImportError as exc:
        log.warning("cannot generate the demo export (%s)", exc)
        return
    log.info("generating the demo CRM export in %s (seed %d)", data_dir, DEMO_SEED)
    write_simulation(simulate(seed=DEMO_SEED, progress=progress), data_dir)
