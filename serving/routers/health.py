"""Liveness, and whether the store and the registry answer: no auth, no model loads."""

from __future__ import annotations

from fastapi import APIRouter, Request

from serving.schemas import HealthDetail
from serving.service import HealthProbe

router = APIRouter(tags=["health"])


@router.get("/health")
def health(request: Request) -> HealthDetail:
    """The service is up; the store and the registry answer or say why not (cached seconds)."""
    probe: HealthProbe = request.app.state.health_probe
    return HealthDetail.model_validate(probe.check())
