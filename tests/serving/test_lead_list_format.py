"""CSV cells of a lead list made by Arrow, column by column, are the text pandas writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.io import write_table
from serving.scoring import _csv_block, _date_cells, _float_cells, _quoted


def _texts(cells: pa.Array) -> list[str | None]:
    return cells.to_pylist()


def test_float_cells_are_numpy_repr_of_every_kind_of_float() -> None:
    rng = np.random.default_rng(3)
    v = np.concatenate(
        [
            rng.random(5_000),
            np.round(rng.random(2_000) * 1e6),
            10.0 ** rng.uniform(-30, 30, 5_000) * rng.choice([-1.0, 1.0], 5_000),
            [0.0, -0.0, 1e-4, 9.999999999999999e-5, 1e16, 9999999999999998.0, 2.0**53 + 2],
            [1e-5, 1e21, 123456789012345680.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2],
            [np.nan, np.inf, -np.inf, 1146965415377698.2, 4643020039282658.0],
        ]
    )
    got = _texts(_float_cells(v))
    want = [None if np.isnan(x) else str(s) for x, s in zip(v, v.astype(str), strict=True)]
    assert got == want


def test_date_cells_are_numpy_iso_text_with_seconds_floored() -> None:
    v = pd.to_datetime(
        ["2026-03-14", "2026-03-14T09:30:05.9", None, "1969-12-31T23:59:59.5", "2262-04-11"],
        format="ISO8601",
    ).to_numpy(dtype="datetime64[ns]")
    assert _texts(_date_cells(v, timed=False)) == [
        "2026-03-14",
        "2026-03-14",
        None,
        "1969-12-31",
        "2262-04-11",
    ]
    assert _texts(_date_cells(v, timed=True)) == [
        "2026-03-14T00:00:00",
        "2026-03-14T09:30:05",
        None,
        "1969-12-31T23:59:59",
        "2262-04-11T00:00:00",
    ]


def test_text_is_quoted_only_where_needed_and_once_per_value() -> None:
    plain = pa.array(["a", None, "b c"])
    assert _quoted(plain) is plain  # nothing to quote: the column as it is
    text = pa.array(["VP, Sales", "plain", None, 'say "hi"', "two\nlines", "VP, Sales", "cr\r"])
    assert _texts(_quoted(text)) == [
        '"VP, Sales"',
        "plain",
        None,
        '"say ""hi"""',
        '"two\nlines"',
        '"VP, Sales"',
        '"cr\r"',
    ]


def test_a_block_is_byte_for_byte_what_write_table_writes(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 500
    frame = pd.DataFrame(
        {
            "lead_id": pd.array([f"L-{i}" for i in range(n)], dtype="string"),
            "p": rng.random(n),
            "employees": np.where(rng.random(n) < 0.2, np.nan, np.round(rng.random(n) * 5e4)),
            "rank": pd.array(
                [None if x < 0.1 else i for i, x in enumerate(rng.random(n))], dtype="Int64"
            ),
            "reasons": pd.array(
                rng.choice(["VP in sales at a 45,000-person company", "inbound", ""], n),
                dtype="string",
            ),
            "created_at": pd.Timestamp("2026-01-01")
            + pd.to_timedelta(rng.integers(0, 400, n), "D"),
            "flag": pd.array(
                [[True, False, None][k] for k in rng.integers(0, 3, n)], dtype="boolean"
            ),
        }
    )
    target = tmp_path / "whole.csv"
    write_table(frame, target)
    assert _csv_block(frame, {"created_at": False}, header=True) == target.read_text()
