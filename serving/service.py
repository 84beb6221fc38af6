"""What the API does, without the web: plain functions the routers call (no FastAPI here)."""

from __future__ import annotations

from typing import Any

from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from pipecast.config import Settings
from serving.registry import champion_info

#: each registered model by the short name the API uses for it
MODELS = {"close_probability": CLOSE_MODEL_NAME, "sqo_likelihood": SQO_MODEL_NAME}
NO_MODEL = "no model trained yet"


def models_overview(settings: Settings) -> list[dict[str, Any]]:
    """The champion of each model (version, metrics, training data range), or that there is none."""
    overview = []
    for model, name in MODELS.items():
        info = champion_info(settings, name)
        if info is None:
            overview.append({"model": model, "name": name, "status": NO_MODEL})
        else:
            overview.append({"model": model, "status": "champion", **info})
    return overview
