"""Config files: Garage's keys accepted, mistakes named clearly."""

from __future__ import annotations

import logging
import os

import pytest

from granary.config import (
    UNSUPPORTED,
    Config,
    ConfigError,
    load_config,
    parse_config,
    unsupported_keys,
    warn_unsupported,
)
from granary.util.sizes import parse_size

MINIMAL = {"metadata_dir": "/m", "data_dir": "/d"}


def test_garage_style_config_is_accepted(tmp_path):
    path = tmp_path / "granary.toml"
    path.write_text(
        """
metadata_dir = "/var/lib/granary/meta"
data_dir = [{ path = "/data/a", capacity = "2T" }, { path = "/data/b", read_only = true }]
db_engine = "sqlite"
metadata_fsync = true
data_fsync = true
block_size = "1M"
compression_level = "none"
replication_factor = 3
consistency_mode = "degraded"
rpc_bind_addr = "[::]:3901"
rpc_secret = "%s"

[s3_api]
api_bind_addr = "0.0.0.0:3900"
s3_region = "garage"
root_domain = ".s3.example.com"

[admin]
api_bind_addr = "0.0.0.0:3903"
admin_token = "secret"
"""
        % ("ab" * 32)
    )
    config = load_config(path)
    assert config.block_size_bytes == 1 << 20
    assert [d.path for d in config.data_dirs] == ["/data/a", "/data/b"]
    assert config.data_dirs[1].read_only
    assert config.s3_api.s3_region == "garage"
    assert config.replication_factor == 3


# Every key of Garage's configuration reference.
GARAGE_FULL_CONFIG = """
replication_factor = 3
consistency_mode = "consistent"
metadata_dir = "/var/lib/garage/meta"
data_dir = "/var/lib/garage/data"
metadata_snapshots_dir = "/var/lib/garage/snapshots"
metadata_fsync = true
data_fsync = false
disable_scrub = false
use_local_tz = false
metadata_auto_snapshot_interval = "6h"
db_engine = "lmdb"
block_size = "1M"
block_ram_buffer_max = "256MiB"
lmdb_map_size = "1T"
compression_level = 1
rpc_secret_file = "%(secret_file)s"
rpc_bind_addr = "[::]:3901"
rpc_bind_outgoing = false
rpc_public_addr = "[fc00:1::1]:3901"
rpc_public_addr_subnet = "2001:0db8:f00:b00:/64"
rpc_ping_timeout_msec = 10000
rpc_timeout_msec = 30000
allow_world_readable_secrets = false
bootstrap_peers = ["%(peer)s@[fc00:1::1]:3901"]
allow_punycode = false

[consul_discovery]
api = "catalog"
consul_http_addr = "http://127.0.0.1:8500"
service_name = "garage-daemon"
ca_cert = "/etc/consul/consul-ca.crt"
client_cert = "/etc/consul/consul-client.crt"
client_key = "/etc/consul/consul-key.crt"
token = "abcdef-01234-56789"
tls_skip_verify = false
tags = [ "dns-enabled" ]
meta = { dns-acl = "allow trusted" }

[kubernetes_discovery]
namespace = "garage"
service_name = "garage-daemon"
skip_crd = false

[s3_api]
api_bind_addr = "[::]:3900"
s3_region = "garage"
root_domain = ".s3.garage"

[s3_web]
bind_addr = "[::]:3902"
root_domain = ".web.garage"
add_host_to_metrics = true

[k2v_api]
api_bind_addr = "[::]:3904"

[admin]
api_bind_addr = "0.0.0.0:3903"
metrics_token_file = "%(metrics_file)s"
admin_token_file = "%(admin_file)s"
trace_sink = "http://localhost:4317"
"""


def _secret_file(path, text: str, mode: int = 0o600) -> str:
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return str(path)


def _garage_config(tmp_path, mode: int = 0o600) -> str:
    path = tmp_path / "garage.toml"
    path.write_text(
        GARAGE_FULL_CONFIG
        % {
            "secret_file": _secret_file(tmp_path / "rpc_secret", "cd" * 32, mode),
            "metrics_file": _secret_file(tmp_path / "metrics_token", "metrics", mode),
            "admin_file": _secret_file(tmp_path / "admin_token", "admin-from-file", mode),
            "peer": "56" * 32,
        }
    )
    return str(path)


def test_every_garage_key_is_accepted_and_the_ignored_ones_named(tmp_path, caplog):
    config = load_config(_garage_config(tmp_path), environ={})
    assert config.rpc_secret == "cd" * 32
    assert config.admin.admin_token == "admin-from-file"
    ignored = {name for name, _ in unsupported_keys(config)}
    assert ignored == set(UNSUPPORTED)
    with caplog.at_level(logging.WARNING):
        warn_unsupported(config, logging.getLogger("test"))
    assert len(caplog.records) == len(UNSUPPORTED)
    for name in UNSUPPORTED:
        [record] = [r for r in caplog.records if f"`{name}`" in r.getMessage()]
        assert "not supported yet" in record.getMessage()


def test_implemented_keys_log_no_warning(caplog):
    config = parse_config({**MINIMAL, "rpc_secret": "ab" * 32}, environ={})
    with caplog.at_level(logging.WARNING):
        warn_unsupported(config, logging.getLogger("test"))
    assert caplog.records == []


@pytest.mark.parametrize(
    ("mode", "factor", "consistency"),
    [("none", 1, "consistent"), ("3", 3, "consistent"), ("3-degraded", 3, "degraded")],
)
def test_garage_legacy_replication_mode_is_read_and_warned(mode, factor, consistency, caplog):
    config = parse_config({**MINIMAL, "replication_mode": mode}, environ={})
    assert (config.replication_factor, config.consistency_mode) == (factor, consistency)
    with caplog.at_level(logging.WARNING):
        warn_unsupported(config, logging.getLogger("test"))
    [record] = caplog.records
    assert "`replication_mode` is Garage's legacy option" in record.getMessage()


@pytest.mark.parametrize(
    "extra", [{"replication_mode": "4"}, {"replication_mode": "3", "replication_factor": 3}]
)
def test_bad_or_conflicting_replication_mode_is_named(extra):
    with pytest.raises(ConfigError, match="replication_mode"):
        parse_config({**MINIMAL, **extra}, environ={})


def test_readable_secret_file_is_refused_unless_allowed(tmp_path):
    path = _garage_config(tmp_path, mode=0o644)
    with pytest.raises(ConfigError, match="readable by group or others"):
        load_config(path, environ={})
    allowed = load_config(path, environ={"GARAGE_ALLOW_WORLD_READABLE_SECRETS": "true"})
    assert allowed.rpc_secret == "cd" * 32


@pytest.mark.parametrize("prefix", ["GARAGE", "GRANARY"])
def test_secrets_from_the_environment_override_the_file(tmp_path, prefix):
    token_file = _secret_file(tmp_path / "token", "from-env-file")
    config = load_config(
        _garage_config(tmp_path),
        environ={f"{prefix}_RPC_SECRET": "ef" * 32, f"{prefix}_ADMIN_TOKEN_FILE": token_file},
    )
    assert config.rpc_secret == "ef" * 32
    assert config.admin.admin_token == "from-env-file"


def test_a_secret_and_its_file_together_are_refused(tmp_path):
    secret_file = _secret_file(tmp_path / "rpc_secret", "cd" * 32)
    data = {**MINIMAL, "rpc_secret": "ab" * 32, "rpc_secret_file": secret_file}
    with pytest.raises(ConfigError, match="only one of `rpc_secret` and `rpc_secret_file`"):
        parse_config(data, environ={})


def test_a_malformed_secret_in_a_file_is_named(tmp_path):
    secret_file = _secret_file(tmp_path / "rpc_secret", "not hex")
    with pytest.raises(ConfigError, match="rpc_secret"):
        parse_config({**MINIMAL, "rpc_secret_file": secret_file}, environ={})


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"no_such_key": 1}, "no_such_key"),
        ({"replication_factor": "three"}, "replication_factor"),
        ({"replication_factor": 0}, "replication_factor"),
        ({"block_size": "lots"}, "block_size"),
        ({"consistency_mode": "eventual"}, "consistency_mode"),
        ({"rpc_secret": "short"}, "rpc_secret"),
        ({"s3_api": {"api_bind_addr": "x", "typo": 1}}, "typo"),
        ({"compression_level": 99}, "compression_level"),
        ({"s3_web": {"bind_addr": "[::]:3902", "root_domian": "x"}}, "root_domian"),
        ({"consul_discovery": {"service": "x"}}, "service"),
        ({"admin": {"metrics_tokn": "x"}}, "metrics_tokn"),
    ],
)
def test_invalid_config_names_the_key(extra, named):
    with pytest.raises(ConfigError) as caught:
        parse_config({**MINIMAL, **extra})
    assert named in str(caught.value)


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError) as caught:
        parse_config({"data_dir": "/d"})
    assert "metadata_dir" in str(caught.value)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("metadata_dir = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1M", 1 << 20),
        ("10MiB", 10 << 20),
        ("1G", 1 << 30),
        ("2GB", 2 * 10**9),
        ("512", 512),
        ("1.5k", 1536),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "1X", "-1"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_a_single_copy_store_syncs_by_default_and_a_replicated_one_does_not():
    single = Config(**MINIMAL)
    assert single.syncs_metadata and single.syncs_data
    replicated = Config(**MINIMAL, replication_factor=3)
    assert not replicated.syncs_metadata and not replicated.syncs_data
    chosen = Config(**MINIMAL, metadata_fsync=False, data_fsync=True)
    assert not chosen.syncs_metadata and chosen.syncs_data
    chosen = Config(**MINIMAL, replication_factor=3, metadata_fsync=True)
    assert chosen.syncs_metadata and not chosen.syncs_data


KEY = {"name": "backup", "access_key_id": "GK" + "a1" * 12, "secret_access_key": "0f" * 32}


def test_declared_keys_and_buckets_are_read_with_their_secret_files(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("1e" * 32 + "\n")
    os.chmod(secret, 0o600)
    from_file = {**KEY, "secret_access_key": None, "secret_access_key_file": str(secret)}
    bucket = {"name": "backups", "versioning": True, "allow": {"backup": ["read", "write"]}}
    config = parse_config({**MINIMAL, "keys": [from_file], "buckets": [bucket]}, environ={})
    assert config.keys[0].secret_access_key == "1e" * 32
    assert config.keys[0].secret_access_key_file is None
    assert config.buckets[0].allow == {"backup": ["read", "write"]}


@pytest.mark.parametrize(
    ("declared", "named"),
    [
        ({"keys": [{**KEY, "access_key_id": "AKIA0000"}]}, "access_key_id"),
        ({"keys": [{**KEY, "secret_access_key": "short"}]}, "64 hex digits"),
        ({"keys": [{**KEY, "secret_access_key_file": "/f"}]}, "one of secret_access_key"),
        ({"buckets": [{"name": "b", "allow": {"k": ["admin"]}}]}, "read, write, owner"),
        ({"buckets": [{"name": "b", "allow": {"k": []}}]}, "read, write, owner"),
        ({"buckets": [{"name": "b", "object_lock": True, "versioning": False}]}, "object lock"),
        ({"buckets": [{"name": "b", "owner": "k"}]}, "owner"),
        ({"buckets": [{"name": "Not_A_Bucket"}]}, "not a valid bucket name"),
    ],
)
def test_bad_declarations_are_named(declared, named):
    with pytest.raises(ConfigError, match=named):
        parse_config({**MINIMAL, **declared}, environ={})


def test_the_public_address_can_come_from_the_environment():
    environ = {"GRANARY_RPC_PUBLIC_ADDR": "10.1.2.3:3901"}
    config = parse_config({**MINIMAL, "rpc_public_addr": "ignored:1"}, environ=environ)
    assert config.rpc_public_addr == "10.1.2.3:3901"
    assert parse_config(MINIMAL, environ={}).rpc_public_addr is None


def test_automatic_layout_takes_its_zone_from_the_config_or_the_environment():
    auto = {"coordinator": "granary-0", "capacity": "2T", "expected_nodes": 3}
    config = parse_config({**MINIMAL, "auto_layout": auto}, environ={"GRANARY_ZONE": "paris"})
    assert config.auto_layout is not None and config.auto_layout.zone == "paris"
    with_zone = parse_config({**MINIMAL, "auto_layout": {**auto, "zone": "rome"}}, environ={})
    assert with_zone.auto_layout is not None and with_zone.auto_layout.zone == "rome"
    without = parse_config({**MINIMAL, "auto_layout": auto}, environ={})  # as the CLI reads it
    assert without.auto_layout is not None and without.auto_layout.zone is None
    with pytest.raises(ConfigError, match="expected_nodes"):
        parse_config({**MINIMAL, "auto_layout": {**auto, "expected_nodes": 0}}, environ={})
