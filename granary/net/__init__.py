"""Node-to-node networking: identity, TLS gated by rpc_secret, multiplexed RPC
with priorities and streamed bodies, and peering (discovery, pings, failures).

Modules, bottom up: identity, tls, messages, streams, send_queue, connection,
handshake, rpc (NetApp), peer_list, peering (Peering).
"""

from __future__ import annotations

from granary.net.errors import CallTimeout, PeerUnavailable, RpcError
from granary.net.messages import BACKGROUND, HIGH, NORMAL
from granary.net.peering import PeerInfo, Peering
from granary.net.rpc import NetApp

__all__ = [
    "BACKGROUND",
    "HIGH",
    "NORMAL",
    "CallTimeout",
    "NetApp",
    "PeerInfo",
    "PeerUnavailable",
    "Peering",
    "RpcError",
]
