"""The lifecycle worker: applies each bucket's lifecycle rules (granary/model/lifecycle.py).

A bucket's object rows all live in one partition; the bucket's rules are run
by the first node of that partition in the current layout, so each bucket has
one runner and no node scans everything. A pass walks the bucket's rows in
bounded pages and its multipart uploads, and acts through the same paths as S3
requests: expiring a current version writes a delete marker (or, unversioned,
deletes it), a version is deleted by id (`Objects.delete_version`, which
refuses one that object lock protects), an upload is aborted. Each pass starts
over from the first key; progress shows in `granary worker info lifecycle`.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from dataclasses import asdict, dataclass
from typing import Any

from granary.model.access import Access
from granary.model.lifecycle import DeleteVersion, Expire, Lifecycle, actions_for, upload_due
from granary.model.lock import LockRefused
from granary.model.multipart import Multipart
from granary.model.objects import Objects
from granary.model.usage import bucket_partition
from granary.table.quorum import QuorumError
from granary.table.table import ConditionalConflict
from granary.telemetry.metrics import Counter
from granary.util.background import WorkerState, WorkerStatus
from granary.util.time import now_ms
from granary.util.waits import sleep_until

log = logging.getLogger("granary.lifecycle")

ACTIONS = Counter(
    "granary_lifecycle_actions",
    "What the lifecycle worker did: expired, version_deleted, upload_aborted, refused_by_lock",
    labels=("action",),
)
ROWS_SCANNED = Counter("granary_lifecycle_rows_scanned", "Object rows the lifecycle worker read")
EXPIRED = ACTIONS.labels("expired")
VERSION_DELETED = ACTIONS.labels("version_deleted")
UPLOAD_ABORTED = ACTIONS.labels("upload_aborted")
REFUSED_BY_LOCK = ACTIONS.labels("refused_by_lock")


@dataclass
class LifecycleProgress:
    passes: int = 0
    buckets: int = 0
    """Buckets with rules that this node ran in its last pass."""
    rows_scanned: int = 0
    expired: int = 0
    versions_deleted: int = 0
    uploads_aborted: int = 0
    refused_by_lock: int = 0
    last_pass_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class LifecycleWorker:
    def __init__(
        self,
        access: Access,
        objects: Objects,
        multipart: Multipart,
        *,
        day_ms: int,
        interval_secs: float,
        local_node: bytes,
        status: WorkerStatus | None = None,
    ) -> None:
        self.access = access
        self.objects = objects
        self.multipart = multipart
        self.day_ms = day_ms
        self.interval_secs = interval_secs
        self.local_node = local_node
        self.progress = LifecycleProgress()
        self.status = status or WorkerStatus("lifecycle")
        self.status.detail = self.progress.to_json

    def runs_bucket(self, bucket_id: bytes) -> bool:
        """Whether this node is the one that applies the bucket's rules."""
        replication = self.objects.model.objects.replication
        holders = replication.storage_nodes(bucket_partition(bucket_id))
        return bool(holders) and holders[0] == self.local_node

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.status.state = WorkerState.RUNNING
            try:
                await self.run_pass()
            except (QuorumError, ConditionalConflict, OSError) as error:
                log.warning("lifecycle pass cut short: %s", error)
                self.status.failed(error)
            self.status.state = WorkerState.IDLE
            await sleep_until(stop, self.interval_secs)

    async def run_pass(self) -> None:
        """Apply every bucket's rules once (those buckets this node runs)."""
        buckets = 0
        for _, bucket in self.access.list_buckets():
            params = bucket.params
            rules = None if params is None else params.lifecycle.value
            if rules and self.runs_bucket(bucket.id):
                buckets += 1
                await self._apply(bucket.id, rules)
        self.progress.passes += 1
        self.progress.buckets = buckets
        self.progress.last_pass_ms = now_ms()

    async def _apply(self, bucket_id: bytes, rules: Lifecycle) -> None:
        table = self.objects.model.objects
        async with aclosing(table.range_entries(bucket_id, filter="versions")) as rows:
            async for row in rows:
                self.progress.rows_scanned += 1
                ROWS_SCANNED.inc()
                for action in actions_for(row, rules, now_ms(), self.day_ms):
                    await self._act(bucket_id, row.key, action)
        if any(rule.abort_upload_days is not None for rule in rules):
            await self._abort_uploads(bucket_id, rules)

    async def _act(self, bucket_id: bytes, key: str, action: Expire | DeleteVersion) -> None:
        if isinstance(action, Expire):
            await self.objects.delete(bucket_id, key)
            self.progress.expired += 1
            EXPIRED.inc()
            return
        try:
            await self.objects.delete_version(bucket_id, key, action.version.version_id)
        except LockRefused:
            self.progress.refused_by_lock += 1
            REFUSED_BY_LOCK.inc()
            return
        self.progress.versions_deleted += 1
        VERSION_DELETED.inc()

    async def _abort_uploads(self, bucket_id: bytes, rules: Lifecycle) -> None:
        index = self.objects.model.upload_index
        async with aclosing(index.range_entries(bucket_id, filter="in_progress")) as listed:
            async for entry in listed:
                if not upload_due(rules, entry.key, entry.timestamp, now_ms(), self.day_ms):
                    continue
                upload = await self.multipart.get(entry.upload_id)
                if upload is not None:
                    await self.multipart.abort(upload)
                    self.progress.uploads_aborted += 1
                    UPLOAD_ABORTED.inc()
