"""Multipart uploads: create, add parts, complete and abort.

While the upload runs, the upload index (model/mpu_index.py) lists it; the
object row does not know about it, so any number of open uploads of a key
costs nothing to reads and writes of that key. Completing writes a new
version (with a fresh uuid) whose blocks are the chosen parts' blocks; the
object's metadata remembers the upload id.

Uploads created by earlier versions were listed through an Uploading
version in the object row instead; `index_legacy_uploads` indexes those
that are still open, and aborting one still marks that version Aborted.
"""

from __future__ import annotations

from collections.abc import Callable

from msgspec.structs import replace

from granary.model.access import BucketGone, bucket_outlives_write
from granary.model.conditions import WriteCondition
from granary.model.mpu import MpuPart, MultipartUpload, end_upload
from granary.model.mpu_index import UploadIndexEntry, new_upload_id
from granary.model.object import ABORTED, Object, ObjectMeta, ObjectVersion, VersionSettings
from granary.model.objects import Objects, Upload
from granary.model.version import VersionBlock
from granary.table.merkle import BUILT_INDEXES_TREE
from granary.table.scan import RangePage
from granary.util.process_locks import KeyLocks, process_local_locks
from granary.util.time import next_timestamp, now_ms

LEGACY_UPLOADS_MARKER = b"multipart_index:legacy_uploads"


class Multipart:
    def __init__(
        self, objects: Objects, locks: Callable[[str], KeyLocks] = process_local_locks
    ) -> None:
        self.objects = objects
        self.model = objects.model
        self._locks = locks("uploads")  # completion and abort of one upload, node-wide
        self._last_created: int | None = None
        """Creation times only go up on a node, so its uploads list in creation order."""

    async def create(
        self, bucket_id: bytes, key: str, headers: list[tuple[str, str]]
    ) -> MultipartUpload:
        """Write the upload's row, then list it.

        In that order a listed upload always has a row to abort; a crash
        between the two leaves an unlisted row without parts (the client
        never learnt its id, so no part can be added to it).
        """
        timestamp = self._last_created = next_timestamp(self._last_created)
        upload = MultipartUpload(
            upload_id=new_upload_id(timestamp),
            timestamp=timestamp,
            bucket_id=bucket_id,
            key=key,
            headers=headers,
            listed_in_object_row=False,
        )
        await self.model.uploads.insert(upload)
        await self.model.upload_index.insert(upload.index_entry())
        if not await bucket_outlives_write(self.model, bucket_id):
            await self._end(upload)  # DeleteBucket did not see it: it ends with its bucket
            raise BucketGone(bucket_id.hex())
        return upload

    async def get(self, upload_id: bytes) -> MultipartUpload | None:
        upload = await self.model.uploads.get(upload_id, b"")
        return None if upload is None or upload.deleted else upload

    async def list_uploads(
        self, bucket_id: bytes, start: bytes | None, limit: int
    ) -> RangePage[UploadIndexEntry]:
        """The uploads in progress in a bucket from index sort key `start` on, in S3's order.

        One bounded read: the page may hold fewer than `limit` uploads while
        the index goes on (continue from `next_start`).
        """
        return await self.model.upload_index.get_range(
            bucket_id, start, filter="in_progress", limit=limit
        )

    async def begin_part(self, upload: MultipartUpload) -> Upload:
        return await self.objects.begin_part(
            upload.bucket_id, upload.key, now_ms(), upload.upload_id
        )

    async def record_part(
        self,
        upload: MultipartUpload,
        part_number: int,
        part: Upload,
        etag: str,
        size: int,
        checksum: str | None,
    ) -> None:
        """Make `part` the upload's part `part_number`, replacing any earlier upload of it.

        The part is stamped with the time it is recorded, above the part it
        replaces as `upload` was read: of two uploads of a part number, the
        one that finishes last wins, whichever started first (S3's rule).
        The replaced upload's blocks are released by the upload table's merge.
        """
        previous = upload.latest_parts().get(part_number)
        timestamp = next_timestamp(None if previous is None else previous.timestamp)
        entry = MpuPart(part_number, timestamp, part.uuid, etag, size, checksum)
        await self.model.uploads.insert(replace(upload, parts=[entry], headers=[]))
        await part.finish_part()

    async def complete(
        self,
        upload: MultipartUpload,
        parts: list[MpuPart],
        meta: ObjectMeta,
        condition: WriteCondition | None = None,
        settings: VersionSettings | None = None,
    ) -> ObjectVersion:
        """Assemble the chosen parts (in order) into a new version of the object, if
        `condition` holds on the current one (checked in the commit's round).

        Completing and aborting the same upload are serialised, and the
        upload is checked again under that lock: a completed upload cannot
        be aborted, nor an aborted one completed. An upload whose condition
        failed stays open, as in S3: its parts may be completed again.
        """
        async with self._locks.hold(upload.upload_id):
            if await self.get(upload.upload_id) is None:
                raise LookupError("the upload was completed or aborted meanwhile")
            blocks: list[VersionBlock] = []
            for part in parts:
                blocks.extend(
                    replace(block, part_number=part.part_number)
                    for block in await self.objects.blocks_of(part.version)
                )
            final = await self.objects.begin_copy(upload.bucket_id, upload.key)
            try:
                await self.objects.link_blocks(final, blocks)
                version = await final.complete(
                    replace(meta, upload_id=upload.upload_id),
                    blocks[0].hash if blocks else None,
                    condition,
                    settings,
                )
            except BucketGone:
                await self._end(upload)  # it went with its bucket
                raise
            except BaseException:
                await final.abort()
                raise
            await self._end(upload)
            return version

    async def abort(self, upload: MultipartUpload) -> None:
        async with self._locks.hold(upload.upload_id):
            if await self.get(upload.upload_id) is None:
                return
            await self._end(upload)
            if upload.listed_in_object_row:
                await self._unlist_from_object_row(upload)

    async def _end(self, upload: MultipartUpload) -> None:
        await end_upload(self.model.uploads, self.model.upload_index, upload)

    async def _unlist_from_object_row(self, upload: MultipartUpload) -> None:
        """Mark a 0.3 upload's Uploading version Aborted, so its object row lets it go."""
        aborted = ObjectVersion(upload.upload_id, upload.timestamp, ABORTED, multipart=True)
        await self.model.objects.insert(Object(upload.bucket_id, upload.key, [aborted]))

    async def index_legacy_uploads(self) -> int:
        """List the open uploads this node holds that were created before the index.

        Such an upload was listed through the object row only, where a later
        write of its key hid it; indexing it makes it listable (and abortable
        from the listing) again. Every replica indexes the rows it holds,
        which the index's merge makes harmless; an upload ended meanwhile
        stays ended, as the index tombstone wins the merge. Done once per
        node: a marker in the `BUILT_INDEXES_TREE` records it.
        """
        built = self.model.db.tree(BUILT_INDEXES_TREE)
        if built.get(LEGACY_UPLOADS_MARKER) is not None:
            return 0
        table = self.model.uploads
        legacy = [
            upload.index_entry()
            for upload in (table.decode(raw) for _, raw in table.tree.range())
            if upload.listed_in_object_row and not upload.deleted
        ]
        if legacy:
            await self.model.upload_index.insert_many(legacy)
        await self.model.db.transact(lambda tx: tx.put(built, LEGACY_UPLOADS_MARKER, b"1"))
        return len(legacy)
