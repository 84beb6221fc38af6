"""What the service refuses or cannot do, without the web: the app maps each to a status code.

``features.errors.InputError`` (a user mistake) → 422; :class:`RequestTooLarge` → 413;
:class:`Unavailable` (the store or the model registry is down, or no model is trained) → 503.
"""

from __future__ import annotations

from features.errors import InputError


class RequestTooLarge(InputError):
    """A request over the configured size or row limit (``PIPECAST_MAX_BODY_BYTES`` / ``_ROWS``)."""


class Unavailable(RuntimeError):
    """Something the request needs is not there now; ``component`` says which."""

    component = "service"


class RegistryUnavailable(Unavailable):
    """The MLflow model registry cannot be read."""

    component = "model registry"


class NoChampion(Unavailable):
    """No model of the kind the request needs is loaded (none trained, or none loadable)."""

    component = "model"


class ReloadFailed(Unavailable):
    """A model reload failed: the models loaded before keep serving."""

    component = "model registry"
