"""The granary server under test: a child process with its own folder and ports."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_credentials() -> tuple[str, str]:
    """A fresh access key id (GK + 24 hex) and secret (64 hex)."""
    return "GK" + secrets.token_hex(12), secrets.token_hex(32)


class ServerProcess:
    """Start, watch (/proc) and stop one `granary server`."""

    def __init__(self, root: Path, credentials: tuple[str, str], cpus: set[int] | None) -> None:
        self.root = root
        self.key_id, self.secret = credentials
        self.cpus = cpus
        self.s3_port = free_port()
        self.admin_port = free_port()
        self.log_path = root / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "granary.cli",
            "--data",
            str(self.root / "data"),
            "server",
            "--s3-address",
            f"127.0.0.1:{self.s3_port}",
            "--admin-address",
            f"127.0.0.1:{self.admin_port}",
        ]

    def _pin(self) -> None:
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)

    def start(self, timeout: float = 60.0) -> None:
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

    def _wait_listening(self, timeout: float) -> None:
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
        """utime + stime of the server, all its threads."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS), in bytes."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024
        return values

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
