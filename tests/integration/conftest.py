"""Real `granary server` processes on 127.0.0.1, and clients pointed at them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials

from tests.ports import free_port

ACCESS_KEY = "GK0123456789abcdef01234567"
SECRET_KEY = "a" * 16 + "0123456789abcdef" * 3


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s")


@dataclass
class GranaryServer:
    """One server process with its own data folder and ports."""

    root: Path
    config_text: str | None = None
    s3_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    wrapper: list[str] = field(default_factory=list)
    """A command the server runs under (e.g. in a namespace of its own)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables the server gets beside the test's own."""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def data_dir(self) -> Path:
        """The block directory of a server started from a config (`node_config`).

        Without one, `--data` names a folder for both metadata and blocks.
        """
        return self.root / "data"

    def command(self) -> list[str]:
        base = [sys.executable, "-m", "granary.cli"]
        if self.config_text is not None:
            config_file = self.root / "granary.toml"
            config_file.write_text(self.config_text)
            return [*base, "-c", str(config_file), "server"]
        return [
            *base,
            "--data",
            str(self.data_dir),
            "server",
            "--s3-address",
            f"127.0.0.1:{self.s3_port}",
            "--admin-address",
            f"127.0.0.1:{self.admin_port}",
        ]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        base = [sys.executable, "-m", "granary.cli"]
        if self.config_text is not None:
            base += ["-c", str(self.root / "granary.toml")]
        else:
            base += ["--data", str(self.data_dir)]
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, check=check, timeout=60
        )

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            GRANARY_ACCESS_KEY_ID=ACCESS_KEY,
            GRANARY_SECRET_ACCESS_KEY=SECRET_KEY,
            **self.env,
        )
        self.log_path = self.root / "server.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.process = subprocess.Popen(
            [*self.wrapper, *self.command()], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        wait_for_port(self.s3_port, self.process)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def client(self, **config):
        return s3_client(self.endpoint, **config)


def s3_client(
    endpoint: str, *, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY, **config
):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=BotoConfig(retries={"max_attempts": 1}, **config),
    )


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[GranaryServer]:
    """A server shared by the tests that do not restart or kill it."""
    instance = GranaryServer(tmp_path_factory.mktemp("granary"))
    instance.start()
    yield instance
    code = instance.stop()
    assert code == 0, f"server did not stop cleanly:\n{instance.log()[-3000:]}"
    assert "Traceback" not in instance.log(), instance.log()[-5000:]


@pytest.fixture
def own_server(tmp_path) -> Iterator[GranaryServer]:
    """A server for one test, which may kill and restart it."""
    instance = GranaryServer(tmp_path / "node")
    yield instance
    if instance.process is not None:
        instance.kill()


@pytest.fixture
def s3(server):
    return server.client()


_bucket_counter = iter(range(1_000_000))


@pytest.fixture
def bucket(s3) -> str:
    name = f"test-bucket-{os.getpid()}-{next(_bucket_counter)}"
    s3.create_bucket(Bucket=name)
    return name


def node_config(server: GranaryServer, **extra: object) -> str:
    """A TOML config for `server` with its ports and folders, plus `extra` top-level keys."""
    lines = [
        f'metadata_dir = "{server.root / "meta"}"',
        f'data_dir = "{server.root / "data"}"',
        'rpc_bind_addr = "127.0.0.1:0"',
        *(f"{key} = {value!r}".replace("'", '"') for key, value in extra.items()),
        "[s3_api]",
        f'api_bind_addr = "127.0.0.1:{server.s3_port}"',
        "[admin]",
        f'api_bind_addr = "127.0.0.1:{server.admin_port}"',
    ]
    return "\n".join(lines) + "\n"


def start_configured(server: GranaryServer, **extra: object):
    """Start a one-node server from a config file (plus `extra` keys); return a client."""
    server.config_text = node_config(server, **extra)
    server.start()
    return server.client()


def node_pids(server: GranaryServer) -> list[int]:
    """The node's processes: the server (its primary) first, then the S3 workers its
    main thread started."""
    assert server.process is not None
    primary = server.process.pid
    children = Path(f"/proc/{primary}/task/{primary}/children").read_text().split()
    return [primary, *sorted(int(pid) for pid in children)]


def block_files(data_dir: Path) -> list[Path]:
    """The block files stored under a data directory."""
    return [
        p
        for p in data_dir.rglob("*")
        if p.is_file() and p.name != "granary-marker" and not p.name.startswith(".")
    ]


def signed_request_headers(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> dict[str, str]:
    """SigV4 headers for a request a test sends by hand (e.g. over a raw socket).

    The payload is signed when `body` is given, else sent as UNSIGNED-PAYLOAD.
    """
    headers = {"host": urlsplit(url).netloc, **(headers or {})}
    request = AWSRequest(method=method, url=url, headers=headers, data=body or b"")
    request.context["payload_signing_enabled"] = body is not None
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def raw_request(server, method: str, path: str, body: bytes) -> tuple[bytes, bytes]:
    """(head, body) of a signed request to send by hand, in pieces."""
    headers = signed_request_headers(
        method, f"{server.endpoint}{path}", {"Content-Length": str(len(body))}, body
    )
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + "\r\n").encode(), body


CLUSTER_SECRET = "c1" * 32


@dataclass
class Cluster:
    """Several real nodes on 127.0.0.1 sharing an rpc_secret, bootstrapped on the first."""

    nodes: list[GranaryServer]
    rpc_ports: list[int]

    def node_ids(self) -> list[str]:
        return [n.cli("node", "id").stdout.strip().split("@")[0] for n in self.nodes]

    def apply_layout(self, zones: list[str], capacity: str = "1G") -> None:
        ids = self.node_ids()
        admin = self.nodes[0]
        for node_id, zone in zip(ids, zones, strict=True):
            admin.cli("layout", "assign", "-z", zone, "-c", capacity, node_id)
        admin.cli("layout", "apply", "--version", "1")
        for node in self.nodes:
            wait_until(lambda n=node: layout_version(n) >= 1, what="layout version 1")

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.kill()


def layout_version(node: GranaryServer) -> int:
    return json.loads(node.cli("layout", "show", "--json", check=False).stdout or "{}").get(
        "version", -1
    )


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    if not predicate():
        raise AssertionError(f"timed out waiting for {what}")


def cluster_config(
    node: GranaryServer, rpc_port: int, bootstrap: list[str], host: str = "127.0.0.1", **extra
) -> str:
    """A cluster node's config: its RPC address `host:rpc_port`, `bootstrap` peers."""
    settings = {
        "replication_factor": 3,
        "rpc_secret": CLUSTER_SECRET,
        "ping_interval_secs": 0.5,
        "anti_entropy_interval_secs": 3,
        "block_gc_delay_secs": 1,
        **extra,
    }
    text = node_config(node, **settings).replace(
        'rpc_bind_addr = "127.0.0.1:0"', f'rpc_bind_addr = "{host}:{rpc_port}"'
    )
    peers = ", ".join(f'"{peer}"' for peer in bootstrap)
    head = f'rpc_public_addr = "{host}:{rpc_port}"\nbootstrap_peers = [{peers}]\n'
    return head + text


def start_cluster(
    root: Path,
    count: int,
    zones: list[str],
    per_node: dict[int, dict] | None = None,
    config_tail: str = "",
    **extra,
) -> Cluster:
    """Start `count` nodes; `per_node` adds config keys to some of them (by index),
    `config_tail` ends every node's config (tables, arrays of tables)."""
    rpc_ports = [free_port() for _ in range(count)]
    nodes = []
    for index in range(count):
        node = GranaryServer(root / f"node{index}")
        bootstrap = [f"127.0.0.1:{rpc_ports[0]}"] if index else []
        settings = {**extra, **(per_node or {}).get(index, {})}
        node.config_text = cluster_config(node, rpc_ports[index], bootstrap, **settings)
        node.config_text += config_tail
        nodes.append(node)
    cluster = Cluster(nodes, rpc_ports)
    try:
        for node in nodes:
            node.start()
        cluster.apply_layout(zones)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_gateway_cluster(root: Path, admin_lines: str = "") -> Cluster:
    """Three storage nodes in zones dc1-dc3 and a gateway (node 3) that stores
    nothing; `admin_lines` go into every node's `[admin]` section."""
    ports = [free_port() for _ in range(4)]
    nodes = []
    for index in range(4):
        node = GranaryServer(root / f"node{index}")
        bootstrap = [f"127.0.0.1:{ports[0]}"] if index else []
        node.config_text = cluster_config(node, ports[index], bootstrap) + admin_lines
        nodes.append(node)
    cluster = Cluster(nodes, ports)
    try:
        for node in nodes:
            node.start()
        ids = cluster.node_ids()
        admin = nodes[0]
        for index in range(3):
            admin.cli("layout", "assign", "-z", f"dc{index + 1}", "-c", "1G", ids[index])
        admin.cli("layout", "assign", "-z", "dc1", "-g", ids[3])
        admin.cli("layout", "apply", "--version", "1")
        for node in nodes:
            wait_until(lambda n=node: layout_version(n) >= 1, what="layout version 1")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def admin_call(node: GranaryServer, method: str, path: str, body: dict | None = None):
    """Call a node's admin API in-process, found the way the CLI finds it."""
    from granary.cli.admin_client import AdminClient
    from granary.config import load_config

    config = load_config(node.root / "granary.toml")
    return AdminClient.locate(config, node.data_dir).call(method, path, body)
