"""pipecast settings: one pydantic-settings class, read at entry points only."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: the seed of the demo export, so that every fresh clone serves the same demo (training and
#: ``pipecast serve --prepare`` both generate it)
DEMO_SEED = 7


class Settings(BaseSettings):
    """Everything configurable, from the environment (prefix ``PIPECAST_``) or a ``.env`` file.

    Reading settings has no side effects: directories are created by the commands that write.
    """

    model_config = SettingsConfigDict(env_prefix="PIPECAST_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("data/demo"), description="CRM export to train/forecast on")
    mlflow_tracking_uri: str = Field(
        default="sqlite:///var/mlflow.db",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "PIPECAST_MLFLOW_TRACKING_URI"),
        description="MLflow tracking server and model registry",
    )
    mlflow_artifact_location: str | None = Field(
        default=None,
        description="where new MLflow experiments keep artifacts; unset = beside a sqlite "
        "database, under var_dir for another database, the server's choice for http(s)",
    )
    database_url: str = Field(
        default="sqlite:///var/pipecast.db", description="prediction / outcome store"
    )
    api_keys: str | None = Field(
        default=None, description="comma-separated API keys; unset = no auth"
    )
    max_body_bytes: int = Field(
        default=20_000_000, ge=1, description="largest request body the API accepts (bytes)"
    )
    max_rows: int = Field(
        default=100_000, ge=1, description="most rows (leads, deals, outcomes) in one request"
    )
    migrate_on_start: bool = Field(
        default=True, description="create or migrate the prediction store when the API starts"
    )
    real_data_dir: Path = Field(default=Path("../shared/data"))
    var_dir: Path = Field(default=Path("var"), description="local state: databases, artifacts")

    # Promotion gate: a challenger may be at most this much worse (Brier) than the champion.
    gate_tolerance: float = 0.002
    # Share of a table's rows that may be quarantined (left out as inconsistent) before the
    # export itself is refused as suspect.
    quarantine_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    # Below these counts a model cannot be trusted; training falls back to the baselines.
    min_closed_deals: int = 200
    min_wins: int = 50
    min_decided_leads: int = 500
    min_sqos: int = 50

    @property
    def api_key_list(self) -> list[str]:
        """The configured API keys, blanks dropped."""
        if not self.api_keys:
            return []
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def database_url_is_default(self) -> bool:
        """True when no prediction store was configured (the local ``var/pipecast.db``)."""
        return self.database_url == type(self).model_fields["database_url"].default

    @property
    def demo_data_is_default(self) -> bool:
        """True when no data dir was configured and the demo export is used."""
        return self.data_dir == Path("data/demo")
