"""The `granary` command against a running node: keys, buckets, rights, config errors."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest
from botocore.exceptions import ClientError
from conftest import s3_client


def cli_json(server, *args: str):
    return json.loads(server.cli(*args).stdout)


def test_key_lifecycle(server):
    created = cli_json(server, "key", "create", "alice")
    key_id = created["key_id"]
    assert key_id.startswith("GK") and len(created["secret"]) == 64
    assert key_id in server.cli("key", "list").stdout
    info = cli_json(server, "key", "info", key_id)
    assert info["name"] == "alice" and info["secret"] is None
    assert cli_json(server, "key", "info", key_id, "--show-secret")["secret"] == created["secret"]
    server.cli("key", "delete", "--yes", key_id)
    assert key_id not in server.cli("key", "list").stdout
    failed = server.cli("key", "info", key_id, check=False)
    assert failed.returncode != 0 and "no access key" in failed.stderr


def test_key_import_and_bucket_rights(server):
    key_id, secret = "GK" + "1" * 24, "2" * 64
    cli_json(server, "key", "import", key_id, secret, "--name", "migrated")
    bob = s3_client(server.endpoint, access_key=key_id, secret_key=secret)
    with pytest.raises(ClientError) as caught:
        bob.create_bucket(Bucket="bobs-bucket")
    assert caught.value.response["Error"]["Code"] == "AccessDenied"

    server.cli("key", "allow", key_id, "--create-bucket")
    bob.create_bucket(Bucket="bobs-bucket")
    bob.put_object(Bucket="bobs-bucket", Key="k", Body=b"v")

    created = cli_json(server, "bucket", "create", "admin-made")
    assert created["name"] == "admin-made"
    assert "admin-made" in server.cli("bucket", "list").stdout
    with pytest.raises(ClientError):
        bob.put_object(Bucket="admin-made", Key="k", Body=b"v")
    rights = cli_json(server, "bucket", "allow", "--read", "--write", "admin-made", "--key", key_id)
    assert {"key_id": key_id, "read": True, "write": True, "owner": False} in rights["keys"]
    bob.put_object(Bucket="admin-made", Key="k", Body=b"v")
    cli_json(server, "bucket", "deny", "--write", "admin-made", "--key", key_id)
    assert bob.get_object(Bucket="admin-made", Key="k")["Body"].read() == b"v"
    with pytest.raises(ClientError):
        bob.put_object(Bucket="admin-made", Key="k2", Body=b"v")

    failed = server.cli("bucket", "delete", "--yes", "admin-made", check=False)
    assert failed.returncode != 0 and "not empty" in failed.stderr
    server.cli("bucket", "allow", "--write", "admin-made", "--key", key_id)
    bob.delete_object(Bucket="admin-made", Key="k")
    server.cli("bucket", "delete", "--yes", "admin-made")
    assert "admin-made" not in server.cli("bucket", "list").stdout


def test_import_rejects_malformed_credentials(server):
    failed = server.cli("key", "import", "not-a-key-id", "x" * 64, check=False)
    assert failed.returncode != 0 and "GK" in failed.stderr


def test_wrong_admin_token_is_refused(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.admin_port, timeout=10)
    connection.request("GET", "/v1/keys", headers={"Authorization": "Bearer wrong"})
    refused = connection.getresponse()
    refused.read()
    assert refused.status == 401
    connection.request("GET", "/health")
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["status"] == "healthy"


def test_invalid_config_is_a_clear_error(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('metadata_dir = "/tmp/x"\ndata_dir = "/tmp/y"\nblock_sise = "1M"\n')
    result = subprocess.run(
        [sys.executable, "-m", "granary.cli", "-c", str(config), "server"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "block_sise" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_without_a_running_node_says_so(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "granary.cli", "--data", str(tmp_path), "key", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "is the server running" in result.stderr
    assert "Traceback" not in result.stderr
