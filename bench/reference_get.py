"""The GET limit of this machine for this load generator: a server that does nothing
but hand a file's bytes from the page cache to the socket.

Raw loopback (two threads moving bytes with `send`/`recv_into`) overstates what
any HTTP GET can reach here: the load generator parses HTTP and hands the body
over in Python, and on two cores it has one of them. This stand-in answers
every request with the same file, sent with `sendfile` (no copy into the
process, no signature, no lookup, no verification) from one thread per
connection, and is pinned like the server under test; the same client runs the
same GET phase against it. Its speed is what loopback and the page cache allow
a GET here, and the bench's GET goal is a fraction of it.

Run as a script it serves: ``reference_get.py FILE`` prints its port, then
serves until killed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_MAX_HEAD = 64 << 10
_CHUNK = 1 << 20


def _read_head(conn: socket.socket, pending: bytes) -> tuple[bytes, bytes] | None:
    """(request head, bytes after it), or None when the client closed."""
    while b"\r\n\r\n" not in pending:
        if len(pending) > _MAX_HEAD:
            return None
        data = conn.recv(_MAX_HEAD)
        if not data:
            return None
        pending += data
    head, _, rest = pending.partition(b"\r\n\r\n")
    return head, rest


def _wanted_size(head: bytes, size: int) -> int:
    """The byte count a request asks for: its path's last segment (a number), at most
    the file's size."""
    target = head.split(b" ", 2)[1].split(b"?")[0]
    last = target.rsplit(b"/", 1)[-1]
    return min(int(last), size) if last.isdigit() else size


def _serve_connection(conn: socket.socket, path: str, file_size: int) -> None:
    """Answer each request on `conn` with the first bytes of the file, as many as its
    path names (a request's body is not read: the load generator's GETs have none)."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: binary/octet-stream\r\n\r\n"
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn, open(path, "rb") as file:
        pending = b""
        while (request := _read_head(conn, pending)) is not None:
            pending = request[1]
            size = _wanted_size(request[0], file_size)
            conn.sendall(head % size)
            offset = 0
            while offset < size:
                sent = os.sendfile(conn.fileno(), file.fileno(), offset, size - offset)
                if sent == 0:
                    return
                offset += sent


def serve(path: str) -> None:
    size = os.path.getsize(path)
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        print(listener.getsockname()[1], flush=True)
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_serve_connection, args=(conn, path, size), daemon=True).start()


@contextmanager
def reference_server(path: Path, cpus: set[int] | None) -> Iterator[tuple[str, int]]:
    """Serve `path` from a child process pinned to `cpus`; yields its endpoint URL and pid."""
    child = subprocess.Popen(
        [sys.executable, __file__, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        yield f"http://127.0.0.1:{port}", child.pid
    finally:
        child.kill()
        child.wait()


def write_file(path: Path, size: int) -> None:
    """`size` random bytes, read once so that they are in the page cache."""
    with path.open("wb") as file:
        for offset in range(0, size, _CHUNK):
            file.write(os.urandom(min(_CHUNK, size - offset)))
    with path.open("rb") as file:
        while file.read(_CHUNK):
            pass


def add_reference_ratios(result_set: dict, reference: list[dict]) -> None:
    """Set `vs_reference` on every GET phase: its MB/s over the reference server's in
    the same phase (size and concurrency)."""
    theirs = {(p["size"], p["concurrency"]): p["mb_per_s"] for p in reference}
    for phase in result_set["throughput"]:
        if phase["name"] == "GET":
            rate = theirs.get((phase["size"], phase["concurrency"]))
            phase["vs_reference"] = phase["mb_per_s"] / rate if rate else None


if __name__ == "__main__":
    serve(sys.argv[1])
