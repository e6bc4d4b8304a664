"""A node's files at rest: private modes, sealed key secrets, a full metadata disk."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import ACCESS_KEY, SECRET_KEY, admin_call, node_config, s3_client

from tests.ports import free_port

RPC_SECRET = "5e" * 32


def secret_file(path: Path) -> Path:
    path.write_text(RPC_SECRET + "\n")
    path.chmod(0o600)
    return path


def modes_under(root: Path) -> dict[Path, int]:
    return {path: stat.S_IMODE(path.lstat().st_mode) for path in [root, *root.rglob("*")]}


def test_files_are_private_and_secrets_sealed(own_server):
    server = own_server
    server.config_text = node_config(server, rpc_secret=RPC_SECRET)
    server.start()
    created = admin_call(server, "POST", "/v1/keys", {"name": "carol", "allow_create_bucket": True})
    carol = s3_client(server.endpoint, access_key=created["key_id"], secret_key=created["secret"])
    carol.create_bucket(Bucket="carols")
    carol.put_object(Bucket="carols", Key="big", Body=os.urandom(3 << 20))
    assert server.stop() == 0

    for root in (server.root / "meta", server.root / "data"):
        wrong = {
            path: f"{mode:o}"
            for path, mode in modes_under(root).items()
            if mode != (0o700 if path.is_dir() else 0o600)
        }
        assert not wrong, f"not private: {wrong}"
    for clear in (created["secret"], SECRET_KEY):
        holders = [
            path
            for path in (server.root / "meta").rglob("*")
            if path.is_file() and clear.encode() in path.read_bytes()
        ]
        assert not holders, f"a secret in clear in {holders}"

    server.start()
    carol = s3_client(server.endpoint, access_key=created["key_id"], secret_key=created["secret"])
    assert carol.head_object(Bucket="carols", Key="big")["ContentLength"] == 3 << 20
    shown = admin_call(server, "GET", f"/v1/keys/{created['key_id']}?show_secret=true")
    assert shown["secret"] == created["secret"]


def test_older_folders_become_private_and_clear_secrets_keep_working(own_server):
    """A node of 0.3 (no rpc_secret, world-readable folders) upgraded with an rpc_secret."""
    server = own_server
    server.config_text = node_config(server)
    server.start()
    server.client().create_bucket(Bucket="before")
    assert server.stop() == 0
    for path in [server.root / "meta", *(server.root / "meta").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (server.root / "data").chmod(0o755)

    server.config_text = node_config(server, rpc_secret_file=str(secret_file(server.root / "s")))
    server.start()
    assert "encrypted the secret of 1 access key(s)" in server.log()
    assert [b["Name"] for b in server.client().list_buckets()["Buckets"]] == ["before"]
    assert stat.S_IMODE((server.root / "data").stat().st_mode) == 0o700
    assert all(mode in (0o600, 0o700) for mode in modes_under(server.root / "meta").values())


def test_a_node_whose_secrets_cannot_be_opened_says_why(own_server):
    server = own_server
    server.config_text = node_config(server, rpc_secret="a1" * 32)
    server.start()
    assert server.stop() == 0
    server.config_text = node_config(server, rpc_secret="b2" * 32)
    with pytest.raises(RuntimeError, match="exited early"):
        server.start()
    assert f"cannot decrypt the secret of 1 access key(s) ({ACCESS_KEY})" in server.log()
    assert "Traceback" not in server.log()


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 16 MiB tmpfs the test can fill, unmounted at the end."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> None:
    """Write zeros until the disk refuses a single byte more."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (64 << 10, 4096, 1):
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def test_a_node_restarts_and_serves_reads_with_a_full_metadata_disk(own_server, small_disk):
    server = own_server
    config = node_config(server, rpc_secret=RPC_SECRET, lmdb_map_size="64M")
    server.config_text = config.replace(str(server.root / "meta"), str(small_disk / "meta"))
    server.start()
    s3 = server.client()
    s3.create_bucket(Bucket="kept")
    s3.put_object(Bucket="kept", Key="small", Body=b"inline")
    s3.put_object(Bucket="kept", Key="large", Body=b"L" * (2 << 20))
    assert server.stop() == 0
    fill(small_disk)
    admin_port = server.admin_port
    server.admin_port = free_port()  # the admin endpoint file must change
    server.config_text = server.config_text.replace(f":{admin_port}", f":{server.admin_port}")

    server.start()
    s3 = server.client()
    assert s3.get_object(Bucket="kept", Key="small")["Body"].read() == b"inline"
    assert s3.get_object(Bucket="kept", Key="large")["Body"].read() == b"L" * (2 << 20)
    assert "cannot record the admin endpoint" in server.log()
    # LMDB reuses its free pages first: write until it needs a new one.
    refused = [put_error(s3, f"new-{i}", b"x" * 3000) for i in range(2000)]
    first = next(i for i, error in enumerate(refused) if error is not None)
    assert refused[first] == (507, "InsufficientStorage"), refused[first]
    assert put_error(s3, "large-new", b"y" * (2 << 20)) == (507, "InsufficientStorage")
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket="kept", MaxKeys=1000)["Contents"]}
    assert {"large", "small"} <= stored and "large-new" not in stored
    assert server.stop() == 0
    assert "ERROR granary.s3" not in server.log()  # no request ended in InternalError


def put_error(s3, key: str, body: bytes) -> tuple[int, str] | None:
    """The HTTP status and S3 code of a refused PUT, None if it succeeded."""
    try:
        s3.put_object(Bucket="kept", Key=key, Body=body)
    except ClientError as error:
        response = error.response
        return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]
    return None


def test_a_full_data_disk_refuses_writes_with_507_and_keeps_serving_reads(own_server, small_disk):
    server = own_server
    config = node_config(server, rpc_secret=RPC_SECRET)
    server.config_text = config.replace(str(server.root / "data"), str(small_disk / "data"))
    server.start()
    s3 = server.client()
    s3.create_bucket(Bucket="kept")
    body = os.urandom(3 << 20)
    s3.put_object(Bucket="kept", Key="large", Body=body)
    fill(small_disk)
    assert put_error(s3, "large-new", os.urandom(3 << 20)) == (507, "InsufficientStorage")
    assert s3.get_object(Bucket="kept", Key="large")["Body"].read() == body
    listed = s3.list_objects_v2(Bucket="kept")["Contents"]
    assert [o["Key"] for o in listed] == ["large"]
    assert server.stop() == 0
    assert "ERROR granary.s3" not in server.log()
