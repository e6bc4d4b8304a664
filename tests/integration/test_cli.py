"""The `granary` command against a running node: keys, buckets, rights, config errors,
text output for people (`--json` for scripts), options before or after the command, Garage's
config files and confirmations, and what a start prints."""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import GranaryServer, node_config, s3_client, wait_for_port

from tests.ports import free_port


def cli_json(server, *args: str):
    return json.loads(server.cli(*args, "--json").stdout)


def test_key_lifecycle(server):
    created = cli_json(server, "key", "create", "alice")
    key_id = created["key_id"]
    assert key_id.startswith("GK") and len(created["secret"]) == 64
    assert key_id in server.cli("key", "list").stdout
    assert key_id in [k["key_id"] for k in cli_json(server, "key", "list")]
    info = cli_json(server, "key", "info", key_id)
    assert info["name"] == "alice" and info["secret"] is None
    assert cli_json(server, "key", "info", key_id, "--show-secret")["secret"] == created["secret"]
    server.cli("key", "delete", "--yes", key_id)
    assert key_id not in server.cli("key", "list").stdout
    failed = server.cli("key", "info", key_id, check=False)
    assert failed.returncode != 0 and "no access key" in failed.stderr


def test_key_import_and_bucket_rights(server):
    key_id, secret = "GK" + "1" * 24, "2" * 64
    cli_json(server, "key", "import", "--yes", key_id, secret, "--name", "migrated")
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


def test_output_is_text_for_people_and_json_on_request(server):
    created = cli_json(server, "key", "create", "dana")
    key_id = created["key_id"]
    server.cli("bucket", "create", "for-people")
    server.cli("bucket", "allow", "--read", "--write", "for-people", "--key", key_id)

    key_text = server.cli("key", "info", key_id).stdout
    assert re.search(rf"^Key ID: +{key_id}$", key_text, re.M)
    assert re.search(r"^Key name: +dana$", key_text, re.M)
    assert re.search(r"^ +RW +for-people$", key_text, re.M)
    assert created["secret"] not in key_text and "--show-secret" in key_text
    shown = server.cli("key", "info", key_id, "--show-secret").stdout
    assert re.search(rf"^Secret key: +{created['secret']}$", shown, re.M)

    bucket = cli_json(server, "bucket", "info", "for-people")
    created_at = bucket["created"]
    bucket_text = server.cli("bucket", "info", "for-people").stdout
    assert str(created_at) not in bucket_text  # no raw millisecond timestamp
    assert re.search(r"^Created: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", bucket_text, re.M)
    assert re.search(rf"^ +RW +{key_id} +dana$", bucket_text, re.M)
    listed = server.cli("bucket", "list").stdout.splitlines()
    assert listed[0].split() == ["Name", "Created", "ID"]
    assert any(line.split()[0] == "for-people" and bucket["id"] in line for line in listed)
    assert "for-people" in [b["name"] for b in cli_json(server, "bucket", "list")]
    assert not server.cli("key", "list").stdout.lstrip().startswith("[")


def test_version_is_the_released_one():
    """`--version` says what is installed, and that is the version pyproject.toml releases."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    released = pyproject["project"]["version"]
    assert importlib.metadata.version("granary") == released
    assert granary_version() == f"granary, version {released}"


def granary_version(**env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "granary.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=True,
    )
    return result.stdout.strip()


def test_garage_confirmations_are_accepted(server):
    key_id = "GK" + "3" * 24
    server.cli("key", "import", key_id, "4" * 64, "--yes")
    assert "tables" in server.cli("repair", "--yes", "tables").stdout
    server.cli("key", "delete", "--yes", key_id)
    server.cli("bucket", "create", "to-delete")
    server.cli("bucket", "delete", "--yes", "to-delete")


def start_process(args: list[str], root: Path, env: dict[str, str]) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "server.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "granary.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    assert process.wait(timeout=30) == 0


def without_default_key(environ: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in environ.items()
        if k not in ("GRANARY_ACCESS_KEY_ID", "GRANARY_SECRET_ACCESS_KEY")
    }


def test_data_option_after_server_and_secret_printed_only_on_first_start(tmp_path):
    """The README's `bash scripts/start.sh --data DIR`: `granary server --data DIR`."""
    data, s3_port, admin_port = tmp_path / "data", free_port(), free_port()
    args = [
        "server",
        "--data",
        str(data),
        "--s3-address",
        f"127.0.0.1:{s3_port}",
        "--admin-address",
        f"127.0.0.1:{admin_port}",
    ]
    env = without_default_key(dict(os.environ))
    outputs, buckets = [], []
    for run in range(2):
        process = start_process(args, tmp_path / f"run{run}", env)
        try:
            wait_for_port(s3_port, process)
            wait_for_port(admin_port, process)
            listed = subprocess.run(
                [sys.executable, "-m", "granary.cli", "key", "list", "--json", "--data", str(data)],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
            [key] = json.loads(listed.stdout)
            outputs.append((tmp_path / f"run{run}" / "server.log").read_text())
            printed = re.search(r"secret key: +([0-9a-f]{64})$", outputs[0], re.M)
            assert printed, outputs[0]
            s3 = s3_client(
                f"http://127.0.0.1:{s3_port}", access_key=key["key_id"], secret_key=printed[1]
            )
            s3.create_bucket(Bucket=f"run{run}")
            buckets.append([b["Name"] for b in s3.list_buckets()["Buckets"]])
        finally:
            stop_process(process)
    first, second = outputs
    secret = re.search(r"secret key: +([0-9a-f]{64})$", first, re.M)[1]
    assert f"access key id:  {key['key_id']}" in first
    assert secret not in second
    assert f"access key id:  {key['key_id']}" in second and f"http://127.0.0.1:{s3_port}" in second
    assert f"key info {key['key_id']} --show-secret" in second
    assert buckets == [["run0"], ["run0", "run1"]]


def test_config_option_after_server_and_garage_sections_warned(tmp_path):
    node = GranaryServer(tmp_path / "node")
    node.root.mkdir(parents=True)
    (node.root / "rpc_secret").write_text("7a" * 32)
    (node.root / "rpc_secret").chmod(0o600)
    config = node.root / "garage.toml"
    config.write_text(
        node_config(node, rpc_secret_file=str(node.root / "rpc_secret"))
        + 'metrics_token = "m"\ntrace_sink = "http://localhost:4317"\n'
        + '[s3_web]\nbind_addr = "[::]:3902"\nroot_domain = ".web.garage"\n'
        + '[k2v_api]\napi_bind_addr = "[::]:3904"\n'
        + '[consul_discovery]\nconsul_http_addr = "http://127.0.0.1:8500"\n'
    )
    process = start_process(["server", "-c", str(config)], node.root, dict(os.environ))
    try:
        wait_for_port(node.s3_port, process)
        listed = subprocess.run(
            [sys.executable, "-m", "granary.cli", "bucket", "list", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
    finally:
        stop_process(process)
    log = (node.root / "server.log").read_text()
    assert "admin.metrics_token" not in log  # /metrics exists: the key is used
    assert "admin.trace_sink" not in log  # traces are exported: the key is used
    for key in (
        "s3_web",
        "k2v_api",
        "consul_discovery",
    ):
        assert log.count(f"config key `{key}` is accepted but not supported yet") == 1, key
