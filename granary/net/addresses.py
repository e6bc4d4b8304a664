"""Node addresses as written in configs and peer lists: `host:port`, `[v6]:port`,
optionally preceded by the node id in hex and `@`."""

from __future__ import annotations

NODE_ID_SIZE = 32


def format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_addr(value: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port`."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def parse_peer(value: str) -> tuple[bytes | None, str]:
    """Split `<64-hex id>@host:port` (or a bare `host:port`) into id and address."""
    ident, sep, addr = value.rpartition("@")
    parse_addr(addr)
    if not sep:
        return None, addr
    try:
        node = bytes.fromhex(ident)
    except ValueError:
        node = b""
    if len(node) != NODE_ID_SIZE:
        raise ValueError(f"expected a {2 * NODE_ID_SIZE}-hex node id before '@' in {value!r}")
    return node, addr
