"""A lead list CSV read by Arrow's reader gives the very chunks pandas' reader gives; what Arrow
would read otherwise (or not at all) is read by pandas, its errors worded as before."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features import io

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
