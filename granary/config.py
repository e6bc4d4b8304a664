"""Configuration: one TOML file, validated by msgspec.

Key names follow Garage's so that an operator's config reads the same. Every
key Garage documents is accepted: the ones Granary does not implement yet are
listed by `unsupported_keys` (the server logs one warning for each); a key
Garage does not have either is a `ConfigError` naming it.

Secrets (`rpc_secret`, `admin.admin_token`, `admin.metrics_token`) may also
come from a file (`*_file`, which must not be readable by group or others,
as Garage checks) or from the environment (`GARAGE_*` / `GRANARY_*`), which
overrides the file, as in Garage.

`GRANARY_RPC_PUBLIC_ADDR` overrides `rpc_public_addr` (a pod knows its address
only when it starts). `[[keys]]` and `[[buckets]]` (Granary's own) declare access keys and buckets
that every node makes exist at start (granary/model/declarations.py).
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
from msgspec.structs import replace

from granary.api.s3.errors import S3Error
from granary.api.s3.names import validate_bucket_name
from granary.model.buckets import SECRET_ACCESS_KEY
from granary.model.declarations import DeclaredBucket, DeclaredKey
from granary.telemetry.otlp import parse_sink
from granary.util.sizes import parse_size

# Files the server keeps in metadata_dir for the CLI to find it.
ADMIN_TOKEN_FILE = "admin_token"
ADMIN_ENDPOINT_FILE = "admin_endpoint"
MAX_S3_PROCESSES = 64


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


class DataDir(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    capacity: str | int | None = None
    read_only: bool = False


class AutoLayoutConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Automatic layout (granary/layout/auto.py): this node's role, and which node applies."""

    coordinator: str
    """The host name of the one node that applies layouts (e.g. a StatefulSet's `granary-0`)."""
    zone: str | None = None
    """This node's zone; else GRANARY_ZONE."""
    capacity: str | int = "auto"
    """Bytes this node stores (a size: "2T"), or "auto": its first data directory's file system."""
    expected_nodes: int = 1
    """Nodes with a role before the first layout is applied."""

    def __post_init__(self) -> None:
        if self.expected_nodes < 1:
            raise ValueError("auto_layout.expected_nodes must be at least 1")
        if self.capacity != "auto":
            parse_size(self.capacity)


class S3ApiConfig(msgspec.Struct, forbid_unknown_fields=True):
    api_bind_addr: str = "127.0.0.1:3900"
    s3_region: str = "us-east-1"
    root_domain: str | None = None
    max_connections: int | None = None
    """Open S3 connections at most; None: derived from the open-file limit."""
    unauthenticated_timeout_secs: float = 5.0
    """How long a connection with no successful answer yet may sit idle or take
    to send a request head (an error answer keeps it no longer)."""

    def __post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.unauthenticated_timeout_secs <= 0:
            raise ValueError("unauthenticated_timeout_secs must be positive")


class AdminConfig(msgspec.Struct, forbid_unknown_fields=True):
    api_bind_addr: str | None = "127.0.0.1:3903"
    admin_token: str | None = None
    admin_token_file: str | None = None
    metrics_token: str | None = None  # bearer token for /metrics; open without one
    metrics_token_file: str | None = None
    metrics_require_token: bool = False  # /metrics refused without a token (metrics or admin)
    trace_sink: str | None = None
    """OTLP collector: gRPC as in Garage (`http://localhost:4317`), HTTP on port
    4318 or with a path (`http://localhost:4318/v1/traces`)."""
    trace_protocol: Literal["grpc", "http"] | None = None  # unset: told from trace_sink
    trace_sampling_ratio: float = 1.0  # share of S3 requests traced (Garage traces all)

    def __post_init__(self) -> None:
        if not 0.0 <= self.trace_sampling_ratio <= 1.0:
            raise ValueError("admin.trace_sampling_ratio must be between 0 and 1")
        if self.trace_sink is not None:
            parse_sink(self.trace_sink, self.trace_protocol)  # raises a ValueError


# Sections of Garage's that Granary accepts but does not implement yet: their
# fields are Garage's, so a typo in them is still reported by name.
class S3WebConfig(msgspec.Struct, forbid_unknown_fields=True):
    bind_addr: Any = None
    root_domain: Any = None
    add_host_to_metrics: Any = None


class K2vApiConfig(msgspec.Struct, forbid_unknown_fields=True):
    api_bind_addr: Any = None


class ConsulDiscoveryConfig(msgspec.Struct, forbid_unknown_fields=True):
    api: Any = None
    consul_http_addr: Any = None
    service_name: Any = None
    ca_cert: Any = None
    client_cert: Any = None
    client_key: Any = None
    token: Any = None
    tls_skip_verify: Any = None
    tags: Any = None
    meta: Any = None


class KubernetesDiscoveryConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Peers found through custom resources (granary/net/discovery/kubernetes.py)."""

    namespace: str
    service_name: str
    skip_crd: bool = False


# Garage's legacy `replication_mode`: its replication factor and consistency mode.
REPLICATION_MODES = {
    "none": (1, "consistent"),
    "1": (1, "consistent"),
    "2": (2, "consistent"),
    "2-dangerous": (2, "dangerous"),
    "3": (3, "consistent"),
    "3-degraded": (3, "degraded"),
    "3-dangerous": (3, "dangerous"),
}

# Garage's keys that are accepted and ignored, with what is missing.
UNSUPPORTED = {
    "metadata_snapshots_dir": "metadata snapshots are not implemented yet",
    "metadata_auto_snapshot_interval": "metadata snapshots are not implemented yet",
    "use_local_tz": "logs always use the system's local time zone",
    "block_ram_buffer_max": "block writes are not buffered in RAM beyond the streaming window",
    "rpc_bind_outgoing": "outgoing RPC connections are not bound to rpc_bind_addr",
    "rpc_public_addr_subnet": "public address autodiscovery is not implemented yet",
    "rpc_ping_timeout_msec": "the RPC ping timeout is not configurable yet",
    "rpc_timeout_msec": "the RPC timeout is not configurable yet",
    "allow_punycode": "bucket names are checked by S3's rules only",
    "consul_discovery": "Consul discovery is not implemented yet; use bootstrap_peers",
    "s3_web": "static website hosting is not implemented yet",
    "k2v_api": "the K2V API is not implemented",
}


class Config(msgspec.Struct, forbid_unknown_fields=True):
    metadata_dir: str
    data_dir: str | list[DataDir]
    db_engine: Literal["lmdb", "sqlite"] = "lmdb"
    lmdb_map_size: str | int = "64G"
    metadata_fsync: bool | None = None
    """Sync every metadata commit; unset: on when replication_factor is 1."""
    data_fsync: bool | None = None
    """Sync every block file and its folder; unset: on when replication_factor is 1."""
    block_size: str | int = "1M"
    compression_level: int | Literal["none"] = 1
    replication_factor: int = 1
    consistency_mode: Literal["consistent", "degraded", "dangerous"] = "consistent"
    block_gc_delay_secs: int = 600
    resync_worker_count: int = 1
    resync_tranquility: float = 2.0
    resync_retry_base_secs: float = 60.0
    scrub_tranquility: float = 4.0
    disable_scrub: bool = False
    anti_entropy_interval_secs: int = 600
    tombstone_gc_delay_secs: int = 24 * 3600
    clock_offset_ms: int = 0
    lifecycle_day_secs: float = 86400.0
    """How long a day of lifecycle rules lasts: shorter only in tests (as Ceph's
    rgw_lc_debug_interval)."""
    lifecycle_interval_secs: float = 3600.0
    """How often the lifecycle worker passes over the buckets it runs."""
    ping_interval_secs: float = 10.0
    rpc_bind_addr: str = "127.0.0.1:3901"
    rpc_public_addr: str | None = None
    rpc_secret: str | None = None
    rpc_secret_file: str | None = None
    allow_world_readable_secrets: bool = False
    bootstrap_peers: list[str] = msgspec.field(default_factory=list)
    s3_api: S3ApiConfig = msgspec.field(default_factory=S3ApiConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    # Garage's keys not implemented yet (see UNSUPPORTED).
    metadata_snapshots_dir: Any = None
    metadata_auto_snapshot_interval: Any = None
    use_local_tz: Any = None
    block_ram_buffer_max: Any = None
    rpc_bind_outgoing: Any = None
    rpc_public_addr_subnet: Any = None
    rpc_ping_timeout_msec: Any = None
    rpc_timeout_msec: Any = None
    allow_punycode: Any = None
    replication_mode: str | None = None  # Garage's legacy key, read by parse_config
    consul_discovery: ConsulDiscoveryConfig | None = None
    kubernetes_discovery: KubernetesDiscoveryConfig | None = None
    s3_web: S3WebConfig | None = None
    k2v_api: K2vApiConfig | None = None
    rpc_max_connections: int = 512
    """Incoming RPC connections at most, handshakes in progress included."""
    rpc_handshake_timeout_secs: float = 10.0
    """Time for an RPC connection to complete TLS and the Hello swap."""
    s3_processes: int | Literal["auto"] = 1
    """Processes serving S3 on this node (docs/process-model.md); "auto": one per core."""
    log_format: Literal["text", "json"] | None = None
    """Log lines as text or JSON; unset: GRANARY_LOG_FORMAT, else text."""
    keys: list[DeclaredKey] = msgspec.field(default_factory=list)
    buckets: list[DeclaredBucket] = msgspec.field(default_factory=list)
    auto_layout: AutoLayoutConfig | None = None

    def __post_init__(self) -> None:
        if self.replication_factor < 1:
            raise ValueError("replication_factor must be at least 1 - at `$.replication_factor`")
        for key in ("block_size", "lmdb_map_size"):
            try:
                parse_size(getattr(self, key))
            except ValueError as exc:
                raise ValueError(f"{exc} - at `$.{key}`") from None
        if not 1 <= self.resync_worker_count <= 8:
            raise ValueError("resync_worker_count must be 1..8 - at `$.resync_worker_count`")
        for key in ("resync_tranquility", "scrub_tranquility"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must not be negative - at `$.{key}`")
        if self.resync_retry_base_secs <= 0:
            raise ValueError(
                "resync_retry_base_secs must be positive - at `$.resync_retry_base_secs`"
            )
        if parse_size(self.block_size) < 4096:
            raise ValueError("block_size must be at least 4K - at `$.block_size`")
        if isinstance(self.compression_level, int) and not -99 <= self.compression_level <= 22:
            raise ValueError("compression_level must be within -99..22 - at `$.compression_level`")
        if self.rpc_max_connections < 1:
            raise ValueError("rpc_max_connections must be at least 1 - at `$.rpc_max_connections`")
        if self.rpc_handshake_timeout_secs <= 0:
            raise ValueError(
                "rpc_handshake_timeout_secs must be positive - at `$.rpc_handshake_timeout_secs`"
            )
        if self.rpc_secret is not None:
            _check_rpc_secret(self.rpc_secret, "`$.rpc_secret`")
        if isinstance(self.s3_processes, int) and not 1 <= self.s3_processes <= MAX_S3_PROCESSES:
            raise ValueError(
                f's3_processes must be 1..{MAX_S3_PROCESSES} or "auto" - at `$.s3_processes`'
            )

    @property
    def syncs_metadata(self) -> bool:
        return self._syncs(self.metadata_fsync)

    @property
    def syncs_data(self) -> bool:
        return self._syncs(self.data_fsync)

    def _syncs(self, setting: bool | None) -> bool:
        """A setting, or by default: sync when no other copy guards against a power loss.

        With one copy, an acknowledged write lost in a power cut is lost for
        good. With several, the other copies (in other zones) cover a node's
        power loss, and anti-entropy restores what it forgot, so the
        cheaper default stays (as in Garage).
        """
        return setting if setting is not None else self.replication_factor == 1

    @property
    def s3_process_count(self) -> int:
        if self.s3_processes == "auto":
            return min(os.cpu_count() or 1, MAX_S3_PROCESSES)
        return self.s3_processes

    @property
    def block_size_bytes(self) -> int:
        return parse_size(self.block_size)

    @property
    def data_dirs(self) -> list[DataDir]:
        if isinstance(self.data_dir, str):
            return [DataDir(path=self.data_dir)]
        return list(self.data_dir)


def _check_rpc_secret(value: str, where: str) -> None:
    try:
        if len(bytes.fromhex(value)) != 32:
            raise ValueError
    except ValueError:
        raise ValueError(f"rpc_secret must be 64 hex digits - at {where}") from None


def unsupported_keys(config: Config) -> list[tuple[str, str]]:
    """The Garage keys set in `config` that Granary ignores, with what is missing."""
    found = []
    for name, why in UNSUPPORTED.items():
        section, _, key = name.rpartition(".")
        owner = getattr(config, section) if section else config
        if getattr(owner, key) is not None:
            found.append((name, why))
    return found


def warn_unsupported(config: Config, logger: logging.Logger) -> None:
    """One warning per Garage key that is set but not supported yet, or legacy."""
    for name, why in unsupported_keys(config):
        logger.warning("config key `%s` is accepted but not supported yet: %s", name, why)
    if config.replication_mode is not None:
        logger.warning(
            "config key `replication_mode` is Garage's legacy option, read as "
            "replication_factor = %d and consistency_mode = %r: please use those instead",
            config.replication_factor,
            config.consistency_mode,
        )


def _legacy_replication_mode(data: dict) -> dict:
    """Garage's `replication_mode` as `replication_factor` and `consistency_mode`."""
    mode = data.get("replication_mode")
    if mode is None:
        return data
    if "replication_factor" in data or data.get("consistency_mode", "consistent") != "consistent":
        raise ConfigError(
            "invalid configuration: set either the legacy replication_mode or "
            "replication_factor and consistency_mode, not both - at `$.replication_mode`"
        )
    if mode not in REPLICATION_MODES:
        raise ConfigError(
            f"invalid configuration: replication_mode must be one of "
            f"{', '.join(REPLICATION_MODES)} - at `$.replication_mode`"
        )
    factor, consistency = REPLICATION_MODES[mode]
    return {**data, "replication_factor": factor, "consistency_mode": consistency}


def _env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def read_secret_file(path: str, *, allow_world_readable: bool) -> str:
    """A secret kept in a file, refused (as Garage does) if group or others may read it."""
    try:
        mode = os.stat(path).st_mode
        if not allow_world_readable and mode & 0o077:
            raise ConfigError(
                f"secret file {path} is readable by group or others (mode "
                f"{stat.S_IMODE(mode):04o}, expected 0600); refusing to start until it is "
                "fixed or allow_world_readable_secrets (GARAGE_ALLOW_WORLD_READABLE_SECRETS) "
                "is true"
            )
        with open(path, encoding="utf-8") as handle:
            return handle.read().rstrip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None


def _env(environ: Mapping[str, str], suffix: str) -> str | None:
    """`GRANARY_<suffix>`, else Garage's `GARAGE_<suffix>`."""
    return environ.get(f"GRANARY_{suffix}") or environ.get(f"GARAGE_{suffix}") or None


def _resolve(
    name: str,
    in_config: str | None,
    file_in_config: str | None,
    environ: Mapping[str, str],
    allow_world_readable: bool,
) -> str | None:
    """One secret: the environment (value or file) first, else the config (value or file)."""
    env_name = name.rpartition(".")[2].upper()
    from_env, file_from_env = _env(environ, env_name), _env(environ, f"{env_name}_FILE")
    if from_env and file_from_env:
        raise ConfigError(f"only one of {env_name} and {env_name}_FILE can be set")
    if from_env:
        return from_env
    if file_from_env:
        return read_secret_file(file_from_env, allow_world_readable=allow_world_readable)
    if in_config is not None and file_in_config is not None:
        raise ConfigError(f"only one of `{name}` and `{name}_file` can be set")
    if file_in_config is not None:
        return read_secret_file(file_in_config, allow_world_readable=allow_world_readable)
    return in_config


def resolve_secrets(config: Config, environ: Mapping[str, str] | None = None) -> Config:
    """`config` with its secrets read from the environment or their files."""
    environ = os.environ if environ is None else environ
    allow = config.allow_world_readable_secrets or _env_flag(
        _env(environ, "ALLOW_WORLD_READABLE_SECRETS")
    )
    admin = config.admin
    rpc_secret = _resolve("rpc_secret", config.rpc_secret, config.rpc_secret_file, environ, allow)
    if rpc_secret is not None:
        try:
            _check_rpc_secret(rpc_secret, "rpc_secret (from its file or the environment)")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    admin = replace(
        admin,
        admin_token=_resolve(
            "admin.admin_token", admin.admin_token, admin.admin_token_file, environ, allow
        ),
        metrics_token=_resolve(
            "admin.metrics_token", admin.metrics_token, admin.metrics_token_file, environ, allow
        ),
        admin_token_file=None,
        metrics_token_file=None,
    )
    keys = [_declared_key_secret(key, allow) for key in config.keys]
    return replace(config, rpc_secret=rpc_secret, rpc_secret_file=None, admin=admin, keys=keys)


def _declared_key_secret(key: DeclaredKey, allow_world_readable: bool) -> DeclaredKey:
    secret = key.secret_access_key
    if key.secret_access_key_file is not None:
        secret = read_secret_file(
            key.secret_access_key_file, allow_world_readable=allow_world_readable
        )
    if secret is None or not SECRET_ACCESS_KEY.match(secret):
        raise ConfigError(f"key {key.name}: the secret access key must be 64 hex digits")
    return replace(key, secret_access_key=secret, secret_access_key_file=None)


def parse_config(data: dict, environ: Mapping[str, str] | None = None) -> Config:
    """Validate a decoded TOML document; secrets are read from files or the environment."""
    try:
        config = msgspec.convert(_legacy_replication_mode(data), Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    for bucket in config.buckets:
        try:
            validate_bucket_name(bucket.name)
        except S3Error:
            raise ConfigError(f"buckets: {bucket.name!r} is not a valid bucket name") from None
    return _from_environment(resolve_secrets(config, environ), environ)


def _from_environment(config: Config, environ: Mapping[str, str] | None) -> Config:
    """Settings a container learns at its start: `GRANARY_RPC_PUBLIC_ADDR` (a pod's
    address, e.g. "$(POD_IP):3901") overrides `rpc_public_addr`, `GRANARY_ZONE`
    gives automatic layout its zone."""
    environ = os.environ if environ is None else environ
    public = _env(environ, "RPC_PUBLIC_ADDR")
    if public is not None:
        config = replace(config, rpc_public_addr=public)
    auto = config.auto_layout
    zone = _env(environ, "ZONE")
    if auto is not None and auto.zone is None and zone is not None:
        config = replace(config, auto_layout=replace(auto, zone=zone))
    return config


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML configuration file."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    return parse_config(data, environ)


def parse_host_port(value: str, *, what: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` accepted) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
