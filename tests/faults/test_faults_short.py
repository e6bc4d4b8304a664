"""The fault suite in its short form: each fault mix for a few seconds, zero violations.

The long form (`python -m tests.faults.run --mix MIX --duration 60 --runs 10`)
runs the same code for longer and more seeds.
"""

from __future__ import annotations

import pytest

from .run import run_mix

DURATION = 12.0  # seconds of faults; with setup, healing and checks ~22 s a mix
SEED = 7

MIXES = ["kill", "pause", "partition", "clock", "layout", "bitrot", "all"]


@pytest.mark.faults
@pytest.mark.parametrize("mix", MIXES)
def test_no_violations_under_faults(mix, tmp_path):
    result = run_mix(mix, DURATION, SEED, tmp_path, log=lambda line: None)
    print(result.report())
    result.assert_clean()


@pytest.mark.faults
@pytest.mark.parametrize("mix", ["kill", "partition"])
def test_no_violations_under_faults_with_two_s3_processes_per_node(mix, tmp_path):
    """Nodes whose S3 workers have links of their own: a kill strikes a whole node
    or one worker, a partition cuts the workers' links with their primary's."""
    result = run_mix(mix, DURATION, SEED, tmp_path, s3_processes=2, log=lambda line: None)
    print(result.report())
    assert result.faults["kill-worker"] >= 1 or mix != "kill"
    result.assert_clean()


@pytest.mark.faults
def test_conditional_writes_hold_under_faults(tmp_path):
    """Creates (If-None-Match: *) and compare-and-set chains (If-Match) racing
    through random nodes under node kills: at most one create wins a key, and the
    acknowledged swaps of a key form one chain (`check_conditional`)."""
    result = run_mix("kill", DURATION, SEED, tmp_path, workload="conditional", log=lambda _: None)
    print(result.report())
    assert result.operations[("create", "ok")] and result.operations[("swap", "ok")]
    result.assert_clean()


@pytest.mark.faults
@pytest.mark.parametrize("mix", ["kill", "clock", "layout"])
def test_versions_hold_under_faults(mix, tmp_path):
    """Versions written, deleted by id, read by id and listed through random nodes of
    a versioned bucket with object lock, under node kills, skewed clocks or layout
    changes (a spare node serving before it has a role): none is
    lost, none locked is deleted, none deleted comes back, each reads as written,
    listings are newest first (`check_versions`)."""
    result = run_mix(mix, DURATION, SEED, tmp_path, workload="versioned", log=lambda _: None)
    print(result.report())
    assert result.operations[("vget", "ok")] and result.operations[("vdelete", "ok")]
    assert result.operations[("vlist", "ok")]
    result.assert_clean()
