"""Dependencies shared by the routers, as ``Annotated`` aliases that tests can override."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipecast.config import Settings
from serving.champions import ChampionHolder
from serving.store import Store


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_store(request: Request, settings: SettingsDep) -> Store:
    """The prediction store, its schema current (503 naming the store when it cannot be used)."""
    store: Store = request.app.state.store
    store.ensure_schema(migrate=settings.migrate_on_start)
    return store


StoreDep = Annotated[Store, Depends(get_store)]


def get_champions(request: Request) -> ChampionHolder:
    """The models in service."""
    holder: ChampionHolder = request.app.state.champions
    return holder


ChampionsDep = Annotated[ChampionHolder, Depends(get_champions)]


def get_request_id(request: Request) -> str | None:
    """The id of this request (``X-Request-ID``, or one made up), stored with its predictions."""
    value = getattr(request.state, "request_id", None)
    return str(value) if value is not None else None


RequestIdDep = Annotated[str | None, Depends(get_request_id)]

_bearer = HTTPBearer(auto_error=False, description="one of the keys in PIPECAST_API_KEYS")


def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let the request through only with ``Authorization: Bearer KEY`` when keys are configured."""
    keys = settings.api_key_list
    if not keys:
        return
    if credentials is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="This endpoint needs an API key: send the header 'Authorization: Bearer KEY'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # digests first: compare_digest is constant-time only for inputs of equal length, and every
    # key is compared (no short cut) so that the answer time reveals neither key nor position
    given = hashlib.sha256(credentials.credentials.encode()).digest()
    matches = [secrets.compare_digest(given, hashlib.sha256(k.encode()).digest()) for k in keys]
    if not any(matches):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="The API key is not valid.",
            headers={"WWW-Authenticate": "Bearer"},
        )


#: add to a route or router to require an API key (when keys are configured)
ApiKeyDep = Annotated[None, Depends(require_api_key)]
