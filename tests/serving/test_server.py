"""The real server: ``python -m pipecast serve`` answers over HTTP and writes its store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_health(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PIPECAST_DATA_DIR": str(tmp_path / "data"),
        "PIPECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'store' / 'pipecast.db'}",
        "PIPECAST_API_KEYS": "k-1",
    }
    (tmp_path / "store").mkdir()  # a configured store's folder is the operator's to provide
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "pipecast", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        response = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        output = (tmp_path / "server.log").read_text(errors="replace")
        assert response is not None, f"server did not answer (exit {server.poll()}):\n{output}"
        assert response.status_code == 200
        assert response.json()["status"] == "ok" and response.json()["store"] == "ok"
        auth = {"Authorization": "Bearer k-1", "X-Request-ID": "over-http-1"}
        models = httpx.get(f"http://127.0.0.1:{port}/models", headers=auth, timeout=5)
        assert models.status_code == 200
        assert all(m["status"] == "no model trained yet" for m in models.json()["models"])
        outcome = {"opportunity_id": "o-1", "status": "won", "closed_at": "2026-08-03"}
        posted = httpx.post(
            f"http://127.0.0.1:{port}/outcomes",
            json={"opportunities": [outcome]},
            headers=auth,
            timeout=10,
        )
        assert posted.status_code == 200, posted.text
        assert posted.json()["opportunities"]["inserted"] == 1
        assert posted.headers["x-request-id"] == "over-http-1"
        refused = httpx.post(
            f"http://127.0.0.1:{port}/outcomes", json={"opportunities": [outcome]}, timeout=10
        )
        assert refused.status_code == 401
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        log.close()
    # nothing is created beside the server for a configured registry and store; the store's
    # schema was created at start-up, and every request was logged with its id
    assert not (tmp_path / "var").exists()
    assert (tmp_path / "store" / "pipecast.db").exists()
    assert "request_id=over-http-1 method=POST path=/outcomes status=200" in output_after(tmp_path)


def output_after(tmp_path: Path) -> str:
    return (tmp_path / "server.log").read_text(errors="replace")
