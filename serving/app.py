"""The HTTP API: ``create_app(settings)`` builds it; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict

import mlflow
from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import JSONResponse

from features.contract import ContractError
from features.errors import InputError
from pipecast.config import Settings
from serving.deps import require_api_key
from serving.registry import ensure_default_registry_dir
from serving.routers import health, models
from serving.schemas import ErrorResponse

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Point MLflow at the configured registry (and create the default local one's folder)."""
    settings: Settings = app.state.settings
    ensure_default_registry_dir(settings)
    # models are loaded with models:/ URIs, which resolve against the global registry URI
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    log.info("model registry: %s; data: %s", settings.mlflow_tracking_uri, settings.data_dir)
    yield


async def _input_error(request: Request, exc: Exception) -> JSONResponse:
    """A user mistake is a 422 that says what to fix, never a 500."""
    body = ErrorResponse(detail=str(exc))
    if isinstance(exc, ContractError):
        body.problems = [asdict(p) for p in exc.problems]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content=body.model_dump(exclude_none=True),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The pipecast API configured by ``settings`` (default: read from the environment).

    Every router but health requires an API key when ``PIPECAST_API_KEYS`` is set.
    """
    app = FastAPI(
        title="pipecast",
        summary="Calibrated B2B sales forecasts and SQO-likelihood lead scores.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings if settings is not None else Settings()
    app.add_exception_handler(InputError, _input_error)
    app.include_router(health.router)
    protected = [Depends(require_api_key)]
    for router in (models.router,):
        app.include_router(router, dependencies=protected)
    return app
