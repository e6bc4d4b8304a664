"""--compare: this run's rates as ratios to another run's (another store's endpoint)."""

from __future__ import annotations

import json
from pathlib import Path

SECTIONS = {"throughput": "mb_per_s", "small_ops": "ops_per_s"}
PREFERRED = "fsync on"  # peers fsync every write: compare like with like


def load_peer(path: Path) -> tuple[dict, str]:
    """The result set to compare with from an `--out` JSON (the one labelled "fsync on"
    if there is one, a Granary run, else the first, an endpoint run) and how that run
    was described: its endpoint and pinning."""
    results = json.loads(path.read_text())
    sets = results.get("result_sets")
    if not sets:
        raise SystemExit(f"{path}: no result sets (not the --out JSON of a normal run)")
    chosen = next((s for s in sets if s["label"] == PREFERRED), sets[0])
    return chosen, f"{path}: {chosen['label']}; {results['run']['pinning']}"


def _key(phase: dict) -> tuple[str, int, int]:
    return phase["name"], phase["size"], phase["concurrency"]


def add_peer_ratios(result_set: dict, peer: dict) -> None:
    """Set `vs_peer` on every phase: our rate / the peer's in the same phase (None
    where the peer ran no such phase)."""
    for section, rate in SECTIONS.items():
        theirs = {_key(phase): phase[rate] for phase in peer[section]}
        for phase in result_set[section]:
            peer_rate = theirs.get(_key(phase))
            phase["vs_peer"] = phase[rate] / peer_rate if peer_rate else None
