"""Bootstrap peers named by DNS: a name that resolves to several addresses (a
Kubernetes headless Service, a round-robin record) stands for every node at them.

Each address the name resolves to is dialed as a peer whose id is not known yet;
the name is resolved again every `REFRESH_SECS`, so nodes that appear later are
found too (a new node finds the others at its own start, so this only matters
for names that lag behind).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from granary.net.addresses import format_addr

REFRESH_SECS = 30.0


def is_name(host: str) -> bool:
    """Whether `host` is a DNS name rather than an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


async def resolve_all(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as `host:port` strings (sorted, distinct);
    raises OSError (socket.gaierror) when the name does not resolve."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({format_addr(str(sockaddr[0]), port) for *_, sockaddr in found})
