"""What every process of a node builds on the node's folders: the metadata
engine, the block store and manager, the tables, and the S3 API.

The primary process (`granary.server.Node`) adds what must be unique per
node: the RPC listener and peering, the layout's authority, the admin API
and the background workers. An S3 worker process (`granary.processes.worker`)
builds this alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from granary.api.http.server import HttpServer
from granary.api.http.types import HttpLimits
from granary.api.s3.app import S3App
from granary.api.s3.context import S3Services, S3Settings
from granary.block.holders import BlockHolders
from granary.block.manager import BlockManager, Distances
from granary.block.store import BlockStore, DataDirectory
from granary.config import Config, ConfigError
from granary.db import open_db
from granary.layout.view import LayoutView
from granary.model.access import Access
from granary.model.key_secrets import SecretSealer
from granary.model.multipart import Multipart
from granary.model.objects import Objects
from granary.model.store import Model
from granary.net.hedging import Hedging
from granary.table.gc import TombstoneGc
from granary.table.replication import FullReplication, ShardedReplication
from granary.table.rpc import TableRpc
from granary.telemetry.otlp import SpanExporter, parse_sink, start_exporter, stop_exporter
from granary.util.files import full_disk
from granary.util.process_locks import SharedLockFiles
from granary.util.resources import free_heap_bytes, trim_heap
from granary.util.sizes import parse_size

HEAP_TRIM_INTERVAL_SECS = 2.0
HEAP_TRIM_MIN_FREE = 64 << 20
LOCKS_DIR = "locks"
"""In metadata_dir: one file per set of keyed locks shared by the node's processes."""
SLOTS_FILE = "processes"
"""In LOCKS_DIR: the node's process slots (0: the primary), each locked by its process."""


def io_threads(processes: int) -> int:
    """Threads of each process's pool: 2 per core in all, at least 4 per process."""
    return max(4, 2 * (os.cpu_count() or 1) // processes)


def start_tracing(
    config: Config, node_id: bytes, process: int, layout: LayoutView
) -> SpanExporter | None:
    """This process's span exporter, if `[admin] trace_sink` is set."""
    admin = config.admin
    if admin.trace_sink is None:
        return None
    node = node_id.hex()

    def zone() -> str | None:
        role = layout.current.roles.get(node)
        return None if role is None else role.zone

    try:
        return start_exporter(
            parse_sink(admin.trace_sink, admin.trace_protocol),
            sampling_ratio=admin.trace_sampling_ratio,
            node_id=node_id,
            process="main" if process == 0 else f"s3-worker-{process}",
            zone=zone,
        )
    except ImportError as error:
        raise ConfigError(
            f"admin.trace_sink needs the tracing packages ({error.name} is missing): "
            "pip install 'granary[traces]'"
        ) from None


class S3Stack:
    def __init__(
        self,
        config: Config,
        *,
        node_id: bytes,
        net,
        layout: LayoutView,
        distances: Distances,
        sealer: SecretSealer | None,
        http_limits: HttpLimits,
        process: int,
    ) -> None:
        metadata_dir = Path(config.metadata_dir)
        self.trace_exporter = start_tracing(config, node_id, process, layout)
        self.executor = ThreadPoolExecutor(
            max_workers=io_threads(config.s3_process_count), thread_name_prefix="granary-io"
        )
        self.db = open_db(
            config.db_engine,
            metadata_dir / "db",
            fsync=config.syncs_metadata,
            map_size=parse_size(config.lmdb_map_size),
        )
        self.sharded = ShardedReplication(
            layout, config.replication_factor, config.consistency_mode
        )
        level = None if config.compression_level == "none" else config.compression_level
        self.store = BlockStore(
            [
                DataDirectory(Path(d.path), parse_size(d.capacity or 1), d.read_only)
                for d in config.data_dirs
            ],
            fsync=config.syncs_data,
            compression_level=level,
        )
        self.locks = SharedLockFiles(metadata_dir / LOCKS_DIR)
        self.blocks = BlockManager(
            self.db,
            self.store,
            BlockHolders(self.sharded, layout),
            node_id,
            self.executor,
            net,
            distances,
            gc_grace_ms=config.block_gc_delay_secs * 1000,
            resync_retry_base_ms=int(config.resync_retry_base_secs * 1000),
            locks=self.locks("blocks"),
        )
        self.model = Model(
            self.db, self.blocks, self.sharded, FullReplication(layout), node_id, self.executor
        )
        self.table_rpc = TableRpc(net, self.model.tables)
        self.table_hedging = Hedging(distances.rtt, reads="table")
        for table in self.model.tables:
            table.nearest_first = distances.by_distance
            table.hedging = self.table_hedging
        # Built in every process: a row a process turns into a tombstone is scheduled
        # for collection in the same transaction; only the primary collects.
        self.tombstone_gcs = [
            TombstoneGc(table, self.table_rpc, config.tombstone_gc_delay_secs * 1000)
            for table in self.model.tables
            if table.schema.collect_tombstones
        ]
        self.access = Access(self.model, sealer, self.locks)
        self.objects = Objects(self.model, process=process)
        self.multipart = Multipart(self.objects, self.locks)
        disks = [  # named for S3 clients: no path
            ("metadata disk", metadata_dir),
            *(("data disk", Path(d.path)) for d in config.data_dirs if not d.read_only),
        ]
        settings = S3Settings(
            region=config.s3_api.s3_region,
            root_domain=config.s3_api.root_domain,
            block_size=config.block_size_bytes,
            lifecycle_day_ms=int(config.lifecycle_day_secs * 1000),
        )
        services = S3Services(
            self.access,
            self.objects,
            self.multipart,
            self.executor,
            settings,
            full_disk=lambda: full_disk(disks),
        )
        self.s3 = S3App(services)
        self.s3_server = HttpServer(
            self.s3.handle,
            limits=http_limits,
            render_error=self.s3.protocol_error,
            on_handler_exception=self.s3.unexpected_error,
        )

    async def trim_memory_after_bursts(self, stop: asyncio.Event) -> None:
        """Give memory back once a burst of S3 requests is over.

        M_TRIM_THRESHOLD (see `tune_malloc`) keeps freed buffers for reuse while
        requests run; after a whole interval without any request, the heap is
        trimmed if much of it is free, and the metadata engine lets go of the
        file pages it mapped. Buffers of the last requests may be freed late
        (reads still on the thread pool, connections closing), so the trim is
        repeated after 4, 8 and 16 quiet intervals.
        """
        started = self.s3_server.requests_started
        quiet_intervals = 2  # since the last request; 0 and 1: a burst not trimmed yet
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEAP_TRIM_INTERVAL_SECS)
            now_started = self.s3_server.requests_started
            if now_started != started or self.s3_server.requests_in_progress:
                started, quiet_intervals = now_started, 0
                continue
            quiet_intervals += 1
            if quiet_intervals not in (2, 4, 8, 16):
                continue
            free = free_heap_bytes()
            if free is None or free >= HEAP_TRIM_MIN_FREE:
                trim_heap()
            self.db.release_memory()

    def close(self) -> None:
        """After the S3 server and every task using them have stopped."""
        self.executor.shutdown(wait=True)
        self.db.close()
        self.locks.close()
        if self.trace_exporter is not None:
            stop_exporter(self.trace_exporter)  # sends the spans still queued
