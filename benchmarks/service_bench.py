"""Latency of the API under load: a real ``pipecast serve`` on loopback, 1 and 16 clients.

A child process simulates an export (seed 7, 6,000 deals, 20,000 leads) and another trains both
models into a throw-away sqlite registry (neither timed). Then ``pipecast serve --workers 2``
(the machine's two cores) serves it with a SQLite store, and clients time, from request sent to
answer read:

* ``POST /score/leads`` with 1 lead and with 1,000 leads (leads of the export's last weeks,
  posted without their outcome columns);
* ``POST /forecast`` of a 5,000-deal pipeline posted inline: the open deals of a larger
  simulated export (seed 8, 28,000 deals, written beside the first), 5,000 distinct deals each
  posted once, or ``POST /score/opportunities`` on the same body when this tree has no
  ``/forecast`` endpoint (the row says which);

each with 1 client and with 16 concurrent clients (httpx, one connection per client). Every
answer must be 2xx. Targets: one lead p99 < 20 ms at 1 client; the 5k-deal forecast p99
< 1.5 s. The forecast rows add the server's CPU seconds per request (its processes' user +
system time, read from ``/proc``): on shared cores, latency moves with the other work far more.
The one-lead rows add it in milliseconds.

One lead, 1 client, last measured (this scenario alone, on a server of this bench's export and
models; three runs of 100 requests, load 3.2–3.7 from other work on the 2 cores): p50 10–11
ms, p99 16–19 ms, 17 ms of server CPU per request (the warm-ups' first reads of the export by
each worker included). At load 8: p50 18 ms, p99 29 ms (the previous release beside it at load
7.6: p50 26 ms, p99 42 ms). A few leads are answered from plain arrays, on the event loop.
Before (load 3.7): p50 84 ms, p99 100 ms, about 40 ms of which was every kept-alive answer
waiting for the client's delayed acknowledgement (no ``TCP_NODELAY`` on the sockets of
``--workers N``).

The 5k-deal forecast, 1 client, last measured (5,000 distinct deals; the 2 cores shared with
other work): this bench at load 2.4, p50 0.92 s, p99 1.04 s, 1.18 CPU s per request; at load
4.3, p50 1.46 s, p99 2.08 s, 1.40 CPU s; at load 6.9, p50 1.66 s, p99 1.86 s, 1.14 CPU s. With
16 clients at load 2.1, p50 16.3 s, p99 19.0 s (1.39 CPU s per request). The forecast alone
against a server of the same export and models: at load 2.1, p50 0.83 s, p99 0.94 s over 20
requests (1.07 CPU s per request, the warm-up that builds the model's tables included); at load
3.1, p50 0.99 s, p99 1.14 s over 10; at load 6.0, p50 1.29 s, p99 1.57 s over 20. The previous
release: 4.2 CPU s per request, p50 2.39 s, p99 2.78 s at load
1.0–1.4, on the 1,141 open deals of this bench's export repeated up to 5,000.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

N_OPPORTUNITIES, N_LEADS = 6_000, 20_000
PIPELINE_DEALS = 5_000
#: the posted pipeline's deals are the open deals of a larger simulated export (seed 8): about
#: 5,030 of its deals are open at the export date, every one a distinct deal
PIPELINE_WORLD_OPPORTUNITIES = 28_000
WORKERS = 2
TARGET_ONE_LEAD_P99_MS = 20.0
TARGET_FORECAST_P99_S = 1.5
#: (scenario, clients) → requests per client
REQUESTS = {
    ("1 lead", 1): 100,
    ("1 lead", 16): 10,
    ("1,000 leads", 1): 20,
    ("1,000 leads", 16): 3,
    ("5k-deal pipeline", 1): 10,
    ("5k-deal pipeline", 16): 2,
}


def _simulate_child(folder: str) -> dict[str, Any]:
    from features import synthetic

    sim = synthetic.simulate(seed=7, n_opportunities=N_OPPORTUNITIES, n_leads=N_LEADS)
    synthetic.write_simulation(sim, Path(folder))
    # the world the posted pipeline comes from: large enough for 5,000 distinct open deals
    world = synthetic.simulate(
        seed=8, n_opportunities=PIPELINE_WORLD_OPPORTUNITIES, n_leads=N_LEADS
    )
    synthetic.write_simulation(world, _pipeline_folder(folder))
    return {}


def _pipeline_folder(folder: str | Path) -> Path:
    return Path(folder).parent / "pipeline-export"


def _train_child(folder: str) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    from pipecast.config import Settings
    from training.train import run_training

    store = Path(folder).parent / "mlflow"
    run_training(
        Settings(mlflow_tracking_uri=f"sqlite:///{store / 'mlflow.db'}"), data_dir=Path(folder)
    )
    return {}


def _child(kind: str, folder: str) -> None:
    code = (
        "import json, sys; from benchmarks import service_bench as b; "
        f"print(json.dumps(b._{kind}_child({folder!r})))"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def _bodies(folder: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """The request of each scenario: (path, JSON body)."""
    from features.io import read_export
    from features.periods import fiscal_quarter

    export = read_export(folder)
    assert export.leads is not None and export.opportunities is not None
    leads = export.leads.sort_values("created_at", kind="stable").tail(1000)
    keep = [c for c in leads.columns if c not in ("is_sqo", "sqo_at", "meeting_at")]
    lead_rows = _json_rows(leads[keep])

    world = read_export(_pipeline_folder(folder))
    opps = world.opportunities
    assert opps is not None and world.exported_at == export.exported_at
    open_deals = opps.loc[opps["status"].astype("string").eq("open").to_numpy(dtype=bool)]
    if len(open_deals) < PIPELINE_DEALS:
        raise RuntimeError(f"{len(open_deals)} open deals simulated, {PIPELINE_DEALS} wanted")
    # distinct deals, each posted once: nothing in the answer can be reused from another line
    pipeline = open_deals.head(PIPELINE_DEALS)
    day = export.exported_at
    period = fiscal_quarter(day, export.config.fiscal_year_start_month).label
    as_of = day.date().isoformat()
    return {
        "1 lead": ("/score/leads", {"leads": lead_rows[-1:], "as_of": as_of}),
        "1,000 leads": ("/score/leads", {"leads": lead_rows, "as_of": as_of}),
        "5k-deal pipeline": (
            "/forecast",
            {"period": period, "as_of": as_of, "opportunities": _json_rows(pipeline)},
        ),
    }


def _json_rows(frame: Any) -> list[dict[str, Any]]:
    import pandas as pd

    rows = []
    for record in frame.astype(object).where(frame.notna(), None).to_dict("records"):
        rows.append(
            {
                str(k): (v.date().isoformat() if isinstance(v, pd.Timestamp) else v)
                for k, v in record.items()
                if v is not None
            }
        )
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(base: str, server: subprocess.Popen[bytes]) -> None:
    import httpx2 as httpx

    deadline = time.monotonic() + 300
    ready = 0
    while time.monotonic() < deadline and server.poll() is None:
        try:
            health = httpx.get(f"{base}/health", timeout=5).json()
            ready = ready + 1 if all(health["models"].values()) else 0
            if ready >= 4 * WORKERS:
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not come up with both models (exit {server.poll()})")


def _measure(
    base: str, path: str, body: dict[str, Any], clients: int, per_client: int
) -> np.ndarray:
    """Latencies in seconds of ``clients`` × ``per_client`` requests (after one warm-up each)."""
    import httpx2 as httpx

    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client() -> None:
        with httpx.Client(base_url=base, timeout=300) as http:
            try:
                http.post(path, content=payload, headers=headers)  # warm-up: connection, caches
            except httpx.HTTPError as exc:
                # counted as a failure; the client still meets the others at the barrier, or
                # they would wait there for ever
                with lock:
                    errors.append(f"warm-up: {exc!r}")
            barrier.wait()
            for _ in range(per_client):
                start = time.perf_counter()
                try:
                    answer = http.post(path, content=payload, headers=headers)
                except httpx.HTTPError as exc:  # e.g. a worker that died mid-request
                    with lock:
                        errors.append(repr(exc))
                    continue
                elapsed = time.perf_counter() - start
                with lock:
                    times.append(elapsed)
                    if not answer.is_success:
                        errors.append(f"{answer.status_code}: {answer.text[:300]}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"POST {path}: {len(errors)} failed answers, e.g. {errors[0]}")
    return np.asarray(times)


def run(sizes: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per scenario and number of clients: p50 and p99 latency."""
    del sizes  # one size: the service's latency does not depend on the export's size much
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        _child("simulate", str(folder))
        _child("train", str(folder))
        bodies = _bodies(folder)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp) / 'mlflow' / 'mlflow.db'}",
            "PIPECAST_DATA_DIR": str(folder),
            "PIPECAST_DATABASE_URL": f"sqlite:///{Path(tmp) / 'store.db'}",
            "PIPECAST_VAR_DIR": str(Path(tmp) / "var"),
        }
        pipecast = str(Path(sys.executable).with_name("pipecast"))
        server = subprocess.Popen(
            [pipecast, "serve", "--port", str(port), "--workers", str(WORKERS)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(base, server)
            import httpx2 as httpx

            paths = httpx.get(f"{base}/openapi.json", timeout=30).json()["paths"]
            for (scenario, clients), per_client in REQUESTS.items():
                path, body = bodies[scenario]
                if path == "/forecast" and "/forecast" not in paths:
                    path = "/score/opportunities"
                    body = {k: v for k, v in body.items() if k != "period"}
                # the machine's load beside the figures: latency on shared cores is not idle
                load = os.getloadavg()[0]
                cpu_before = _server_cpu_seconds(server.pid)
                times = _measure(base, path, body, clients, per_client)
                cpu_after = _server_cpu_seconds(server.pid)
                # the server's CPU per request (warm-ups included): what other work on the
                # machine inflates far less than it inflates the latency
                cpu = (
                    None
                    if cpu_before is None or cpu_after is None
                    else (cpu_after - cpu_before) / (clients * (per_client + 1))
                )
                rows.append(_row(scenario, path, clients, times, load, cpu))
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)
    return rows


#: leads or deals in one request of each scenario
ITEMS = {"1 lead": 1, "1,000 leads": 1_000, "5k-deal pipeline": PIPELINE_DEALS}


def _server_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid`` and all its descendants.

    Read from ``/proc`` (Linux); ``None`` elsewhere. The workers of ``pipecast serve`` are
    children of the process started.
    """
    proc = Path("/proc")
    if not (proc / str(pid) / "stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended meanwhile
        # fields after the command name (which may hold spaces) closed by the last ")"
        fields = stat[stat.rindex(")") + 2 :].split()
        parent[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    total = 0
    for p, t in ticks.items():
        q = p
        while q not in (pid, 0, 1) and q in parent:
            q = parent[q]
        if q == pid:
            total += t
    return total / tick


def _row(
    scenario: str,
    path: str,
    clients: int,
    times: np.ndarray,
    load: float,
    cpu_per_request: float | None = None,
) -> dict[str, Any]:
    p50, p99 = (float(np.percentile(times, q)) for q in (50, 99))
    note = (
        f"service/POST {path} {scenario}, {clients} client{'s' if clients > 1 else ''}: "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms over {times.size} requests "
        f"(load average {load:.1f} before)"
    )
    if cpu_per_request is not None and scenario == "5k-deal pipeline":
        note += f"; server CPU {cpu_per_request:.2f} s per request"
    if cpu_per_request is not None and scenario == "1 lead":
        # near what one lead takes on idle cores: the latency above waits for the other work
        note += f"; server CPU {cpu_per_request * 1000:.1f} ms per request"
    if scenario == "1 lead" and clients == 1:
        ok = p99 * 1000 < TARGET_ONE_LEAD_P99_MS
        note += f" (target p99 < {TARGET_ONE_LEAD_P99_MS:.0f} ms: {'met' if ok else 'NOT met'})"
    if scenario == "5k-deal pipeline":
        ok = p99 < TARGET_FORECAST_P99_S
        note += f" (target p99 < {TARGET_FORECAST_P99_S} s: {'met' if ok else 'NOT met'})"
        if path != "/forecast":
            note += "; no POST /forecast in this tree: the same pipeline scored instead"
    return {
        "bench": "service",
        "size": f"{clients} client{'s' if clients > 1 else ''}",
        # rows: leads or deals per request; seconds: the p50 latency (p99 in the note)
        "step": f"POST {path} {scenario} (p50)",
        "rows": ITEMS[scenario],
        "seconds": float(np.percentile(times, 50)),
        "peak_mb": None,
        "note": note,
    }
