"""The models the API scores with, and swapping in newly promoted ones."""

from __future__ import annotations

from fastapi import APIRouter

from serving import service
from serving.deps import ChampionsDep, SettingsDep
from serving.schemas import ModelInfo, ModelsResponse, ReloadOut

router = APIRouter(tags=["models"])


@router.get("/models")
def list_models(settings: SettingsDep, champions: ChampionsDep) -> ModelsResponse:
    """Champion version, training metrics, trained-at and data range of each model."""
    overview = service.models_overview(settings, champions.current.versions())
    return ModelsResponse(models=[ModelInfo(**m) for m in overview])


@router.post("/models/reload")
def reload_models(champions: ChampionsDep) -> ReloadOut:
    """Load the current champion of each model; on failure the old ones keep serving (503)."""
    return ReloadOut.model_validate(service.reload_models(champions))
