"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    """The service is up."""

    status: Literal["ok"] = "ok"


class ModelInfo(BaseModel):
    """One registered model: its champion version and what it was trained on, or that none is."""

    model: str = Field(description="close_probability or sqo_likelihood")
    name: str = Field(description="registered model name in MLflow")
    status: str = Field(description="'champion', or 'no model trained yet'")
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    metrics: dict[str, float] = Field(
        default_factory=dict, description="the training run's metrics"
    )
    trained_at: str | None = None
    data_start: str | None = Field(default=None, description="first day of the training data")
    data_end: str | None = Field(default=None, description="last day of the training data (as-of)")
    data_fingerprint: str | None = None
    registered_at: str | None = None


class ModelsResponse(BaseModel):
    """The models the API scores with."""

    models: list[ModelInfo]


class ErrorResponse(BaseModel):
    """A refused request: what to fix, and for a broken export each problem found."""

    detail: str
    problems: list[dict[str, Any]] | None = None
