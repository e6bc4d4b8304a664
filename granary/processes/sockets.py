"""The S3 port of a node that serves it from several processes."""

from __future__ import annotations

import socket


def bound_socket(host: str, port: int) -> socket.socket:
    """A socket of the S3 port for one process, bound but not listening yet: it opens
    when its process serves.

    Each process has its own socket (SO_REUSEPORT): one socket shared by every
    process would let whichever process wakes first accept a whole burst of
    connections (uvloop accepts until the queue is empty), so 16 uploads opened
    at once could all land on one process; the kernel spreads connections over
    the sockets by a hash of their addresses. A worker's socket closes with it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def free_s3_port(host: str, port: int) -> int:
    """`port` (0: a free one), refused (EADDRINUSE) if anything holds it:
    SO_REUSEPORT alone would let another node of this user share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, port), family=family) as probe:
        return probe.getsockname()[1]
