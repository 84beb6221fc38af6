"""Everything ``pipecast train`` writes to MLflow — the only module that writes there.

One parent run per ``pipecast train`` (data fingerprint, code version, split) with one nested
child run per model (parameters, metrics, charts, evaluation table, the model itself). Each model
is logged with the scikit-learn flavour — the logged object bundles the feature encoding, the
LightGBM booster(s) and the calibrators — with a signature and an input example, registered under
its name in the model registry, and its version tagged with what the /models endpoint shows
(``trained_at``, ``data_start``, ``data_end``, ``data_fingerprint``, ``gate``). The ``champion``
alias is moved only by :func:`set_champion`, after the gate has passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import logging
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from models import CHAMPION_ALIAS
from pipecast.config import Settings

log = logging.getLogger(__name__)

EXPERIMENT = "pipecast"
#: folders of an export that are not input data (the simulator's answers)
IGNORED_FOLDERS = {"truth"}


# ----------------------------------------------------------------------------------------
# set-up
# ----------------------------------------------------------------------------------------


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for other stores."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    path = urlparse(tracking_uri).path
    # sqlite:///relative.db → "/relative.db"; sqlite:////abs.db → "//abs.db"
    return Path(path[1:]) if path.startswith("/") else Path(path)


def configure(tracking_uri: str) -> MlflowClient:
    """Point MLflow at the tracking store (creating the folder of a sqlite file) and return a client."""
    db = sqlite_path(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    # MLflow sets its own loggers to INFO when imported; keep them as quiet as the rest of the
    # application (errors only unless the entry point asked for debug logs)
    root = logging.getLogger().getEffectiveLevel()
    logging.getLogger("mlflow").setLevel(logging.DEBUG if root <= logging.DEBUG else logging.ERROR)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def artifact_location(settings: Settings) -> str | None:
    """Where a new experiment keeps its artifacts: as configured, or by default beside a
    sqlite database, under ``var_dir`` for another database (PostgreSQL, MySQL), which has
    no folder of its own, and the server's choice for an ``http(s)://`` tracking server.
    """
    if settings.mlflow_artifact_location:
        return settings.mlflow_artifact_location
    tracking_uri, var_dir = settings.mlflow_tracking_uri, settings.var_dir
    db = sqlite_path(tracking_uri)
    if db is not None:
        return (db.parent.resolve() / "mlartifacts").as_uri()
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    return (Path(var_dir).resolve() / "mlartifacts").as_uri()


def experiment_id(
    client: MlflowClient, artifact_location: str | None, name: str = EXPERIMENT
) -> str:
    """The experiment's id, creating it (artifacts at ``artifact_location``) if needed."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_location))


# ----------------------------------------------------------------------------------------
# provenance
# ----------------------------------------------------------------------------------------


def data_fingerprint(data_dir: Path) -> str:
    """SHA-256 over the names and bytes of the export's files (``truth/`` excluded)."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in Path(data_dir).rglob("*")
        if p.is_file()
        and not (set(p.relative_to(data_dir).parts[:-1]) & IGNORED_FOLDERS)
        and not p.name.startswith(".")
    )
    for path in files:
        digest.update(str(path.relative_to(data_dir)).encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def code_version() -> dict[str, str]:
    """Package version and, when run from a git checkout, the commit (``+dirty`` if modified)."""
    out = {"package_version": _package_version()}
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        out["git_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = "unknown"
    return out


def _package_version() -> str:
    try:
        return importlib.metadata.version("pipecast")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def pip_requirements() -> list[str]:
    """Pinned requirements of a logged model (given explicitly: inferring them is slow)."""
    pins = []
    for dist in ("scikit-learn", "lightgbm", "pandas", "numpy", "pyarrow"):
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


# ----------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def training_run(
    client: MlflowClient,
    artifact_location: str | None,
    *,
    run_name: str,
    tags: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """The parent run of one ``pipecast train``; yields its run id."""
    exp = experiment_id(client, artifact_location)
    # nested runs take the active experiment, not their parent's: make it this one
    mlflow.set_experiment(experiment_id=exp)
    with mlflow.start_run(experiment_id=exp, run_name=run_name, tags=dict(tags or {})) as run:
        yield run.info.run_id


@contextlib.contextmanager
def model_run(run_name: str) -> Iterator[str]:
    """A child run (one per model) inside the current training run."""
    parent = mlflow.active_run()
    exp = parent.info.experiment_id if parent is not None else None
    with mlflow.start_run(run_name=run_name, nested=True, experiment_id=exp) as run:
        yield run.info.run_id


def _clean_value(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, pd.Timestamp):
        return v.date().isoformat()
    return v


def log_params(params: Mapping[str, Any]) -> None:
    """Parameters of the active run (values stringified, long ones cut to MLflow's limit)."""
    mlflow.log_params({k: str(_clean_value(v))[:6000] for k, v in params.items()})


def log_metrics(metrics: Mapping[str, Any], *, prefix: str = "") -> None:
    """Finite numeric metrics of the active run."""
    clean = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(f):
            clean[f"{prefix}{k}".replace("/", "_")] = f
    if clean:
        mlflow.log_metrics(clean)


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(_clean_value(v)) for k, v in tags.items()})


def log_json(obj: Any, artifact_file: str) -> None:
    mlflow.log_dict(json.loads(json.dumps(obj, default=_json_default)), artifact_file)


def _json_default(v: Any) -> Any:
    v = _clean_value(v)
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v if isinstance(v, (str, int, float, bool)) or v is None else str(v)


def log_table(df: pd.DataFrame, artifact_file: str) -> None:
    """A DataFrame as a CSV artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        df.to_csv(path, index=False)
        mlflow.log_artifact(
            str(path),
            artifact_path=str(Path(artifact_file).parent)
            if Path(artifact_file).parent != Path(".")
            else None,
        )


def log_file(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


# ----------------------------------------------------------------------------------------
# models and the registry
# ----------------------------------------------------------------------------------------


def log_and_register(
    model: Any,
    *,
    registered_name: str,
    input_example: pd.DataFrame,
    version_tags: Mapping[str, Any],
    client: MlflowClient,
    artifact_name: str = "model",
) -> str:
    """Log ``model`` (scikit-learn flavour) in the active run and register a new version.

    The signature is inferred from ``input_example`` (raw feature columns, as the feature
    builders produce them) and the model's ``predict_proba`` on it. ``artifact_name`` tells
    two models logged in one run apart (a refused model and the baseline serving instead).
    Returns the new version.
    """
    example = input_example.head(5).copy()
    # MLflow's schema inference wants plain object text columns, not pandas' string dtype
    for c in example.columns:
        if pd.api.types.is_string_dtype(example[c]) or isinstance(
            example[c].dtype, pd.CategoricalDtype
        ):
            example[c] = example[c].astype(object).where(example[c].notna(), None)
        elif isinstance(example[c].dtype, pd.BooleanDtype):
            example[c] = example[c].astype("float64")
    signature = infer_signature(example, model.predict_proba(example))
    # the registry announces each registration on stderr; keep it in the log instead
    chatter = io.StringIO()
    with contextlib.redirect_stderr(chatter):
        info = mlflow.sklearn.log_model(
            model,
            name=artifact_name,
            signature=signature,
            input_example=example,
            registered_model_name=registered_name,
            pyfunc_predict_fn="predict_proba",
            pip_requirements=pip_requirements(),
            serialization_format="cloudpickle",
        )
    log.info(chatter.getvalue().strip())
    version = str(info.registered_model_version)
    for k, v in version_tags.items():
        client.set_model_version_tag(registered_name, version, k, str(_clean_value(v)))
    return version


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version holding the ``champion`` alias, None when there is none."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version)
    except MlflowException:
        return None


def set_champion(client: MlflowClient, name: str, version: str) -> None:
    """Move the ``champion`` alias to ``version`` (called only when the gate passed)."""
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)


def set_version_tag(client: MlflowClient, name: str, version: str, key: str, value: Any) -> None:
    client.set_model_version_tag(name, version, key, str(_clean_value(value)))
