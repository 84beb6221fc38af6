"""Structured logs: ``pipecast serve --workers 2`` writes one JSON line per request on stderr."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from serving import logs
from tests.serving.test_server import free_port


def _json_lines(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def test_formatter_writes_one_json_object_with_the_extras() -> None:
    record = logging.LogRecord("serving.access", logging.INFO, "p", 1, "hello %s", ("x",), None)
    record.request_id = "r-1"
    record.model_versions = {"sqo_likelihood": "3"}
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "hello x" and entry["level"] == "info"
    assert entry["logger"] == "serving.access" and entry["request_id"] == "r-1"
    assert entry["model_versions"] == {"sqo_likelihood": "3"}
    assert entry["ts"].endswith("+00:00")


def test_notes_count_rows_only_inside_a_request() -> None:
    logs.note_rows(5, model="close_probability", model_version="1")  # outside: ignored
    notes, token = logs.start_request()
    try:
        logs.note_rows(3, model="close_probability", model_version="2")
        logs.note_rows(2)
    finally:
        logs.end_request(token)
    assert notes == {"rows": 5, "model_versions": {"close_probability": "2"}}


@pytest.mark.slow
def test_two_workers_log_every_request_as_a_json_line(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PIPECAST_DATA_DIR": str(tmp_path / "data"),
        "PIPECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'pipecast.db'}",
    }
    env.pop("MLFLOW_CONFIGURE_LOGGING", None)
    stderr = (tmp_path / "stderr.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "pipecast", "serve", "--port", str(port), "--workers", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        up = False
        while time.monotonic() < deadline and server.poll() is None and not up:
            try:
                up = httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                time.sleep(0.3)
        assert up, (tmp_path / "stderr.log").read_text(errors="replace")
        ids = [f"log-test-{i}" for i in range(12)]
        for i, request_id in enumerate(ids):
            outcome = {"opportunity_id": f"o-{i % 3}", "status": "won", "closed_at": "2026-08-03"}
            answer = httpx.post(
                f"{base}/outcomes",
                json={"opportunities": [outcome]},
                headers={"X-Request-ID": request_id},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
        missing = httpx.get(f"{base}/no-such-page", headers={"X-Request-ID": "log-404"})
        assert missing.status_code == 404
        time.sleep(0.5)  # the last lines are flushed by the workers
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        stderr.close()
    text = (tmp_path / "stderr.log").read_text(errors="replace")
    entries = _json_lines(text)
    # everything on stderr is a JSON line: uvicorn's messages and the workers' included
    others = [line for line in text.splitlines() if line.strip() and not line.startswith("{")]
    assert others == [], others
    requests = {e["request_id"]: e for e in entries if e["logger"] == "serving.access"}
    for request_id in ids:
        entry = requests[request_id]
        assert entry["method"] == "POST" and entry["path"] == "/outcomes"
        assert entry["status"] == 200 and entry["rows"] == 1
        assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
    assert requests["log-404"]["status"] == 404 and requests["log-404"]["rows"] == 0
    # both workers configured their logging: each logged its start as JSON, and the request
    # lines come from them
    workers = {e["pid"] for e in entries if "Started server process" in e["message"]}
    assert len(workers) == 2, [e["message"] for e in entries]
    assert {requests[i]["pid"] for i in ids} <= workers
