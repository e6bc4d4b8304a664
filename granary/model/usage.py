"""Per-bucket usage: objects, their bytes, unfinished multipart uploads.

Kept as counters, never computed by scanning (Garage's `object_counter`
idea). Each node counts its own replica of a bucket's rows: the object table
gives objects (keys whose newest complete version holds data) and their
bytes, the upload index gives the uploads in progress. The counters change in
the same transaction as the rows (see table/counters.py for how, and for the
one-time recount of rows written before they existed).

The cluster's figure for a bucket is the largest of the figures of the nodes
its partition is read from, field by field (what Garage does): a replica
that missed a write counts less, never more, once anti-entropy has run. A
node that does not answer is skipped; when none answers the figure is
unknown. A request names at most `BUCKETS_PER_CALL` buckets and its reply
holds three numbers per bucket: nothing grows with the number of objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import msgspec

from granary.model.mpu_index import UploadIndexEntry, upload_usage
from granary.model.object import Object, object_usage
from granary.net.messages import HIGH
from granary.table.counters import RowCounters
from granary.table.keys import partition_hash, partition_of
from granary.table.replication import distinct_nodes
from granary.table.table import Table

log = logging.getLogger("granary.usage")

USAGE_ENDPOINT = "model/usage"
BUCKETS_PER_CALL = 1000
CALL_TIMEOUT_SECS = 5.0


class BucketUsage(msgspec.Struct, array_like=True, frozen=True):
    objects: int = 0
    bytes: int = 0
    unfinished_uploads: int = 0

    def max(self, other: BucketUsage) -> BucketUsage:
        return BucketUsage(
            max(self.objects, other.objects),
            max(self.bytes, other.bytes),
            max(self.unfinished_uploads, other.unfinished_uploads),
        )

    def to_json(self) -> dict[str, int]:
        return {
            "objects": self.objects,
            "bytes": self.bytes,
            "unfinished_uploads": self.unfinished_uploads,
        }


class UsageRequest(msgspec.Struct, array_like=True):
    buckets: list[bytes]


_decode_request = msgspec.msgpack.Decoder(UsageRequest).decode
_decode_reply = msgspec.msgpack.Decoder(list[BucketUsage]).decode


def bucket_partition(bucket_id: bytes) -> int:
    """The partition of a bucket's objects and uploads (both keyed by its id)."""
    return partition_of(partition_hash(bucket_id))


class Usage:
    """This node's counters (built in every process: every process writes rows).

    The tables' schemas must be told of them (`Model` does) to keep them in step.
    """

    def __init__(self, objects: Table[Object], uploads: Table[UploadIndexEntry]) -> None:
        self.objects = RowCounters(objects, ("objects", "bytes"), object_usage)
        self.uploads = RowCounters(uploads, ("unfinished_uploads",), upload_usage)
        self.replication = objects.replication
        self.local_node = objects.local_node

    def local(self, bucket_id: bytes) -> BucketUsage:
        objects, size = self.objects.get(bucket_id)
        (uploads,) = self.uploads.get(bucket_id)
        return BucketUsage(objects, size, uploads)

    def stores(self, bucket_id: bytes) -> bool:
        """Whether this node holds the bucket's partition in an active layout version."""
        sets = self.replication.write_sets(bucket_partition(bucket_id))
        return any(self.local_node in nodes for nodes in sets)

    def recounted(self) -> bool:
        return self.objects.recounted() and self.uploads.recounted()

    async def recount(self, stop: asyncio.Event | None = None) -> None:
        """Count the rows written before the counters existed (once; see table/counters.py)."""
        await self.objects.recount(stop)
        await self.uploads.recount(stop)


class ClusterUsage:
    """Serves this node's counters to the others, and asks the others for theirs."""

    def __init__(self, usage: Usage, net) -> None:
        self.usage = usage
        self.net = net
        net.endpoint(USAGE_ENDPOINT, self._serve)

    async def _serve(self, from_node: bytes, body: bytes, stream) -> tuple[bytes, None]:
        request = _decode_request(body)
        if len(request.buckets) > BUCKETS_PER_CALL:
            raise ValueError(f"at most {BUCKETS_PER_CALL} buckets per usage request")
        return msgspec.msgpack.encode([self.usage.local(b) for b in request.buckets]), None

    async def buckets(self, bucket_ids: Iterable[bytes]) -> dict[bytes, BucketUsage | None]:
        """Each bucket's usage: the largest figures of its read nodes that answered.

        None for a bucket none of whose read nodes answered.
        """
        wanted: dict[bytes, list[bytes]] = {}
        by_node: dict[bytes, list[bytes]] = {}
        replication = self.usage.replication
        for bucket_id in dict.fromkeys(bucket_ids):
            nodes = distinct_nodes([replication.read_nodes(bucket_partition(bucket_id))])
            wanted[bucket_id] = nodes
            for node in nodes:
                by_node.setdefault(node, []).append(bucket_id)
        calls = [
            (node, ids[first : first + BUCKETS_PER_CALL])
            for node, ids in by_node.items()
            for first in range(0, len(ids), BUCKETS_PER_CALL)
        ]
        answers = await asyncio.gather(
            *(self._ask(node, ids) for node, ids in calls), return_exceptions=True
        )
        found: dict[bytes, BucketUsage | None] = dict.fromkeys(wanted)
        for (node, ids), answer in zip(calls, answers, strict=True):
            if isinstance(answer, BaseException):
                log.info(
                    "usage of %d bucket(s) not read from %s: %s", len(ids), node.hex()[:16], answer
                )
                continue
            for bucket_id, counted in zip(ids, answer, strict=True):
                known = found[bucket_id]
                found[bucket_id] = counted if known is None else known.max(counted)
        return found

    async def bucket(self, bucket_id: bytes) -> BucketUsage | None:
        return (await self.buckets([bucket_id]))[bucket_id]

    async def _ask(self, node: bytes, bucket_ids: list[bytes]) -> list[BucketUsage]:
        if node == self.usage.local_node:
            return [self.usage.local(b) for b in bucket_ids]
        reply, _ = await self.net.call(
            node,
            USAGE_ENDPOINT,
            msgspec.msgpack.encode(UsageRequest(bucket_ids)),
            priority=HIGH,
            timeout=CALL_TIMEOUT_SECS,
        )
        answer = _decode_reply(reply)
        if len(answer) != len(bucket_ids):
            raise ValueError(f"{node.hex()[:16]} answered {len(answer)} of {len(bucket_ids)}")
        return answer
