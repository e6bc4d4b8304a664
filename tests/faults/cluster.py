"""A cluster of real `granary server` processes on 127.0.0.1, every link behind a proxy.

Node i listens for RPC on its own port but announces its proxy as
rpc_public_addr (and the others bootstrap through node 0's proxy), so all
node-to-node traffic crosses the proxies and `Network` can cut, heal and
slow any link. Clients talk S3 to the nodes directly.

A node may run several S3 processes (`s3_processes`): each node starts in a
process group of its own, signals go to the whole group (a SIGKILL or SIGSTOP
strikes the node, not just its primary), and the proxies know a node's links
by the process group of the process that dialed them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from granary.cli.admin_client import AdminClient, AdminClientError
from tests.ports import free_port

from .netproxy import Network

RPC_SECRET = "fa" * 32
ADMIN_TOKEN = "fault-suite-admin-token"
CREDENTIALS = ("GK" + "fa17" * 6, "5ec7" * 16)
ZONES = ["dc1", "dc1", "dc2", "dc2", "dc3"]
SPARE_ZONE = "dc3"
CAPACITY = "1G"
BLOCK_SIZE = 16 * 1024
SETTINGS = {
    "replication_factor": 3,
    "consistency_mode": "consistent",
    "ping_interval_secs": 0.5,
    "anti_entropy_interval_secs": 2,
    "block_gc_delay_secs": 1,
    "block_size": str(BLOCK_SIZE),
}


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


class StartFailed(RuntimeError):
    """A node process exited, or never listened, when started."""


def _toml(value: object) -> str:
    return json.dumps(value)  # strings, numbers and lists of strings read the same in TOML


@dataclass
class Node:
    name: str
    root: Path
    zone: str
    bootstrap: list[str]
    clock_offset_ms: int = 0
    rpc_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    s3_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    capacity: str = CAPACITY  # its role's, once it has one
    s3_processes: int = 1
    process: subprocess.Popen | None = None
    paused: bool = False
    node_id: str = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def config_file(self) -> Path:
        return self.root / "granary.toml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def write_config(self) -> None:
        settings = {
            **SETTINGS,
            "metadata_dir": str(self.root / "meta"),
            "data_dir": str(self.data_dir),
            "rpc_secret": RPC_SECRET,
            "rpc_bind_addr": f"127.0.0.1:{self.rpc_port}",
            "rpc_public_addr": f"127.0.0.1:{self.proxy_port}",
            "bootstrap_peers": self.bootstrap,
            "clock_offset_ms": self.clock_offset_ms,
            "s3_processes": self.s3_processes,
        }
        lines = [f"{key} = {_toml(value)}" for key, value in settings.items()]
        lines += ["[s3_api]", f'api_bind_addr = "127.0.0.1:{self.s3_port}"']
        lines += ["[admin]", f'api_bind_addr = "127.0.0.1:{self.admin_port}"']
        lines += [f"admin_token = {_toml(ADMIN_TOKEN)}"]
        self.config_file.write_text("\n".join(lines) + "\n")

    def spawn(self) -> int:
        """Start the server process; return its pid (see `wait_ready`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        env = dict(
            os.environ,
            GRANARY_ACCESS_KEY_ID=CREDENTIALS[0],
            GRANARY_SECRET_ACCESS_KEY=CREDENTIALS[1],
        )
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "granary.cli", "-c", str(self.config_file), "server"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                process_group=0,  # its own group, which its S3 workers join
            )
        self.paused = False
        return self.process.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the server listens for S3 and admin requests; StartFailed if not."""
        deadline = time.monotonic() + timeout
        for port in (self.s3_port, self.admin_port):
            while True:
                if self.process.poll() is not None:
                    last = (self.log().strip().splitlines() or ["(empty log)"])[-1]
                    self.process = None
                    raise StartFailed(f"{self.name} exited at start: {last}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise StartFailed(f"{self.name} did not listen within {timeout}s") from None
                    time.sleep(0.05)

    def signal(self, signum: int) -> None:
        """Signal every process of the node (its group: the primary's pid)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def worker_pids(self) -> list[int]:
        """The node's S3 worker processes (the primary's children)."""
        if self.process is None:
            return []
        pid = self.process.pid
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        if self.process is None:
            return
        self.signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None
        self.paused = False

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM: the server finishes its requests and stops (SIGKILL after `grace`)."""
        if self.process is None:
            return
        if self.paused:
            self.resume()
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def cli(self, *args: str) -> str:
        command = [sys.executable, "-m", "granary.cli", "-c", str(self.config_file), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"granary {' '.join(args)} on {self.name}: {done.stderr.strip()}")
        return done.stdout

    def admin(self, method: str, path: str, body: dict | None = None):
        return AdminClient("127.0.0.1", self.admin_port, ADMIN_TOKEN).call(method, path, body)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


class FaultCluster:
    """Five storage nodes in three zones, plus `spare` nodes started without a role."""

    def __init__(self, root: Path, *, spare: int = 0, s3_processes: int = 1) -> None:
        self.root = root
        self.nodes: list[Node] = []
        for index in range(len(ZONES) + spare):
            zone = ZONES[index] if index < len(ZONES) else SPARE_ZONE
            bootstrap = [f"127.0.0.1:{self.nodes[0].proxy_port}"] if index else []
            name = f"n{index + 1}"
            node = Node(name, root / name, zone, bootstrap, s3_processes=s3_processes)
            self.nodes.append(node)
        self.network = Network({n.name: (n.proxy_port, n.rpc_port) for n in self.nodes})
        self.start_failures: dict[str, list[str]] = {}  # node name -> why it did not start

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    @property
    def storage(self) -> list[Node]:
        return self.nodes[: len(ZONES)]

    def start(self) -> None:
        """Start every node, then lay out the storage nodes (version 1)."""
        self.network.start()
        self.start_node(self.nodes[0])  # up first: the others' first dial reaches it
        for node in self.nodes[1:]:
            self.network.pids[node.spawn()] = node.name
        for node in self.nodes:
            node.wait_ready()
            node.node_id = node.admin("GET", "/v1/node/id")["node"].split("@")[0]
        first = self.nodes[0]
        everyone = {node.node_id for node in self.nodes}
        wait_until(lambda: self._up_seen_by(first) >= everyone, 60, "n1 to meet every node")
        for zone in sorted({node.zone for node in self.storage}):
            zone_nodes = [node.node_id for node in self.storage if node.zone == zone]
            body = {"nodes": zone_nodes, "zone": zone, "capacity": CAPACITY}
            first.admin("POST", "/v1/layout/assign", {**body, "tags": [], "gateway": False})
        first.admin("POST", "/v1/layout/apply", {"version": 1})
        self.wait_layout_agreed(60)

    def start_node(self, node: Node) -> None:
        self.network.pids[node.spawn()] = node.name
        node.wait_ready()

    def revive(self, node: Node) -> bool:
        """Start a stopped node; a node that fails to start is recorded and left down."""
        try:
            self.start_node(node)
        except StartFailed as failure:
            self.start_failures.setdefault(node.name, []).append(str(failure))
            return False
        return True

    def _forget_pid(self, node: Node) -> None:
        if node.process is not None:
            self.network.pids.pop(node.process.pid, None)

    def kill(self, node: Node) -> None:
        self._forget_pid(node)
        node.kill()

    def stop_node(self, node: Node) -> None:
        self._forget_pid(node)
        node.stop()

    def restart(self, node: Node, *, clock_offset_ms: int) -> bool:
        """Stop a node gracefully and start it again with its clock shifted."""
        self.stop_node(node)
        node.clock_offset_ms = clock_offset_ms
        return self.revive(node)

    @property
    def running(self) -> list[Node]:
        return [node for node in self.nodes if node.running]

    def heal(self) -> None:
        """Undo every fault: links up, paused nodes resumed, stopped nodes started."""
        self.network.heal()
        for node in self.nodes:
            if node.paused:
                node.resume()
            if not node.running:
                self.kill(node)
                self.revive(node)

    def layout(self, node: Node) -> dict:
        return node.admin("GET", "/v1/layout")

    def wait_layout_agreed(self, timeout: float) -> int:
        """Wait until every running node has the same layout version; return it."""
        versions: set[int] = set()

        def agreed() -> bool:
            versions.clear()
            for node in self.running:
                try:
                    versions.add(self.layout(node)["version"])
                except AdminClientError:
                    return False
            return len(versions) == 1 and min(versions) > 0

        wait_until(agreed, timeout, "every node to have the same layout")
        return versions.pop()

    def _up_seen_by(self, node: Node) -> set[str]:
        """The ids of the nodes `node` sees up (none if it does not answer)."""
        try:
            status = node.admin("GET", "/v1/status")
        except AdminClientError:
            return set()
        return {n["id"] for n in status["nodes"] if n["up"]}

    def wait_healthy(self, timeout: float) -> None:
        """Wait until the running nodes agree on the layout and each sees all the others
        up (all the storage nodes unless some could not be restarted)."""
        running = {node.node_id for node in self.running}

        def healthy() -> bool:
            if not all(self._up_seen_by(node) >= running for node in self.running):
                return False
            try:
                return len({self.layout(node)["version"] for node in self.running}) == 1
            except AdminClientError:
                return False

        wait_until(healthy, timeout, "the running nodes to see each other and agree")

    def stop(self) -> None:
        for node in self.nodes:
            self.kill(node)
        self.network.stop()
