"""The API skeleton against a real MLflow registry: health, models, auth, errors."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from features.contract import ContractError, Problem
from features.errors import InputError
from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from models.registry import champion_info
from serving.app import create_app
from serving.deps import ApiKeyDep
from tests.serving.conftest import METRICS, PROVENANCE, Registry, settings_for


def test_health(tmp_path: Path) -> None:
    app = create_app(settings_for(f"sqlite:///{tmp_path / 'none.db'}", tmp_path))
    with TestClient(app) as client:
        response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "store": "ok",
        "registry": "ok",
        "models": {"close_probability": None, "sqo_likelihood": None},
    }


def test_models_before_any_training(tmp_path: Path) -> None:
    db = tmp_path / "never-created" / "mlflow.db"
    app = create_app(settings_for(f"sqlite:///{db}", tmp_path))
    with TestClient(app) as client:
        response = client.get("/models")
    assert response.status_code == 200
    models = response.json()["models"]
    assert [m["name"] for m in models] == [CLOSE_MODEL_NAME, SQO_MODEL_NAME]
    assert all(m["status"] == "no model trained yet" for m in models)
    # reading the registry does not create it
    assert not db.exists() and not db.parent.exists()


def test_models_shows_the_champion(registry: Registry, tmp_path: Path) -> None:
    app = create_app(settings_for(registry.uri, tmp_path))
    with TestClient(app) as client:
        response = client.get("/models")
    assert response.status_code == 200
    close, sqo = response.json()["models"]
    assert close["model"] == "close_probability"
    assert close["status"] == "champion"
    assert close["version"] == registry.version
    assert close["alias"] == "champion"
    assert close["run_id"] == registry.run_id
    assert close["metrics"] == pytest.approx(METRICS)
    for key, value in PROVENANCE.items():
        assert close[key] == value
    assert close["registered_at"]
    # the SQO model is not registered at all in this registry: nothing but its names
    assert {k: sqo.pop(k) for k in ("model", "name", "status", "metrics")} == {
        "model": "sqo_likelihood",
        "name": SQO_MODEL_NAME,
        "status": "no model trained yet",
        "metrics": {},
    }
    assert {"version", "run_id", "trained_at", "data_end"} <= set(sqo)
    assert all(value is None for value in sqo.values())


def test_champion_info_reads_the_registry(registry: Registry, tmp_path: Path) -> None:
    settings = settings_for(registry.uri, tmp_path)
    info = champion_info(settings, CLOSE_MODEL_NAME)
    assert info is not None and info["data_end"] == "2026-06-30"
    assert champion_info(settings, SQO_MODEL_NAME) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic c2VjcmV0LTI="}, 401),
        ({"Authorization": "Bearer secret-2"}, 200),
        ({"Authorization": "bearer secret-1"}, 200),
    ],
)
def test_api_keys(
    registry: Registry, tmp_path: Path, headers: dict[str, str], expected: int
) -> None:
    settings = settings_for(registry.uri, tmp_path, api_keys="secret-1, secret-2")
    with TestClient(create_app(settings)) as client:
        response = client.get("/models", headers=headers)
        assert response.status_code == expected
        if expected == 401:
            assert "API key" in response.json()["detail"]
            assert response.headers["www-authenticate"] == "Bearer"
        # health needs no key
        assert client.get("/health").status_code == 200


def test_no_keys_means_no_auth(registry: Registry, tmp_path: Path) -> None:
    settings = settings_for(registry.uri, tmp_path, api_keys=" , ")
    with TestClient(create_app(settings)) as client:
        assert client.get("/models").status_code == 200


def test_input_errors_are_422_with_a_detail(tmp_path: Path) -> None:
    app = create_app(settings_for(f"sqlite:///{tmp_path / 'none.db'}", tmp_path, api_keys="k"))
    router = APIRouter()

    @router.get("/boom")
    def boom(_: ApiKeyDep, kind: str) -> None:
        if kind == "input":
            raise InputError("period 'soon' is not understood")
        raise ContractError(
            [Problem(file="opportunities.csv", column="amount", message="negative", lines=(3,))]
        )

    app.include_router(router)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/boom", params={"kind": "input"}).status_code == 401
        auth = {"Authorization": "Bearer k"}
        plain = client.get("/boom", params={"kind": "input"}, headers=auth)
        assert plain.status_code == 422
        assert plain.json() == {"detail": "period 'soon' is not understood"}
        contract = client.get("/boom", params={"kind": "contract"}, headers=auth)
        assert contract.status_code == 422
        body = contract.json()
        assert "opportunities.csv" in body["detail"]
        assert body["problems"][0]["column"] == "amount"
        assert body["problems"][0]["lines"] == [3]


def test_openapi_lists_the_endpoints(tmp_path: Path) -> None:
    app = create_app(settings_for(f"sqlite:///{tmp_path / 'none.db'}", tmp_path))
    with TestClient(app) as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/health",
        "/models",
        "/models/reload",
        "/score/opportunities",
        "/score/leads",
        "/score/leads.csv",
        "/outcomes",
        "/calibration",
    } <= set(paths)
    assert "text/csv" in paths["/score/leads.csv"]["post"]["responses"]["200"]["content"]


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 401),
        (_basic("ana", "wrong"), 401),
        ({"Authorization": "Bearer wrong"}, 401),
        (_basic("ana", "secret-2"), 200),
        (_basic("", "secret-1"), 200),
        ({"Authorization": "Bearer secret-1"}, 200),
    ],
)
def test_report_pages_take_the_key_as_a_browser_sends_it(
    registry: Registry, tmp_path: Path, headers: dict[str, str], expected: int
) -> None:
    """A link opened in a browser cannot carry a Bearer header: the pages ask for the key with
    HTTP Basic (the browser's own sign-in prompt), any user name, the key as the password."""
    settings = settings_for(registry.uri, tmp_path, api_keys="secret-1, secret-2")
    with TestClient(create_app(settings)) as client:
        response = client.get("/reports/calibration", headers=headers)
        assert response.status_code == expected
        if expected == 401:
            assert response.headers["www-authenticate"].startswith('Basic realm="pipecast')
            assert "API key" in response.json()["detail"]
        else:
            assert response.headers["content-type"].startswith("text/html")
        # the API itself still wants the Bearer header, not a password
        api = client.get("/models", headers=headers)
        bearer = headers.get("Authorization", "").startswith("Bearer")
        assert api.status_code == (expected if bearer else 401)
