"""No 500 anywhere: schemathesis generates requests for every operation of the OpenAPI schema.

The app runs with a real MLflow registry (both champions), the small simulated export and a
SQLite store, so that the requests reach the scoring, outcome and report code, not only the
schema validation. Any 5xx is a failure, except a 503 that names the component it is missing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode

from serving.app import create_app
from tests.serving.conftest import ScoringSetup, settings_for

pytestmark = pytest.mark.slow

#: examples per operation: enough to reach past validation on every operation, < ~60 s in all
EXAMPLES = 20


@pytest.fixture(scope="module")
def app(scoring_setup: ScoringSetup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    tmp = tmp_path_factory.mktemp("fuzz")
    application = create_app(
        settings_for(scoring_setup.registry_uri, tmp, data_dir=scoring_setup.data_dir)
    )
    # the lifespan (migrations, champions) runs once; schemathesis then calls the app directly
    with TestClient(application):
        yield application


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _check(case: schemathesis.Case, seen: Counter[int]) -> None:
    response = case.call()
    seen[response.status_code] += 1
    if response.status_code == 503:
        # a component that is intentionally absent is named; anything else is a defect
        assert response.json().get("component"), f"503 without a component: {response.text}"
        return
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:2000]}\n"
        f"{case.as_curl_command()}"
    )


def _fuzzer(
    strategy: SearchStrategy[schemathesis.Case], examples: int, seen: Counter[int]
) -> Callable[[], None]:
    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def fuzz(case: schemathesis.Case) -> None:
        _check(case, seen)

    return fuzz


def test_no_server_error_on_any_operation(api_schema: schemathesis.BaseSchema) -> None:
    # every operation the schema has, including ones added later, each with its own examples
    failures: list[str] = []
    seen: dict[str, Counter[int]] = defaultdict(Counter)
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        # schema-valid requests reach the service; schema-breaking ones its validation
        for mode, examples in ((GenerationMode.POSITIVE, EXAMPLES), (GenerationMode.NEGATIVE, 8)):
            try:
                _fuzzer(operation.as_strategy(generation_mode=mode), examples, seen[label])()
            except AssertionError as exc:
                failures.append(f"{label} ({mode.value}): {exc}")
            except Unsatisfiable:
                # an operation without parameters or body has no invalid request to send
                assert mode is GenerationMode.NEGATIVE, label
    assert not failures, "\n\n".join(failures)
    # the requests got past validation into the service: each of these answered 2xx at least
    # once (an all-422 run would prove nothing about the code behind the schema)
    for operation in ("GET /health", "GET /models", "POST /outcomes", "GET /calibration"):
        assert any(200 <= code < 300 for code in seen[operation]), (operation, seen[operation])


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    operations = {f"{r.ok().method.upper()} {r.ok().path}" for r in api_schema.get_all_operations()}
    # the endpoints of interface.md are all in the schema, so the fuzz test above reaches them
    for expected in (
        "GET /health",
        "GET /models",
        "POST /models/reload",
        "POST /score/opportunities",
        "POST /score/leads",
        "POST /score/leads.csv",
        "POST /outcomes",
        "GET /calibration",
    ):
        assert expected in operations
