"""The layers and their rule, read from every module's imports (lazy ones included).

cli -> results -> run -> search -> engine -> data -> base (config, dimensions, recipe, errors,
progress, stats, processes): an arrow is "may import"; run (trials trained: the objective,
workers, launchers) uses search (what to try: space, pruners, study, storage), never the
reverse. data and engine never import optuna; the base imports neither torch nor optuna; nothing
imports the cli but itself and ``python -m tuner``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tuner"
ORDER = ("base", "data", "engine", "search", "run", "results", "cli")
BASE = ("config", "dimensions", "recipe", "errors", "progress", "stats", "processes")
FORBIDDEN = {"base": ("torch", "torchvision", "optuna"), "data": ("optuna",), "engine": ("optuna",)}


def layer_of(module: str) -> str:
    """The layer of a tuner module, e.g. "tuner.search.study" -> "search"."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] in BASE:
        return "base"
    if parts[1] in ("cli", "__main__"):
        return "cli"
    return parts[1]


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from tuner.search import study` imports the module tuner.search.study
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


@pytest.mark.parametrize(("name", "path"), modules(), ids=[name for name, _ in modules()])
def test_every_import_points_down_the_layers(name: str, path: Path) -> None:
    layer = layer_of(name)
    for imported in imports(path):
        top = imported.split(".")[0]
        if layer in FORBIDDEN:
            assert top not in FORBIDDEN[layer], f"{name} ({layer}) imports {imported}"
        if top != "tuner" or imported == "tuner":
            continue
        target = layer_of(imported)
        if target == "cli":
            inside = layer == "cli" or name == "tuner.__main__"
            assert inside, f"{name} imports the command line ({imported})"
            continue
        if layer in ("package", "cli") or target == "package":
            continue
        assert ORDER.index(target) <= ORDER.index(layer), f"{name} ({layer}) imports {imported}"


def test_the_rule_is_checked_on_every_layer() -> None:
    layers = {layer_of(name) for name, _ in modules()}
    assert {"base", "data", "engine", "search", "run", "results", "cli"} <= layers


def test_a_wrong_way_import_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tuner.search import study\n")
    assert "tuner.search.study" in imports(bad)
    assert ORDER.index(layer_of("tuner.search.study")) > ORDER.index(layer_of("tuner.engine.x"))


def test_importing_the_config_loads_neither_torch_nor_optuna() -> None:
    """Followed through every tuner module it imports, transitively."""
    paths = dict(modules())
    seen, todo, outside = set(), ["tuner.config", "tuner.recipe"], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in paths:
            continue
        seen.add(name)
        for imported in imports(paths[name]):
            if imported.startswith("tuner."):
                todo.append(imported)
            else:
                outside.add(imported.split(".")[0])
    assert "tuner.config" in seen
    assert not outside & {"torch", "torchvision", "optuna"}, sorted(seen)
