"""The benches still start: every script answers ``--help``, every shell script parses, and
every tuner module or name a bench imports (lazy imports included) exists.

Benches run for minutes to hours, so no test runs one; these checks catch what a refactor of
tuner breaks in them (a moved module, a renamed function) before someone's long run does.

``python bench/X.py --help`` in a process of its own costs each script a torch import, about
half a minute of CPU for all of them. So one child process runs every script in turn as that
command would (``__main__``, its folder first on ``sys.path``, ``--help`` in ``sys.argv``),
keeping torch and the other libraries it imported but importing tuner and the bench modules
afresh for each script.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import importlib.util
import io
import json
import runpy
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
SOURCES = sorted(BENCH.glob("*.py"))
SCRIPTS = [path for path in SOURCES if 'if __name__ == "__main__":' in path.read_text()]
SHELL = sorted(BENCH.glob("*.sh"))


def answer_help(script: Path) -> dict[str, object]:
    """Run ``script --help`` here as ``python script --help`` would: exit code, stdout, stderr."""
    fresh = {"tuner", *(path.stem for path in SOURCES)}
    for name in [n for n in sys.modules if n.split(".")[0] in fresh]:
        del sys.modules[name]
    saved = sys.argv, sys.path[:]
    sys.argv, sys.path[0] = [str(script), "--help"], str(script.parent)
    out, err, code = io.StringIO(), io.StringIO(), None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        code = "raised"
        err.write(traceback.format_exc())
    finally:
        sys.argv, sys.path[:] = saved
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


@functools.cache
def help_runs() -> dict[str, dict]:
    """Every script's ``--help``, answered in one child process (see the module docstring)."""
    command = [sys.executable, __file__, *map(str, SCRIPTS)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_answers_help(script: Path) -> None:
    done = help_runs()[script.name]
    assert done["code"] == 0, done["stderr"][-3000:]
    assert done["stdout"].startswith(f"usage: {script.name}"), done["stdout"][:300]


@pytest.mark.parametrize("script", SHELL, ids=lambda path: path.name)
def test_shell_script_parses(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def tuner_imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every ``from tuner... import name`` in a file, at the top or inside a
    function; (module, None) for every ``import tuner...``."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "tuner":
                found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.split(".")[0] == "tuner"]
    return found


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.name)
def test_tuner_imports_exist(source: Path) -> None:
    missing = []
    for module_name, name in tuner_imports(source):
        try:
            module = importlib.import_module(module_name)
            if name is not None and not hasattr(module, name):
                importlib.import_module(f"{module_name}.{name}")  # a submodule
        except ImportError as exc:
            missing.append(f"{module_name}{'' if name is None else ' ' + name}: {exc}")
    assert not missing, f"{source.name} imports what tuner no longer has: {missing}"


def test_append_run_adds_a_block_after_a_blank_line(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("results_file", BENCH / "results_file.py")
    assert spec is not None and spec.loader is not None
    results_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results_file)
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmarks\n")
    results_file.append_run(out, "## A run\n")
    results_file.append_run(None, "## never written\n")
    results_file.append_run(out, "## Another\n")
    assert out.read_text() == "# Benchmarks\n\n## A run\n\n## Another\n"


if __name__ == "__main__":  # the child process of help_runs
    print(json.dumps({Path(arg).name: answer_help(Path(arg)) for arg in sys.argv[1:]}))
