"""The models the API scores with."""

from __future__ import annotations

from fastapi import APIRouter

from serving import service
from serving.deps import SettingsDep
from serving.schemas import ModelInfo, ModelsResponse

router = APIRouter(tags=["models"])


@router.get("/models")
def list_models(settings: SettingsDep) -> ModelsResponse:
    """Champion version, training metrics, trained-at and data range of each model."""
    return ModelsResponse(models=[ModelInfo(**m) for m in service.models_overview(settings)])
