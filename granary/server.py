"""The composition root: build every component from the config, run, stop."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from granary.api.admin.app import AdminApp
from granary.api.admin.block_ops import BlockOps
from granary.api.admin.cluster_ops import ClusterAdmin
from granary.api.admin.metrics import MetricsEndpoint
from granary.api.admin.node_gauges import (
    expose_node_gauges,
    expose_storage_gauges,
    expose_usage_gauges,
)
from granary.api.admin.redundancy import Redundancy
from granary.api.admin.usage_ops import UsageOps
from granary.api.http.server import HttpServer
from granary.api.http.types import HttpLimits
from granary.block.healing import BlockHealing
from granary.config import (
    ADMIN_ENDPOINT_FILE,
    ADMIN_TOKEN_FILE,
    MAX_S3_PROCESSES,
    AdminConfig,
    Config,
    ConfigError,
    S3ApiConfig,
    parse_host_port,
    resolve_secrets,
    warn_unsupported,
)
from granary.layout.auto import AutoLayout, role_to_stage, version_to_apply
from granary.layout.history import LayoutHistory
from granary.layout.manager import LayoutManager
from granary.layout.roles import LayoutError, NodeRole
from granary.model.access import AccessError
from granary.model.declarations import apply_declarations
from granary.model.key_secrets import SecretSealer
from granary.model.lifecycle_worker import LifecycleWorker
from granary.model.objects import InflightUpload
from granary.model.usage import ClusterUsage
from granary.net.discovery.kubernetes import ZONE_LABEL, KubernetesDiscovery, KubernetesError
from granary.net.hedging import expose_hedging
from granary.net.identity import load_or_create_identity, node_id
from granary.net.node_info import NodeInfoService
from granary.net.peering import Peering
from granary.net.rpc import NetApp
from granary.processes.sockets import bound_socket, free_s3_port
from granary.processes.spawn import WorkerProcess
from granary.processes.stack import LOCKS_DIR, SLOTS_FILE, S3Stack
from granary.processes.supervisor import S3Workers
from granary.table.quorum import QuorumError
from granary.table.sync import TableSync
from granary.table.table import ConditionalConflict
from granary.telemetry import prometheus
from granary.telemetry.loop_lag import watch_event_loop
from granary.telemetry.prometheus import MetricsExposition
from granary.util.background import Workers
from granary.util.files import (
    PRIVATE_UMASK,
    make_private,
    write_atomic,
    write_if_changed,
)
from granary.util.process_locks import ProcessSlots
from granary.util.resources import (
    raise_open_file_limit,
)
from granary.util.sizes import parse_size
from granary.util.time import now_ms, set_clock_offset
from granary.util.waits import sleep_until

log = logging.getLogger("granary.server")

DEFAULT_KEY_FILE = "default_key_id"
RPC_SECRET_FILE = "rpc_secret"
WORKER_VARIABLES_FILE = "worker_variables.json"
FULL_COPY_SYNC_SECS = 10
TOMBSTONE_GC_INTERVAL_SECS = 60
AUTO_LAYOUT_INTERVAL_SECS = 5.0
"""How often automatic layout looks again, besides each change of the layout."""
NODE_NAME = "NODE_NAME"
"""The Kubernetes node a pod runs on (downward API, spec.nodeName): its zone label is
the zone automatic layout takes when none is set."""
BLOCK_GC_GRACE_MS = 10 * 60 * 1000


def s3_http_limits(s3_api: S3ApiConfig) -> HttpLimits:
    """The S3 port's limits. The open-file limit is raised to its maximum first;
    without a configured connection limit, a quarter of it (at least 256) is
    kept for the node's own files and RPC links and the rest is the limit."""
    open_files = raise_open_file_limit()
    max_connections = s3_api.max_connections
    if max_connections is None:
        max_connections = max(64, open_files - max(256, open_files // 4))
    return HttpLimits(
        max_connections=max_connections, unproven_timeout=s3_api.unauthenticated_timeout_secs
    )


def default_config(
    data: Path,
    s3_address: str,
    admin_address: str,
    rpc_address: str,
    s3_processes: int | Literal["auto"] = 1,
) -> Config:
    """The single-node setup of `granary server` without a config file.

    Secrets may still come from the environment (e.g. GRANARY_RPC_SECRET).
    """
    config = Config(
        metadata_dir=str(data / "meta"),
        data_dir=str(data / "data"),
        rpc_bind_addr=rpc_address,
        s3_api=S3ApiConfig(api_bind_addr=s3_address),
        admin=AdminConfig(api_bind_addr=admin_address),
        s3_processes=s3_processes,
    )
    return resolve_secrets(config)


def write_private(path: Path, text: str) -> None:
    write_atomic(path, text.encode(), private=True)


def runs_standalone(config: Config) -> bool:
    """A node with replication factor 1 and no peers to join is a cluster of one."""
    return (
        config.replication_factor == 1
        and not config.bootstrap_peers
        and config.kubernetes_discovery is None
    )


def kubernetes_discovery(config: Config, node: bytes) -> KubernetesDiscovery | None:
    """The `[kubernetes_discovery]` of `config`, a source of peers, if it has one."""
    discovery = config.kubernetes_discovery
    if discovery is None:
        return None
    if config.rpc_public_addr is None:
        raise ConfigError("kubernetes_discovery needs rpc_public_addr: the address it publishes")
    try:
        return KubernetesDiscovery(
            discovery.namespace,
            discovery.service_name,
            node,
            config.rpc_public_addr,
            skip_crd=discovery.skip_crd,
        )
    except KubernetesError as error:
        raise ConfigError(f"kubernetes_discovery: {error}") from None


def auto_layout_of(config: Config) -> AutoLayout | None:
    """This node's part in automatic layout, if `[auto_layout]` is set."""
    auto = config.auto_layout
    if auto is None:
        return None
    from_node_label = config.kubernetes_discovery is not None and bool(os.environ.get(NODE_NAME))
    if auto.zone is None and not from_node_label:  # a server's setting: the CLI reads it without
        raise ConfigError(
            f"auto_layout: set zone, or GRANARY_ZONE, or (with kubernetes_discovery) {NODE_NAME}"
            " - at `$.auto_layout.zone`"
        )
    return AutoLayout(
        auto.zone,
        None if auto.capacity == "auto" else parse_size(auto.capacity),
        auto.expected_nodes,
        coordinator=socket.gethostname() == auto.coordinator,
    )


def check_process_model(config: Config) -> None:
    """Several S3 processes need LMDB: one writer at a time across processes, and
    readers that never wait for a writer (SQLite's locks would fail whole batches)."""
    if config.s3_process_count > 1 and config.db_engine != "lmdb":
        raise ConfigError('s3_processes: several processes need db_engine = "lmdb"')


def rpc_secret_for(config: Config) -> bytes:
    """The configured cluster secret, else (for a standalone node) one kept in metadata_dir."""
    if config.rpc_secret:
        return bytes.fromhex(config.rpc_secret)
    if not runs_standalone(config):
        raise ConfigError("rpc_secret: required for a node that joins a cluster")
    path = Path(config.metadata_dir) / RPC_SECRET_FILE
    if not path.exists():
        write_private(path, secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def secret_sealer_for(config: Config) -> SecretSealer | None:
    """What encrypts access keys' secrets at rest: the configured rpc_secret, if any.

    A standalone node without one generates its rpc_secret into metadata_dir;
    a key stored next to what it encrypts would hide nothing from whoever can
    read that folder, so such a node keeps secrets in clear (in files only
    its user can read) and says so.
    """
    if config.rpc_secret:
        return SecretSealer(bytes.fromhex(config.rpc_secret))
    log.warning(
        "access keys' secrets are stored unencrypted in metadata_dir (readable by this "
        "user only): set rpc_secret, rpc_secret_file or GRANARY_RPC_SECRET to encrypt them"
    )
    return None


def protect_folders(config: Config) -> None:
    """Whatever the server creates is its user's only; folders from older versions too."""
    os.umask(PRIVATE_UMASK)
    make_private(Path(config.metadata_dir), recursive=True)
    for directory in config.data_dirs:
        make_private(Path(directory.path), recursive=False)


def admin_token_for(config: Config) -> str:
    """The configured admin token, else one generated once into metadata_dir."""
    if config.admin.admin_token:
        return config.admin.admin_token
    path = Path(config.metadata_dir) / ADMIN_TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_hex(32)
    write_private(path, token)
    return token


@dataclass
class Credentials:
    """The default key; `secret` only when this start created the key."""

    key_id: str
    secret: str | None


class Node:
    """One running Granary node."""

    def __init__(
        self,
        config: Config,
        *,
        default_key: bool,
        forked_workers: list[WorkerProcess] | None = None,
    ) -> None:
        """`forked_workers`: S3 workers forked before the node started (spawn.py)."""
        self.config = config
        self.default_key = default_key
        set_clock_offset(config.clock_offset_ms)
        self.stop_event = asyncio.Event()
        self.credentials: Credentials | None = None
        metadata_dir = Path(config.metadata_dir)
        warn_unsupported(config, log)
        protect_folders(config)
        metadata_dir.mkdir(parents=True, exist_ok=True)
        check_process_model(config)
        prometheus.install()
        self.slots = ProcessSlots(metadata_dir / LOCKS_DIR / SLOTS_FILE)
        if not self.slots.claim(0):
            raise ConfigError(
                f"metadata_dir {metadata_dir} is in use by another running Granary node"
            )
        self.identity = load_or_create_identity(metadata_dir)
        self.node_id = node_id(self.identity)
        self.net = NetApp(
            self.identity,
            rpc_secret_for(config),
            bind=parse_host_port(config.rpc_bind_addr, what="rpc_bind_addr"),
            public_addr=config.rpc_public_addr,
            handshake_timeout=config.rpc_handshake_timeout_secs,
            max_connections=config.rpc_max_connections,
        )
        self.kubernetes = kubernetes_discovery(config, self.node_id)
        self.peering = Peering(
            self.net,
            metadata_dir=metadata_dir,
            bootstrap_peers=config.bootstrap_peers,
            ping_interval=config.ping_interval_secs,
            discovery=[] if self.kubernetes is None else [self.kubernetes],
        )
        self.auto_layout = auto_layout_of(config)
        self.layout = LayoutManager(
            metadata_dir,
            config.replication_factor,
            self.net,
            mode=config.consistency_mode,
            gossip_interval=config.ping_interval_secs,
        )
        self.stack = stack = S3Stack(
            config,
            node_id=self.node_id,
            net=self.net,
            layout=self.layout,
            distances=self.peering,
            sealer=secret_sealer_for(config),
            http_limits=s3_http_limits(config.s3_api),
            process=0,
        )
        self.db, self.store, self.model = stack.db, stack.store, stack.model
        self.access, self.objects, self.multipart = stack.access, stack.objects, stack.multipart
        self.sharded, self.s3_server = stack.sharded, stack.s3_server
        self.table_rpc = stack.table_rpc
        self.workers = Workers(saved=Path(config.metadata_dir) / WORKER_VARIABLES_FILE)
        self.healing = BlockHealing(
            stack.blocks,
            self.workers,
            layout_version=self.layout.current.version,
            resync_workers=config.resync_worker_count,
            resync_tranquility=config.resync_tranquility,
            scrub_tranquility=config.scrub_tranquility,
            scrub_enabled=not config.disable_scrub,
        )
        expose_hedging(self.workers, "table", stack.table_hedging)
        self.lifecycle = LifecycleWorker(
            self.access,
            self.objects,
            self.multipart,
            day_ms=int(config.lifecycle_day_secs * 1000),
            interval_secs=config.lifecycle_interval_secs,
            local_node=self.node_id,
            status=self.workers.add("lifecycle"),
        )
        self.workers.restore()
        self.tombstone_gcs = stack.tombstone_gcs
        self.syncs = [
            TableSync(
                table,
                self.table_rpc,
                min(FULL_COPY_SYNC_SECS, config.anti_entropy_interval_secs)
                if table.replication.full_copy
                else config.anti_entropy_interval_secs,
                self.layout,
            )
            for table in self.model.tables
        ]
        self.node_info = NodeInfoService(self.net, [d.path for d in self.store.directories])
        self.cluster_usage = ClusterUsage(self.model.usage, self.net)
        self.redundancy = Redundancy(self.net, self.syncs, self.model.blocks.resync)
        self.net_host = parse_host_port(config.rpc_bind_addr, what="rpc_bind_addr")[0]
        self.layout.on_change(self._layout_changed)
        self.net.add_listener(self._peer_up, lambda node: None)
        self.s3_workers = S3Workers(
            config,
            config.s3_process_count - 1,
            self.layout,
            self.peering,
            self.objects,
            self.kicks(),
            forked_workers or [],
            {"table": stack.table_hedging, "block": stack.blocks.hedging},
        )
        self._expose_s3_processes()
        self.admin_server: HttpServer | None = None
        self._tasks: list[asyncio.Task] = []

    def _expose_s3_processes(self) -> None:
        """What an operator sees of the S3 workers (`granary worker get`)."""
        s3_workers = self.s3_workers
        self.workers.variable(
            "s3-processes", lambda: s3_workers.count + 1, help="processes serving S3"
        )
        self.workers.variable("s3-worker-pids", lambda: s3_workers.pids)
        self.workers.variable("s3-worker-restarts", lambda: s3_workers.restarts)

    def kicks(self) -> dict[str, Callable[[], None]]:
        """The wake-ups of background workers that an S3 worker process's writes may
        need (named as in `granary.processes.worker.primary_wakeups`)."""
        blocks = self.stack.blocks
        kicks = {
            "block-gc": blocks.refcounts.became_deletable.set,
            "resync": blocks.resync.wakeup.set,
        }
        for table in self.model.tables:
            kicks[f"table-queue:{table.name}"] = table.queue_wakeup.set
        return kicks

    def _layout_changed(self, history) -> None:
        self.healing.layout_changed(history.current.version)
        for sync in self.syncs:
            sync.wakeup.set()

    def _peer_up(self, node: bytes, address) -> None:
        """A new peer: exchange layouts and catch up with it."""
        task = asyncio.ensure_future(self.layout.sync_with(node))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        for sync in self.syncs:
            sync.wakeup.set()

    async def _run_auto_layout(self, auto: AutoLayout, stop: asyncio.Event) -> None:
        """Stage this node's role whenever the layout says otherwise; on the
        coordinator, apply the staged changes once worth a version (layout/auto.py)."""
        me = self.node_id.hex()
        zone = auto.zone or await self._zone_of_kubernetes_node(stop)
        if zone is None:
            return  # stopped before the zone was known
        capacity = auto.capacity or shutil.disk_usage(self.store.directories[0].path).total
        role = NodeRole(zone=zone, capacity=capacity)
        changed = asyncio.Event()
        self.layout.on_change(lambda _: changed.set())
        while not stop.is_set():
            changed.clear()
            if role_to_stage(self.layout.current, me, role):
                await self.layout.update(
                    lambda history: history.update(history.current.stage_role(me, role, now_ms()))
                )
            if auto.coordinator and version_to_apply(self.layout.current, auto.expected_nodes):
                await self._apply_automatic_layout(auto.expected_nodes)
            await sleep_until(stop, AUTO_LAYOUT_INTERVAL_SECS, changed)

    async def _zone_of_kubernetes_node(self, stop: asyncio.Event) -> str | None:
        """The zone label of the Kubernetes node this pod runs on, asked until known."""
        assert self.kubernetes is not None  # auto_layout_of checked it
        node_name = os.environ[NODE_NAME]
        while not stop.is_set():
            try:
                zone = await self.kubernetes.zone_of(node_name)
            except KubernetesError as error:
                log.warning("automatic layout: the zone of node %s: %s", node_name, error)
            else:
                if zone is not None:
                    return zone
                log.warning("automatic layout: node %s has no %s label", node_name, ZONE_LABEL)
            await sleep_until(stop, AUTO_LAYOUT_INTERVAL_SECS)
        return None

    async def _apply_automatic_layout(self, expected_nodes: int) -> None:
        def apply(history: LayoutHistory) -> LayoutHistory:
            version = version_to_apply(history.current, expected_nodes)
            if version is None:
                return history
            return history.update(history.current.apply_staged(version)[0])

        try:
            history = await self.layout.update(apply)
        except LayoutError as error:
            log.warning("automatic layout: the staged roles cannot be applied yet: %s", error)
            return
        log.info("automatic layout: applied version %d", history.current.version)

    async def _standalone_layout(self) -> None:
        """A node meant to run alone gets a one-node layout, so it works at once."""
        if self.layout.current.version > 0 or not runs_standalone(self.config):
            return
        if self.config.auto_layout is not None:
            return  # its own layout comes from _run_auto_layout
        capacity = shutil.disk_usage(self.store.directories[0].path).total
        node = self.node_id.hex()
        role = NodeRole(zone="dc1", capacity=capacity)
        await self.layout.update(
            lambda history: history.update(
                history.current.stage_role(node, role, now_ms()).apply_staged(1)[0]
            )
        )

    async def _recover_uploads(self, interrupted: list[tuple[bytes, InflightUpload]]) -> None:
        """Abort the uploads the last stop interrupted, once a quorum can be reached."""
        for attempt in range(60):
            if self.layout.current.version == 0 or not interrupted:
                return
            try:
                recovered = await self.objects.recover_interrupted(interrupted)
            except (QuorumError, ConditionalConflict):
                await asyncio.sleep(min(0.5 * (attempt + 1), 5.0))
                continue
            if recovered:
                log.info("aborted %d upload(s) interrupted by the last stop", recovered)
            return
        log.error("interrupted uploads not recovered: too few nodes answered")

    async def _index_legacy_uploads(self) -> None:
        """List the uploads created before the upload index, once a quorum can be reached."""
        for attempt in range(60):
            if self.layout.current.version == 0:
                return
            try:
                indexed = await self.multipart.index_legacy_uploads()
            except QuorumError:
                await asyncio.sleep(min(0.5 * (attempt + 1), 5.0))
                continue
            if indexed:
                log.info("indexed %d multipart upload(s) created before the upload index", indexed)
            return
        log.error("multipart uploads created before the upload index not indexed: no quorum")

    async def _default_key_when_laid_out(self) -> None:
        """Create the default key (`ensure_default_key`) once a layout exists."""
        env_id = os.environ.get("GRANARY_ACCESS_KEY_ID")
        env_secret = os.environ.get("GRANARY_SECRET_ACCESS_KEY")
        if env_id and env_secret:
            self.credentials = Credentials(env_id, None)

        async def create() -> None:
            self.credentials = await self.ensure_default_key()

        await self._once_laid_out(create, "the default access key")

    async def _apply_declarations(self) -> None:
        """Make the configuration's `[[keys]]` and `[[buckets]]` exist (model/declarations.py)."""

        async def apply() -> None:
            await apply_declarations(self.access, self.config.keys, self.config.buckets)

        if self.config.keys or self.config.buckets:
            await self._once_laid_out(apply, "the declared keys and buckets")

    async def _once_laid_out(self, job: Callable[[], Awaitable[None]], what: str) -> None:
        """Run `job` now on a standalone node with its layout, so that it is done before
        the node serves; else in the background once a layout exists and as soon as a
        write quorum takes it (a cluster node may start before its peers answer).
        Tried again while too few nodes answer, or another node creates the same bucket.
        """
        if self.layout.current.version > 0 and runs_standalone(self.config):
            await job()
            return
        laid_out = asyncio.Event()
        if self.layout.current.version > 0:
            laid_out.set()

        def note_layout(history: LayoutHistory) -> None:
            if history.current.version:
                laid_out.set()

        self.layout.on_change(note_layout)

        async def run_later() -> None:
            await laid_out.wait()
            for attempt in range(20):
                try:
                    await job()
                    return
                except (QuorumError, AccessError) as error:
                    if isinstance(error, AccessError) and error.reason != "conflict":
                        raise
                    await asyncio.sleep(min(0.5 * (attempt + 1), 5.0))
            log.error("%s: not done, too few nodes answered", what)

        self._tasks.append(asyncio.ensure_future(run_later()))

    async def ensure_default_key(self) -> Credentials:
        """The key announced at start: from the environment, or generated once.

        Its secret is announced only by the start that creates the key.
        """
        env_id = os.environ.get("GRANARY_ACCESS_KEY_ID")
        env_secret = os.environ.get("GRANARY_SECRET_ACCESS_KEY")
        path = Path(self.config.metadata_dir) / DEFAULT_KEY_FILE
        if env_id and env_secret:
            key_id, secret = env_id, env_secret
        elif path.exists():
            key_id, secret = path.read_text().strip(), None
        else:
            key_id, secret = None, None
        key = self.access.get_key(key_id) if key_id else None
        if key is not None:
            if secret is not None and self.access.reveal_secret(key) != secret:
                raise SystemExit(f"access key {key_id} exists with a different secret")
            return Credentials(key.key_id, None)
        try:
            key = await self.access.create_key(
                "default", key_id=key_id, secret=secret, allow_create_bucket=True
            )
        except AccessError:
            raise SystemExit(f"access key {key_id} was deleted; choose another") from None
        if not (env_id and env_secret):
            write_private(path, key.key_id)
        return Credentials(key.key_id, self.access.reveal_secret(key))

    async def start(self) -> None:
        config = self.config
        await self.net.start()
        await self.peering.start()
        await self._standalone_layout()
        await self._seal_clear_secrets()
        # The S3 workers of a previous primary stop once it is gone (their requests
        # first): until then their uploads are running, not interrupted.
        old_workers = range(1, MAX_S3_PROCESSES + 1)
        if any(self.slots.held_elsewhere(slot) for slot in old_workers):
            log.info("waiting for the S3 workers of the previous run to finish and stop")
            await self.slots.wait_until_free(old_workers)
        interrupted = self.objects.interrupted_uploads()  # before any new upload starts
        started = time.time()  # older temporary block files were left by a crash
        if runs_standalone(self.config):
            await self._recover_uploads(interrupted)
        spawn, stop = self.workers.spawn, self.stop_event
        blocks = self.model.blocks
        self._tasks = [
            *(
                spawn(
                    f"table-queue-{t.name}",
                    t.run_queue_worker(stop),
                    queue_length=t.queue_tree.count,
                )
                for t in self.model.tables
            ),
            spawn(
                "block-gc", blocks.run_gc_worker(stop), queue_length=blocks.refcounts.gc_todo.count
            ),
            spawn("layout-gossip", self.layout.run_gossip(stop)),
            *(spawn(f"table-sync-{s.table.name}", s.run(stop)) for s in self.syncs),
            *(
                spawn(f"tombstone-gc-{g.table.name}", g.run(stop, TOMBSTONE_GC_INTERVAL_SECS))
                for g in self.tombstone_gcs
            ),
            *self.healing.start(stop),
            spawn("usage-recount", self.model.usage.recount(stop)),
            spawn("lifecycle", self.lifecycle.run(stop), status=self.lifecycle.status),
            *(
                [spawn("auto-layout", self._run_auto_layout(self.auto_layout, stop))]
                if self.auto_layout is not None
                else []
            ),
            asyncio.ensure_future(self.stack.trim_memory_after_bursts(stop)),
            asyncio.ensure_future(watch_event_loop(stop)),
        ]
        if not runs_standalone(self.config):
            self._tasks.append(asyncio.ensure_future(self._recover_uploads(interrupted)))
        self._tasks.append(asyncio.ensure_future(self._index_legacy_uploads()))
        self._tasks.append(asyncio.ensure_future(blocks.sweep_temp_files(before=started)))
        if self.default_key:
            await self._default_key_when_laid_out()
        await self._apply_declarations()
        if config.admin.api_bind_addr:
            cluster = ClusterAdmin(
                self.layout,
                self.peering,
                self.net,
                self.node_info,
                self.sharded.write_quorum(config.replication_factor),
                config.rpc_public_addr or f"{_display_host(self.net_host)}:{self.net.port}",
                self.model.tables,
            )
            ops = BlockOps(self.workers, self.healing, self.objects, self.access, self.syncs)
            redundancy = self.redundancy
            redundancy.cluster = cluster
            admin_token = admin_token_for(config)
            admin = AdminApp(
                self.access,
                admin_token,
                cluster,
                ops,
                self._metrics_endpoint(cluster, redundancy, admin_token),
                UsageOps(self.access, self.cluster_usage, cluster, redundancy),
            )
            self.admin_server = HttpServer(admin.handle)
            host, port = parse_host_port(config.admin.api_bind_addr, what="admin.api_bind_addr")
            await self.admin_server.start(host, port)
            self._record_admin_endpoint(f"{_display_host(host)}:{self.admin_server.port}")
        # S3 last: a client that finds the S3 port open finds the admin API too.
        host, port = parse_host_port(config.s3_api.api_bind_addr, what="s3_api.api_bind_addr")
        if self.s3_workers.count == 0:
            await self.s3_server.start(host, port)
            return
        # The port opens once every process is ready to serve it.
        port = free_s3_port(host, port)
        await self.s3_workers.start(port)
        await self.s3_server.start(host, port, sock=bound_socket(host, port))
        self.s3_workers.serve()

    def _metrics_endpoint(
        self, cluster: ClusterAdmin, redundancy: Redundancy, admin_token: str
    ) -> MetricsEndpoint:
        config = self.config
        exposition = MetricsExposition(self.s3_workers.samples)
        expose_node_gauges(
            exposition,
            cluster,
            replication_factor=config.replication_factor,
            volumes={
                "metadata": [Path(config.metadata_dir)],
                "data": [Path(d.path) for d in config.data_dirs],
            },
            pids=lambda: [os.getpid(), *self.s3_workers.pids],
        )
        level = config.compression_level
        expose_storage_gauges(
            exposition,
            self.model.tables,
            self.tombstone_gcs,
            self.model.blocks,
            None if level == "none" else level,
        )
        expose_usage_gauges(exposition, self.access, self.model.usage, redundancy)
        return MetricsEndpoint(
            exposition,
            config.admin.metrics_token,
            config.admin.metrics_require_token,
            admin_token,
        )

    def _record_admin_endpoint(self, endpoint: str) -> None:
        """Tell the CLI where the admin API listens; a full disk must not stop the node."""
        path = Path(self.config.metadata_dir) / ADMIN_ENDPOINT_FILE
        try:
            write_if_changed(path, endpoint.encode(), private=True)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            log.warning("cannot record the admin endpoint %s in %s: %s", endpoint, path, error)

    async def _seal_clear_secrets(self) -> None:
        """Encrypt the secrets older versions stored in clear; refuse secrets it cannot open."""
        unreadable = self.access.unreadable_secrets()
        if unreadable:
            raise ConfigError(
                f"cannot decrypt the secret of {len(unreadable)} access key(s) "
                f"({', '.join(unreadable[:3])}): set the rpc_secret they were stored under"
            )
        try:
            sealed = await self.access.seal_clear_secrets()
        except Exception as error:  # the engine's own error (LMDB, SQLite), e.g. a full disk
            log.warning("secrets stored in clear not encrypted yet (next start will): %s", error)
            return
        if sealed:
            log.info("encrypted the secret of %d access key(s) stored in clear", sealed)

    @property
    def s3_endpoint(self) -> str:
        host, _ = parse_host_port(self.config.s3_api.api_bind_addr, what="s3_api.api_bind_addr")
        return f"http://{_display_host(host)}:{self.s3_server.port}"

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.gather(self.s3_workers.stop(), self.s3_server.close())
        if self.admin_server is not None:
            await self.admin_server.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self.peering.stop()
        await self.net.stop()
        self.stack.close()
        self.slots.close()


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


async def run_node(
    config: Config,
    *,
    default_key: bool,
    announce,
    forked_workers: list[WorkerProcess] | None = None,
) -> None:
    """Run a node until SIGINT or SIGTERM.

    The signals are handled from the start: one that arrives while the node
    is still starting (its S3 port may already answer) cancels the start and
    stops what was started (it used to end the process with status 1).
    """
    node = Node(config, default_key=default_key, forked_workers=forked_workers)
    loop = asyncio.get_running_loop()
    starting = asyncio.ensure_future(node.start())

    def on_signal() -> None:
        node.stop_event.set()
        starting.cancel()  # nothing left to cancel once started

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        await starting
    except asyncio.CancelledError:
        log.info("stopped while starting")
        await node.stop()
        return
    announce(node)
    await node.stop_event.wait()
    log.info("stopping")
    await node.stop()
