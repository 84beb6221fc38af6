"""Liveness: no auth, no registry, no data."""

from __future__ import annotations

from fastapi import APIRouter

from serving.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> Health:
    """The service is up."""
    return Health()
