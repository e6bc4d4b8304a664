"""Where a node learns of peers beyond its configuration's addresses.

A source (`DiscoverySource`) answers the peers it knows of, with their node ids
where it has them; peering polls every source at start and every `REFRESH_SECS`,
dials the addresses and remembers the nodes. Sources: a DNS name that stands
for several nodes (`dns.py`), the Kubernetes custom resources (`kubernetes.py`).
"""

from __future__ import annotations

from typing import Protocol

REFRESH_SECS = 30.0

Found = list[tuple[bytes | None, str]]
"""(node id, or None when only the address is known; `host:port`)."""


class DiscoveryError(Exception):
    """A source could not answer this time (it is asked again at the next poll)."""


class DiscoverySource(Protocol):
    name: str

    async def discover(self) -> Found: ...
