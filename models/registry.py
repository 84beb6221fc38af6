"""Reading the MLflow model registry: which version is each model's champion, and loading it.

Reading only — ``training/tracking.py`` is the one module that writes to MLflow. It lives in
``models/`` because both sides read the registry: the API loads the champions it scores with,
and training re-scores the current champion to decide whether a new model may replace it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models import CHAMPION_ALIAS
from pipecast.config import Settings

# MLflow is imported where it is used: importing it takes over a second, which every process
# that only scores (a lead list's worker processes, the server they are forked from) would
# pay without ever reading the registry
if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

#: provenance the training run records on each model version (or its run's tags / params)
PROVENANCE_KEYS = ("data_start", "data_end", "trained_at", "data_fingerprint")
#: what MLflow answers when the registered model or its alias does not exist
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for any other kind of store)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.endswith(":memory:"):
        return None
    return Path(uri[len(prefix) :])


def ensure_default_registry_dir(settings: Settings) -> None:
    """Create the folder of the default local registry (``var/``) if it is missing.

    Only for the default URI: a configured one is the operator's to provision.
    """
    default = Settings.model_fields["mlflow_tracking_uri"].default
    if settings.mlflow_tracking_uri == default and (path := sqlite_file(default)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def registry_client(settings: Settings) -> MlflowClient:
    """An MLflow client on the configured tracking server and model registry."""
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _iso_from_millis(millis: int | None) -> str | None:
    if not millis:
        return None
    return (
        datetime.fromtimestamp(millis / 1000, tz=UTC)
        .replace(tzinfo=None)
        .isoformat(timespec="seconds")
    )


def champion_info(settings: Settings, name: str) -> dict[str, Any] | None:
    """What the champion version of registered model ``name`` is and what it was trained on.

    Parameters
    ----------
    settings
        Gives the MLflow tracking / registry URI.
    name
        A registered model name (``models.CLOSE_MODEL_NAME`` or ``models.SQO_MODEL_NAME``).

    Returns
    -------
    dict or None
        ``name, version, alias, run_id, metrics, registered_at`` and the provenance keys
        (``data_start, data_end, trained_at, data_fingerprint``; from the model version's tags,
        else its run's tags, else its run's params; ``trained_at`` falls back to the run's start).
        ``None`` when no champion is registered — including a registry that does not exist yet,
        which is left uncreated.
    """
    from mlflow.exceptions import MlflowException

    db = sqlite_file(settings.mlflow_tracking_uri)
    if db is not None and not db.exists():
        return None
    client = registry_client(settings)
    try:
        version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise
    run: Run | None = None
    if version.run_id:
        try:
            run = client.get_run(version.run_id)
        except MlflowException:
            log.warning("run %s of %s v%s is gone", version.run_id, name, version.version)
    sources: list[dict[str, str]] = [dict(version.tags or {})]
    if run is not None:
        sources += [dict(run.data.tags), dict(run.data.params)]
    info: dict[str, Any] = {
        "name": name,
        "version": str(version.version),
        "alias": CHAMPION_ALIAS,
        "run_id": version.run_id,
        "metrics": dict(run.data.metrics) if run is not None else {},
        "registered_at": _iso_from_millis(version.creation_timestamp),
    }
    for key in PROVENANCE_KEYS:
        info[key] = next((s[key] for s in sources if s.get(key)), None)
    if info["trained_at"] is None and run is not None:
        info["trained_at"] = _iso_from_millis(run.info.start_time)
    return info


def load_champion(settings: Settings, name: str) -> tuple[Any, dict[str, Any]]:
    """The champion model of registered model ``name``, loaded, and its :func:`champion_info`.

    The model is the scikit-learn-flavoured object ``pipecast train`` logged (feature encoding,
    LightGBM booster(s) and calibrators in one), loaded with
    ``mlflow.sklearn.load_model("models:/NAME@champion")``: ``predict_proba`` gives the
    probability, and the close-probability model also ``predict_won_by`` / ``predict_in_period``.

    Raises
    ------
    InputError
        No champion is registered yet: the message says to run ``make train``.
    """
    import mlflow
    import mlflow.sklearn

    from features.errors import InputError

    info = champion_info(settings, name)
    if info is None:
        raise InputError(
            f"no model trained yet: {name} has no champion in the registry at "
            f"{settings.mlflow_tracking_uri}. Run `make train` (or `pipecast train --data DIR`) first."
        )
    uri = f"models:/{name}@{CHAMPION_ALIAS}"
    # models:/ URIs resolve against the process-wide registry URI
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    model = mlflow.sklearn.load_model(uri)
    return model, info


def registry_problem(settings: Settings) -> str | None:
    """``None`` when the registry answers (or is a local file not created yet), else why not.

    One cheap query (the first registered model), for health checks.
    """
    db = sqlite_file(settings.mlflow_tracking_uri)
    if db is not None and not db.exists():
        return None  # nothing trained yet: not an outage
    try:
        registry_client(settings).search_registered_models(max_results=1)
    except Exception as exc:  # noqa: BLE001 — MLflow, SQL and network errors alike
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        return f"the model registry at {settings.mlflow_tracking_uri} cannot be read: {reason}"
    return None
