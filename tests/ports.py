"""Ports for the test servers: free, below the kernel's ephemeral range, never handed out twice.

A node a test kills or stops is started again on the same ports. An ephemeral
port (what binding to port 0 gives) may meanwhile have been taken as the
source port of one of the many outgoing connections, and the restart would
fail with "address already in use".
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST_PORT = 10_000
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, below the ephemeral range, new to this process."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(1000):
        port = random.randrange(LOWEST_PORT, ephemeral_low)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")
