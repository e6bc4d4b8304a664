"""Config files: Garage's keys accepted, mistakes named clearly."""

from __future__ import annotations

import pytest

from granary.config import ConfigError, load_config, parse_config
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
