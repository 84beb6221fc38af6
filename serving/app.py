"""The HTTP API: ``create_app(settings)`` builds it; nothing happens at import time."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import mlflow
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from features.contract import ContractError
from features.errors import InputError
from models.registry import ensure_default_registry_dir
from pipecast.config import Settings
from serving import logs
from serving.champions import ChampionHolder
from serving.deps import require_api_key, require_page_key
from serving.errors import RequestTooLarge, Unavailable
from serving.routers import calibration, forecast, health, models, outcomes, scores
from serving.routers import reports as report_pages
from serving.schemas import ErrorResponse
from serving.service import HealthProbe
from serving.store import Store, StoreUnavailable

log = logging.getLogger(__name__)
access = logging.getLogger("serving.access")

#: a client's request id is kept when it looks like one (no log injection through the header)
_REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Point MLflow at the registry, migrate the store, load both champions.

    Neither a store nor a registry that is down stops the start: the endpoints that need them
    answer 503 saying which, ``/health`` reports it, and ``POST /models/reload`` retries.
    """
    settings: Settings = app.state.settings
    ensure_default_registry_dir(settings)
    # models are loaded with models:/ URIs, which resolve against the global registry URI
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    log.info("model registry: %s; data: %s", settings.mlflow_tracking_uri, settings.data_dir)
    store: Store = app.state.store
    if settings.migrate_on_start:
        try:
            store.ensure_schema(migrate=True)
            log.info("prediction store: %s (schema %s)", store.display_url, store.head_revision())
        except StoreUnavailable as exc:
            log.error("%s; the endpoints that store predictions answer 503 until it is back", exc)
    app.state.champions.load_at_start()
    # the models, the export and the libraries live as long as the server: move them out of
    # the cyclic garbage collector's reach, so that its passes during a request only walk what
    # the request made (measured: 0.15–0.3 s of a 5,000-deal forecast's CPU → about 0.03 s)
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        store.dispose()


def _error(status_code: int, detail: str, **extra: Any) -> JSONResponse:
    body = ErrorResponse(detail=detail)
    payload = body.model_dump(exclude_none=True)
    payload.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(status_code=status_code, content=payload)


async def _input_error(request: Request, exc: Exception) -> JSONResponse:
    """A user mistake is a 422 that says what to fix, never a 500."""
    problems = [asdict(p) for p in exc.problems] if isinstance(exc, ContractError) else None
    return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc), problems=problems)


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    return _error(status.HTTP_413_CONTENT_TOO_LARGE, str(exc))


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The store, the registry or a model is not there: 503 naming which, and why."""
    component = getattr(exc, "component", "service")
    log.warning("503 (%s): %s", component, exc)
    return _error(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), component=component)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, declared or streamed (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return (
            f"the request body is larger than {self.max_bytes} bytes (PIPECAST_MAX_BODY_BYTES); "
            "send fewer rows per request"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _error(status.HTTP_413_CONTENT_TOO_LARGE, self._message())(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # raised inside the endpoint's body read, which passes HTTPException on
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=self._message())
            return message

        await self.app(scope, limited, send)


class RequestContext:
    """Give every request an id (``X-Request-ID`` in and out) and log one line for it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        ok = 0 < len(given) <= 64 and set(given) <= _REQUEST_ID_CHARS
        request_id = given if ok else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_code = 500
        notes, token = logs.start_request()

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.end_request(token)
            elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            method, path = scope.get("method", ""), scope.get("path", "")
            fields: dict[str, Any] = {
                "request_id": request_id,
                "method": method,
                "path": path,
                "status": status_code,
                "duration_ms": elapsed_ms,
                # rows stored and the model versions that scored them (see serving.logs)
                "rows": notes.get("rows", 0),
                "model_versions": notes.get("model_versions", {}),
            }
            access.log(
                logging.ERROR if status_code >= 500 else logging.INFO,
                "request_id=%s method=%s path=%s status=%d ms=%.1f",
                request_id,
                method,
                path,
                status_code,
                elapsed_ms,
                extra=fields,
            )


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with ``TCP_NODELAY`` on every connection (``pipecast serve``).

    With ``--workers N`` uvicorn binds the listening socket itself, without naming TCP as its
    protocol, and asyncio then leaves Nagle's algorithm on for the connections it accepts: an
    answer written as head then body waits for the client's delayed acknowledgement of the
    head, about 40 ms on every request of a kept-alive connection (measured: ``/health`` 44 ms
    at p50 with two workers against 0.6 ms with one). A small answer must leave at once.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # a connection already reset by the client: nothing to speed up
                log.debug("TCP_NODELAY not set on a closing connection", exc_info=True)
        super().connection_made(transport)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The pipecast API configured by ``settings`` (default: read from the environment).

    Every router but health requires an API key when ``PIPECAST_API_KEYS`` is set.
    """
    settings = settings if settings is not None else Settings()
    app = FastAPI(
        title="pipecast",
        summary="Calibrated B2B sales forecasts and SQO-likelihood lead scores.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = Store(settings.database_url, create_parent=settings.database_url_is_default)
    app.state.champions = ChampionHolder(settings)
    app.state.health_probe = HealthProbe(settings, app.state.store, app.state.champions)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(RequestTooLarge, _too_large)
    app.add_exception_handler(Unavailable, _unavailable)

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)
    app.include_router(health.router)
    protected = [Depends(require_api_key)]
    for router in (
        models.router,
        forecast.router,
        scores.router,
        outcomes.router,
        calibration.router,
    ):
        app.include_router(router, dependencies=protected)
    app.include_router(report_pages.router, dependencies=[Depends(require_page_key)])
    return app
