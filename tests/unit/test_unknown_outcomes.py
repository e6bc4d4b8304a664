"""An upload whose conditional commit reached only some replicas, then failed (or its
process died), is settled by one round before anything is released: its version is
committed if the round sees it, deleted at every stamp it was sent with otherwise.
Without that, the copy a minority holds would spread by anti-entropy after the blocks
it names were released.

Three replicas and a gateway (a node with no role), each with real object and
version tables on its own LMDB database, joined by a stand-in network that calls the
target table's methods directly and drops the phases a test cuts (a node that does
not answer). Everything else is the code a node runs: `Upload`, the inflight
records, `Objects.recover_interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from block_fakes import FixedDistances, FixedReplication, block_managers

from granary.block.holders import BlockHolders
from granary.model.buckets import VERSIONING_ENABLED, Bucket, BucketParams
from granary.model.conditions import WriteCondition
from granary.model.object import COMPLETE, DELETED, INLINE, Object, ObjectMeta, ObjectVersion
from granary.model.objects import Objects, Upload, new_uuid
from granary.model.store import Model
from granary.model.version import VersionHeader
from granary.table.paxos import Ballot
from granary.table.table import ConditionalConflict, PhaseAnswer, Table
from granary.util.crdt import Deletable, Lww, LwwMap

BUCKET = b"b" * 16
KEY = "k"
REPLICAS = [bytes([n]) * 32 for n in range(3)]
GATEWAY = b"g" * 32
CREATE = WriteCondition(if_none_match=frozenset({"*"}))


class ThreeReplicas:
    """Every partition on the three replicas, quorums of two."""

    full_copy = False

    def write_quorum(self, nodes: int) -> int:
        return 2

    def read_quorum(self, nodes: int) -> int:
        return 2

    def write_sets(self, partition: int) -> list[list[bytes]]:
        return [list(REPLICAS)]

    def read_nodes(self, partition: int) -> list[bytes]:
        return list(REPLICAS)

    def write_guard(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class NoPeers:
    """The block network: no test here moves a block."""

    def endpoint(self, name: str, handler: object) -> None:
        pass


class CutNetwork:
    """Stand-in for the RPC: delivers everything but the rounds' phases a test cuts."""

    def __init__(self) -> None:
        self.tables: dict[tuple[bytes, str], Table] = {}
        self.cut: dict[str, set[bytes]] = {"prepare": set(), "accept": set()}
        self.after_accept: Callable[[bytes], Awaitable[None]] | None = None

    def _reach(self, phase: str, node: bytes) -> None:
        if node in self.cut[phase]:
            raise OSError(f"{phase} to node {node[0]} lost")

    async def merge(self, node: bytes, table: str, entries: list[bytes]) -> None:
        target = self.tables[node, table]
        await target.local_merge([target.decode(raw) for raw in entries])

    async def get(self, node: bytes, table: str, pk: bytes, sk: bytes) -> bytes | None:
        row = self.tables[node, table].local_get(pk, sk)
        return None if row is None else self.tables[node, table].encode(row)

    async def prepare(
        self, node: bytes, table: str, pk: bytes, sk: bytes, ballot: Ballot
    ) -> PhaseAnswer:
        self._reach("prepare", node)
        return await self.tables[node, table].local_prepare(pk, sk, ballot)

    async def accept(
        self, node: bytes, table: str, pk: bytes, sk: bytes, ballot: Ballot, row: bytes | None
    ) -> PhaseAnswer:
        self._reach("accept", node)
        answer = await self.tables[node, table].local_accept(pk, sk, ballot, row)
        if self.after_accept is not None:
            await self.after_accept(node)
        return answer


@contextlib.contextmanager
def cluster(path: Path, versioning: str = "") -> Iterator[tuple[CutNetwork, dict[bytes, Objects]]]:
    """The replicas' and the gateway's `Objects` over their own models, their tables
    reachable through the network; the bucket lives, with that versioning state."""
    network = CutNetwork()
    nodes = {}
    with block_managers(path) as make, ThreadPoolExecutor(1) as executor:
        for node in [*REPLICAS, GATEWAY]:
            blocks = make(
                NoPeers(),
                BlockHolders(FixedReplication(REPLICAS)),
                FixedDistances(REPLICAS),
                node,
                gc_grace_ms=0,
            )
            model = Model(blocks.db, blocks, ThreeReplicas(), ThreeReplicas(), node, executor)
            for table in model.tables:
                table.peers = network
                network.tables[node, table.name] = table
            params = BucketParams(0, LwwMap(), versioning=Lww(1, versioning))
            live = Bucket(BUCKET, Deletable(deleted=False, value=params))
            asyncio.run(model.buckets.local_merge([live]))
            nodes[node] = Objects(model)
        yield network, nodes


async def failed_create(gateway: Objects) -> Upload:
    """A conditional PUT through the gateway whose commit gives up after sending its
    version."""
    upload = await gateway.begin_upload(BUCKET, KEY)
    with pytest.raises(ConditionalConflict) as conflict:
        await upload.complete(ObjectMeta(5, "etag", []), b"block", CREATE)
    assert conflict.value.maybe_applied
    return upload


def copies(objects: Objects, uuid: bytes) -> list[int]:
    """The states of version `uuid`'s copies in a node's own row."""
    row = objects.model.objects.local_get(BUCKET, KEY.encode())
    return [] if row is None else [v.state for v in row.versions if v.uuid == uuid]


def released(objects: Objects, uuid: bytes) -> bool:
    """Whether a node holds the version table's tombstone of `uuid` (its blocks released)."""
    header = objects.model.versions.local_get(uuid, b"")
    return isinstance(header, VersionHeader) and header.deleted


async def anti_entropy(nodes: dict[bytes, Objects]) -> None:
    """What anti-entropy does in the end: every replica merges every other's row."""
    rows: list[Object] = [
        row
        for node in REPLICAS
        if (row := nodes[node].model.objects.local_get(BUCKET, KEY.encode())) is not None
    ]
    for node in REPLICAS:
        await nodes[node].model.objects.local_merge(rows)


@pytest.mark.parametrize("versioning", ["", VERSIONING_ENABLED])
def test_a_version_only_a_minority_took_is_deleted_everywhere_it_was_sent(tmp_path, versioning):
    async def run(network: CutNetwork, nodes: dict[bytes, Objects]) -> None:
        gateway = nodes[GATEWAY]
        # Replica 2 takes every Accept and promises nothing: each attempt of the round
        # sends the version anew, at its own stamp, never seeing the copies before.
        network.cut = {"prepare": {REPLICAS[2]}, "accept": {REPLICAS[0], REPLICAS[1]}}
        uuid = (await failed_create(gateway)).uuid
        [(_, record)] = gateway.interrupted_uploads()
        assert len(record.stamps) > 1
        kept = copies(nodes[REPLICAS[2]], uuid).count(COMPLETE)
        # A versioned bucket keeps every copy (the last may still be on its way); an
        # unversioned one the newest.
        assert kept >= len(record.stamps) - 1 if versioning else kept == 1

        # The gateway restarts while replica 2 is away: the round cannot see the copy.
        network.cut = {"prepare": {REPLICAS[2]}, "accept": {REPLICAS[2]}}
        await gateway.recover_interrupted(gateway.interrupted_uploads())
        assert gateway.interrupted_uploads() == []
        network.cut = {"prepare": set(), "accept": set()}
        await anti_entropy(nodes)
        for node in REPLICAS:
            row = nodes[node].model.objects.local_get(BUCKET, KEY.encode())
            assert row is not None and row.current() is None
            assert COMPLETE not in copies(nodes[node], uuid)
            assert DELETED in copies(nodes[node], uuid)
        assert sum(released(nodes[node], uuid) for node in REPLICAS) >= 2

    with cluster(tmp_path, versioning) as (network, nodes):
        asyncio.run(run(network, nodes))


def test_a_version_the_round_sees_is_committed_and_kept(tmp_path):
    async def run(network: CutNetwork, nodes: dict[bytes, Objects]) -> None:
        gateway = nodes[GATEWAY]
        network.cut["accept"] = {REPLICAS[0], REPLICAS[1]}
        upload = await failed_create(gateway)
        uuid = upload.uuid
        # The last Accept may still be on its way to replica 2 (a round that got there
        # first would rightly find nothing to keep): let it arrive.
        for _ in range(100):
            if COMPLETE in copies(nodes[REPLICAS[2]], uuid):
                break
            await asyncio.sleep(0.01)
        assert COMPLETE in copies(nodes[REPLICAS[2]], uuid)

        # The request's abort settles it in the background; replica 0 does not answer
        # the Prepare, so the promises (a majority) include replica 2's copy.
        network.cut = {"prepare": {REPLICAS[0]}, "accept": set()}
        await upload.abort()
        await asyncio.gather(*gateway._settling)
        assert gateway.interrupted_uploads() == []

        def holds_it(node: bytes) -> bool:
            row = nodes[node].model.objects.local_get(BUCKET, KEY.encode())
            current = None if row is None else row.current()
            return current is not None and current.uuid == uuid

        assert sum(map(holds_it, REPLICAS)) >= 2  # the round's Accept quorum
        await anti_entropy(nodes)
        assert all(map(holds_it, REPLICAS))
        assert not any(released(nodes[node], uuid) for node in REPLICAS)

    with cluster(tmp_path) as (network, nodes):
        asyncio.run(run(network, nodes))


def test_a_refusal_after_the_version_was_sent_withdraws_it_and_is_not_a_412(tmp_path):
    """The first attempt's Accept reaches replica 2 only; before the next attempt
    another write lands on replicas 0 and 1, so the create's condition now fails.
    The copy on replica 2 may already have been read, and its stamp (its ballot's
    counter) is newer than the other write's: the client is told the outcome is
    unknown (not 412, "no effect"), and the copy is withdrawn everywhere."""

    async def run(network: CutNetwork, nodes: dict[bytes, Objects]) -> None:
        uuid = new_uuid()
        meta = ObjectMeta(4, "ours", [])
        theirs = ObjectVersion(new_uuid(), 1, COMPLETE, kind=INLINE, meta=meta, inline=b"them")

        def build(ts: int) -> ObjectVersion:
            return ObjectVersion(uuid, ts, COMPLETE, kind=INLINE, meta=meta, inline=b"ours")

        async def someone_else_writes(node: bytes) -> None:
            network.after_accept = None
            for replica in REPLICAS[:2]:
                await nodes[replica].model.objects.local_merge([Object(BUCKET, KEY, [theirs])])
            network.cut = {"prepare": {REPLICAS[2]}, "accept": set()}

        network.cut = {"prepare": {REPLICAS[2]}, "accept": {REPLICAS[0], REPLICAS[1]}}
        network.after_accept = someone_else_writes
        with pytest.raises(ConditionalConflict) as unknown:
            await nodes[GATEWAY].write_version_if(BUCKET, KEY, build, CREATE)
        assert unknown.value.maybe_applied
        await anti_entropy(nodes)
        for node in REPLICAS:
            row = nodes[node].model.objects.local_get(BUCKET, KEY.encode())
            assert row is not None
            current = row.current()
            assert current is not None and current.uuid == theirs.uuid
            assert COMPLETE not in copies(nodes[node], uuid)

    with cluster(tmp_path) as (network, nodes):
        asyncio.run(run(network, nodes))
