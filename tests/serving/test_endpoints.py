"""Every endpoint and its error paths, through the app with a real registry and a real store."""

from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from features import synthetic
from features.labels import lead_labels
from models import CHAMPION_ALIAS, CLOSE_MODEL_NAME
from models import calibration as metrics
from pipecast.config import Settings
from serving.app import create_app
from serving.store import Store, deal_outcomes, deal_scores, lead_scores, outcome_history
from tests.serving.conftest import Registry, ScoringSetup, build_registry, settings_for


@pytest.fixture
def settings(scoring_setup: ScoringSetup, tmp_path: Path) -> Settings:
    return settings_for(scoring_setup.registry_uri, tmp_path, data_dir=scoring_setup.data_dir)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _store(settings: Settings) -> Store:
    return Store(settings.database_url)


def _leads(sim: synthetic.Simulation, n: int, *, after: str) -> list[dict[str, Any]]:
    """``n`` leads of the export created after ``after``, as an API client would post them."""
    leads = sim.export.leads
    assert leads is not None
    late = leads.loc[(leads["created_at"] > pd.Timestamp(after)).to_numpy(dtype=bool)].head(n)
    keep = ["lead_id", "account_id", "created_at", "source", "signal_type", "title", "employees"]
    frame = late[[c for c in keep if c in late.columns]]
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [
        {k: (v.date().isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in r.items()}
        for r in rows
    ]


# --- scoring -------------------------------------------------------------------------------


def test_score_opportunities_stores_every_score(
    client: TestClient, settings: Settings, scoring_setup: ScoringSetup
) -> None:
    response = client.post("/score/opportunities", json={"as_of": scoring_setup.as_of})
    assert response.status_code == 200, response.text
    body = response.json()
    # default period: the fiscal quarter of the as-of day (fiscal year from February)
    assert body["period"] == {"label": "2026-Q2", "start": "2026-05-01", "end": "2026-07-31"}
    values = [d["expected_value"] for d in body["deals"]]
    assert values == sorted(values, reverse=True)
    assert all(0 <= d["p_win_in_period"] <= d["p_win"] <= 1 for d in body["deals"])
    store = _store(settings)
    assert store.count(deal_scores) == body["n_deals"]
    with store.engine.connect() as conn:
        batch = conn.exec_driver_sql(
            "SELECT model, model_version, as_of, period_label, request_id FROM prediction_batches"
        ).one()
    assert batch[0] == "close_probability" and batch[1] == scoring_setup.close_version
    assert str(batch[2]) == scoring_setup.as_of and batch[3] == "2026-Q2"
    assert batch[4] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"as_of": "2030-01-01"}, "after the export date"),
        ({"period": "someday"}, "someday"),
        ({"as_of": "2026-07-01", "period": "2026-Q1"}, "ended before"),
    ],
)
def test_score_opportunities_refusals_are_422(
    client: TestClient, body: dict[str, str], says: str
) -> None:
    response = client.post("/score/opportunities", json=body)
    assert response.status_code == 422
    assert says in str(response.json()["detail"])


def test_score_leads_ranks_and_stores(
    client: TestClient,
    settings: Settings,
    scoring_setup: ScoringSetup,
    small_simulation: synthetic.Simulation,
) -> None:
    leads = _leads(small_simulation, 40, after="2026-06-01")
    leads[3]["do_not_contact"] = True
    response = client.post("/score/leads", json={"leads": leads, "as_of": "2026-07-01"})
    assert response.status_code == 200, response.text
    ranked = response.json()["leads"]
    assert len(ranked) == 40 and response.json()["model_version"] == scoring_setup.sqo_version
    assert ranked[-1]["lead_id"] == leads[3]["lead_id"]
    assert ranked[-1]["excluded_reason"] == "do not contact" and ranked[-1]["rank"] is None
    kept = [r["sqo_probability"] for r in ranked[:-1]]
    assert kept == sorted(kept, reverse=True)
    assert [r["rank"] for r in ranked[:-1]] == list(range(1, 40))
    assert _store(settings).count(lead_scores) == 40


def test_score_leads_names_the_field_and_the_row(client: TestClient) -> None:
    leads = [
        {"lead_id": "a", "created_at": "2026-05-01"},
        {"lead_id": "b", "created_at": "2026-05-02"},
        {"lead_id": "c", "created_at": "not a date"},
    ]
    response = client.post("/score/leads", json={"leads": leads})
    assert response.status_code == 422
    body = response.json()
    assert "created_at" in body["detail"] and "row 2" in body["detail"]
    assert body["problems"][0]["column"] == "created_at"
    twice = client.post("/score/leads", json={"leads": [leads[0], leads[1], leads[0]]})
    assert twice.status_code == 422
    assert "rows 0, 2" in twice.json()["detail"]
    empty = client.post("/score/leads", json={"leads": []})
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["loc"] == ["body", "leads"]


def test_lead_calibration_round_trip(
    client: TestClient, small_simulation: synthetic.Simulation
) -> None:
    # leads listed before the export's SQO window closed on them, judged by what the export knows
    leads = _leads(small_simulation, 300, after="2026-04-01")
    scored = client.post("/score/leads", json={"leads": leads, "as_of": "2026-05-01"})
    assert scored.status_code == 200, scored.text
    p = {r["lead_id"]: r["sqo_probability"] for r in scored.json()["leads"]}
    labels = lead_labels(small_simulation.export).reindex(list(p))
    decided = labels.loc[labels["decided"].fillna(False).to_numpy(dtype=bool)]
    outcomes = [
        {"lead_id": str(i), "is_sqo": bool(v == 1)}
        for i, v in zip(decided.index, decided["is_sqo"], strict=True)
    ]
    assert client.post("/outcomes", json={"leads": outcomes}).status_code == 200
    cal = client.get("/calibration", params={"model": "sqo_likelihood"}).json()
    y = np.array([o["is_sqo"] for o in outcomes], dtype=float)
    q = np.array([p[o["lead_id"]] for o in outcomes])
    assert cal["n_with_outcome"] == len(outcomes) > 50
    assert cal["overall"]["brier"] == pytest.approx(metrics.brier_score(y, q), abs=1e-12)
    assert cal["overall"]["ece"] == pytest.approx(
        metrics.expected_calibration_error(y, q), abs=1e-12
    )


def test_calibration_before_any_prediction(client: TestClient) -> None:
    response = client.get("/calibration", params={"since": "2026-01-01", "segment": "SMB"})
    assert response.status_code == 200
    body = response.json()
    assert body["n_predictions"] == 0 and body["reliability"] == []
    assert body["overall"]["brier"] is None
    bad = client.get("/calibration", params={"model": "revenue"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "model"]


# --- outcomes ------------------------------------------------------------------------------

WON = {"opportunity_id": "o-1", "status": "won", "closed_at": "2026-08-03", "amount": 5000}


def test_the_same_outcomes_posted_twice_store_one_row(
    client: TestClient, settings: Settings
) -> None:
    body = {
        "opportunities": [WON, {**WON, "opportunity_id": "o-2", "status": "lost"}],
        "leads": [{"lead_id": "l-1", "sqo_at": "2026-08-01T10:30:00"}],
    }
    first = client.post("/outcomes", json=body)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "opportunities": {"inserted": 2, "updated": 0, "unchanged": 0},
        "leads": {"inserted": 1, "updated": 0, "unchanged": 0},
    }
    again = client.post("/outcomes", json=body)
    assert again.json()["opportunities"] == {"inserted": 0, "updated": 0, "unchanged": 2}
    changed = client.post("/outcomes", json={"opportunities": [{**WON, "amount": 7000}]})
    assert changed.json()["opportunities"] == {"inserted": 0, "updated": 1, "unchanged": 0}
    store = _store(settings)
    assert store.count(deal_outcomes) == 2
    assert store.count(outcome_history) == 4  # o-1 twice, o-2, l-1
    # a repeat inside one post is one outcome
    repeat = client.post("/outcomes", json={"opportunities": [WON, {**WON, "amount": 7000}]})
    assert repeat.status_code == 422
    assert "rows 0 and 1" in repeat.json()["detail"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"opportunities": [WON, {**WON, "status": "open"}]}, ["opportunities", 1, "status"]),
        ({"opportunities": [{**WON, "closed_at": "soon"}]}, ["opportunities", 0, "closed_at"]),
        ({"opportunities": [{**WON, "amount": -1}]}, ["opportunities", 0, "amount"]),
        ({"leads": [{"lead_id": "x", "is_sqo": True}, {"lead_id": "y"}]}, ["leads", 1]),
        ({"leads": [{"lead_id": "x", "is_sqo": False, "sqo_at": "2026-01-01"}]}, ["leads", 0]),
        ({"deals": [WON]}, ["deals"]),
        ({}, []),
    ],
)
def test_outcome_validation_names_the_field_and_row(
    client: TestClient, settings: Settings, body: dict[str, Any], loc: list[Any]
) -> None:
    response = client.post("/outcomes", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][1 : 1 + len(loc)] == loc
    assert _store(settings).count(deal_outcomes) == 0


# --- limits, store and registry down, auth, request ids -----------------------------------


def test_limits_are_413_with_a_message(scoring_setup: ScoringSetup, tmp_path: Path) -> None:
    settings = settings_for(
        scoring_setup.registry_uri,
        tmp_path,
        data_dir=scoring_setup.data_dir,
        max_rows=3,
        max_body_bytes=2_000,
    )
    with TestClient(create_app(settings)) as client:
        rows = [{**WON, "opportunity_id": f"o-{i}"} for i in range(4)]
        too_many = client.post("/outcomes", json={"opportunities": rows})
        assert too_many.status_code == 413
        assert "PIPECAST_MAX_ROWS" in too_many.json()["detail"]
        leads = [{"lead_id": f"l-{i}", "created_at": "2026-05-01"} for i in range(4)]
        assert client.post("/score/leads", json={"leads": leads}).status_code == 413
        big = {"opportunities": [{**WON, "opportunity_id": "x" * 190}] * 12}
        declared = client.post("/outcomes", json=big)
        assert declared.status_code == 413
        assert "PIPECAST_MAX_BODY_BYTES" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no content-length: counted as it streams in
            yield b'{"opportunities": ['
            for _ in range(40):
                yield b'{"opportunity_id": "o-1", "status": "won", "closed_at": "2026-01-01"},'
            yield b"]}"

        streamed = client.post(
            "/outcomes", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
    assert _store(settings).count(deal_outcomes) == 0


def test_a_store_that_is_down_is_503_and_reported(
    scoring_setup: ScoringSetup, tmp_path: Path
) -> None:
    settings = settings_for(
        scoring_setup.registry_uri,
        tmp_path,
        data_dir=scoring_setup.data_dir,
        database_url=f"sqlite:///{tmp_path / 'no-such-folder' / 'store.db'}",
    )
    with TestClient(create_app(settings)) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded" and "prediction store" in health["store"]
        assert health["registry"] == "ok"
        for response in (
            client.post("/outcomes", json={"opportunities": [WON]}),
            client.post("/score/opportunities", json={}),
            client.get("/calibration"),
        ):
            assert response.status_code == 503
            assert response.json()["component"] == "prediction store"
            assert "no-such-folder" in response.json()["detail"]
        # the models were loaded all the same
        assert client.get("/models").status_code == 200


def test_a_registry_that_is_down_is_503_and_reported(tmp_path: Path) -> None:
    broken = tmp_path / "mlflow.db"
    broken.write_text("this is not a database\n" * 100)
    settings = settings_for(f"sqlite:///{broken}", tmp_path)
    with TestClient(create_app(settings)) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded" and "model registry" in health["registry"]
        models = client.get("/models")
        assert models.status_code == 503
        assert models.json()["component"] == "model registry"
        scored = client.post("/score/opportunities", json={})
        assert scored.status_code == 503 and scored.json()["component"] == "model"


def test_no_model_trained_is_503_saying_what_to_do(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path)
    with TestClient(create_app(settings)) as client:
        response = client.post("/score/leads", json={"leads": [{"lead_id": "a"}]})
    assert response.status_code == 503
    assert "make train" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/outcomes"),
        ("post", "/score/opportunities"),
        ("post", "/score/leads"),
        ("get", "/calibration"),
        ("post", "/models/reload"),
    ],
)
def test_every_endpoint_but_health_needs_a_key(
    scoring_setup: ScoringSetup, tmp_path: Path, method: str, path: str
) -> None:
    settings = settings_for(scoring_setup.registry_uri, tmp_path, api_keys="k-1")
    with TestClient(create_app(settings)) as client:
        response = getattr(client, method)(path)
        assert response.status_code == 401
        keyed = getattr(client, method)(path, headers={"Authorization": "Bearer k-1"})
        assert keyed.status_code != 401
        assert client.get("/health").status_code == 200


def test_request_ids_are_logged_and_returned(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="serving.access"):
        given = client.get("/calibration", headers={"X-Request-ID": "call-42"})
        made = client.get("/calibration")
        hostile = client.get("/calibration", headers={"X-Request-ID": "a b\nforged=1"})
    assert given.headers["x-request-id"] == "call-42"
    assert len(made.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] != "a b\nforged=1"
    lines = [r for r in caplog.records if r.name == "serving.access"]
    assert any(getattr(r, "request_id", None) == "call-42" for r in lines)
    assert "path=/calibration status=200" in lines[0].getMessage()


# --- reload --------------------------------------------------------------------------------


def _log_close_version(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> str:
    """Register one more close-probability version (a real model) and return its number."""
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(registry.uri)
    mlflow.set_registry_uri(registry.uri)
    client = MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
    experiment = client.get_experiment_by_name("tests")
    assert experiment is not None
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2))
    model = LogisticRegression().fit(x, (x[:, 1] > 0).astype(int))
    # the logged model's files go to the default experiment's folder: make that the test's
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment.experiment_id)
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        logged = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=CLOSE_MODEL_NAME,
            pip_requirements=["scikit-learn"],
        )
    return str(logged.registered_model_version)


@pytest.mark.slow
def test_reload_swaps_in_the_new_champion_and_a_failed_one_keeps_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        registry = build_registry(tmp_path / "registry")
        settings = settings_for(registry.uri, tmp_path)
        client_ = MlflowClient(tracking_uri=registry.uri, registry_uri=registry.uri)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            assert client.get("/health").json()["models"]["close_probability"] == registry.version
            # a newer version is promoted: reload serves it
            newer = _log_close_version(registry, monkeypatch)
            client_.set_registered_model_alias(CLOSE_MODEL_NAME, CHAMPION_ALIAS, newer)
            reloaded = client.post("/models/reload")
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["models"] == {"close_probability": newer, "sqo_likelihood": None}
            close = client.get("/models").json()["models"][0]
            assert close["version"] == close["in_service"] == newer
            # a champion whose files are gone cannot be loaded: the one in service stays
            broken = _log_close_version(registry, monkeypatch)
            client_.set_registered_model_alias(CLOSE_MODEL_NAME, CHAMPION_ALIAS, broken)
            files = Path(
                urlparse(client_.get_model_version_download_uri(CLOSE_MODEL_NAME, broken)).path
            )
            assert files.is_dir() and str(files).startswith(str(tmp_path))
            shutil.rmtree(files)
            failed = client.post("/models/reload")
            assert failed.status_code == 503
            assert "kept" in failed.json()["detail"] and f"v{newer}" in failed.json()["detail"]
            assert client.get("/health").json()["models"]["close_probability"] == newer
            # /models tells the registry's champion from the one in service
            close = client.get("/models").json()["models"][0]
            assert (close["version"], close["in_service"]) == (broken, newer)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def test_score_leads_with_list_rules(
    client: TestClient, small_simulation: synthetic.Simulation
) -> None:
    leads = _leads(small_simulation, 30, after="2026-06-01")
    body = {"leads": leads, "as_of": "2026-07-01", "rules": {"top": 10}}
    response = client.post("/score/leads", json=body)
    assert response.status_code == 200, response.text
    ranked = response.json()["leads"]
    assert [r["rank"] for r in ranked[:10]] == list(range(1, 11))
    assert all(r["excluded_reason"] == "beyond the top 10" for r in ranked[10:])
    assert {r["tier"] for r in ranked} <= {"A", "B", "C", "D"}
    assert response.json()["summary"]["model_version"]
    bad = client.post("/score/leads", json={**body, "rules": {"tiers_by": "probability"}})
    assert bad.status_code == 422 and "tier_cuts" in bad.json()["detail"]
    unknown = client.post("/score/leads", json={**body, "rules": {"tops": 3}})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"][-1] == "tops"


def test_score_leads_csv_upload_and_download(
    client: TestClient, settings: Settings, small_simulation: synthetic.Simulation
) -> None:
    leads = pd.DataFrame(_leads(small_simulation, 25, after="2026-06-01"))
    upload = leads.to_csv(index=False).encode()
    response = client.post(
        "/score/leads.csv",
        params={"as_of": "2026-07-01", "top": 5, "tier_cuts": [0.2, 0.4, 0.7]},
        files={"file": ("june list.csv", upload, "text/csv")},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="june_list-ranked.csv"' in response.headers["content-disposition"]
    ranked = pd.read_csv(io.StringIO(response.text))
    assert list(ranked.columns[:7]) == [
        "lead_id",
        "sqo_probability",
        "rank",
        "tier",
        "reasons",
        "model_version",
        "excluded_reason",
    ]
    assert len(ranked) == 25 and list(ranked["rank"].iloc[:5]) == [1, 2, 3, 4, 5]
    assert ranked["excluded_reason"].iloc[5:].eq("beyond the top 5").all()
    assert _store(settings).count(lead_scores) == 25
    # a bad cell is named by its line in the uploaded file
    broken = upload.replace(b"2026-06", b"2026-13", 1)
    refused = client.post("/score/leads.csv", files={"file": ("list.csv", broken, "text/csv")})
    assert refused.status_code == 422
    assert "created_at" in refused.json()["detail"] and "line 2" in refused.json()["detail"]
    assert _store(settings).count(lead_scores) == 25


def _records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A table as a client would post it: ISO dates, nulls for empty cells."""
    out = frame.astype(object).where(frame.notna(), None)
    rows = out.to_dict("records")
    return [
        {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in r.items()}
        for r in rows
    ]


def test_score_an_inline_pipeline_as_the_server_export(
    client: TestClient, small_simulation: synthetic.Simulation, scoring_setup: ScoringSetup
) -> None:
    export = small_simulation.export
    inline = {
        "as_of": scoring_setup.as_of,
        "opportunities": _records_of(export.opportunities),
        "stage_history": _records_of(export.stage_history),
        "activities": _records_of(export.activities),
    }
    posted = client.post("/score/opportunities", json=inline)
    assert posted.status_code == 200, posted.text[:500]
    served = client.post("/score/opportunities", json={"as_of": scoring_setup.as_of})
    assert served.status_code == 200
    mine = {d["opportunity_id"]: d["p_win_in_period"] for d in posted.json()["deals"]}
    theirs = {d["opportunity_id"]: d["p_win_in_period"] for d in served.json()["deals"]}
    assert mine.keys() == theirs.keys() and len(mine) > 20
    assert mine == pytest.approx(theirs, abs=1e-12)


def test_an_inline_pipeline_names_the_table_and_row(client: TestClient) -> None:
    rows = [
        {
            "opportunity_id": f"o-{i}",
            "account_id": "a",
            "created_at": "2026-01-05",
            "stage": "Discovery",
            "status": "open",
            "amount": 1000,
        }
        for i in range(5)
    ]
    rows[3]["amount"] = "a lot"
    response = client.post("/score/opportunities", json={"opportunities": rows})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "opportunities in the request body" in detail and "'amount'" in detail
    assert "row 3" in detail
    orphan = client.post("/score/opportunities", json={"activities": []})
    assert orphan.status_code == 422 and "without opportunities" in orphan.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        (
            "post",
            "/outcomes",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
        ),
        ("post", "/outcomes", {"json": {"opportunities": "o-1"}}),
        ("post", "/outcomes", {"json": {"opportunities": [WON], "leads": [{"lead_id": None}]}}),
        ("post", "/score/leads", {"json": {"leads": ["a", "b"]}}),
        ("post", "/score/leads", {"json": {"leads": [{"name": "no id"}]}}),
        ("post", "/score/leads", {"json": {"leads": [{"lead_id": "a", "employees": {"x": 1}}]}}),
        ("post", "/score/leads", {"json": {"leads": [{"lead_id": None}]}}),
        (
            "post",
            "/score/leads",
            {"json": {"leads": [{"lead_id": "a"}], "rules": {"skip_customers": True, "top": 0}}},
        ),
        ("post", "/score/leads.csv", {}),
        (
            "post",
            "/score/leads.csv",
            {"files": {"file": ("l.csv", b"\xff\xfe\x00garbage", "text/csv")}},
        ),
        ("post", "/score/leads.csv", {"files": {"file": ("l.csv", b"lead_id\n", "text/csv")}}),
        (
            "post",
            "/score/leads.csv",
            {"files": {"file": ("l.parquet", b"not parquet", "application/octet-stream")}},
        ),
        ("post", "/score/opportunities", {"json": {"as_of": "yesterday"}}),
        ("post", "/score/opportunities", {"json": {"opportunities": [{"opportunity_id": "x"}]}}),
        ("get", "/calibration", {"params": {"since": "last week"}}),
        ("get", "/calibration", {"params": {"bins": 1}}),
    ],
)
def test_user_mistakes_are_4xx_never_500(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]
