"""Which local process opened a TCP connection, read from /proc (Linux only).

The partitioning proxy sits in front of one node and is dialed by all the
others; to cut one link and keep the rest it must know who is calling. The
caller's socket is the one in /proc/net/tcp whose local end is the accepted
connection's peer address, and its owner is the process holding that socket's
inode among its file descriptors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def _hex_endpoint(host: str, port: int) -> str:
    """An IPv4 endpoint as /proc/net/tcp writes it: little-endian address, port."""
    packed = bytes(int(part) for part in host.split("."))
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def socket_inode(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The inode of the IPv4 TCP socket connected from `local` to `remote`."""
    wanted = (_hex_endpoint(*local), _hex_endpoint(*remote))
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if (fields[1], fields[2]) == wanted:
                return int(fields[9])
    return None


def inode_owner(inode: int, pids: Iterable[int]) -> int | None:
    """The first of `pids` that holds socket `inode` open."""
    target = f"socket:[{inode}]"
    for pid in pids:
        folder = f"/proc/{pid}/fd"
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"{folder}/{name}") == target:
                    return pid
            except OSError:
                continue
    return None


def group_members(groups: Iterable[int]) -> dict[int, int]:
    """Every live process in one of the process `groups`, with its group."""
    wanted = set(groups)
    members: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            group = os.getpgid(int(entry))
        except OSError:
            continue
        if group in wanted:
            members[int(entry)] = group
    return members


def connection_owner(
    peer: tuple[str, int], local: tuple[str, int], pids: Iterable[int]
) -> int | None:
    """Which of `pids` dialed the connection accepted at `local` from `peer`."""
    inode = socket_inode(peer, local)
    return None if inode is None else inode_owner(inode, pids)
