"""Dependencies shared by the routers, as ``Annotated`` aliases that tests can override."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipecast.config import Settings


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]

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
    given = credentials.credentials.encode()
    # compare with every key in constant time so that the answer time reveals nothing
    if not any([secrets.compare_digest(given, key.encode()) for key in keys]):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="The API key is not valid.",
            headers={"WWW-Authenticate": "Bearer"},
        )


#: add to a route or router to require an API key (when keys are configured)
ApiKeyDep = Annotated[None, Depends(require_api_key)]
