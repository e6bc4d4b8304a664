"""Configuration: one TOML file, validated by msgspec.

Key names follow Garage's so that an operator's config reads the same; an
unknown or invalid key is a `ConfigError` naming the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from granary.util.sizes import parse_size

# Files the server keeps in metadata_dir for the CLI to find it.
ADMIN_TOKEN_FILE = "admin_token"
ADMIN_ENDPOINT_FILE = "admin_endpoint"


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


class DataDir(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    capacity: str | int | None = None
    read_only: bool = False


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


class Config(msgspec.Struct, forbid_unknown_fields=True):
    metadata_dir: str
    data_dir: str | list[DataDir]
    db_engine: Literal["lmdb", "sqlite"] = "lmdb"
    lmdb_map_size: str | int = "64G"
    metadata_fsync: bool = False
    data_fsync: bool = False
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
    ping_interval_secs: float = 10.0
    rpc_bind_addr: str = "127.0.0.1:3901"
    rpc_public_addr: str | None = None
    rpc_secret: str | None = None
    bootstrap_peers: list[str] = msgspec.field(default_factory=list)
    s3_api: S3ApiConfig = msgspec.field(default_factory=S3ApiConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    rpc_max_connections: int = 512
    """Incoming RPC connections at most, handshakes in progress included."""
    rpc_handshake_timeout_secs: float = 10.0
    """Time for an RPC connection to complete TLS and the Hello swap."""

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
            try:
                if len(bytes.fromhex(self.rpc_secret)) != 32:
                    raise ValueError
            except ValueError:
                raise ValueError("rpc_secret must be 64 hex digits - at `$.rpc_secret`") from None

    @property
    def block_size_bytes(self) -> int:
        return parse_size(self.block_size)

    @property
    def data_dirs(self) -> list[DataDir]:
        if isinstance(self.data_dir, str):
            return [DataDir(path=self.data_dir)]
        return list(self.data_dir)


def parse_config(data: dict) -> Config:
    """Validate a decoded TOML document."""
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    return parse_config(data)


def parse_host_port(value: str, *, what: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` accepted) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
