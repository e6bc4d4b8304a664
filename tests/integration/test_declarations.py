"""Access keys and buckets declared in the configuration (`[[keys]]`, `[[buckets]]`)
exist from a node's first request, with the declared rights; starting again changes
nothing; every node of a cluster applies them and one bucket results."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import (
    GranaryServer,
    node_config,
    s3_client,
    start_cluster,
    wait_until,
)

WRITER_ID, WRITER_SECRET = "GK" + "a1" * 12, "0f" * 32
READER_ID, READER_SECRET = "GK" + "b2" * 12, "1e" * 32
APPLIED = "declared in the configuration:"


def declarations(reader_secret_file: Path, reader_rights: str = '"read"') -> str:
    return f"""
[[keys]]
name = "writer"
access_key_id = "{WRITER_ID}"
secret_access_key = "{WRITER_SECRET}"

[[keys]]
name = "reader"
access_key_id = "{READER_ID}"
secret_access_key_file = "{reader_secret_file}"

[[buckets]]
name = "backups"
versioning = true
allow = {{ writer = ["read", "write", "owner"], {READER_ID} = [{reader_rights}] }}

[[buckets]]
name = "vault"
object_lock = true
allow = {{ writer = ["read", "write"] }}
"""


def secret_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reader.secret"
    path.write_text(READER_SECRET + "\n")
    os.chmod(path, 0o600)
    return path


def error_code(error: ClientError) -> str:
    return error.response["Error"]["Code"]


def test_declared_keys_and_buckets_exist_from_the_first_request(own_server: GranaryServer):
    own_server.config_text = node_config(own_server) + declarations(secret_file(own_server.root))
    own_server.start()
    writer = s3_client(own_server.endpoint, access_key=WRITER_ID, secret_key=WRITER_SECRET)
    reader = s3_client(own_server.endpoint, access_key=READER_ID, secret_key=READER_SECRET)
    assert writer.get_bucket_versioning(Bucket="backups")["Status"] == "Enabled"
    lock = writer.get_object_lock_configuration(Bucket="vault")["ObjectLockConfiguration"]
    assert lock["ObjectLockEnabled"] == "Enabled"
    writer.put_object(Bucket="backups", Key="k", Body=b"v1")
    assert reader.get_object(Bucket="backups", Key="k")["Body"].read() == b"v1"
    with pytest.raises(ClientError) as refused:
        reader.put_object(Bucket="backups", Key="k", Body=b"v2")
    assert error_code(refused.value) == "AccessDenied"
    with pytest.raises(ClientError) as not_allowed:
        reader.get_object(Bucket="vault", Key="k")
    assert error_code(not_allowed.value) == "AccessDenied"
    first_start = own_server.log()
    assert first_start.count(APPLIED) == 8  # 2 keys, 2 buckets, versioning, 3 rights

    # Started again as it was: nothing to change.
    own_server.stop()
    own_server.start()
    assert reader.get_object(Bucket="backups", Key="k")["Body"].read() == b"v1"
    assert own_server.log()[len(first_start) :].count(APPLIED) == 0

    # A right changed in the configuration is applied at the next start.
    own_server.stop()
    own_server.config_text = node_config(own_server) + declarations(
        secret_file(own_server.root), '"read", "write"'
    )
    own_server.start()
    reader.put_object(Bucket="backups", Key="k", Body=b"v2")
    assert len(writer.list_object_versions(Bucket="backups")["Versions"]) == 2
    assert "not applied" not in own_server.log()


def test_every_node_of_a_cluster_applies_them_and_one_bucket_results(tmp_path: Path):
    tail = declarations(secret_file(tmp_path / "secrets"))
    cluster = start_cluster(tmp_path, 3, ["dc1", "dc2", "dc3"], config_tail=tail)
    try:
        for node in cluster.nodes:
            writer = s3_client(node.endpoint, access_key=WRITER_ID, secret_key=WRITER_SECRET)

            def usable(client=writer) -> bool:
                try:
                    client.head_bucket(Bucket="backups")
                    return True
                except ClientError:
                    return False

            wait_until(usable, what="the declared bucket on every node")
        writer.put_object(Bucket="backups", Key="k", Body=b"x")
        logs = [node.log() for node in cluster.nodes]
        assert sum(log.count("created bucket backups") for log in logs) == 1
        assert sum(log.count("created bucket vault") for log in logs) == 1
        listed = cluster.nodes[0].cli("bucket", "list").stdout
        assert listed.count("backups") == 1, listed
        for node in cluster.nodes:
            reader = s3_client(node.endpoint, access_key=READER_ID, secret_key=READER_SECRET)
            assert reader.get_object(Bucket="backups", Key="k")["Body"].read() == b"x"
    finally:
        cluster.stop()


def test_a_secret_file_others_can_read_is_refused(own_server: GranaryServer):
    path = secret_file(own_server.root)
    os.chmod(path, 0o644)
    own_server.config_text = node_config(own_server) + declarations(path)
    own_server.root.mkdir(parents=True, exist_ok=True)
    (own_server.root / "granary.toml").write_text(own_server.config_text)
    failed = own_server.cli("server", check=False)
    assert failed.returncode != 0
    assert "readable by group or others" in failed.stderr + failed.stdout
