"""Structured logs of the API: one JSON object per line, one line per request.

``log_config()`` is the ``logging.config.dictConfig`` document ``pipecast serve`` hands to
uvicorn; uvicorn applies it in every worker process it starts, so ``--workers N`` logs the same
lines as one process. Nothing here configures logging at import time.

The request line carries what an operator filters on: ``request_id``, ``method``, ``path``,
``status``, ``duration_ms``, and for a request that stored predictions or outcomes the ``rows``
it stored and the ``model_versions`` it scored with. The store notes those on the request's
context (:func:`note_rows`) as it writes them, so that the routers stay thin.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

#: the attributes every ``LogRecord`` has; anything else was passed with ``extra=`` and is kept
_STANDARD = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 0, "m", None, None)).keys()
    | {"message", "asctime", "color_message", "taskName"}
)

#: the notes of the request being served (a fresh dict per request, shared with its worker thread)
_request_notes: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "pipecast_request_notes", default=None
)


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: time (UTC, ISO 8601), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            # which worker process wrote it (``serve --workers N``)
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # default=str: a date, a path or a numpy number in an extra never breaks a log line
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_config(level: str = "INFO") -> dict[str, Any]:
    """The logging configuration of the API server (a ``dictConfig`` document).

    Everything goes to stderr as JSON lines: the per-request lines (``serving.access``), the
    service's messages (``serving``, ``pipecast``) at ``level``, uvicorn's own start-up and
    error messages; other libraries only from WARNING. uvicorn's access line is left out
    (pass ``access_log=False``): the request line replaces it with more fields.
    """
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        # uvicorn sets ``use_colors`` on formatters of these two names when it is given
        "formatters": {
            "default": {"()": JsonFormatter},
            "access": {"()": JsonFormatter},
        },
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            "serving": {"level": level, "handlers": [], "propagate": True},
            "pipecast": {"level": level, "handlers": [], "propagate": True},
            "uvicorn": {"level": "INFO", "handlers": [], "propagate": True},
            "uvicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            # libraries that install handlers of their own: through ours, warnings only
            # (MLFLOW_CONFIGURE_LOGGING=false keeps MLflow from re-installing its own)
            "mlflow": {"level": "WARNING", "handlers": [], "propagate": True},
            "alembic": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


def start_request() -> tuple[dict[str, Any], contextvars.Token[dict[str, Any] | None]]:
    """Open the notes of a new request (the request middleware calls this)."""
    notes: dict[str, Any] = {}
    return notes, _request_notes.set(notes)


def end_request(token: contextvars.Token[dict[str, Any] | None]) -> None:
    """Close the notes of the request opened with :func:`start_request`."""
    _request_notes.reset(token)


def note_rows(rows: int, *, model: str | None = None, model_version: str | None = None) -> None:
    """Add ``rows`` stored by the current request (and the model version that scored them).

    Outside a request (the CLI, the demo preparation) it does nothing.
    """
    notes = _request_notes.get()
    if notes is None:
        return
    notes["rows"] = int(notes.get("rows", 0)) + int(rows)
    if model is not None and model_version is not None:
        notes.setdefault("model_versions", {})[model] = str(model_version)
