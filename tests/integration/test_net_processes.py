"""A NetApp in another process; and measurements over loopback TLS (reported, not asserted).

Run with `-s` to see the numbers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import pytest
import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from granary.net.messages import BACKGROUND
from granary.net.rpc import NetApp

SECRET = bytes(range(32))
MiB = 1024 * 1024

# The other node: echo, sink (counts a streamed body) and source (streams N bytes).
CHILD = """
import asyncio, sys
import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from granary.net.rpc import NetApp

async def echo(sender, body, stream):
    return body, None

async def sink(sender, body, stream):
    total = 0
    async for chunk in stream:
        total += len(chunk)
    return str(total).encode(), None

async def source(sender, body, stream):
    block = bytes(1 << 20)
    async def blocks():
        for _ in range(int(body) >> 20):
            yield block
    return b"", blocks()

async def main():
    app = NetApp(Ed25519PrivateKey.generate(), bytes.fromhex(sys.argv[1]),
                 bind=("127.0.0.1", 0), public_addr=None)
    for name, handler in (("echo", echo), ("sink", sink), ("source", source)):
        app.endpoint(name, handler)
    await app.start()
    print(app.port, app.node_id.hex(), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await app.stop()

uvloop.run(main())
"""


class Child:
    def __init__(self, process: subprocess.Popen[str], port: int, node_id: bytes) -> None:
        self.process = process
        self.port = port
        self.node_id = node_id


@pytest.fixture(scope="module")
def child() -> Iterator[Child]:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, SECRET.hex()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdin is not None
    port, node_id = process.stdout.readline().split()
    try:
        yield Child(process, int(port), bytes.fromhex(node_id))
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(scenario: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario, 60))


async def connected(child: Child) -> NetApp:
    app = NetApp(Ed25519PrivateKey.generate(), SECRET, bind=("127.0.0.1", 0), public_addr=None)
    await app.start()
    assert await app.connect(child.node_id, "127.0.0.1", child.port) == child.node_id
    return app


async def upload(total: int) -> AsyncIterator[bytes]:
    block = os.urandom(MiB)
    for _ in range(total // MiB):
        yield block


def test_calls_and_streams_to_another_process(child: Child) -> None:
    async def scenario() -> None:
        app = await connected(child)
        try:
            assert await app.call(child.node_id, "echo", b"over there") == (b"over there", None)
            reply, _ = await app.call(child.node_id, "sink", b"", stream=upload(16 * MiB))
            assert reply == str(16 * MiB).encode()
            _, stream = await app.call(child.node_id, "source", str(16 * MiB).encode())
            assert stream is not None
            assert sum([len(chunk) async for chunk in stream]) == 16 * MiB
        finally:
            await app.stop()

    run(scenario())


def test_measure_small_calls_and_bulk_streams(child: Child) -> None:
    sequential, concurrent, in_flight, bulk = 2000, 10_000, 32, 256 * MiB
    results: dict[str, float] = {}

    async def scenario() -> None:
        app = await connected(child)
        try:
            body = b"x" * 60
            start = time.perf_counter()
            for _ in range(sequential):
                await app.call(child.node_id, "echo", body)
            results["latency_us"] = (time.perf_counter() - start) / sequential * 1e6

            slots = asyncio.Semaphore(in_flight)

            async def one() -> None:
                async with slots:
                    await app.call(child.node_id, "echo", body)

            start, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one() for _ in range(concurrent)))
            results["calls_per_s"] = concurrent / (time.perf_counter() - start)
            results["caller_cpu_us_per_call"] = (time.process_time() - cpu) / concurrent * 1e6

            start, cpu = time.perf_counter(), time.process_time()
            await app.call(child.node_id, "sink", b"", priority=BACKGROUND, stream=upload(bulk))
            seconds = time.perf_counter() - start
            results["upload_MB_per_s"] = bulk / seconds / 1e6
            results["sender_cpu_s_per_GiB"] = (time.process_time() - cpu) * (1 << 30) / bulk

            start, cpu = time.perf_counter(), time.process_time()
            _, stream = await app.call(child.node_id, "source", str(bulk).encode())
            assert stream is not None
            async for _ in stream:
                pass
            results["download_MB_per_s"] = bulk / (time.perf_counter() - start) / 1e6
            results["receiver_cpu_s_per_GiB"] = (time.process_time() - cpu) * (1 << 30) / bulk
        finally:
            await app.stop()

    run(scenario())
    print("\nnet over loopback TLS 1.3:", ", ".join(f"{k}={v:.2f}" for k, v in results.items()))
