"""pipecast settings: one pydantic-settings class, read at entry points only."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    real_data_dir: Path = Field(default=Path("../shared/data"))
    var_dir: Path = Field(default=Path("var"), description="local state: databases, artifacts")

    # Promotion gate: a challenger may be at most this much worse (Brier) than the champion.
    gate_tolerance: float = 0.002
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
    def demo_data_is_default(self) -> bool:
        """True when no data dir was configured and the demo export is used."""
        return self.data_dir == Path("data/demo")
