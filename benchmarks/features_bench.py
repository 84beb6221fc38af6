"""Speed and memory of the point-in-time feature pipeline on simulated exports.

For each size, one child process simulates the export and writes it as Parquet (not timed),
then a fresh child process reads it back and times each step of building a training set:
weekly snapshots, opportunity features, opportunity labels, lead features and lead labels.
A fresh process per size gives a clean peak memory (``ru_maxrss``): it covers reading the
export and every step, and ``baseline`` is the resident memory right after reading.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: name → (opportunities, leads); "default" is what ``pipecast simulate`` writes
SIZES: dict[str, tuple[int, int]] = {
    "default": (16_000, 60_000),
    "10x": (160_000, 600_000),
}
TARGET_SECONDS = {"default": 20.0, "10x": 200.0}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _simulate_child(size: str, folder: str) -> dict[str, Any]:
    from features import synthetic
    from features.io import write_export

    n_opps, n_leads = SIZES[size]
    start = time.perf_counter()
    sim = synthetic.simulate(seed=7, n_opportunities=n_opps, n_leads=n_leads)
    write_export(sim.export, folder, fmt="parquet")
    return {"seconds": time.perf_counter() - start}


def _features_child(size: str, folder: str) -> dict[str, Any]:
    from features import labels, lead, opportunity, snapshots
    from features.io import read_export

    export = read_export(folder)
    baseline = _rss_mb()
    steps: list[dict[str, Any]] = []

    def timed(step: str, func: Any) -> Any:
        t0 = time.perf_counter()
        out = func()
        steps.append({"step": step, "rows": int(len(out)), "seconds": time.perf_counter() - t0})
        return out

    dates = snapshots.snapshot_dates(export)
    snaps = timed("opportunity snapshots", lambda: snapshots.opportunity_snapshots(export, dates))
    table = timed(
        "opportunity features", lambda: opportunity.build_training_set(export, dates=dates)
    )
    timed("opportunity labels", lambda: labels.opportunity_labels(export, snaps))
    timed("lead features", lambda: lead.build_training_set(export))
    timed("lead labels", lambda: labels.lead_labels(export))
    timed("features at export date", lambda: opportunity.build(export, as_of=export.exported_at))
    return {
        "steps": steps,
        "dates": len(dates),
        "opportunities": len(export.opportunities),
        "leads": len(export.leads),
        "columns": int(table.shape[1]),
        "baseline_mb": baseline,
        "peak_mb": _peak_mb(),
    }


def _child(kind: str, size: str, folder: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.features_bench", "--child", kind, size, folder]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child {kind} {size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(sizes: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the feature benchmark for ``sizes`` (default: all); one result row per step."""
    rows: list[dict[str, Any]] = []
    for size in sizes or list(SIZES):
        with tempfile.TemporaryDirectory(prefix=f"pipecast-bench-{size}-") as tmp:
            folder = str(Path(tmp) / "export")
            sim = _child("simulate", size, folder)
            result = _child("features", size, folder)
        total = 0.0
        total_rows = 0
        for step in result["steps"]:
            total += step["seconds"]
            total_rows += step["rows"]
            rows.append({"bench": "features", "size": size, **step})
        rows.append(
            {
                "bench": "features",
                "size": size,
                "step": "total",
                "rows": total_rows,
                "seconds": total,
                "peak_mb": result["peak_mb"],
                "note": f"{size}: {result['dates']} weekly dates, {result['opportunities']:,} "
                f"opportunities, {result['leads']:,} leads, {result['columns']} columns; target "
                f"< {TARGET_SECONDS[size]:.0f}s; simulating took {sim['seconds']:.0f}s (not "
                f"counted); peak = max RSS of the process that read the export and ran every "
                f"step (RSS after reading: {result['baseline_mb']:,.0f} MB)",
            }
        )
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        kind, size, folder = sys.argv[2:5]
        out = _simulate_child(size, folder) if kind == "simulate" else _features_child(size, folder)
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        from benchmarks.run import main

        raise SystemExit(main(["features", *sys.argv[1:]]))
