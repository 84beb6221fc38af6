"""Speed and memory of ``pipecast import csv`` on a German multi-currency Salesforce report.

For each size, a report like ``tests/features/adapters/data/salesforce_de`` is written (UTF-8
with BOM, ``;``, CRLF, ``EUR 1.234,56`` amounts in three currencies, every tenth Next Step on
two lines; not timed), then a fresh child process converts it with the example mapping
``salesforce-de.yaml``. Amounts are all distinct, the slowest case for parsing them. Peak is
the child's max RSS.
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES: dict[str, int] = {"default": 10_000, "10x": 100_000}
MAPPING = Path(__file__).resolve().parents[1] / "features/adapters/mappings/salesforce-de.yaml"
HEADER = (
    "Opportunity-ID;Opportunity-Name;Account-ID;Erstelldatum;Phase;Betrag;Opportunity-Währung;"
    "Schlusstermin;Geschlossen;Gewonnen;Lead-Quelle;Opportunity-Inhaber;Nächster Schritt;"
    "Wahrscheinlichkeit (%)"
)


def _write_report(n: int, folder: Path) -> None:
    rng = random.Random(7)
    lines = ['"' + HEADER.replace(";", '";"') + '"']
    for i in range(n):
        currency = rng.choice(["EUR", "EUR", "EUR", "CHF", "GBP"])
        amount = f"{rng.randint(100_000, 900_000_000) / 100:,.2f}"
        amount = amount.replace(",", " ").replace(".", ",").replace(" ", ".")
        won = rng.random() < 0.3
        day = i % 28 + 1
        cells = [
            f"D{i:07d}",
            f"Deal {i}",
            f"A{i % 5000}",
            f"{day:02d}.01.2026",
            "Gewonnen" if won else "Angebot",
            f"{currency} {amount}",
            currency,
            f"{day:02d}.03.2026",
            "1" if won else "0",
            "1" if won else "0",
            "Web",
            f"Owner {i % 40}",
            'Zeile eins\n"zwei"' if i % 10 == 0 else "",
            "100%" if won else "60%",
        ]
        lines.append(";".join('"' + c.replace('"', '""') + '"' for c in cells))
    text = "\r\n".join(lines) + "\r\n"
    (folder / "Opportunities.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))


def _import_child(folder: str) -> dict[str, Any]:
    from features.adapters import generic_csv

    start = time.perf_counter()
    export = generic_csv.convert(Path(folder), MAPPING)
    seconds = time.perf_counter() - start
    return {
        "rows": len(export.tables()["opportunities"]),
        "seconds": seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run(sizes: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the import benchmark for ``sizes`` (default: all); one result row per size."""
    rows: list[dict[str, Any]] = []
    for size in sizes or list(SIZES):
        with tempfile.TemporaryDirectory(prefix=f"pipecast-bench-import-{size}-") as tmp:
            _write_report(SIZES[size], Path(tmp))
            megabytes = (Path(tmp) / "Opportunities.csv").stat().st_size / 1e6
            cmd = [sys.executable, "-m", "benchmarks.import_bench", "--child", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"import benchmark {size} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "bench": "import",
                "size": size,
                "step": "import csv (salesforce-de)",
                **result,
                "note": f"import {size}: a {megabytes:.1f} MB report of {SIZES[size]:,} deals "
                "in EUR/CHF/GBP, converted to EUR; peak = max RSS of the converting process",
            }
        )
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.stdout.write(json.dumps(_import_child(sys.argv[2])) + "\n")
    else:
        from benchmarks.run import main

        raise SystemExit(main(["import", *sys.argv[1:]]))
