"""A lead list CSV read by Arrow's reader gives the very chunks pandas' reader gives; what Arrow
would read otherwise (or not at all) is read by pandas, its errors worded as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import io
from features.contract import ContractError

CASES = {
    "plain": "lead_id,created_at,x\nL1,2026-01-01,a\nL2,,b\n",
    "bom": "\ufefflead_id,created_at\nL1,2026-01-01\n",
    "quoted": 'lead_id,note\nL1,"a, b"\nL2,"line\nbreak"\nL3,""\nL4, x \n',
    "short_row": "a,b,c\n1,2\n3,4,5\n",
    "long_row": "a,b\n1,2,3\n",
    "repeated_name": "a,a\n1,2\n",
    "empty_name": "a,,c\n1,2,3\n",
    "header_only": "a,b\n",
    "empty": "",
    "blank_line": "a,b\n1,2\n\n3,4\n",
    "crlf": "a,b\r\n1,2\r\n3,4\r\n",
    "spaces": " a , b\n 1 ,2\n",
    "na_words": "a,b\nNA,null\nNaN,-\n",
    "no_last_newline": "a,b\n1,2",
    "trailing_comma": "a,b,\n1,2,\n",
}


def _pandas_chunks(file: Path, rows: int) -> list[pd.DataFrame] | str:
    try:
        with pd.read_csv(
            file,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skipinitialspace=False,
            encoding="utf-8-sig",
            chunksize=rows,
        ) as reader:
            chunks = [c.reset_index(drop=True) for c in reader]
        return chunks or [pd.read_csv(file, dtype=str, nrows=0, encoding="utf-8-sig")]
    except Exception as exc:  # noqa: BLE001 — the error itself is compared
        return repr(exc)


def _ours(file: Path, rows: int) -> list[pd.DataFrame] | str:
    try:
        return [c.reset_index(drop=True) for c in io._raw_chunks(file, rows)]
    except Exception as exc:  # noqa: BLE001
        return repr(exc)


def _same(a: list[pd.DataFrame] | str, b: list[pd.DataFrame] | str) -> None:
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y, check_exact=True)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("rows", [1, 2, 1000])
def test_chunks_are_those_of_the_pandas_reader(tmp_path: Path, name: str, rows: int) -> None:
    file = tmp_path / f"{name}.csv"
    file.write_text(CASES[name], encoding="utf-8")
    _same(_ours(file, rows), _pandas_chunks(file, rows))


def test_text_not_utf8_is_read_as_before(tmp_path: Path) -> None:
    file = tmp_path / "latin.csv"
    file.write_bytes("a,b\n1,caf\xe9\n".encode("latin-1"))
    _same(_ours(file, 10), _pandas_chunks(file, 10))


def test_arrow_takes_the_list_and_a_late_bad_row_hands_over_to_pandas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = ["lead_id,employees,note"] + [f'L{i},{i},"n, {i}"' for i in range(3_000)]
    file = tmp_path / "list.csv"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    taken = []
    real = io._arrow_csv_chunks

    def spy(path: Path, rows: int):  # type: ignore[no-untyped-def]
        for chunk in real(path, rows):
            taken.append(len(chunk))
            yield chunk

    monkeypatch.setattr(io, "_arrow_csv_chunks", spy)
    monkeypatch.setattr(io, "_ARROW_BLOCK_BYTES", 4096)
    _same(_ours(file, 700), _pandas_chunks(file, 700))
    assert taken == [700, 700, 700, 700, 200]  # Arrow read it all

    lines[2_500] = "L2499,7"  # a short row, which pandas pads and Arrow refuses
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    taken.clear()
    _same(_ours(file, 700), _pandas_chunks(file, 700))
    assert 0 < len(taken) < 5  # Arrow gave the first chunks, pandas the rest


def test_a_bad_value_keeps_its_line_number(tmp_path: Path) -> None:
    lines = ["lead_id,employees"] + [f"L{i},{i}" for i in range(250)]
    lines[201] = "L200,many"  # line 202 of the file
    file = tmp_path / "list.csv"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = [p for _, _, problems in io.iter_leads_file(file, chunk_rows=100) for p in problems]
    assert [(p.column, p.lines) for p in found] == [("employees", (202,))]


# --- typing the text: Arrow's kernels where they agree with pandas' parsers -------------


def _typed_both_ways(raw: pd.DataFrame) -> tuple[Any, Any]:
    """``raw`` typed as read (Arrow strings) and as Python objects (pandas' parsers only)."""
    file = Path("list.csv")
    fast = io.coerce_table(raw, "leads", file)
    slow = io.coerce_table(raw.astype(object), "leads", file)
    return fast, slow


def _assert_same_typing(raw: pd.DataFrame) -> None:
    (fast, fast_problems), (slow, slow_problems) = _typed_both_ways(raw)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
    for name in fast.columns:
        assert fast[name].dtype == slow[name].dtype, name
        if fast[name].dtype == "float64":  # to the bit: -0.0 is not 0.0
            got, want = fast[name].to_numpy(), slow[name].to_numpy()
            assert got.view(np.int64).tolist() == want.view(np.int64).tolist(), name
    assert fast_problems == slow_problems


def _random_list(seed: int, rows: int) -> str:
    rng = np.random.default_rng(seed)
    digits = rng.integers(1, 15, rows)
    amounts = [
        f"{rng.integers(0, 10 ** int(d))}" if i % 3 else f"{rng.integers(0, 10**6)}.{i % 100:02d}"
        for i, d in enumerate(digits)
    ]
    seconds = rng.integers(-2_000_000_000, 4_000_000_000, rows)
    days = pd.to_datetime(seconds, unit="s")
    created = [
        d.strftime("%Y-%m-%d") if i % 2 else d.strftime("%Y-%m-%dT%H:%M:%S")
        for i, d in enumerate(days)
    ]
    lines = ["lead_id,employees,annual_revenue,created_at,industry"]
    for i in range(rows):
        empty = i % 7 == 0
        lines.append(
            f"L{i},{'' if empty else amounts[i]},{amounts[-i - 1]},"
            f"{'' if empty else created[i]},{' Software ' if i % 2 else ''}"
        )
    return "\n".join(lines) + "\n"


def test_plain_values_typed_by_arrow_are_those_pandas_gives(tmp_path: Path) -> None:
    file = tmp_path / "list.csv"
    file.write_text(_random_list(seed=5, rows=3_000), encoding="utf-8")
    (raw,) = list(io._raw_chunks(file, 10_000))
    # the fast paths are taken here, not passed over
    assert io._plain_numbers(raw["employees"]) is not None
    assert io._plain_dates(raw["created_at"]) is not None
    _assert_same_typing(raw)


@pytest.mark.parametrize(
    ("column", "odd"),
    [
        ("employees", "-0"),  # pandas reads 0.0, Arrow -0.0
        ("employees", "1e3"),
        ("employees", "nan"),  # a number to Arrow, not a value to pandas
        ("employees", "1234567890123456"),  # 16 digits
        ("employees", "many"),
        ("employees", " 12 "),
        ("employees", "+5"),
        ("created_at", "2023-02-29"),  # no such day: Arrow refuses it, pandas names it
        ("created_at", "2026-03-14T24:00:00"),
        ("created_at", "2026-03-14T09:30:00Z"),
        ("created_at", "2026-03-14T09:30:00+02:00"),
        ("created_at", "2026-3-14"),
        ("created_at", " 2026-03-14 "),
        ("industry", "  "),
    ],
)
def test_a_value_arrow_would_read_otherwise_is_typed_by_pandas(
    tmp_path: Path, column: str, odd: str
) -> None:
    text = _random_list(seed=11, rows=200).splitlines()
    header = text[0].split(",")
    cells = text[150].split(",")
    cells[header.index(column)] = odd
    text[150] = ",".join(cells)
    file = tmp_path / "list.csv"
    file.write_text("\n".join(text) + "\n", encoding="utf-8")
    (raw,) = list(io._raw_chunks(file, 10_000))
    _assert_same_typing(raw)


def test_a_date_past_what_a_date_column_holds_is_refused_by_line(tmp_path: Path) -> None:
    file = tmp_path / "list.csv"
    file.write_text(
        "lead_id,created_at\nL1,2026-01-05\nL2,1025-01-05\nL3,2262-04-11T01:00:00\n"
        "L4,2262-04-10T23:00:00\nL5,1677-09-22\n",
        encoding="utf-8",
    )
    with pytest.raises(ContractError) as refused:
        io.read_leads_file(file)
    (problem,) = refused.value.problems
    assert (problem.file, problem.column, problem.lines) == ("list.csv", "created_at", (3, 4))
    assert "2 value(s) are dates before 1677-09-22 or after 2262-04-10" in problem.message
    assert "lead list" in str(refused.value)
    # read in chunks: the same problem, on the file's lines
    found = [p for _, _, problems in io.iter_leads_file(file, chunk_rows=2) for p in problems]
    assert [(p.column, p.lines) for p in found] == [("created_at", (3,)), ("created_at", (4,))]


def test_a_parquet_date_past_what_a_date_column_holds_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "list.parquet"
    days = np.array(["2026-01-05", "1025-01-05"], dtype="datetime64[s]")
    pd.DataFrame({"lead_id": ["L1", "L2"], "created_at": days}).to_parquet(file)
    with pytest.raises(ContractError) as refused:
        io.read_leads_file(file)
    # a Parquet file has no header line: its rows are counted from 1
    assert [(p.column, p.lines) for p in refused.value.problems] == [("created_at", (2,))]
