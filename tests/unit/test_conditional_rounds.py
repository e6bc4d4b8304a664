"""Conditional writes (`Objects.write_version_if`) on three real tables, each on its
own LMDB database, through a stand-in network that delays every message and drops
some: racing compare-and-set chains never fork.

The stand-in network is not the cluster's RPC: it calls the target table's acceptor
methods directly after a random delay, and loses a tenth of the messages (either
way), as a node that dies or a link that breaks would. Everything else is the code
a node runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from granary.db import open_db
from granary.model.conditions import ConditionFailed, WriteCondition
from granary.model.object import COMPLETE, INLINE, ObjectMeta, ObjectTable, ObjectVersion
from granary.model.objects import Objects, new_uuid
from granary.table.paxos import Ballot
from granary.table.table import ConditionalConflict, PhaseAnswer, Table

BUCKET = b"b" * 16
NODES = [bytes([n]) * 32 for n in range(3)]


class OneSet:
    """Every partition on the three nodes."""

    full_copy = False

    def write_sets(self, partition: int) -> list[list[bytes]]:
        return [list(NODES)]

    def write_guard(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class LossyNetwork:
    """Stand-in for the RPC: a random delay each way, a tenth of the messages lost."""

    def __init__(self, tables: dict[bytes, Table], rng: random.Random) -> None:
        self.tables = tables
        self.rng = rng

    async def _hop(self) -> None:
        await asyncio.sleep(self.rng.random() * 0.004)
        if self.rng.random() < 0.1:
            raise OSError("message lost")

    async def prepare(
        self, node: bytes, table: str, pk: bytes, sk: bytes, ballot: Ballot
    ) -> PhaseAnswer:
        await self._hop()
        answer = await self.tables[node].local_prepare(pk, sk, ballot)
        await self._hop()
        return answer

    async def accept(
        self, node: bytes, table: str, pk: bytes, sk: bytes, ballot: Ballot, row: bytes | None
    ) -> PhaseAnswer:
        await self._hop()
        answer = await self.tables[node].local_accept(pk, sk, ballot, row)
        await self._hop()
        return answer


async def swap(objects: Objects, expected: str | None, value: str) -> str:
    """One conditional PUT of `value`: a create (expected None) or If-Match `expected`."""
    uuid = new_uuid()
    condition = (
        WriteCondition(if_none_match=frozenset({"*"}))
        if expected is None
        else WriteCondition(if_match=frozenset({expected}))
    )
    meta = ObjectMeta(1, value, [])

    def build(ts: int) -> ObjectVersion:
        return ObjectVersion(uuid, ts, COMPLETE, kind=INLINE, meta=meta, inline=b"x")

    try:
        await objects.write_version_if(BUCKET, "k", build, condition)
    except ConditionFailed:
        return "refused"
    except ConditionalConflict as conflict:
        return "unknown" if conflict.maybe_applied else "conflict"
    return "ok"


async def race(tmp_path: Path, seed: int, rounds: int) -> dict[str, list[str]]:
    """Rounds of 2-4 concurrent swaps through random nodes; the values each
    predecessor was replaced by, as acknowledged."""
    rng = random.Random(seed)
    tables = {
        node: Table(
            ObjectTable(), open_db("lmdb", tmp_path / f"n{node[0]}", fsync=False), OneSet(), node
        )
        for node in NODES
    }
    network = LossyNetwork(tables, rng)
    nodes = []
    for table in tables.values():
        table.peers = network
        nodes.append(Objects(SimpleNamespace(db=table.db, objects=table)))
    assert await swap(nodes[0], None, "v0") == "ok"
    replaced: dict[str, list[str]] = {}
    seen = ["v0"]  # acknowledged, or of unknown outcome
    acknowledged = ["v0"]
    written = 0
    for _ in range(rounds):
        # Mostly the last acknowledged value: one of unknown outcome may have been
        # withdrawn (a refusal after sending), and a chain stuck on it goes nowhere.
        expected = acknowledged[-1] if rng.random() < 0.8 else rng.choice(seen)
        batch = []
        for _ in range(rng.randint(2, 4)):
            written += 1
            value = f"v{written}"
            batch.append((value, asyncio.ensure_future(swap(rng.choice(nodes), expected, value))))
        for value, outcome in batch:
            result = await outcome
            if result == "ok":
                replaced.setdefault(expected, []).append(value)
                acknowledged.append(value)
            if result in ("ok", "unknown"):
                seen.append(value)
    for table in tables.values():
        table.db.close()
    return replaced


@pytest.mark.parametrize("seed", range(6))
def test_racing_swaps_through_a_lossy_network_never_fork(tmp_path, seed):
    replaced = asyncio.run(race(tmp_path, seed, 150))
    assert sum(map(len, replaced.values())) > 50  # the swaps mostly get through
    forks = {before: after for before, after in replaced.items() if len(after) > 1}
    assert not forks
