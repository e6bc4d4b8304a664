"""The delaying proxy of the bench scripts (`DelayProxy(listen, target, delay)`).

It is the fault suite's link proxy with a fixed delay and nothing cut; it
lives in tests/faults/netproxy.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.netproxy import DelayProxy

__all__ = ["DelayProxy"]
