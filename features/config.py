"""``dataset.yaml``: the optional description of an export (stages, fiscal year, features).

:func:`read_config` reads it from an export folder (absent = defaults); :func:`parse_config`
checks a mapping already loaded (the csv importer's mapping file embeds one). A broken file
raises :class:`~features.contract.ContractError` listing every problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from features.contract import ContractError, Problem


@dataclass(frozen=True)
class StageDef:
    """A stage from ``dataset.yaml``: its CRM probability and whether it is a closed stage."""

    name: str
    probability: float | None = None
    won: bool = False
    lost: bool = False


@dataclass
class DatasetConfig:
    """The optional ``dataset.yaml`` of an export."""

    exported_at: pd.Timestamp | None = None
    fiscal_year_start_month: int = 1
    sqo_window_days: int = 90
    stages: list[StageDef] = field(default_factory=list)
    features: dict[str, list[str]] = field(default_factory=dict)

    def to_yaml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.exported_at is not None:
            out["exported_at"] = self.exported_at.date().isoformat()
        out["fiscal_year_start_month"] = self.fiscal_year_start_month
        out["sqo_window_days"] = self.sqo_window_days
        if self.stages:
            rows = []
            for s in self.stages:
                row: dict[str, Any] = {"name": s.name}
                if s.probability is not None:
                    row["probability"] = s.probability
                if s.won:
                    row["won"] = True
                if s.lost:
                    row["lost"] = True
                rows.append(row)
            out["stages"] = rows
        if self.features:
            out["features"] = {k: list(v) for k, v in self.features.items()}
        return out


def read_config(folder: Path) -> DatasetConfig:
    """Parse ``dataset.yaml`` (absent = defaults)."""
    path = folder / "dataset.yaml"
    if not path.exists():
        path = folder / "dataset.yml"
        if not path.exists():
            return DatasetConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        raise ContractError(
            [Problem(file=path.name, message=unreadable_yaml(exc), expected="a YAML mapping")]
        ) from None
    return parse_config(data, path.name)


def unreadable_yaml(exc: Exception) -> str:
    """Why a YAML file could not be loaded, from the error ``yaml.safe_load`` (or decoding) raised."""
    if isinstance(exc, UnicodeDecodeError):
        return f"is not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at position {exc.start})"
    if isinstance(exc, yaml.YAMLError):
        return f"is not valid YAML ({exc})"
    # PyYAML reads 2026-13-45 as a date and fails with a ValueError ("month must be in 1..12")
    return f"holds a date that does not exist ({exc}); write real dates as YYYY-MM-DD"


def parse_config(data: Any, file: str = "dataset.yaml") -> DatasetConfig:
    """A :class:`DatasetConfig` from the mapping of a ``dataset.yaml``."""
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise ContractError(
            [
                Problem(
                    file=file,
                    message="is not a mapping",
                    expected="keys such as exported_at, stages",
                )
            ]
        )
    cfg = DatasetConfig()
    known = {"exported_at", "fiscal_year_start_month", "sqo_window_days", "stages", "features"}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        problems.append(
            Problem(
                file=file,
                column=unknown[0],
                message="unknown key",
                expected="one of " + ", ".join(sorted(known)),
            )
        )
    if data.get("exported_at") is not None:
        try:
            value = data["exported_at"]
            ts = pd.Timestamp(
                value.isoformat() if isinstance(value, (date, datetime)) else str(value)
            )
            if ts.tzinfo is not None:
                ts = ts.tz_convert("UTC").tz_localize(None)
            cfg.exported_at = ts.normalize()
        except (ValueError, TypeError):
            problems.append(
                Problem(
                    file=file,
                    column="exported_at",
                    message=f"{data['exported_at']!r} is not a date",
                    expected="an ISO date such as 2026-11-01",
                )
            )
    month = data.get("fiscal_year_start_month", 1)
    if isinstance(month, bool) or not isinstance(month, int) or not 1 <= month <= 12:
        problems.append(
            Problem(
                file=file,
                column="fiscal_year_start_month",
                message=f"{month!r} is not a month",
                expected="a whole number from 1 to 12",
            )
        )
    else:
        cfg.fiscal_year_start_month = month
    window = data.get("sqo_window_days", 90)
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        problems.append(
            Problem(
                file=file,
                column="sqo_window_days",
                message=f"{window!r} is not a number of days",
                expected="a whole number > 0",
            )
        )
    else:
        cfg.sqo_window_days = window
    stages = data.get("stages") or []
    if not isinstance(stages, list):
        problems.append(
            Problem(
                file=file,
                column="stages",
                message="is not a list",
                expected="a list of {name, probability}",
            )
        )
        stages = []
    seen: set[str] = set()
    for i, s in enumerate(stages, start=1):
        if not isinstance(s, dict) or not s.get("name"):
            problems.append(
                Problem(
                    file=file,
                    column="stages",
                    message=f"entry {i} has no name",
                    expected="{name: Discovery, probability: 0.1}",
                )
            )
            continue
        name = str(s["name"])
        prob = s.get("probability")
        if prob is not None and (
            isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1
        ):
            problems.append(
                Problem(
                    file=file,
                    column="stages",
                    message=f"stage {name!r} has probability {prob!r}",
                    expected="a probability from 0 to 1",
                )
            )
            prob = None
        flags = {k: s.get(k, False) for k in ("won", "lost")}
        for k, v in flags.items():
            if not isinstance(v, bool):
                problems.append(
                    Problem(
                        file=file,
                        column="stages",
                        message=f"stage {name!r} has {k}: {v!r}",
                        expected=f"{k}: true or {k}: false (YAML booleans, not text)",
                    )
                )
        if flags["won"] is True and flags["lost"] is True:
            problems.append(
                Problem(
                    file=file,
                    column="stages",
                    message=f"stage {name!r} is marked both won and lost",
                    expected="won: true or lost: true, not both",
                )
            )
        if name in seen:
            problems.append(
                Problem(
                    file=file,
                    column="stages",
                    message=f"stage {name!r} is listed twice",
                    expected="each stage once",
                )
            )
        seen.add(name)
        cfg.stages.append(
            StageDef(
                name=name,
                probability=None if prob is None else float(prob),
                won=flags["won"] is True,
                lost=flags["lost"] is True,
            )
        )
    feats = data.get("features") or {}
    if not isinstance(feats, dict) or not all(isinstance(v, list) for v in feats.values()):
        problems.append(
            Problem(
                file=file,
                column="features",
                message="is not a mapping of table to column list",
                expected="features: {opportunities: [competitor]}",
            )
        )
    else:
        bad_tables = sorted(set(feats) - {"opportunities", "leads"})
        if bad_tables:
            problems.append(
                Problem(
                    file=file,
                    column="features",
                    message=f"names an unknown table {bad_tables[0]!r}",
                    expected="opportunities or leads",
                )
            )
        cfg.features = {str(k): [str(c) for c in v] for k, v in feats.items()}
    if problems:
        raise ContractError(problems)
    return cfg
