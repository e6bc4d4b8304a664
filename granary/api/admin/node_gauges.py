"""Gauges of a node read at scrape time from state it keeps anyway: build,
settings, disks, cluster health, tables and blocks (Garage's names and
labels), the node's processes, per-bucket usage and full redundancy. Nothing
here scans a table or a folder: the sizes of the trees are the metadata
engine's own counts, and bucket usage is read from counters kept with the
rows (model/usage.py)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from granary import __version__
from granary.api.admin.cluster_ops import ClusterAdmin
from granary.api.admin.redundancy import Redundancy
from granary.api.admin.usage_ops import buckets
from granary.block.manager import BlockManager
from granary.model.access import Access
from granary.model.usage import BucketUsage, Usage
from granary.table.gc import TombstoneGc
from granary.table.table import Table
from granary.telemetry.prometheus import MetricsExposition

Samples = Iterable[tuple[tuple[str, ...], float]]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
USAGE_READ_REUSE_SECS = 0.5


def expose_node_gauges(
    exposition: MetricsExposition,
    cluster: ClusterAdmin,
    *,
    replication_factor: int,
    volumes: dict[str, list[Path]],
    pids: Callable[[], list[int]],
) -> None:
    """`volumes`: "metadata" and "data" and their folders; `pids`: the node's processes."""
    gauge = exposition.gauge
    gauge("granary_build_info", "Granary's version", ["version"], lambda: [((__version__,), 1)])
    gauge(
        "garage_replication_factor",
        "Copies kept of every object",
        [],
        lambda: [((), replication_factor)],
    )
    gauge(
        "garage_local_disk_avail",
        "Bytes free for the node's data or metadata",
        ["volume"],
        lambda: _disk(volumes, "free"),
    )
    gauge(
        "garage_local_disk_total",
        "Bytes in all of the node's data or metadata filesystems",
        ["volume"],
        lambda: _disk(volumes, "total"),
    )
    _expose_health(exposition, cluster)
    gauge("granary_processes", "Processes of the node", [], lambda: [((), len(pids()))])
    gauge(
        "granary_process_resident_memory_bytes",
        "Resident memory of the node's processes, shared pages counted in each",
        [],
        lambda: [((), sum(_status_kib(pid, "VmRSS:") for pid in pids()) * 1024)],
    )
    gauge(
        "granary_process_cpu_seconds",
        "CPU time used by the node's live processes, user and system",
        [],
        lambda: [((), sum(_cpu_seconds(pid) for pid in pids()))],
    )
    gauge(
        "granary_process_open_fds",
        "Open file descriptors of the node's processes",
        [],
        lambda: [((), sum(_open_fds(pid) for pid in pids()))],
    )


def expose_storage_gauges(
    exposition: MetricsExposition,
    tables: list[Table],
    tombstone_gcs: list[TombstoneGc],
    blocks: BlockManager,
    compression_level: int | None,
) -> None:
    """The sizes and backlogs of the node's tables and block store."""

    def per_table(name: str, documentation: str, size: Callable[[Table], int]) -> None:
        exposition.gauge(
            name,
            documentation,
            ["table_name"],
            lambda: [((table.name,), size(table)) for table in tables],
        )

    per_table("table_size", "Rows stored here, tombstones included", lambda t: t.tree.count())
    per_table(
        "table_merkle_tree_size",
        "Nodes of the table's Merkle tree",
        lambda t: t.merkle.tree.count(),
    )
    per_table(
        "table_insert_queue_length",
        "Rows waiting for their follow-up writes",
        lambda t: t.queue_tree.count(),
    )
    exposition.gauge(
        "table_gc_todo_queue_length",
        "Tombstones waiting for their collection",
        ["table_name"],
        lambda: [((gc.table.name,), gc.todo.count()) for gc in tombstone_gcs],
    )
    refcounts, resync = blocks.refcounts, blocks.resync
    gauges = (
        ("block_rc_size", "Blocks with a reference count here", refcounts.counts.count),
        ("block_resync_queue_length", "Blocks queued for a resync", resync.length),
        (
            "block_resync_errored_blocks",
            "Blocks whose last resync failed (0 in a healthy cluster)",
            resync.errors.count,
        ),
        (
            "granary_block_gc_queue_length",
            "Blocks waiting for their GC check",
            refcounts.gc_todo.count,
        ),
    )
    for name, documentation, read in gauges:
        exposition.gauge(name, documentation, [], _unlabelled(read))
    exposition.gauge(
        "block_compression_level",
        "zstd level of new blocks (0: not compressed)",
        [],
        lambda: [((), compression_level or 0)],
    )


def expose_usage_gauges(
    exposition: MetricsExposition, access: Access, usage: Usage, redundancy: Redundancy
) -> None:
    """Per-bucket usage as this node counts it, for the buckets whose partition it
    stores (a dashboard takes the max over nodes), and the full-redundancy signal."""

    read: list[tuple[float, list[tuple[str, BucketUsage]]]] = []

    def held() -> list[tuple[str, BucketUsage]]:
        """Read once for the three gauges of a scrape (they are read one after another)."""
        now = time.monotonic()
        if not read or now - read[0][0] > USAGE_READ_REUSE_SECS:
            found = [(label, usage.local(b)) for label, b in buckets(access) if usage.stores(b)]
            read[:] = [(now, found)]
        return read[0][1]

    per_bucket = (
        ("granary_bucket_objects", "Objects in the bucket (this node's replica)", "objects"),
        ("granary_bucket_bytes", "Bytes of the bucket's objects (this node's replica)", "bytes"),
        (
            "granary_bucket_unfinished_uploads",
            "Multipart uploads in progress in the bucket (this node's replica)",
            "unfinished_uploads",
        ),
    )

    def reader(field: str) -> Callable[[], Samples]:
        return lambda: [((label,), getattr(counted, field)) for label, counted in held()]

    for name, documentation, field in per_bucket:
        exposition.gauge(name, documentation, ["bucket"], reader(field))
    exposition.gauge(
        "granary_fully_redundant",
        "1 if every partition has all its nodes up, no layout change or table catch-up "
        "is in flight and this node's block resync has no error or overdue check",
        [],
        _unlabelled(lambda: float(redundancy.fully_redundant())),
    )


def _expose_health(exposition: MetricsExposition, cluster: ClusterAdmin) -> None:
    """Garage's cluster gauges, from the same health figures as `/health`."""

    gauges: tuple[tuple[str, str, Callable[[], float]], ...] = (
        (
            "cluster_healthy",
            "1 if every storage node is up",
            lambda: float(cluster.health().status == "healthy"),
        ),
        (
            "cluster_available",
            "1 if every partition has a write quorum of up nodes",
            lambda: float(cluster.health().serving),
        ),
        (
            "cluster_known_nodes",
            "Nodes this node knows of, itself included",
            lambda: 1 + len(cluster.peering.peer_status()),
        ),
        ("cluster_connected_nodes", "Nodes up, this one included", lambda: len(cluster.up_nodes())),
        (
            "cluster_storage_nodes",
            "Nodes with a storage role in the layout",
            lambda: cluster.health().storage_nodes,
        ),
        (
            "cluster_storage_nodes_ok",
            "Nodes with a storage role that are up",
            lambda: cluster.health().storage_nodes_up,
        ),
        ("cluster_partitions", "Partitions", lambda: cluster.health().partitions),
        (
            "cluster_partitions_quorum",
            "Partitions with a write quorum of up nodes",
            lambda: cluster.health().partitions_with_quorum,
        ),
        (
            "cluster_partitions_all_ok",
            "Partitions whose nodes are all up",
            lambda: cluster.health().partitions_all_up,
        ),
    )
    for name, documentation, read in gauges:
        exposition.gauge(name, documentation, [], _unlabelled(read))
    exposition.gauge(
        "cluster_layout_node_connected",
        "1 if the layout's node is up",
        ["id", "role_zone", "role_capacity", "role_gateway"],
        lambda: _layout_nodes(cluster),
    )


def _unlabelled(read: Callable[[], float]) -> Callable[[], Samples]:
    return lambda: [((), read())]


def _layout_nodes(cluster: ClusterAdmin) -> Samples:
    up = cluster.up_nodes()
    for node, role in sorted(cluster.layout.current.roles.items()):
        capacity = "" if role.is_gateway else str(role.capacity)
        labels = (node[:16], role.zone, capacity, "1" if role.is_gateway else "0")
        yield labels, float(node in up)


def _disk(volumes: dict[str, list[Path]], which: str) -> Samples:
    for volume, folders in volumes.items():
        seen: set[int] = set()
        total = 0
        for folder in folders:
            try:
                device = folder.stat().st_dev
                usage = shutil.disk_usage(folder)
            except OSError:
                continue
            if device not in seen:
                seen.add(device)
                total += usage.free if which == "free" else usage.total
        if seen:
            yield (volume,), total


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0
