"""The real server: ``python -m pipecast serve`` answers /health over HTTP."""

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
        "PIPECAST_API_KEYS": "",
    }
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
        assert response.json() == {"status": "ok"}
        models = httpx.get(f"http://127.0.0.1:{port}/models", timeout=5)
        assert models.status_code == 200
        assert all(m["status"] == "no model trained yet" for m in models.json()["models"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        log.close()
    # nothing is created beside the server for a configured registry
    assert not (tmp_path / "var").exists()
