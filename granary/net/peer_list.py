"""The peers this node knows, persisted in metadata_dir so a restart finds them."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from granary.util.files import write_atomic

log = logging.getLogger("granary.net")

PEER_LIST_FILE = "peer_list"


class StoredPeer(msgspec.Struct):
    id: str  # hex
    addr: str


def load_peer_list(path: Path) -> dict[bytes, str]:
    """Node id -> address; an unreadable file is logged and treated as empty."""
    try:
        stored = msgspec.json.decode(path.read_bytes(), type=list[StoredPeer])
        return {bytes.fromhex(peer.id): peer.addr for peer in stored}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, msgspec.DecodeError) as exc:
        log.warning("ignoring unreadable peer list %s: %s", path, exc)
        return {}


def save_peer_list(path: Path, peers: dict[bytes, str]) -> None:
    stored = [StoredPeer(node.hex(), addr) for node, addr in sorted(peers.items())]
    write_atomic(path, msgspec.json.format(msgspec.json.encode(stored)))
