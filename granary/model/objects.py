"""Object operations over the tables: uploads, reads, copies and deletes.

An upload's rows are written in an order that never leaves data unaccounted
for: the version row first, then for each block its block_ref (which counts
the reference) before the block itself. An upload that fails is aborted, and
one interrupted by a crash is found in the local `inflight` tree at the next
start and aborted then, so its blocks are released and collected.

A version may reach some replicas and not others before its commit fails or
the process dies: from those, anti-entropy would spread it. So each stamp a
version is sent with is recorded in its inflight record first, and an upload
whose commit has an unknown outcome is settled before anything is released:
one round on the row commits the version if the round sees it, and otherwise
deletes it at every recorded stamp (`settle_version`), so no copy left on a
minority can come back without its blocks.

A version that makes an object exist is kept only if its bucket outlives
the write (`confirm_bucket`): DeleteBucket may be racing it
(granary/model/access.py explains the protocol).

Whether a new version is a null one (S3's `null` version id) or a versioned
one is decided where it is committed, from the bucket's versioning state as
this node knows it then (`write_version`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing, suppress
from typing import cast

import msgspec
from msgspec.structs import replace

from granary.model.access import BucketGone, bucket_outlives_write
from granary.model.block_ref import BlockRef
from granary.model.buckets import VERSIONING_ENABLED
from granary.model.conditions import ConditionFailed, WriteCondition
from granary.model.lock import NO_RETENTION, LockConfig, LockRefused, check_deletion
from granary.model.object import (
    ABORTED,
    BLOCKS,
    COMPLETE,
    DELETE_MARKER,
    DELETED,
    INLINE,
    Object,
    ObjectMeta,
    ObjectVersion,
    Tags,
    VersionSettings,
)
from granary.model.read_ahead import ReadAhead
from granary.model.store import Model
from granary.model.version import VersionBlock, tombstone
from granary.table.quorum import QuorumError
from granary.table.scan import RangePage
from granary.table.table import ConditionalConflict, Decision, Round
from granary.telemetry import tracing
from granary.util.crdt import Lww
from granary.util.file_region import FileRegion
from granary.util.time import next_timestamp, now_ms

log = logging.getLogger("granary.model")

READ_AHEAD_BLOCKS = 2
"""The most blocks a GET fetches beyond the one it sends, for a reader that keeps up."""
MAX_ROW_BYTES = 4 << 20
"""A new versioned version is refused once its key's row is this large: every read
and write of a key moves its whole row, and an RPC frame holds 16 MiB (a version
takes ~165 bytes plus its metadata: 25,000 versions, 1,900 with 2 KiB of metadata;
a version deleted by id stays as a 45-byte entry)."""
READ_AHEAD_WARMUP_BYTES = 5 << 20
"""A GET fetches this much on demand before it reads ahead (granary/model/read_ahead.py).

More than a client that reads nothing takes at once, or a stalled reader asks
for the next block as soon as these buffers take the last one, and gets one read
ahead: the socket's send buffer (up to 4 MiB of memory: 3.9-4.2 MB of data on
loopback), the client's receive buffer (0.13 MB at 64 KiB SO_RCVBUF) and the
transport's (up to 256 KiB before it pauses) take up to ~4.6 MB.
"""
READ_AHEAD_PATIENCE = 0.5
"""Seconds a GET's reader may take over one block and keep its read-ahead.

A slower reader is limited by its network, not by storage: its blocks are then
fetched as it asks for them, and one that stalls keeps only the block it is sent.
"""


def _blocks_within(blocks: Sequence[tuple[VersionBlock, int]], size: int) -> int:
    """How many of the first `blocks` fit in `size` bytes."""
    total = 0
    for count, (block, _) in enumerate(blocks):
        total += block.size
        if total > size:
            return count
    return len(blocks)


class RowFull(Exception):
    """A key has too many versions for another one (`MAX_ROW_BYTES`)."""

    def __init__(self, key: str, versions: int, size: int) -> None:
        super().__init__(
            f"the key {key!r} has {versions} versions ({size} bytes of metadata, limit "
            f"{MAX_ROW_BYTES}): delete noncurrent versions, or let a lifecycle rule expire them"
        )


class InflightUpload(msgspec.Struct, array_like=True):
    """What a crash-time recovery needs to abort an upload."""

    bucket_id: bytes
    key: str
    timestamp: int
    is_part: bool
    upload_id: bytes = b""
    process: int = 0  # which of the node's processes runs it (0: the primary)
    stamps: list[int] = msgspec.field(default_factory=list)
    """The timestamps the version was sent to replicas with (records written before
    0.7 have none, whether it was sent or not)."""


InterruptedUploads = list[tuple[bytes, InflightUpload]]
"""(version uuid, upload) of the uploads in flight when this node last stopped."""


def withdrawn(uuid: bytes, stamps: Sequence[int]) -> list[ObjectVersion]:
    """Version `uuid` Deleted at each stamp it was sent with: Deleted wins every merge,
    so no copy a minority of the replicas took can come back. Not null: a deleted
    null version would prune the older null ones."""
    return [ObjectVersion(uuid, stamp, DELETED, kind=BLOCKS, null=False) for stamp in stamps]


def _newest_other(row: Object | None, uuid: bytes) -> int | None:
    """The newest timestamp in a row, other than version `uuid`'s."""
    if row is None:
        return None
    return max((v.timestamp for v in row.versions if v.uuid != uuid), default=None)


def _settled(
    build: Callable[[int], ObjectVersion], settings: VersionSettings | None
) -> Callable[[int], ObjectVersion]:
    """`build`, its versions starting with `settings` (stamped with their timestamp)."""
    if settings is None:
        return build

    def settled(ts: int) -> ObjectVersion:
        version = build(ts)
        if settings.tags:
            version = replace(version, tags=Lww(ts, settings.tags))
        if settings.retention is not None:
            version = replace(version, retention=replace(settings.retention, ts=ts))
        if settings.legal_hold:
            version = replace(version, legal_hold=Lww(ts, True))
        return version

    return settled


def _cut(data: bytes | FileRegion, low: int, high: int) -> bytes | FileRegion:
    return data.slice(low, high) if isinstance(data, FileRegion) else data[low:high]


def new_uuid() -> bytes:
    return secrets.token_bytes(16)


class Upload:
    """One object version (or multipart part) being written."""

    def __init__(
        self,
        objects: Objects,
        bucket_id: bytes,
        key: str,
        uuid: bytes,
        timestamp: int,
        part: bool,
        upload_id: bytes = b"",
    ) -> None:
        self.objects = objects
        self.bucket_id = bucket_id
        self.key = key
        self.uuid = uuid
        self.timestamp = timestamp
        self.is_part = part
        self.upload_id = upload_id
        self.completed = False
        self.outcome_unknown = False  # a commit that failed after sending the version
        self.stamps: list[int] = []
        self._completion: asyncio.Future | None = None
        self._data_span: tracing.AnySpan | None = None
        self._blocks_stored = 0
        self._bytes_stored = 0

    async def store_block(
        self, part_number: int, offset: int, block_id: bytes, data: bytes | bytearray
    ) -> None:
        """Record the block in the version, count the reference, then store it.

        In that order an interruption at any point leaves nothing the
        version's deletion would not release.
        """
        model = self.objects.model
        if self._data_span is None:  # one span for the upload's blocks, not one each
            self._data_span = tracing.span("blocks.write")
        with tracing.suppressed():
            await model.versions.insert(
                VersionBlock(self.uuid, part_number, offset, block_id, len(data))
            )
            await model.block_refs.insert(BlockRef(block=block_id, version=self.uuid))
            await model.blocks.put(block_id, data)
        self._blocks_stored += 1
        self._bytes_stored += len(data)

    def _end_data_span(self) -> None:
        span = self._data_span
        if span is not None:
            span.set("blocks", self._blocks_stored)
            span.set("bytes", self._bytes_stored)
            span.end()

    async def complete(
        self,
        meta: ObjectMeta,
        first_block: bytes | None,
        condition: WriteCondition | None = None,
        settings: VersionSettings | None = None,
    ) -> ObjectVersion:
        """Make this version the object's current one (not for parts).

        It takes a fresh timestamp: the write that finishes last wins. Once
        started, the commit (and the check that the bucket outlived it)
        finishes even if the request is cancelled, so an abort can never undo
        an object a client may already have been told of. A commit that failed
        after it sent the version (to too few replicas, or in a round that gave
        up) may still be committed: the upload is then settled (`abort`), and
        released only if the version does not become the object's.
        """
        self._end_data_span()
        build = _settled(
            lambda ts: ObjectVersion(
                self.uuid, ts, COMPLETE, kind=BLOCKS, meta=meta, first_block=first_block
            ),
            settings,
        )
        self._completion = asyncio.ensure_future(self._commit(build, condition))
        return await asyncio.shield(self._completion)

    async def _commit(
        self, build: Callable[[int], ObjectVersion], condition: WriteCondition | None
    ) -> ObjectVersion:
        try:
            version = await self.objects.write_version(
                self.bucket_id, self.key, build, condition, on_send=self._sending
            )
        except Exception:
            # Sent to some replicas (a quorum error, a round that gave up after its
            # Accept): it may yet be committed, or spread from a minority.
            self.outcome_unknown = bool(self.stamps)
            raise
        self.completed = True
        await self.objects.forget_inflight(self.uuid)
        await self.objects.confirm_bucket(self.bucket_id, self.key, version)
        return version

    async def _sending(self, version: ObjectVersion) -> None:
        """Record the stamp `version` is about to be sent with (see the module docstring)."""
        if version.timestamp not in self.stamps:
            self.stamps.append(version.timestamp)
            await self.objects.remember_inflight(self)

    async def finish_part(self) -> None:
        self._end_data_span()
        await self.objects.forget_inflight(self.uuid)

    async def abort(self) -> None:
        """Release what this upload wrote, unless it already became the object; a commit
        of unknown outcome is settled in the background (`Objects.settle_later`)."""
        self._end_data_span()
        if self._completion is not None:
            await asyncio.gather(asyncio.shield(self._completion), return_exceptions=True)
        if self.outcome_unknown:
            self.objects.settle_later(self.uuid, self._inflight())
        elif not self.completed:
            await self.objects.abort_upload(self.uuid, self._inflight())

    def _inflight(self) -> InflightUpload:
        return InflightUpload(
            self.bucket_id,
            self.key,
            self.timestamp,
            self.is_part,
            self.upload_id,
            self.objects.process,
            list(self.stamps),
        )


class Objects:
    def __init__(self, model: Model, *, process: int = 0) -> None:
        self.model = model
        self.process = process  # this process's slot among the node's processes
        self.inflight = model.db.tree("local:inflight_uploads")
        self._encoder = msgspec.msgpack.Encoder()
        self._inflight_decoder = msgspec.msgpack.Decoder(InflightUpload)
        self._settling: set[asyncio.Task[None]] = set()

    # ---- reads -----------------------------------------------------------

    async def get(self, bucket_id: bytes, key: str) -> Object | None:
        return await self.model.objects.get(bucket_id, key.encode())

    async def current(self, bucket_id: bytes, key: str) -> ObjectVersion | None:
        entry = await self.get(bucket_id, key)
        return None if entry is None else entry.current()

    async def version(self, bucket_id: bytes, key: str, version_id: str) -> ObjectVersion | None:
        """The complete version (data or delete marker) S3 names `version_id`."""
        entry = await self.get(bucket_id, key)
        return None if entry is None else entry.find(version_id)

    def _as_bucket_says(
        self, bucket_id: bytes, build: Callable[[int], ObjectVersion]
    ) -> Callable[[int], ObjectVersion]:
        """`build`, its versions made as the bucket's settings say now: null ones
        unless versioning is enabled, and under the default retention of its object
        lock unless the write chose one."""
        null = not self.versioning_enabled(bucket_id)
        lock = self.lock_config(bucket_id)

        def made(ts: int) -> ObjectVersion:
            version = replace(build(ts), null=null)
            if lock is not None and version.is_data and version.retention == NO_RETENTION:
                version = replace(version, retention=lock.retention_for_new(ts))
            return version

        return made

    def versioning_enabled(self, bucket_id: bytes) -> bool:
        """Whether new versions in the bucket are versioned ones (else null ones)."""
        bucket = self.model.buckets.local_get(b"", bucket_id)
        params = None if bucket is None else bucket.params
        return params is not None and params.versioning.value == VERSIONING_ENABLED

    async def blocks_of(self, uuid: bytes) -> list[VersionBlock]:
        """The blocks of a version in (part, offset) order."""
        return [
            row
            async for row in self.model.versions.range_entries(uuid, b"\x00", filter="blocks")
            if isinstance(row, VersionBlock)
        ]

    async def list(
        self, bucket_id: bytes, start: bytes | None, limit: int, row_filter: str = "data"
    ) -> RangePage[Object]:
        """Objects from `start` on that exist (`row_filter` "data"), or that have versions
        to list ("versions").

        One bounded read: the page may hold fewer than `limit` objects while
        the bucket goes on (continue from `next_start`).
        """
        return await self.model.objects.get_range(bucket_id, start, filter=row_filter, limit=limit)

    async def stream_blocks(
        self, blocks: Sequence[VersionBlock], start: int, end: int
    ) -> AsyncGenerator[bytes, None]:
        """The bytes [start, end] (inclusive) of the concatenated `blocks`."""
        async with aclosing(self._stream(blocks, start, end, self._fetch_block)) as chunks:
            async for data in chunks:
                yield cast(bytes, data)  # `_fetch_block` reads bytes

    def stream_for_sending(
        self, blocks: Sequence[VersionBlock], start: int, end: int
    ) -> AsyncGenerator[bytes | FileRegion, None]:
        """As `stream_blocks`, but the blocks this node holds plain come as regions of
        their files, which the HTTP layer sends without reading them into memory."""
        return self._stream(blocks, start, end, self._fetch_for_sending)

    async def _stream(
        self,
        blocks: Sequence[VersionBlock],
        start: int,
        end: int,
        fetch: Callable[[bytes], Awaitable[bytes | FileRegion]],
    ) -> AsyncGenerator[bytes | FileRegion, None]:
        """The bytes [start, end] (inclusive) of the concatenated `blocks`.

        Blocks are fetched ahead of the consumer only as far as it keeps up
        (granary/model/read_ahead.py): a reader stalled for longer than
        READ_AHEAD_PATIENCE keeps only the block it is sent.
        """
        wanted = []
        position = 0
        for block in blocks:
            block_end = position + block.size
            if block_end > start and position <= end:
                wanted.append((block, position))
            position = block_end
        span = tracing.span("blocks.read")
        span.set("blocks", len(wanted))
        sent = 0
        fetches = ReadAhead(
            lambda index: fetch(wanted[index][0].hash),
            len(wanted),
            READ_AHEAD_BLOCKS,
            READ_AHEAD_PATIENCE,
            warmup=_blocks_within(wanted, READ_AHEAD_WARMUP_BYTES),
        )
        try:
            for block, block_start in wanted:
                data = await fetches.next()
                low = max(start - block_start, 0)
                high = min(end - block_start + 1, block.size)
                yield data if (low == 0 and high == len(data)) else _cut(data, low, high)
                sent += high - low
                del data  # not kept while the next block is fetched
        finally:
            fetches.close()
            span.set("bytes", sent)
            span.end()

    async def _fetch_block(self, block_id: bytes) -> bytes:
        with tracing.suppressed():  # the read's span stands for its blocks
            return await self.model.blocks.get(block_id)

    async def _fetch_for_sending(self, block_id: bytes) -> bytes | FileRegion:
        with tracing.suppressed():
            return await self.model.blocks.get_for_sending(block_id)

    # ---- writes ----------------------------------------------------------

    async def write_version(
        self,
        bucket_id: bytes,
        key: str,
        build: Callable[[int], ObjectVersion],
        condition: WriteCondition | None = None,
        on_send: Callable[[ObjectVersion], Awaitable[None]] | None = None,
    ) -> ObjectVersion:
        """Write a new version of an object, newer than every version before it.

        A null version without blocks (inline data, a delete marker) is
        written at once under this node's clock while the row is read, so it
        costs one quorum round trip; only if the row holds a version at least
        as new (a clock behind another node's) is it written again just above
        it (the first copy, older than the newest version, is merged away).
        A complete version with blocks, and any versioned version, is written
        once, after the read: the first would release its blocks if it were
        merged away, even briefly; the second would be listed meanwhile as an
        older version than ones written before it (the fault suite's clock mix
        found that), since versioned versions are never merged away.

        With a `condition`, the check and the write are one round among the
        row's replicas (`write_version_if`). The version is a null one unless
        the bucket's versioning is enabled. `on_send` is awaited with a version
        with blocks before it is sent (`Upload._sending`).
        """
        build = self._as_bucket_says(bucket_id, build)
        if condition is not None:
            return await self.write_version_if(bucket_id, key, build, condition, on_send)
        version = build(now_ms())
        if version.state == COMPLETE and (version.kind == BLOCKS or not version.null):
            row = await self.get(bucket_id, key)
            self._check_room(row, version)
            newest = _newest_other(row, version.uuid)
            if newest is not None and newest >= version.timestamp:
                version = build(next_timestamp(newest))
            if on_send is not None:
                await on_send(version)
            await self.model.objects.insert(Object(bucket_id, key, [version]))
            return version
        existing = asyncio.ensure_future(self.get(bucket_id, key))
        try:
            await self.model.objects.insert(Object(bucket_id, key, [version]))
        finally:
            row = await existing
        newest = _newest_other(row, version.uuid)
        if newest is not None and newest >= version.timestamp:
            version = build(next_timestamp(newest))
            await self.model.objects.insert(Object(bucket_id, key, [version]))
        return version

    async def write_version_if(
        self,
        bucket_id: bytes,
        key: str,
        build: Callable[[int], ObjectVersion],
        condition: WriteCondition,
        on_send: Callable[[ObjectVersion], Awaitable[None]] | None = None,
    ) -> ObjectVersion:
        """Write a complete version only if `condition` holds on the current one, as one
        round (`Table.conditional_update`): two such writes of a key are ordered, so at
        most one create wins and compare-and-set chains never fork.

        Raises ConditionFailed (after writing back the row the refusal saw) or
        ConditionalConflict (the round gave up; `maybe_applied` if the version
        may still be committed). `on_send` is awaited with the version before
        each Accept that carries it.

        A refusal after an earlier attempt sent the version (its Accept reached
        too few replicas, and a later round saw the condition fail) withdraws
        the version, Deleted at every stamp it was sent with, and raises
        ConditionalConflict with `maybe_applied`: a read may already have
        returned the copy a minority took, so the client must not be told the
        write had no effect (412), and the copy must not come back through
        anti-entropy (stamped by its ballot, it may be newer than what won).
        """
        uuid = build(0).uuid
        sent: list[ObjectVersion] = []  # the copies earlier attempts' Accepts carried

        def refused(
            row: Object | None, refusal: ConditionFailed | RowFull
        ) -> Decision[
            Object, ObjectVersion | ConditionFailed | RowFull | ConditionalConflict | None
        ]:
            if not sent:
                return Decision(row, refusal, changes=False)
            gone = Object(bucket_id, key, withdrawn(uuid, [v.timestamp for v in sent]))
            lost = ConditionalConflict(True, f"refused after the version was sent: {refusal}")
            return Decision(gone if row is None else row.merge(gone), lost, changes=True)

        def decide(
            row: Object | None, round_: Round
        ) -> Decision[
            Object, ObjectVersion | ConditionFailed | RowFull | ConditionalConflict | None
        ]:
            counter = round_.counter
            mine = None if row is None else next((v for v in row.versions if v.uuid == uuid), None)
            if mine is not None and mine.state != COMPLETE:
                mine = None
            if mine is None:
                failure = condition.failure(None if row is None else row.current())
                if failure is not None:
                    return refused(row, failure)
                try:
                    self._check_room(row, build(counter))
                except RowFull as full:
                    return refused(row, full)
            newest = _newest_other(row, uuid)
            if newest is not None and newest >= counter:
                return Decision(None, None, changes=False, at_least=newest + 1)
            # Stamped with the ballot's counter (see paxos.on_prepare), never the clock.
            # An earlier attempt's version, the newest the round sees, is committed
            # stamped anew: kept at its older stamp, it could lose a merge to one that
            # a round between the two left on a minority.
            if mine is None:
                added = Object(bucket_id, key, [build(counter)])
            else:  # the copy at the older stamp goes, as in `write_version`
                added = Object(bucket_id, key, [mine.deleted(), replace(mine, timestamp=counter)])
            version = added.versions[-1]
            return Decision(added if row is None else row.merge(added), version, changes=True)

        async def sending(
            decision: Decision[
                Object, ObjectVersion | ConditionFailed | RowFull | ConditionalConflict | None
            ],
        ) -> None:
            if isinstance(decision.result, ObjectVersion):
                sent.append(decision.result)
                if on_send is not None:
                    await on_send(decision.result)

        result = await self.model.objects.conditional_update(
            bucket_id, key.encode(), decide, sending
        )
        if isinstance(result, (ConditionFailed, RowFull, ConditionalConflict)):
            raise result
        assert result is not None  # a round that redoes itself returns no result
        return result

    def _check_room(self, row: Object | None, version: ObjectVersion) -> None:
        """Raise RowFull if `version` would stay in a row already `MAX_ROW_BYTES` large
        (a null version replaces the null one before it: it never grows a row much)."""
        if row is None or version.null:
            return
        size = len(self.model.objects.encode(row))
        if size >= MAX_ROW_BYTES:
            raise RowFull(row.key, len(row.versions), size)

    async def publish_version(
        self,
        bucket_id: bytes,
        key: str,
        build: Callable[[int], ObjectVersion],
        condition: WriteCondition | None = None,
        settings: VersionSettings | None = None,
    ) -> ObjectVersion:
        """Write a version that makes the object exist, and keep it only if its bucket
        does; with `settings`, the version starts with those tags and lock."""
        version = await self.write_version(bucket_id, key, _settled(build, settings), condition)
        await self.confirm_bucket(bucket_id, key, version)
        return version

    async def confirm_bucket(self, bucket_id: bytes, key: str, version: ObjectVersion) -> None:
        """Call once `version`, which makes `key` exist, is written: undo it if its bucket
        is gone.

        If the bucket was deleted while the version was written, the version
        is deleted (releasing its blocks) and BucketGone is raised. An error
        reading the bucket leaves the version in place: the request fails
        without saying whether the write took effect.
        """
        if not await bucket_outlives_write(self.model, bucket_id):
            await self.model.objects.insert(Object(bucket_id, key, [version.deleted()]))
            raise BucketGone(bucket_id.hex())

    async def put_inline(
        self,
        bucket_id: bytes,
        key: str,
        meta: ObjectMeta,
        data: bytes,
        condition: WriteCondition | None = None,
        settings: VersionSettings | None = None,
    ) -> ObjectVersion:
        uuid = new_uuid()
        return await self.publish_version(
            bucket_id,
            key,
            lambda ts: ObjectVersion(uuid, ts, COMPLETE, kind=INLINE, meta=meta, inline=data),
            condition,
            settings,
        )

    async def begin_upload(self, bucket_id: bytes, key: str) -> Upload:
        """Start writing a new version of an object (it gets its timestamp when complete)."""
        upload = Upload(self, bucket_id, key, new_uuid(), now_ms(), part=False)
        await self.remember_inflight(upload)
        return upload

    async def begin_copy(self, bucket_id: bytes, key: str) -> Upload:
        """A new version made of existing blocks."""
        return await self.begin_upload(bucket_id, key)

    async def begin_part(
        self, bucket_id: bytes, key: str, timestamp: int, upload_id: bytes
    ) -> Upload:
        """Start writing one part of a multipart upload."""
        upload = Upload(self, bucket_id, key, new_uuid(), timestamp, part=True, upload_id=upload_id)
        await self.remember_inflight(upload)
        return upload

    async def delete(self, bucket_id: bytes, key: str) -> ObjectVersion:
        """Write a delete marker (deleting a missing key is not an error in S3).

        In an unversioned or suspended bucket it is the null version, replacing
        the one before.
        """
        uuid = new_uuid()
        return await self.write_version(
            bucket_id, key, lambda ts: ObjectVersion(uuid, ts, COMPLETE, kind=DELETE_MARKER)
        )

    async def delete_version(
        self, bucket_id: bytes, key: str, version_id: str, *, bypass_governance: bool = False
    ) -> ObjectVersion | None:
        """Delete one version for good (data or delete marker); the version deleted, or
        None if there was none by that id.

        The version's Deleted state wins every merge, so no stale replica
        brings it back; its blocks are released. In a bucket with object lock
        the deletion is decided in a round (`change_version`) and refused
        (LockRefused) while the version is retained or under a legal hold.
        """
        if self.lock_config(bucket_id) is None:
            found = await self.version(bucket_id, key, version_id)
            if found is not None:
                await self.model.objects.insert(Object(bucket_id, key, [found.deleted()]))
            return found

        def delete(version: ObjectVersion, round_: Round) -> ObjectVersion:
            check_deletion(
                version.retention, version.legal_hold.value, bypass_governance, round_.clock_ms
            )
            return version.deleted()

        try:
            found = await self.change_version(bucket_id, key, version_id, delete)
        except LookupError:
            return None
        return found

    async def change_version(
        self,
        bucket_id: bytes,
        key: str,
        version_id: str,
        change: Callable[[ObjectVersion, Round], ObjectVersion],
    ) -> ObjectVersion:
        """Change one version in a round on the object's row (`Table.conditional_update`),
        so that it sees every change committed before it: `change` gets the version as
        the round merged it and the round, and returns the changed version (a deleted
        one to delete it) or raises LockRefused. Returns the version as it was before
        the change. Raises LookupError if there is no such version (deleted ones
        included, unless this change deleted it in an earlier attempt of the round),
        LockRefused, or ConditionalConflict (the round gave up).
        """

        def decide(
            row: Object | None, round_: Round
        ) -> Decision[Object, ObjectVersion | Exception]:
            found = None if row is None else row.find(version_id)
            if found is None:
                return Decision(row, LookupError(version_id), changes=False)
            try:
                changed = change(found, round_)
            except LockRefused as refusal:
                return Decision(row, refusal, changes=False)
            if changed == found:
                return Decision(row, found, changes=False)
            assert row is not None
            return Decision(row.merge(Object(bucket_id, key, [changed])), found, changes=True)

        result = await self.model.objects.conditional_update(bucket_id, key.encode(), decide)
        if isinstance(result, Exception):
            raise result
        return result

    def lock_config(self, bucket_id: bytes) -> LockConfig | None:
        """The bucket's object lock configuration, None if object lock is off."""
        bucket = self.model.buckets.local_get(b"", bucket_id)
        params = None if bucket is None else bucket.params
        return None if params is None else params.object_lock.value

    async def set_tags(
        self, bucket_id: bytes, key: str, tags: Tags, version_id: str | None = None
    ) -> None:
        """Replace the tag set of the object's current version, or of the version
        `version_id` (LookupError: none).

        Only the version's tag register changes, stamped now: the latest tag
        write wins, and a version superseded meanwhile takes its tags with it.
        """
        found = await self.lookup(bucket_id, key, version_id)
        if found is None or not found.is_data:
            raise LookupError(key)
        tagged = replace(found, tags=found.tags.update(tags, now_ms()))
        await self.model.objects.insert(Object(bucket_id, key, [tagged]))

    async def lookup(
        self, bucket_id: bytes, key: str, version_id: str | None
    ) -> ObjectVersion | None:
        """The version `version_id`, or without one the current version."""
        if version_id is None:
            return await self.current(bucket_id, key)
        return await self.version(bucket_id, key, version_id)

    async def copy(
        self,
        source: ObjectVersion,
        bucket_id: bytes,
        key: str,
        meta: ObjectMeta,
        settings: VersionSettings | None = None,
        condition: WriteCondition | None = None,
    ) -> ObjectVersion:
        """A new version sharing the source's blocks (no data is copied), written if
        `condition` holds on the destination's current version (a round)."""
        if source.kind == INLINE:
            uuid = new_uuid()
            return await self.publish_version(
                bucket_id,
                key,
                lambda ts: ObjectVersion(
                    uuid, ts, COMPLETE, kind=INLINE, meta=meta, inline=source.inline
                ),
                condition,
                settings,
            )
        blocks = await self.blocks_of(source.uuid)
        if sum(b.size for b in blocks) != source.data_meta.size:
            raise LookupError("the source object's data is gone")
        upload = await self.begin_copy(bucket_id, key)
        try:
            await self.link_blocks(upload, blocks)
            return await upload.complete(meta, source.first_block, condition, settings)
        except BaseException:
            await upload.abort()
            raise

    async def link_blocks(self, upload: Upload, blocks: Sequence[VersionBlock]) -> None:
        """Reference existing blocks (at their positions) from `upload`'s version."""
        await self.model.versions.insert_many([replace(b, uuid=upload.uuid) for b in blocks])
        await self.model.block_refs.insert_many(
            [BlockRef(block=b.hash, version=upload.uuid) for b in blocks]
        )

    # ---- crash safety ----------------------------------------------------

    async def remember_inflight(self, upload: Upload) -> None:
        raw = self._encoder.encode(upload._inflight())
        await self.model.db.transact(lambda tx: tx.put(self.inflight, upload.uuid, raw))

    async def forget_inflight(self, uuid: bytes) -> None:
        await self.model.db.transact(lambda tx: tx.delete(self.inflight, uuid))

    async def abort_upload(self, uuid: bytes, record: InflightUpload) -> None:
        """Release what an unfinished upload wrote."""
        if not record.is_part:
            await self.model.objects.insert(
                Object(
                    record.bucket_id, record.key, [ObjectVersion(uuid, record.timestamp, ABORTED)]
                )
            )
        await self.model.versions.insert(tombstone(uuid))
        await self.forget_inflight(uuid)

    def interrupted_uploads(self, process: int | None = None) -> InterruptedUploads:
        """The uploads in flight when this node (or only its process `process`) last stopped.

        Read before the node (or that process) serves again: once it does, the
        tree also holds uploads running now, which recovery must never abort.
        """
        found = ((uuid, self._inflight_decoder.decode(raw)) for uuid, raw in self.inflight.range())
        return [(uuid, r) for uuid, r in found if process is None or r.process == process]

    async def recover_interrupted(self, interrupted: InterruptedUploads) -> int:
        """Abort the `interrupted` uploads (see `interrupted_uploads`) left unfinished;
        settle those whose version was sent (`settle_version`)."""
        for uuid, record in interrupted:
            if record.stamps:
                await self.settle(uuid, record)
                continue
            if await self._was_finished(uuid, record):
                await self.forget_inflight(uuid)
                continue
            log.info(
                "aborting upload interrupted by a restart: %s/%s",
                record.bucket_id.hex(),
                record.key,
            )
            await self.abort_upload(uuid, record)
        return len(interrupted)

    async def settle(self, uuid: bytes, record: InflightUpload) -> None:
        """End an upload whose version was sent with `record.stamps` but whose commit
        has no known outcome: keep the version if `settle_version` commits it (and its
        bucket outlived it), release the upload otherwise."""
        kept = await self.settle_version(record.bucket_id, record.key, uuid, record.stamps)
        if kept is not None:
            await self.forget_inflight(uuid)
            with suppress(BucketGone):  # then deleted with its bucket
                await self.confirm_bucket(record.bucket_id, record.key, kept)
            return
        log.info("releasing an upload never committed: %s/%s", record.bucket_id.hex(), record.key)
        await self.abort_upload(uuid, record)

    def settle_later(self, uuid: bytes, record: InflightUpload) -> None:
        """`settle` in the background; if that fails too, the record stays for the
        recovery at the next start."""

        async def run() -> None:
            try:
                await self.settle(uuid, record)
            except (ConditionalConflict, QuorumError) as error:
                log.warning("upload of %s left to the next start's recovery: %s", record.key, error)

        task = asyncio.ensure_future(run())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def settle_version(
        self, bucket_id: bytes, key: str, uuid: bytes, stamps: Sequence[int]
    ) -> ObjectVersion | None:
        """Decide, in one round on the row, whether version `uuid` (sent with `stamps`,
        its outcome unknown) is committed: the version if the round sees it complete,
        which its Accept then puts on a quorum; None if not, and it is then deleted at
        every stamp, so that a copy a minority holds loses every merge.

        Either answer is final: a round that committed the version had an Accept
        quorum, which shares a node with this round's promises; a later round
        sees what this one committed.
        """

        def decide(row: Object | None, round_: Round) -> Decision[Object, ObjectVersion | None]:
            versions = () if row is None else row.versions
            found = next((v for v in versions if v.uuid == uuid and v.state == COMPLETE), None)
            if found is not None:
                return Decision(row, found, changes=False)
            deleted = Object(bucket_id, key, withdrawn(uuid, stamps))
            return Decision(deleted if row is None else row.merge(deleted), None, changes=True)

        return await self.model.objects.conditional_update(bucket_id, key.encode(), decide)

    async def _was_finished(self, uuid: bytes, record: InflightUpload) -> bool:
        """Whether the crash came after the upload was recorded as done."""
        if record.is_part:
            upload = await self.model.uploads.get(record.upload_id, b"")
            return upload is not None and any(p.version == uuid for p in upload.parts)
        entry = await self.get(record.bucket_id, record.key)
        return entry is not None and any(v.uuid == uuid and v.is_final for v in entry.versions)
