"""POST /forecast: the period's forecast over HTTP, stored with its model version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features.io import read_export
from models import CLOSE_MODEL_NAME
from models.registry import load_champion
from pipecast.config import Settings
from serving.app import create_app
from serving.forecasting import forecast_export
from serving.store import Store, forecasts, prediction_batches
from tests.serving.conftest import ScoringSetup, settings_for

PERIOD = "2026-Q2"


@pytest.fixture
def settings(scoring_setup: ScoringSetup, tmp_path: Path) -> Settings:
    return settings_for(scoring_setup.registry_uri, tmp_path, data_dir=scoring_setup.data_dir)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as an API client would post them: dates as ISO text, missing values as null."""
    out = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [
        {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in row.items()}
        for row in out
    ]


def test_forecast_matches_a_direct_computation_and_is_stored(
    client: TestClient, settings: Settings, scoring_setup: ScoringSetup
) -> None:
    body = {"period": PERIOD, "as_of": scoring_setup.as_of, "quota": 1_500_000.0}
    response = client.post("/forecast", json=body)
    assert response.status_code == 200, response.text
    got = response.json()

    export = read_export(scoring_setup.data_dir)
    model, info = load_champion(settings, CLOSE_MODEL_NAME)
    direct = forecast_export(
        export,
        model,
        model_version=str(info["version"]),
        period=PERIOD,
        as_of=scoring_setup.as_of,
        quota=1_500_000.0,
    ).response
    keys = ("expected", "p10", "p50", "p90", "stage_weighted", "won_to_date", "expected_new")
    for key in (*keys, "prob_attain_quota", "coverage_ratio"):
        assert got[key] == pytest.approx(direct[key], rel=1e-9), key
    assert got["total"]["expected"] == pytest.approx(direct["total"]["expected"], rel=1e-9)
    assert got["period"] == {"label": PERIOD, "start": "2026-05-01", "end": "2026-07-31"}
    assert got["model_version"] == scoring_setup.close_version
    assert got["p10"] <= got["p50"] <= got["p90"]
    assert {d["opportunity_id"] for d in got["deals"]} == {
        d["opportunity_id"] for d in direct["deals"]
    }

    store = Store(settings.database_url)
    assert store.count(forecasts) == 1
    with store.engine.connect() as conn:
        kind, version_stored, period, request_id = conn.execute(
            prediction_batches.select().with_only_columns(
                prediction_batches.c.kind,
                prediction_batches.c.model_version,
                prediction_batches.c.period_label,
                prediction_batches.c.request_id,
            )
        ).one()
        total = conn.execute(forecasts.select().with_only_columns(forecasts.c.expected)).scalar()
    assert (kind, version_stored, period) == ("forecast", scoring_setup.close_version, PERIOD)
    assert request_id == response.headers["x-request-id"]
    # what is stored is the total the actual is later compared with
    assert total == pytest.approx(got["total"]["expected"], rel=1e-9)


def test_the_answer_is_what_the_response_schema_sends(
    client: TestClient, scoring_setup: ScoringSetup
) -> None:
    """The answer is sent already encoded: it must be what validating it would have sent."""
    from serving.forecast_schema import ForecastResponse
    from tests.serving.test_forecasting import assert_same_json

    body = {
        "period": PERIOD,
        "as_of": scoring_setup.as_of,
        "quota": 1_500_000,
        "group_by": "owner_id",
        "compare_to": "2026-05-31",
    }
    response = client.post("/forecast", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    got = response.json()
    assert got["groups"] and got["changes"] is not None and got["deals"]
    assert_same_json(got, ForecastResponse.model_validate(got).model_dump(mode="json"))
    # the docs still describe the answer
    schema = client.get("/openapi.json").json()["paths"]["/forecast"]["post"]["responses"]["200"]
    assert schema["content"]["application/json"]["schema"]["$ref"].endswith("/ForecastResponse")


def test_roll_up_adds_up_to_the_total(client: TestClient, scoring_setup: ScoringSetup) -> None:
    response = client.post(
        "/forecast", json={"period": PERIOD, "as_of": scoring_setup.as_of, "group_by": "owner_id"}
    )
    assert response.status_code == 200, response.text
    got = response.json()
    assert len(got["groups"]) > 1
    assert sum(g["expected"] for g in got["groups"]) == pytest.approx(
        got["total"]["expected"], rel=1e-6
    )


def test_inline_pipeline_gives_the_same_forecast_as_the_same_rows_on_disk(
    client: TestClient, scoring_setup: ScoringSetup
) -> None:
    export = read_export(scoring_setup.data_dir)
    inline = {
        "opportunities": _records(export.opportunities),
        "stage_history": _records(export.stage_history),
    }
    on_disk = client.post(
        "/forecast",
        json={"period": PERIOD, "as_of": scoring_setup.as_of},
    )
    # the server's export has activities too; the inline request leaves them out, so compare
    # with a request that has exactly the inline rows
    posted = client.post(
        "/forecast", json={"period": PERIOD, "as_of": scoring_setup.as_of, **inline}
    )
    assert posted.status_code == 200, posted.text
    assert on_disk.status_code == 200, on_disk.text
    a, b = on_disk.json(), posted.json()
    assert a["won_to_date"] == pytest.approx(b["won_to_date"])
    assert a["n_open_deals"] == b["n_open_deals"]
    assert a["stage_weighted"] == pytest.approx(b["stage_weighted"])


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"period": "2026-Q7"}, "2026-Q7"),
        ({"period": PERIOD, "as_of": "2026-07-01", "group_by": "favourite_colour"}, "colour"),
        ({"period": PERIOD, "quota": -5}, "quota"),
        ({"period": PERIOD, "as_of": "2026-07-01", "compare_to": "2026-08-01"}, "compare"),
        ({"period": PERIOD, "opportunities": [{"opportunity_id": "X"}]}, "opportunities"),
        ({}, "period"),
    ],
)
def test_bad_requests_are_4xx_that_say_what_to_fix(
    client: TestClient, body: dict[str, Any], says: str
) -> None:
    response = client.post("/forecast", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert says.lower() in response.text.lower()
