"""Run the CUDA tests, and only those: every test file that marks tests ``pytest.mark.cuda``.

    python bench/gpu_tests.py [-- PYTEST ARGS]

``pytest -m cuda tests`` imports every test module to select by marker, so one module whose
imports fail (a package the GPU machine lacks) stops the whole run at collection; this runs
the files that hold CUDA tests directly. A skipped test fails the check (without a GPU they
all skip, and "0 failed" would pass by accident), as does finding no such file at all.
Prints pytest's report, then one line: what ran, or why it failed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

REPO = Path(__file__).resolve().parents[1]
MARK = re.compile(r"pytest\.mark\.cuda\b")


def cuda_test_files(tests: Path) -> list[Path]:
    """The test files that mark any test ``pytest.mark.cuda``, in path order."""
    return sorted(path for path in tests.rglob("test_*.py") if MARK.search(path.read_text()))


class _Outcomes:
    """A pytest plugin that counts what each test's run did."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.skipped: list[str] = []
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            self.skipped.append(report.nodeid)
        elif report.failed:
            self.failed.append(report.nodeid)
        elif report.when == "call":
            self.passed.append(report.nodeid)


def verdict(code: int, outcomes: _Outcomes, files: list[Path]) -> tuple[bool, str]:
    """Whether the run passes, and its one line."""
    names = ", ".join(str(path.relative_to(REPO)) for path in files)
    if outcomes.skipped:
        return False, f"FAILED: {len(outcomes.skipped)} skipped ({outcomes.skipped[0]}) in {names}"
    if code != 0 or outcomes.failed or not outcomes.passed:
        failed = f" ({outcomes.failed[0]})" if outcomes.failed else ""
        return False, (
            f"FAILED: pytest exit {code}, {len(outcomes.passed)} passed, "
            f"{len(outcomes.failed)} failed{failed} in {names}"
        )
    return True, f"passed: {len(outcomes.passed)} CUDA tests in {names}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    files = cuda_test_files(REPO / "tests")
    if not files:
        print("FAILED: no test file under tests/ marks a test pytest.mark.cuda")
        return 1
    import pytest

    outcomes = _Outcomes()
    argv = ["-q", "-p", "no:cacheprovider", "--rootdir", str(REPO), *map(str, files)]
    code = int(pytest.main([*argv, *args.pytest_args], plugins=[outcomes]))
    passed, line = verdict(code, outcomes, files)
    print(line)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
