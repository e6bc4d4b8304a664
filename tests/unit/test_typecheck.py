"""mypy over granary/ (settings in pyproject.toml): no file may have more errors than its baseline.

tests/mypy_baseline.json maps each file that still has errors to how many it
has; a file not in it has none. The count is per file, so fixing errors in one
file never makes room for new ones in another. After fixing some, lower the
baseline: `python tests/unit/test_typecheck.py` rewrites it from a fresh run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "tests" / "mypy_baseline.json"
ERROR = re.compile(r"^(?P<path>[^:\s]+\.py):\d+: error: ")


def mypy_errors() -> list[str]:
    """The error lines of a mypy run over granary/ with the project's settings."""
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--no-pretty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode not in (0, 1):  # 2: mypy itself failed (bad settings, crash)
        raise RuntimeError(f"mypy failed:\n{run.stdout}{run.stderr}")
    return [line for line in run.stdout.splitlines() if ERROR.match(line)]


def per_file(errors: list[str]) -> dict[str, int]:
    counts = Counter(m["path"] for line in errors if (m := ERROR.match(line)))
    return dict(sorted(counts.items()))


def over_baseline(errors: list[str], baseline: dict[str, int]) -> dict[str, list[str]]:
    """The errors of each file that has more than its baseline allows."""
    counts = per_file(errors)
    return {
        path: [line for line in errors if line.startswith(f"{path}:")]
        for path, count in counts.items()
        if count > baseline.get(path, 0)
    }


def test_over_baseline_names_only_the_files_with_more_errors():
    errors = [
        "granary/a.py:1: error: x  [arg-type]",
        "granary/a.py:9: error: y  [arg-type]",
        "granary/b.py:3: error: z  [union-attr]",
        "granary/c.py:4: error: w  [misc]",
    ]
    assert over_baseline(errors, {"granary/a.py": 2, "granary/b.py": 0, "granary/c.py": 5}) == {
        "granary/b.py": ["granary/b.py:3: error: z  [union-attr]"]
    }


def test_mypy_errors_stay_within_the_baseline():
    pytest.importorskip("mypy")
    baseline = json.loads(BASELINE.read_text())
    new = over_baseline(mypy_errors(), baseline)
    report = "\n".join(
        f"{path}: {len(lines)} errors, baseline {baseline.get(path, 0)}:\n  " + "\n  ".join(lines)
        for path, lines in new.items()
    )
    assert not new, f"mypy found new errors (fix them; see {BASELINE.name}):\n{report}"


if __name__ == "__main__":
    counts = per_file(mypy_errors())
    BASELINE.write_text(json.dumps(counts, indent=1) + "\n")
    print(f"{sum(counts.values())} errors in {len(counts)} files written to {BASELINE}")
