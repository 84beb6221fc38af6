"""Speed and memory of scoring a lead list file: end to end (CSV in, CSV out) beside bare predict.

One process simulates the demo export, trains an SQO-likelihood model on it (not timed) and
writes a list of N leads as CSV (the export's leads repeated under new ids, no outcomes, not
timed). For each size it then runs, in a fresh subprocess so that its peak memory is its own
(the sum of the ``VmHWM`` of that process, of the worker processes that scored the chunks and
of the server they were forked from: a child's ``ru_maxrss`` would start from its parent's
size), the list scored chunk by chunk as ``pipecast score leads`` does — read, checked, lead
features, scores, default list rules, reasons (exact TreeSHAP for the top 2,000, contribution
tables for the rest), CSV written, two chunks at a time in two worker processes when the
machine has a core to spare (none when its load average is at or above its cores: the note
says which) — and, in this process, the bare
LightGBM ``booster.predict`` on the already-encoded feature matrix of the same list. It prints
both as rows per second, their ratio (target ≥ 1/3), and the peak memory of the largest list
against the smallest (target ≤ 1.2×).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: name → leads in the list
SIZES: dict[str, int] = {"200k": 200_000, "1M": 1_000_000}

_CHILD = """
import json, os, pickle, sys, tempfile, time
from pathlib import Path
import pandas as pd
from serving.scoring import POOL_MIN_BYTES, scan_lead_file, score_scanned_list, start_workers_early


def vm_hwm(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as found:
        return [int(c) for c in found.read().split()]


if __name__ == "__main__":
    model = pickle.load(open(sys.argv[1], "rb"))
    src, out, day = Path(sys.argv[2]), Path(sys.argv[3]), pd.Timestamp(sys.argv[4])
    start = time.perf_counter()
    # as pipecast score leads does: the workers' server started while the list is read
    if src.stat().st_size >= POOL_MIN_BYTES:
        start_workers_early()
    workers = []
    with tempfile.TemporaryDirectory(dir=out.parent) as folder:
        scan = scan_lead_file(src, Path(folder))
        summary = score_scanned_list(
            model, scan, out, model_version="bench", as_of=day, worker_peaks=workers
        )
    seconds = time.perf_counter() - start
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's size at fork. The
    # peak is the sum over the processes that did the work: this one, each worker (read by
    # the scoring before it stopped them) and the server they were forked from (alive still)
    own = vm_hwm(os.getpid())
    server = sum(vm_hwm(c) for c in children(os.getpid()))
    print(json.dumps({"seconds": seconds, "peak_mb": own + sum(workers) + server,
                      "own_mb": own, "workers_mb": workers, "server_mb": server,
                      "exact": summary["exact_reasons_for"], "reasons": summary["reasons_for"]}))
"""


def run(sizes: list[str] | None = None) -> list[dict[str, Any]]:
    import pickle

    import numpy as np
    import pandas as pd

    from features import labels, lead, synthetic
    from features.io import write_table
    from models.sqo_likelihood import SQOLikelihoodModel

    sim = synthetic.simulate(seed=7, n_opportunities=4_000, n_leads=30_000)
    export = sim.export
    table = lead.build_training_set(export)
    lab = labels.lead_labels(export)
    decided = lab["decided"].reindex(table.index).to_numpy(dtype=bool, na_value=False)
    X = table.loc[decided].drop(columns=["as_of"]).reset_index(drop=True)
    y = lab.loc[table.index[decided], "is_sqo"].to_numpy(dtype=int)
    late = np.arange(len(X)) >= int(0.8 * len(X))
    model = SQOLikelihoodModel(categorical=lead.categorical_columns(X)).fit(
        X[~late], y[~late], X_cal=X[late].reset_index(drop=True), y_cal=y[late]
    )
    assert export.leads is not None
    base = export.leads.drop(columns=["sqo_at", "meeting_at"])
    day = export.exported_at
    rows: list[dict[str, Any]] = []
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pipecast-bench-") as folder:
        work = Path(folder)
        model_file = work / "model.pkl"
        model_file.write_bytes(pickle.dumps(model))
        for size in sizes or list(SIZES):
            n = SIZES[size]
            reps = -(-n // len(base))
            listed = pd.concat([base] * reps, ignore_index=True).head(n)
            listed["lead_id"] = pd.array([f"B-{i:07d}" for i in range(n)], dtype="string")
            src = work / f"list-{size}.csv"
            write_table(listed, src)
            # bare LightGBM predict on the encoded matrix of the same list (no reading, no
            # features, no calibration, no rules, no reasons, nothing written)
            features = lead.build(export.replace(leads=listed), as_of=day, leads=listed)
            Xe = model.clf_.encoder_.transform(features)
            del features, listed
            start = time.perf_counter()
            model.clf_.booster_.predict(Xe, num_iteration=model.clf_.n_iter_)
            bare = time.perf_counter() - start
            del Xe
            out = work / f"ranked-{size}.csv"
            # the machine's load beside the figures: rows per second on shared cores vary
            load = os.getloadavg()[0]
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, str(model_file), str(src), str(out), str(day)],
                check=True,
                capture_output=True,
                text=True,
            )
            child = json.loads(done.stdout.strip().splitlines()[-1])
            load_after = os.getloadavg()[0]
            peaks[size] = child["peak_mb"]
            ratio = (n / child["seconds"]) / (n / bare)
            rows.append(
                {
                    "bench": "lead list",
                    "size": size,
                    "step": "bare booster.predict (encoded matrix)",
                    "rows": n,
                    "seconds": bare,
                    "rows_per_s": n / bare,
                }
            )
            rows.append(
                {
                    "bench": "lead list",
                    "size": size,
                    "step": "score leads CSV→CSV, chunked",
                    "rows": n,
                    "seconds": child["seconds"],
                    "rows_per_s": n / child["seconds"],
                    "peak_mb": child["peak_mb"],
                    "vs_bare": f"{ratio:.3f} (target ≥ 1/3: {'met' if ratio >= 1 / 3 else 'NOT met'})",
                    "note": (
                        f"lead list {size}: end to end {n / child['seconds']:,.0f} leads/s, "
                        f"{ratio:.3f}× bare predict's {n / bare:,.0f} "
                        f"(target ≥ 1/3: {'met' if ratio >= 1 / 3 else 'NOT met'}); "
                        f"peak {child['peak_mb']:,.0f} MB = scoring process "
                        f"{child['own_mb']:,.0f} + workers "
                        f"{' + '.join(f'{w:,.0f}' for w in child['workers_mb']) or '0'} + "
                        f"their server {child['server_mb']:,.0f}; "
                        f"{len(child['workers_mb']) or 'no'} worker processes "
                        f"(load average {load:.1f} before, {load_after:.1f} after)"
                    ),
                }
            )
            src.unlink()
            out.unlink()
    if len(peaks) > 1:
        small, large = min(peaks, key=lambda k: SIZES[k]), max(peaks, key=lambda k: SIZES[k])
        rows[-1]["note"] += (
            f"; peak memory {large}/{small}: {peaks[large] / peaks[small]:.2f}× (target ≤ 1.2×); "
            "reasons: exact TreeSHAP for ranks 1–2,000, contribution tables for the rest"
        )
    return rows
