"""Dependencies shared by the routers, as ``Annotated`` aliases that tests can override.

They are ``async``: none of them waits on anything once the app is up, and FastAPI runs a plain
``def`` dependency in a worker thread, one hand-over per dependency and request. On a busy
machine each hand-over waits for the scheduler: a one-lead request made five of them for its
dependencies alone.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from starlette.concurrency import run_in_threadpool

from pipecast.config import Settings
from serving.champions import ChampionHolder
from serving.store import Store


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_store(request: Request, settings: SettingsDep) -> Store:
    """The prediction store, its schema current (503 naming the store when it cannot be used)."""
    store: Store = request.app.state.store
    if not store.ready:
        # the first use (or the store was down at start-up): migrating or checking the schema
        # talks to the database, which must not hold up the event loop
        await run_in_threadpool(store.ensure_schema, migrate=settings.migrate_on_start)
    return store


StoreDep = Annotated[Store, Depends(get_store)]


async def get_champions(request: Request) -> ChampionHolder:
    """The models in service."""
    holder: ChampionHolder = request.app.state.champions
    return holder


ChampionsDep = Annotated[ChampionHolder, Depends(get_champions)]


async def get_request_id(request: Request) -> str | None:
    """The id of this request (``X-Request-ID``, or one made up), stored with its predictions."""
    value = getattr(request.state, "request_id", None)
    return str(value) if value is not None else None


RequestIdDep = Annotated[str | None, Depends(get_request_id)]

#: the realm a browser shows when it asks for the key of the report pages
PAGE_REALM = "pipecast reports"

_bearer = HTTPBearer(auto_error=False, description="one of the keys in PIPECAST_API_KEYS")


def _is_valid_key(given: str, keys: list[str]) -> bool:
    """Whether ``given`` is one of ``keys``, in time that reveals neither key nor position."""
    # digests first: compare_digest is constant-time only for inputs of equal length, and every
    # key is compared (no short cut)
    digest = hashlib.sha256(given.encode()).digest()
    matches = [secrets.compare_digest(digest, hashlib.sha256(k.encode()).digest()) for k in keys]
    return any(matches)


async def require_api_key(
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
    if not _is_valid_key(credentials.credentials, keys):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="The API key is not valid.",
            headers={"WWW-Authenticate": "Bearer"},
        )


_basic = HTTPBasic(
    auto_error=False,
    realm=PAGE_REALM,
    description="any user name, one of the keys in PIPECAST_API_KEYS as the password",
)


async def require_page_key(
    request: Request,
    settings: SettingsDep,
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> None:
    """The report pages: an API key as a browser can send it, or as a script does.

    A browser cannot add a Bearer header to a link, so a page also takes the key as the
    password of HTTP Basic authentication (any user name): without credentials the answer is
    401 with ``WWW-Authenticate: Basic``, and the browser asks for them once per session.
    ``Authorization: Bearer KEY`` works as on the API.
    """
    keys = settings.api_key_list
    if not keys:
        return
    challenge = {"WWW-Authenticate": f'Basic realm="{PAGE_REALM}", charset="UTF-8"'}
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    given: str
    if scheme.lower() == "bearer" and value.strip():
        given = value.strip()
    elif basic is not None:
        given = basic.password
    else:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="This page needs an API key: sign in with any user name and the key as the "
            "password, or send the header 'Authorization: Bearer KEY'.",
            headers=challenge,
        )
    if not _is_valid_key(given, keys):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="The API key is not valid.",
            headers=challenge,
        )


#: add to a route or router to require an API key (when keys are configured)
ApiKeyDep = Annotated[None, Depends(require_api_key)]

#: the report pages: the same keys, also as the password of HTTP Basic authentication
PageKeyDep = Annotated[None, Depends(require_page_key)]
