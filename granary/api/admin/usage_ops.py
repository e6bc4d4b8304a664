"""Usage and redundancy in the admin API: `granary stats` and `bucket info`.

Routes (added to the admin app, under the admin token):
  GET /v1/stats   cluster totals, whether it is fully redundant, each bucket's usage

A bucket's usage is the largest of the figures its read nodes keep
(model/usage.py): one bounded RPC per node and per 1,000 buckets, nothing
scanned. Unreachable nodes are skipped; a bucket none of whose nodes answered
has `null` figures and counts in `buckets_unknown`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator

from granary.api.admin.cluster_ops import ClusterAdmin
from granary.api.admin.redundancy import Redundancy
from granary.model.access import Access
from granary.model.usage import BucketUsage, ClusterUsage

Route = tuple[str, re.Pattern, Callable[..., Awaitable[object]]]
FIELDS = ("objects", "bytes", "unfinished_uploads")


def buckets(access: Access) -> Iterator[tuple[str, bytes]]:
    """(label, id) of every bucket: its global name, else its id in hex; sorted by label."""
    names = access.bucket_names()
    found = [
        (names.get(bucket.id, bucket.id.hex()), bucket.id)
        for bucket in access.model.buckets.local_range(b"")
        if bucket.params is not None
    ]
    return iter(sorted(found))


def usage_json(usage: BucketUsage | None) -> dict[str, int | None]:
    if usage is None:
        return dict.fromkeys(FIELDS)
    return {**usage.to_json()}


class UsageOps:
    def __init__(
        self,
        access: Access,
        usage: ClusterUsage,
        cluster: ClusterAdmin,
        redundancy: Redundancy,
    ) -> None:
        self.access = access
        self.usage = usage
        self.cluster = cluster
        self.redundancy = redundancy

    def routes(self) -> list[Route]:
        return [("GET", re.compile(r"^/v1/stats$"), self.stats)]

    async def bucket_usage(self, bucket_id: bytes) -> dict[str, int | None]:
        return usage_json(await self.usage.bucket(bucket_id))

    async def stats(self, request) -> dict:
        listed = list(buckets(self.access))
        found = await self.usage.buckets(bucket_id for _, bucket_id in listed)
        health = self.cluster.health()
        totals = dict.fromkeys(FIELDS, 0)
        for counted in found.values():
            if counted is not None:
                for name, value in counted.to_json().items():
                    totals[name] += value
        missing = self.redundancy.missing()
        return {
            "nodes": health.storage_nodes,
            "nodes_up": health.storage_nodes_up,
            "known_nodes": 1 + len(self.cluster.peering.peer_status()),
            "connected_nodes": len(self.cluster.up_nodes()),
            "partitions": health.partitions,
            "partitions_all_ok": health.partitions_all_up,
            "partitions_quorum": health.partitions_with_quorum,
            "status": health.status,
            "fully_redundant": not missing,
            "not_fully_redundant_because": missing,
            "buckets": len(listed),
            "buckets_unknown": sum(counted is None for counted in found.values()),
            **totals,
            "bucket_usage": [
                {"name": label, "id": bucket_id.hex(), **usage_json(found[bucket_id])}
                for label, bucket_id in listed
            ],
        }
