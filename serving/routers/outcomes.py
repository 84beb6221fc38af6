"""Actual results: how deals ended and which leads became SQOs."""

from __future__ import annotations

from fastapi import APIRouter

from serving import service
from serving.deps import SettingsDep, StoreDep
from serving.schemas import OutcomesIn, OutcomesResult

router = APIRouter(tags=["outcomes"])


@router.post("/outcomes")
def post_outcomes(body: OutcomesIn, settings: SettingsDep, store: StoreDep) -> OutcomesResult:
    """Store outcomes as idempotent upserts: a repeat changes nothing, a change keeps history."""
    result = service.record_outcomes(
        settings,
        store,
        opportunities=[o.model_dump() for o in body.opportunities],
        leads=[lead.model_dump() for lead in body.leads],
    )
    return OutcomesResult.model_validate(result)
