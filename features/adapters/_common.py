"""What every adapter shares: reading a source file as text and checking the result.

An adapter builds plain DataFrames named after the contract tables; :func:`finish` gives them
the contract dtypes and runs the same checks as :func:`features.io.read_export`, so a converted
export that is returned is one that ``read_export`` will accept once written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from features.contract import ContractError, Problem
from features.errors import InputError
from features.io import DatasetConfig, Export, check_relations, coerce_table, not_utf8

log = logging.getLogger(__name__)


def require_file(folder: Path, name: str, what: str) -> Path:
    """``folder / name``, or an :class:`InputError` naming the file expected and why."""
    path = folder / name
    if not path.is_file():
        raise InputError(f"{path}: no such file. {what} needs {name} in {folder}.")
    return path


def read_text_table(path: Path, *, sep: str = ",", encoding: str = "utf-8-sig") -> pd.DataFrame:
    """A source CSV as text: every cell a string, empty cells missing, headers stripped.

    CRLF line endings and a UTF-8 byte-order mark are handled by the parser.
    """
    try:
        df = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding=encoding,
        )
    except UnicodeDecodeError as exc:
        raise not_utf8(
            path, exc, expected=f"the {sep!r}-separated text file as downloaded, saved as UTF-8"
        ) from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    message=f"cannot be read as a table ({exc})",
                    expected=f"a {sep!r}-separated text file with a header row",
                )
            ]
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def require_columns(df: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    """Refuse ``df`` (read from ``path``) unless it has every one of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns[:15]))
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    column=c,
                    message="a column the import needs is missing",
                    expected=f"a header with {c} (found: {found})",
                )
                for c in missing
            ]
        )


def finish(
    frames: Mapping[str, pd.DataFrame],
    config: DatasetConfig,
    sources: Mapping[str, Path],
) -> Export:
    """Give the converted tables contract dtypes and check them as ``read_export`` would.

    Parameters
    ----------
    frames
        Converted tables by contract name (``opportunities``, ``leads``, ...).
    config
        The ``dataset.yaml`` to write beside them.
    sources
        For each table, the source file it came from: problems name that file.

    Raises
    ------
    ContractError
        The converted data breaks the contract; every problem found is listed.
    """
    problems: list[Problem] = []
    typed: dict[str, pd.DataFrame] = {}
    for name, df in frames.items():
        extra = config.features.get(name, [])
        out, found = coerce_table(df, name, sources[name], extra_required=extra)
        problems.extend(found)
        typed[name] = out
    if not problems:
        problems.extend(check_relations(typed, dict(sources), config))
    if problems:
        raise ContractError(problems)
    return Export(**typed, config=config)
