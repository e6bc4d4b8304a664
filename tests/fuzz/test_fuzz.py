"""Each fuzz target for a bounded number of inputs (seconds in all), and its seeds.

Longer runs: see tests/fuzz/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from granary.api.s3 import sigv2, sigv4
from tests.fuzz.targets import (
    NOW,
    REGION,
    SEEDS,
    TARGETS,
    _parsed_request,
    _secret_of,
)

ROOT = Path(__file__).resolve().parents[2]
RUNS = 3000


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_under_atheris(name, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.run",
            name,
            f"-runs={RUNS}",
            "-seed=1",
            "-max_len=8192",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path / "corpus"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"Done {RUNS} runs" in result.stderr, result.stderr[-2000:]
    assert not list(tmp_path.glob("crash-*"))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_run_cleanly(name):
    for seed in SEEDS[name]:
        TARGETS[name](seed)


def test_signed_seeds_authenticate():
    """The signature seeds pass verification, so fuzzing starts from accepted requests."""
    for seed in SEEDS["sigv4"][:2]:
        parsed = _parsed_request(seed)
        assert parsed is not None
        method, path, _, pairs, headers = parsed
        assert sigv4.authenticate(method, path, pairs, headers, _secret_of, NOW, REGION)
    for seed in SEEDS["sigv2"][:2]:
        parsed = _parsed_request(seed)
        assert parsed is not None
        method, path, query, pairs, headers = parsed
        params = dict(reversed(pairs))
        assert sigv2.authenticate(method, path, query, params, headers, _secret_of, NOW, REGION)
