"""Scores of open deals and of lead lists, each stored with its model version."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from features.io import Export
from serving import service
from serving.deps import ChampionsDep, RequestIdDep, SettingsDep, StoreDep
from serving.schemas import (
    LeadsCsvQuery,
    ScoreLeadsIn,
    ScoreLeadsOut,
    ScoreOpportunitiesIn,
    ScoreOpportunitiesOut,
)
from serving.store import StoreBusy

router = APIRouter(tags=["scores"])


@router.post("/score/opportunities")
def score_opportunities(
    body: ScoreOpportunitiesIn,
    settings: SettingsDep,
    store: StoreDep,
    champions: ChampionsDep,
    request_id: RequestIdDep,
) -> ScoreOpportunitiesOut:
    """p_win, p_win_in_period, expected value, flags and top factors of every open deal."""
    result = service.score_pipeline(
        settings,
        champions.get("close_probability"),
        store,
        as_of=body.as_of.isoformat() if body.as_of else None,
        period=body.period,
        tables=body.tables(),
        request_id=request_id,
    )
    return ScoreOpportunitiesOut.model_validate(result)


@router.post("/score/leads", response_model=ScoreLeadsOut)
async def score_leads(
    body: ScoreLeadsIn,
    settings: SettingsDep,
    store: StoreDep,
    champions: ChampionsDep,
    request_id: RequestIdDep,
) -> Response:
    """A lead list ranked by SQO likelihood, best first."""

    def answer(history: Export | None = None, *, wait: bool = True) -> Response:
        result = service.score_lead_list(
            settings,
            champions.get("sqo_likelihood"),
            store,
            records=body.leads,
            rules=body.rules.to_rules(),
            as_of=body.as_of.isoformat() if body.as_of else None,
            request_id=request_id,
            history=history,
            wait=wait,
        )
        # validated once and written as JSON here: a model handed back to FastAPI is
        # validated again (the schema is still ScoreLeadsOut's)
        content = ScoreLeadsOut.model_validate(result).model_dump_json()
        return Response(content=content, media_type="application/json")

    few = len(body.leads) <= service.SMALL_REQUEST_ROWS
    ready = service.current_export(settings) if few and store.is_local else None
    if ready is not None:
        # a few leads cost a few milliseconds of CPU and a local file write: done here, on
        # the event loop, rather than handed to a worker thread and back (two thread
        # switches, each of which waits for the scheduler on a busy machine; the GIL lets no
        # two of them run at once anyway). Not when the export must be read first (seconds)
        # or the store is across a network: those wait in a worker thread, the loop free.
        # The export just checked is the one scored with (the folder is scanned once). If
        # another process is writing to the SQLite store (a big list being stored), its lock
        # is not waited for here, where it would hold every request of this worker, /health
        # too: nothing was stored, and the request is done again in a worker thread, waiting.
        try:
            return answer(ready, wait=False)
        except StoreBusy:
            pass
    return await run_in_threadpool(answer)


@router.post(
    "/score/leads.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "the ranked list as CSV"}},
)
def score_leads_csv(
    file: Annotated[UploadFile, File(description="the lead list, CSV (or .parquet)")],
    query: Annotated[LeadsCsvQuery, Query()],
    settings: SettingsDep,
    store: StoreDep,
    champions: ChampionsDep,
    request_id: RequestIdDep,
) -> StreamingResponse:
    """An uploaded lead list ranked best first, as CSV; the list rules as query parameters."""
    chunks = service.score_lead_upload(
        settings,
        champions.get("sqo_likelihood"),
        store,
        file.file,
        file.filename or "leads.csv",
        as_of=query.as_of.isoformat() if query.as_of else None,
        rules=query.to_rules(),
        request_id=request_id,
    )
    # the user's file name, reduced to characters that are safe in a header
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", (file.filename or "leads").rsplit(".", 1)[0])[:80]
    return StreamingResponse(
        chunks,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{stem}-ranked.csv"'},
    )
