"""What a node tells others about itself for `granary status`: name and disk space."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import msgspec

from granary.net.errors import RpcError
from granary.net.messages import HIGH

INFO_ENDPOINT = "node/info"


class NodeInfo(msgspec.Struct, array_like=True):
    hostname: str
    data_total: int
    data_free: int


def local_info(data_dirs: list[Path]) -> NodeInfo:
    total = free = 0
    seen: set[int] = set()
    for path in data_dirs:
        device = path.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(path)
        total += usage.total
        free += usage.free
    return NodeInfo(socket.gethostname(), total, free)


class NodeInfoService:
    def __init__(self, net, data_dirs: list[Path]) -> None:
        self.net = net
        self.data_dirs = data_dirs
        net.endpoint(INFO_ENDPOINT, self._serve)

    async def _serve(self, from_node: bytes, body: bytes, stream) -> tuple[bytes, None]:
        return msgspec.msgpack.encode(local_info(self.data_dirs)), None

    async def fetch(self, node: bytes, timeout: float = 5.0) -> NodeInfo | None:
        try:
            reply, _ = await self.net.call(node, INFO_ENDPOINT, b"", priority=HIGH, timeout=timeout)
        except RpcError:
            return None
        return msgspec.msgpack.decode(reply, type=NodeInfo)
