"""``make bench``: run every benchmark module it knows and print one table.

Usage::

    python -m benchmarks.run                      # all benchmarks, all sizes
    python -m benchmarks.run features             # one benchmark
    python -m benchmarks.run features --sizes default

A benchmark module ``benchmarks/<name>_bench.py`` exposes ``run(sizes=None) -> list[dict]``;
each row has at least ``bench``, ``size``, ``step``, ``rows`` and ``seconds`` and may add
``peak_mb`` and a ``note`` printed under the table. Benchmarks are not tests: they print figures, they do not fail
on them.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from typing import Any

#: benchmark name → module; a module that is not there yet is skipped with a note
KNOWN = {
    "features": "benchmarks.features_bench",
    "training": "benchmarks.training_bench",
    "import": "benchmarks.import_bench",
    "forecast": "benchmarks.forecast_bench",
    "lead_list": "benchmarks.lead_list_bench",
    "backtest": "benchmarks.backtest_bench",
    "service": "benchmarks.service_bench",
}


def _format(rows: list[dict[str, Any]]) -> str:
    header = ["bench", "size", "step", "rows", "seconds", "rows/s", "peak MB"]
    lines = []
    for r in rows:
        secs = float(r.get("seconds", 0.0))
        n = int(r.get("rows", 0))
        lines.append(
            [
                str(r.get("bench", "")),
                str(r.get("size", "")),
                str(r.get("step", "")),
                f"{n:,}",
                f"{secs:.2f}",
                f"{n / secs:,.0f}" if secs > 0 and n else "",
                f"{r['peak_mb']:,.0f}" if r.get("peak_mb") is not None else "",
            ]
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(header)
    ]
    right = {3, 4, 5, 6}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(line) for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(KNOWN)})"
    )
    parser.add_argument("--sizes", default=None, help="comma-separated sizes, e.g. default,10x")
    args = parser.parse_args(argv)
    names = args.names or list(KNOWN)
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    sizes = args.sizes.split(",") if args.sizes else None
    rows: list[dict[str, Any]] = []
    sys.stdout.write(
        f"pipecast benchmarks on {platform.python_implementation()} {platform.python_version()}, {_cpus()} CPU(s)\n"
    )
    for name in names:
        try:
            module = importlib.import_module(KNOWN[name])
        except ModuleNotFoundError as exc:
            if exc.name != KNOWN[name]:
                raise
            sys.stdout.write(f"- {name}: no {KNOWN[name]} module yet, skipped\n")
            continue
        start = time.perf_counter()
        sys.stdout.write(f"- {name}: running …\n")
        sys.stdout.flush()
        got = module.run(sizes) if sizes else module.run()
        rows.extend(got)
        sys.stdout.write(f"- {name}: done in {time.perf_counter() - start:.0f}s\n")
    if rows:
        sys.stdout.write("\n" + _format(rows) + "\n")
        notes = [r["note"] for r in rows if r.get("note")]
        if notes:
            sys.stdout.write("\n" + "\n".join(f"* {n}" for n in notes) + "\n")
    return 0


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


if __name__ == "__main__":
    raise SystemExit(main())
