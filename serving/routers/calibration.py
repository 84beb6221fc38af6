"""Live calibration: stored predictions against the outcomes known so far."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from serving import service
from serving.deps import StoreDep
from serving.schemas import CalibrationOut

router = APIRouter(tags=["calibration"])


@router.get("/calibration")
def calibration(
    store: StoreDep,
    model: Literal["close_probability", "sqo_likelihood"] = "close_probability",
    since: Annotated[date | None, Query(description="predictions as of this day or later")] = None,
    segment: str | None = None,
    bins: Annotated[int, Query(ge=2, le=50, description="reliability bins")] = 10,
) -> CalibrationOut:
    """Reliability table, Brier, log loss, ECE, AUC and counts, by version, segment and week."""
    result = service.calibration_report(
        store, model=model, since=since, segment=segment, n_bins=bins
    )
    return CalibrationOut.model_validate(result)
