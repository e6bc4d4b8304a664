"""Multipart uploads: create, add parts, complete and abort.

While the upload runs, the object row carries an Uploading version under the
upload id so ListMultipartUploads can find it by key. Completing writes a
new version (with a fresh uuid) whose blocks are the chosen parts' blocks;
the object's metadata remembers the upload id.
"""

from __future__ import annotations

from msgspec.structs import replace

from granary.model.access import BucketGone
from granary.model.mpu import MpuPart, MultipartUpload
from granary.model.object import (
    ABORTED,
    UPLOADING,
    Object,
    ObjectMeta,
    ObjectVersion,
)
from granary.model.objects import Objects, Upload, new_uuid
from granary.model.version import VersionBlock
from granary.util.locks import KeyedLocks
from granary.util.time import now_ms


class Multipart:
    def __init__(self, objects: Objects) -> None:
        self.objects = objects
        self.model = objects.model
        self._locks = KeyedLocks()

    async def create(
        self, bucket_id: bytes, key: str, headers: list[tuple[str, str]]
    ) -> MultipartUpload:
        upload_id = new_uuid()
        listed = await self.objects.write_version(
            bucket_id, key, lambda ts: ObjectVersion(upload_id, ts, UPLOADING, multipart=True)
        )
        upload = MultipartUpload(
            upload_id=upload_id,
            timestamp=listed.timestamp,
            bucket_id=bucket_id,
            key=key,
            headers=headers,
        )
        await self.model.uploads.insert(upload)
        return upload

    async def get(self, upload_id: bytes) -> MultipartUpload | None:
        upload = await self.model.uploads.get(upload_id, b"")
        return None if upload is None or upload.deleted else upload

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
        entry = MpuPart(part_number, part.timestamp, part.uuid, etag, size, checksum)
        await self.model.uploads.insert(
            MultipartUpload(
                upload.upload_id, upload.timestamp, upload.bucket_id, upload.key, parts=[entry]
            )
        )
        await part.finish_part()

    async def complete(
        self, upload: MultipartUpload, parts: list[MpuPart], meta: ObjectMeta
    ) -> ObjectVersion:
        """Assemble the chosen parts (in order) into a new version of the object.

        Completing and aborting the same upload are serialised, and the
        upload is checked again under that lock: a completed upload cannot
        be aborted, nor an aborted one completed.
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
                )
            except BucketGone:
                await self.model.uploads.insert(self._deleted(upload))  # it went with its bucket
                raise
            except BaseException:
                await final.abort()
                raise
            await self.model.uploads.insert(self._deleted(upload))
            return version

    async def abort(self, upload: MultipartUpload) -> None:
        async with self._locks.hold(upload.upload_id):
            if await self.get(upload.upload_id) is None:
                return
            await self.model.uploads.insert(self._deleted(upload))
            await self.model.objects.insert(
                Object(
                    upload.bucket_id,
                    upload.key,
                    [ObjectVersion(upload.upload_id, upload.timestamp, ABORTED, multipart=True)],
                )
            )

    @staticmethod
    def _deleted(upload: MultipartUpload) -> MultipartUpload:
        return MultipartUpload(
            upload.upload_id, upload.timestamp, upload.bucket_id, upload.key, deleted=True
        )
