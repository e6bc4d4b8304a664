"""The granary server under test: a child process with its own folder, config file and ports."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from proc_watch import ProcessWatch, children_of

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_credentials() -> tuple[str, str]:
    """A fresh access key id (GK + 24 hex) and secret (64 hex)."""
    return "GK" + secrets.token_hex(12), secrets.token_hex(32)


def toml_value(value: object) -> str:
    """A string, number, boolean or list of those, written as TOML (JSON's syntax for these)."""
    return json.dumps(value)


class ServerProcess:
    """Start, watch (/proc) and stop one `granary server`, configured by a file.

    The default access key comes from GRANARY_ACCESS_KEY_ID / GRANARY_SECRET_ACCESS_KEY.
    """

    def __init__(
        self,
        root: Path,
        credentials: tuple[str, str],
        cpus: set[int] | None,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        self.root = root
        self.key_id, self.secret = credentials
        self.cpus = cpus
        self.settings = dict(settings or {})
        self.s3_port = free_port()
        self.admin_port = free_port()
        self.config = root / "granary.toml"
        self.log_path = root / "server.log"
        self.process: subprocess.Popen | None = None
        self.watch: ProcessWatch | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def boto3_client(self, **config: object):
        """A boto3 S3 client of this server's key (`config`: botocore Config options)."""
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
            config=BotoConfig(**config),
        )

    def top_level_settings(self) -> dict[str, object]:
        """The config file's top-level keys before `settings`: a single node, folders in `root`."""
        return {
            "metadata_dir": str(self.root / "meta"),
            "data_dir": str(self.root / "data"),
            "replication_factor": 1,
            "rpc_bind_addr": "127.0.0.1:0",
        }

    def config_text(self) -> str:
        top_level = self.top_level_settings() | self.settings
        lines = [f"{name} = {toml_value(value)}" for name, value in top_level.items()]
        lines += [
            "[s3_api]",
            f'api_bind_addr = "127.0.0.1:{self.s3_port}"',
            "[admin]",
            f'api_bind_addr = "127.0.0.1:{self.admin_port}"',
        ]
        return "\n".join(lines) + "\n"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "granary.cli", "-c", str(self.config), "server"]

    def _pin(self) -> None:
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.config_text())
        env = dict(
            os.environ,
            GRANARY_ACCESS_KEY_ID=self.key_id,
            GRANARY_SECRET_ACCESS_KEY=self.secret,
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                preexec_fn=self._pin,
            )
        self._wait_listening(timeout)
        # The primary opens its S3 port once its workers serve: they exist by now.
        self.watch = ProcessWatch([self.process.pid, *children_of(self.process.pid)])

    def _wait_listening(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.s3_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server not listening after {timeout}s:\n{self.log()}")

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def cpu_seconds(self) -> float:
        """utime + stime of the server, all its processes and threads."""
        assert self.watch is not None
        return self.watch.cpu_seconds()

    def counter(self, name: str) -> float | None:
        """The node's unlabelled metric `name` from its `/metrics`, or None if absent."""
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(f"{name} "):
                    return float(line.split()[1])
        return None

    def memory(self) -> dict[str, int]:
        """VmRSS, VmHWM (peak RSS) and Pss over the node's processes, in bytes."""
        assert self.watch is not None
        return self.watch.memory()

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
