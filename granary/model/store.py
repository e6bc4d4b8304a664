"""The object-store schema assembled: every table, wired for its cascades."""

from __future__ import annotations

from concurrent.futures import Executor

from granary.block.manager import BlockManager
from granary.db.base import Db
from granary.model.block_ref import BlockRef, BlockRefTable
from granary.model.buckets import (
    AccessKey,
    Bucket,
    BucketAlias,
    BucketAliasTable,
    BucketTable,
    KeyTable,
)
from granary.model.mpu import MpuTable, MultipartUpload
from granary.model.mpu_index import UploadIndexEntry, UploadIndexTable
from granary.model.object import Object, ObjectTable
from granary.model.usage import Usage
from granary.model.version import VersionRow, VersionTable
from granary.table.replication import Replication
from granary.table.table import Table


class Model:
    def __init__(
        self,
        db: Db,
        blocks: BlockManager,
        sharded: Replication,
        full: Replication,
        local_node: bytes,
        executor: Executor,
    ) -> None:
        self.db = db
        self.blocks = blocks
        self.executor = executor
        object_schema = ObjectTable()
        version_schema = VersionTable()
        mpu_schema = MpuTable()
        block_ref_schema = BlockRefTable(blocks.refcounts)

        def table(schema, replication=sharded):
            return Table(schema, db, replication, local_node)

        self.buckets: Table[Bucket] = table(BucketTable(), full)
        self.aliases: Table[BucketAlias] = table(BucketAliasTable(), full)
        self.keys: Table[AccessKey] = table(KeyTable(), full)
        self.objects: Table[Object] = table(object_schema)
        self.versions: Table[VersionRow] = table(version_schema)
        version_schema.table = self.versions
        self.block_refs: Table[BlockRef] = table(block_ref_schema)
        self.uploads: Table[MultipartUpload] = table(mpu_schema)
        upload_index_schema = UploadIndexTable()
        self.upload_index: Table[UploadIndexEntry] = table(upload_index_schema)
        self.usage = Usage(self.objects, self.upload_index)
        object_schema.usage = self.usage.objects
        upload_index_schema.usage = self.usage.uploads
        object_schema.versions = self.versions
        version_schema.block_refs = self.block_refs
        mpu_schema.versions = self.versions
        mpu_schema.index = self.upload_index

    @property
    def tables(self) -> list[Table]:
        return [
            self.buckets,
            self.aliases,
            self.keys,
            self.objects,
            self.versions,
            self.block_refs,
            self.uploads,
            self.upload_index,
        ]
