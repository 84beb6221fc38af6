"""The models the API scores with: both champions, loaded together, swapped together.

Loaded from the registry alias ``champion`` when the app starts; ``POST /models/reload`` loads
both again and swaps them in one assignment, so that a request sees either the old pair or the
new pair, never one of each. A reload that fails keeps the old pair serving and says why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from features.errors import InputError
from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from models.registry import champion_info, load_champion
from pipecast.config import Settings
from serving.errors import NoChampion, RegistryUnavailable, ReloadFailed
from serving.store import utcnow

log = logging.getLogger(__name__)

#: each registered model by the short name the API uses for it
MODELS = {"close_probability": CLOSE_MODEL_NAME, "sqo_likelihood": SQO_MODEL_NAME}
NO_MODEL = "no model trained yet"

Loader = Callable[[Settings, str], tuple[Any, dict[str, Any]]]


@dataclass(frozen=True)
class Champion:
    """One loaded model and what the registry says about it."""

    model: Any
    info: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.info["version"])

    @property
    def name(self) -> str:
        return str(self.info["name"])


@dataclass(frozen=True)
class Champions:
    """The pair in service: each model, or why it is missing."""

    models: dict[str, Champion] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    loaded_at: datetime | None = None

    def versions(self) -> dict[str, str | None]:
        return {m: (c.version if (c := self.models.get(m)) else None) for m in MODELS}


class ChampionHolder:
    """Holds the pair of champions of one app; :meth:`reload` replaces it whole."""

    def __init__(self, settings: Settings, loader: Loader = load_champion) -> None:
        self._settings = settings
        self._loader = loader
        self._lock = threading.Lock()
        self._current = Champions()

    @property
    def current(self) -> Champions:
        return self._current

    def get(self, model: str) -> Champion:
        """The champion of ``model`` in service; :class:`NoChampion` says why there is none."""
        champion = self._current.models.get(model)
        if champion is None:
            why = self._current.missing.get(model, NO_MODEL)
            raise NoChampion(
                f"no {model} model is loaded ({why}). Train one (`make train`), then "
                "POST /models/reload."
            )
        return champion

    def load_at_start(self) -> Champions:
        """Load what can be loaded; a model that cannot be is logged and left missing."""
        models: dict[str, Champion] = {}
        missing: dict[str, str] = {}
        for model, name in MODELS.items():
            try:
                champion = self._load(name)
            except Exception as exc:  # noqa: BLE001 — the API starts without the model
                log.warning("cannot load the champion of %s: %s", name, exc)
                missing[model] = str(exc)
                continue
            if champion is None:
                missing[model] = NO_MODEL
            else:
                models[model] = champion
        with self._lock:
            self._current = Champions(models=models, missing=missing, loaded_at=utcnow())
        log.info("models in service: %s", self._current.versions())
        return self._current

    def reload(self) -> Champions:
        """Load both champions again and swap them in; on any failure keep the pair in service.

        A model that had a champion and now has none in the registry is a failure too: the
        alias was removed, and serving nothing is not better than serving the last one.
        """
        with self._lock:
            old = self._current
            models: dict[str, Champion] = {}
            missing: dict[str, str] = {}
            problems: list[str] = []
            for model, name in MODELS.items():
                try:
                    champion = self._load(name)
                except Exception as exc:  # noqa: BLE001 — any failure keeps the old pair
                    problems.append(f"{name}: {exc}")
                    continue
                if champion is not None:
                    models[model] = champion
                elif model in old.models:
                    problems.append(
                        f"{name} has no champion in the registry any more (version "
                        f"{old.models[model].version} is in service)"
                    )
                else:
                    missing[model] = NO_MODEL
            if problems:
                kept = ", ".join(f"{m} v{v}" for m, v in old.versions().items() if v) or "none"
                raise ReloadFailed(
                    "reload failed, the models in service are kept ("
                    + kept
                    + "): "
                    + "; ".join(problems)
                )
            self._current = Champions(models=models, missing=missing, loaded_at=utcnow())
        log.info("models reloaded: %s", self._current.versions())
        return self._current

    def _load(self, name: str) -> Champion | None:
        try:
            info = champion_info(self._settings, name)
        except Exception as exc:  # noqa: BLE001 — MLflow, SQL and network errors alike
            raise RegistryUnavailable(
                f"the model registry at {self._settings.mlflow_tracking_uri} cannot be read: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        if info is None:
            return None
        try:
            model, info = self._loader(self._settings, name)
        except InputError:
            return None  # the champion alias went away between the two reads
        prepare = getattr(model, "prepare_for_serving", None)
        if callable(prepare):  # tables built at load, not on the first request
            prepare()
        return Champion(model=model, info=info)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
