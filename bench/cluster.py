"""Granary clusters for the benchmarks: real `granary server` processes on 127.0.0.1.

Every node gets its own folder, config file and free ports; storage nodes get
one zone each and replication factor 3; a gateway stores nothing. The
credentials given are created as the default key on every node.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

from server_process import ServerProcess, free_port


class ClusterNode(ServerProcess):
    """One node, configured by a file (rpc secret, peers, replication factor)."""

    def __init__(
        self,
        root: Path,
        credentials: tuple[str, str],
        rpc_secret: str,
        *,
        bootstrap: int | None,
        public_port: int | None = None,
        settings: dict[str, object] | None = None,
    ) -> None:
        super().__init__(root, credentials, None, settings)
        self.rpc_secret = rpc_secret
        self.bootstrap = bootstrap
        self.rpc_port = free_port()
        self.public_port = public_port or self.rpc_port

    def top_level_settings(self) -> dict[str, object]:
        """A storage node or gateway of a replication-factor-3 cluster."""
        peers = [f"127.0.0.1:{self.bootstrap}"] if self.bootstrap else []
        return super().top_level_settings() | {
            "replication_factor": 3,
            "rpc_secret": self.rpc_secret,
            "rpc_bind_addr": f"127.0.0.1:{self.rpc_port}",
            "rpc_public_addr": f"127.0.0.1:{self.public_port}",
            "bootstrap_peers": peers,
        }

    def cli(self, *args: str) -> str:
        command = [sys.executable, "-m", "granary.cli", "-c", str(self.config), *args]
        return subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def node_id(self) -> str:
        return self.cli("node", "id").strip().split("@")[0]


class Cluster:
    """Storage nodes (one zone each) and gateways; sums their CPU and memory."""

    def __init__(
        self,
        root: Path,
        credentials: tuple[str, str],
        storage: int,
        *,
        gateways: int = 0,
        public_ports: list[int] | None = None,
        settings: dict[str, object] | None = None,
    ) -> None:
        secret = secrets.token_hex(32)
        self.storage = storage
        self.nodes: list[ClusterNode] = []
        for index in range(storage + gateways):
            public = public_ports[index] if public_ports else None
            first = self.nodes[0].public_port if self.nodes else None
            self.nodes.append(
                ClusterNode(
                    root / f"n{index}",
                    credentials,
                    secret,
                    bootstrap=first,
                    public_port=public,
                    settings=settings,
                )
            )

    @property
    def pid(self) -> int:
        return self.nodes[0].pid

    def start(self, timeout: float = 60.0) -> None:
        """Start every node, apply a layout (zone dcN for storage node N) and wait
        until every node has it and sees all the others."""
        for node in self.nodes:
            node.start()
        admin = self.nodes[0]
        for index, node in enumerate(self.nodes):
            role = ("-c", "1G") if index < self.storage else ("-g",)
            admin.cli(
                "layout",
                "assign",
                "-z",
                f"dc{min(index, self.storage - 1) + 1}",
                *role,
                node.node_id(),
            )
        admin.cli("layout", "apply", "--version", "1")
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Wait until every node has a layout and sees all the others up."""
        deadline = time.monotonic() + timeout
        while not all(self._ready(node) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster is not up")
            time.sleep(0.5)

    def _ready(self, node: ClusterNode) -> bool:
        status = json.loads(node.cli("status", "--json"))
        up = sum(peer["up"] for peer in status["nodes"])
        return status["layout_version"] >= 1 and up == len(self.nodes)

    def cpu_seconds(self) -> float:
        return sum(node.cpu_seconds() for node in self.nodes)

    def memory(self) -> dict[str, int]:
        totals = {"VmRSS": 0, "VmHWM": 0}
        for node in self.nodes:
            for name, value in node.memory().items():
                totals[name] += value
        return totals

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
