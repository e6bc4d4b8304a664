"""Multipart uploads: create, add parts, complete and abort.

The upload id is also the uuid of the final object version. While the
upload runs, the object row carries an Uploading version under that uuid so
ListMultipartUploads can find it by key.
"""

from __future__ import annotations

from granary.model.mpu import MpuPart, MultipartUpload
from granary.model.object import (
    ABORTED,
    BLOCKS,
    COMPLETE,
    UPLOADING,
    Object,
    ObjectMeta,
    ObjectVersion,
)
from granary.model.objects import Objects, Upload, new_uuid
from granary.model.version import Version, VersionBlock
from granary.util.time import now_ms


class Multipart:
    def __init__(self, objects: Objects) -> None:
        self.objects = objects
        self.model = objects.model

    async def create(
        self, bucket_id: bytes, key: str, headers: list[tuple[str, str]]
    ) -> MultipartUpload:
        upload_id = new_uuid()
        timestamp = await self.objects.next_version_timestamp(bucket_id, key)
        upload = MultipartUpload(
            upload_id=upload_id, timestamp=timestamp, bucket_id=bucket_id, key=key, headers=headers
        )
        await self.model.uploads.insert(upload)
        await self.model.objects.insert(
            Object(bucket_id, key, [ObjectVersion(upload_id, timestamp, UPLOADING, multipart=True)])
        )
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

    async def part_blocks(self, part: MpuPart) -> list[VersionBlock]:
        version = await self.model.versions.get(part.version, b"")
        return [] if version is None else version.blocks

    async def complete(
        self, upload: MultipartUpload, parts: list[MpuPart], meta: ObjectMeta
    ) -> None:
        """Assemble the chosen parts (in order) into the object's new version."""
        blocks: list[VersionBlock] = []
        for part in parts:
            for block in await self.part_blocks(part):
                blocks.append(VersionBlock(part.part_number, block.offset, block.hash, block.size))
        final = Upload(
            self.objects,
            upload.bucket_id,
            upload.key,
            upload.upload_id,
            upload.timestamp,
            part=False,
        )
        await self.objects.link_blocks(final, blocks)
        timestamp = await self.objects.next_version_timestamp(upload.bucket_id, upload.key)
        await self.model.objects.insert(
            Object(
                upload.bucket_id,
                upload.key,
                [
                    ObjectVersion(
                        upload.upload_id,
                        timestamp,
                        COMPLETE,
                        multipart=True,
                        kind=BLOCKS,
                        meta=meta,
                        first_block=blocks[0].hash if blocks else None,
                    )
                ],
            )
        )
        await self.model.uploads.insert(self._deleted(upload))

    async def abort(self, upload: MultipartUpload) -> None:
        await self.model.uploads.insert(self._deleted(upload))
        await self.model.objects.insert(
            Object(
                upload.bucket_id,
                upload.key,
                [ObjectVersion(upload.upload_id, upload.timestamp, ABORTED, multipart=True)],
            )
        )
        await self.model.versions.insert(Version.tombstone(upload.upload_id))

    @staticmethod
    def _deleted(upload: MultipartUpload) -> MultipartUpload:
        return MultipartUpload(
            upload.upload_id, upload.timestamp, upload.bucket_id, upload.key, deleted=True
        )
