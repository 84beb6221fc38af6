"""The forecast of a period: expected bookings, range, quota odds, roll-up, deals."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serving import forecasting
from serving.deps import ChampionsDep, RequestIdDep, SettingsDep, StoreDep
from serving.forecast_schema import ForecastRequest, ForecastResponse

router = APIRouter(tags=["forecast"])


@router.post("/forecast", response_model=ForecastResponse)
def forecast(
    body: ForecastRequest,
    settings: SettingsDep,
    store: StoreDep,
    champions: ChampionsDep,
    request_id: RequestIdDep,
) -> Response:
    """The period's forecast from the open deals, won to date and new business; stored."""
    document = forecasting.forecast_pipeline(
        settings, champions.get("close_probability"), store, body, request_id=request_id
    )
    # the document already has the response's shape (ForecastResponse, kept for the docs):
    # sent as encoded JSON, it is not validated and dumped again for each of its deals
    return Response(content=forecasting.forecast_json(document), media_type="application/json")
