"""The report pages a sales leader opens in a browser: calibration and the forecast call."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from serving.deps import ChampionsDep, RequestIdDep, SettingsDep, StoreDep
from serving.reports import pages

router = APIRouter(tags=["reports"])


@router.get("/reports/calibration", response_class=HTMLResponse)
def calibration_page(
    store: StoreDep,
    since: Annotated[date | None, Query(description="predictions as of this day or later")] = None,
    segment: str | None = None,
    bins: Annotated[int, Query(ge=2, le=50, description="reliability bins")] = 10,
) -> HTMLResponse:
    """Both models' calibration against the outcomes known so far, as an HTML page."""
    return HTMLResponse(pages.calibration_page(store, since=since, segment=segment, n_bins=bins))


@router.get("/reports/forecast", response_class=HTMLResponse)
def forecast_page(
    settings: SettingsDep,
    store: StoreDep,
    champions: ChampionsDep,
    request_id: RequestIdDep,
    period: Annotated[str, Query(description="2026-Q3, 2026-07 or 2026-07-01:2026-09-30")],
    as_of: Annotated[
        date | None, Query(description="end of this day; default: export date")
    ] = None,
    quota: Annotated[float | None, Query(ge=0, description="the period's quota")] = None,
    by: Annotated[
        str | None, Query(description="roll-up column; default owner_id when the export has it")
    ] = None,
    compare_to: Annotated[
        date | None, Query(description="what changed since this day; default a week before")
    ] = None,
) -> HTMLResponse:
    """The forecast call of a period as an HTML page (the forecast is stored, as every one)."""
    html = pages.forecast_page(
        settings,
        champions.get("close_probability"),
        store,
        period=period,
        as_of=as_of.isoformat() if as_of else None,
        quota=quota,
        group_by=by,
        compare_to=compare_to.isoformat() if compare_to else None,
        request_id=request_id,
    )
    return HTMLResponse(html)
