"""The one-way flow of STYLE.md, checked on the sources: features → models → training | serving.

Every import counts, including the ones deferred into a function body: a late import is still a
dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: what each package may not import; ``pipecast`` is the front door, of which only the settings
#: (``pipecast.config``) may be read below it
FORBIDDEN: dict[str, set[str]] = {
    "features": {"models", "training", "serving", "pipecast"},
    "models": {"training", "serving", "pipecast"},
    "training": {"serving", "pipecast"},
    "serving": {"training", "pipecast"},
}
ALLOWED_FRONT_DOOR = {"pipecast.config"}


def imported_modules(path: Path, package: str, root: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parts = [package, *path.relative_to(root / package).with_suffix("").parts]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from pipecast import cli`` imports pipecast.cli
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return sorted(found)


def violations(package: str, root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        for line, module in imported_modules(path, package, root):
            top = module.split(".")[0]
            if top not in FORBIDDEN[package]:
                continue
            if top == "pipecast" and (
                module in ALLOWED_FRONT_DOOR
                or module == "pipecast"
                or any(module.startswith(f"{a}.") for a in ALLOWED_FRONT_DOOR)
            ):
                continue
            bad.append(f"{path.relative_to(root).as_posix()}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package: str) -> None:
    assert (ROOT / package / "__init__.py").exists()
    assert violations(package) == []


def test_the_checker_sees_late_and_relative_imports(tmp_path: Path) -> None:
    # the rule above is only worth something if a violation is caught
    (tmp_path / "serving" / "routers").mkdir(parents=True)
    (tmp_path / "serving" / "routers" / "probe.py").write_text(
        "def f():\n    from training.train import run_training\n"
        "from ...training import gates\nimport pipecast.cli\nfrom pipecast import config\n"
        "from . import health\n",
        encoding="utf-8",
    )
    assert violations("serving", root=tmp_path) == [
        "serving/routers/probe.py:2 imports training.train",
        "serving/routers/probe.py:2 imports training.train.run_training",
        "serving/routers/probe.py:3 imports training",
        "serving/routers/probe.py:3 imports training.gates",
        "serving/routers/probe.py:4 imports pipecast.cli",
    ]
