"""Bootstrap peers named by DNS: a name that resolves to several addresses (a
Kubernetes headless Service, a round-robin record) stands for every node at them.

Each address the name resolves to is dialed as a peer whose id is not known yet;
peering asks again at every poll, so nodes that appear later are found too (a
new node finds the others at its own start, so this only matters for names that
lag behind).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from granary.net.addresses import format_addr
from granary.net.discovery import DiscoveryError, Found


def is_name(host: str) -> bool:
    """Whether `host` is a DNS name rather than an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


class DnsName:
    """Every address `host` resolves to, on `port`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.name = f"dns {host}"

    async def discover(self) -> Found:
        loop = asyncio.get_running_loop()
        try:
            found = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise DiscoveryError(f"{self.host} does not resolve yet: {error}") from None
        addresses = sorted({format_addr(str(sockaddr[0]), self.port) for *_, sockaddr in found})
        return [(None, address) for address in addresses]
