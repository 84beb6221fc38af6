"""The forecast of a period: expected bookings, range, quota odds, roll-up, deals."""

from __future__ import annotations

from fastapi import APIRouter

from serving import forecasting
from serving.deps import ChampionsDep, RequestIdDep, SettingsDep, StoreDep
from serving.forecast_schema import ForecastRequest, ForecastResponse

router = APIRouter(tags=["forecast"])


@router.post("/forecast")
def forecast(
    body: ForecastRequest,
    settings: SettingsDep,
    store: StoreDep,
    champions: ChampionsDep,
    request_id: RequestIdDep,
) -> ForecastResponse:
    """The period's forecast from the open deals, won to date and new business; stored."""
    result = forecasting.forecast_pipeline(
        settings, champions.get("close_probability"), store, body, request_id=request_id
    )
    return ForecastResponse.model_validate(result)
