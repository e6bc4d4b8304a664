"""docs/metrics.md lists exactly the metrics the code exports."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import granary
from granary.telemetry import metrics

ROOT = Path(__file__).resolve().parents[2]
GAUGES_READ_AT_SCRAPE = ROOT / "granary" / "api" / "admin" / "node_gauges.py"


def declared() -> set[str]:
    """Every metric a module declares, and every gauge the primary reads at scrape."""
    for module in pkgutil.walk_packages(granary.__path__, "granary."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    names = {metric.name for metric in metrics._declared if not metric.name.startswith("test")}
    source = GAUGES_READ_AT_SCRAPE.read_text()
    names |= set(re.findall(r'"((?:cluster|garage|granary|block|table)_[a-z_]+)",', source))
    return names


def test_the_reference_lists_every_metric_and_no_other():
    listed = set(
        re.findall(r"^\| `([a-z0-9_]+)` \|", (ROOT / "docs" / "metrics.md").read_text(), re.M)
    )
    exported = declared()
    assert exported - listed == set(), "exported, not in docs/metrics.md"
    assert listed - exported == set(), "in docs/metrics.md, not exported"
