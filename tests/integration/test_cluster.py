"""Real multi-node clusters on 127.0.0.1: replicated metadata and data through any node."""

from __future__ import annotations

import http.client
import json
import os
import time

import pytest
from botocore.exceptions import ClientError
from conftest import (
    Cluster,
    GranaryServer,
    admin_call,
    cluster_config,
    free_port,
    start_cluster,
    wait_until,
)

from granary.cli.admin_client import AdminClientError


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory) -> Cluster:
    cluster = start_cluster(tmp_path_factory.mktemp("cluster3"), 3, ["dc1", "dc2", "dc3"])
    yield cluster
    cluster.stop()


def test_bucket_and_key_created_on_one_node_work_through_every_node(cluster3):
    created = json.loads(
        cluster3.nodes[0].cli("key", "create", "alice", "--create-bucket", "--json").stdout
    )
    alice = [
        node.client(access_key=created["key_id"], secret_key=created["secret"])
        for node in cluster3.nodes
    ]
    alice[0].create_bucket(Bucket="shared")
    for client in alice:
        assert "shared" in [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]
    data = os.urandom(3 * (1 << 20) + 7)
    alice[0].put_object(Bucket="shared", Key="big", Body=data)
    alice[0].put_object(Bucket="shared", Key="small", Body=b"tiny")
    assert alice[2].get_object(Bucket="shared", Key="big")["Body"].read() == data
    assert alice[1].get_object(Bucket="shared", Key="small")["Body"].read() == b"tiny"
    keys = [o["Key"] for o in alice[2].list_objects_v2(Bucket="shared")["Contents"]]
    assert keys == ["big", "small"]
    alice[1].delete_object(Bucket="shared", Key="small")
    with pytest.raises(ClientError):
        alice[2].head_object(Bucket="shared", Key="small")


def test_read_after_write_on_every_node_pair(cluster3):
    clients = [node.client() for node in cluster3.nodes]
    clients[0].create_bucket(Bucket="raw")
    for round_ in range(5):
        for writer, client in enumerate(clients):
            body = f"{round_}-{writer}".encode()
            client.put_object(Bucket="raw", Key="k", Body=body)
            for reader in clients:
                assert reader.get_object(Bucket="raw", Key="k")["Body"].read() == body


def test_status_and_health(cluster3):
    status = json.loads(cluster3.nodes[1].cli("status", "--json").stdout)
    assert status["health"]["status"] == "healthy"
    assert status["health"]["partitions_with_quorum"] == 256
    assert len(status["nodes"]) == 3
    assert all(node["up"] and node["zone"] for node in status["nodes"])
    assert all(node["hostname"] for node in status["nodes"])
    text = cluster3.nodes[2].cli("status").stdout
    assert "Cluster healthy" in text


def table_partitions(node) -> dict[str, dict[str, str]] | None:
    """Each table's partition digests on `node` (None while its admin API is not up)."""
    try:
        tables = admin_call(node, "GET", "/v1/tables")
    except AdminClientError:
        return None
    return {name: info["partitions"] for name, info in tables.items()}


def test_one_node_down_then_back_catches_up(tmp_path):
    cluster = start_cluster(tmp_path, 3, ["dc1", "dc2", "dc3"])
    try:
        a, b, c = cluster.nodes
        client_a, client_b = a.client(), b.client()
        client_a.create_bucket(Bucket="resilient")
        client_a.put_object(Bucket="resilient", Key="before", Body=b"1")
        c.kill()
        written = {}
        for index in range(20):
            body = os.urandom(100 + index * 3000)
            (client_a if index % 2 else client_b).put_object(
                Bucket="resilient", Key=f"during/{index}", Body=body
            )
            written[f"during/{index}"] = body
        client_b.create_bucket(Bucket="made-while-down")
        for key, body in written.items():
            assert client_a.get_object(Bucket="resilient", Key=key)["Body"].read() == body
        listed = client_b.list_objects_v2(Bucket="resilient", Prefix="during/")["KeyCount"]
        assert listed == 20

        c.start()
        wait_until(
            lambda: (
                table_partitions(c) not in (None, {}) and table_partitions(c) == table_partitions(a)
            ),
            timeout=60,
            what="the restarted node to catch up by anti-entropy",
        )
        client_c = c.client()
        assert (
            client_c.get_object(Bucket="resilient", Key="during/7")["Body"].read()
            == written["during/7"]
        )
        assert "made-while-down" in [x["Name"] for x in client_c.list_buckets()["Buckets"]]
    finally:
        cluster.stop()


def test_node_with_the_wrong_secret_is_refused(cluster3, tmp_path):
    intruder = GranaryServer(tmp_path / "intruder")
    intruder.config_text = cluster_config(
        intruder, free_port(), [f"127.0.0.1:{cluster3.rpc_ports[0]}"], rpc_secret="0f" * 32
    )
    intruder.start()
    try:
        wait_until(lambda: "health" in intruder.cli("status", "--json").stdout, what="intruder up")
        time.sleep(3)  # several ping rounds: time to connect, had it been allowed
        seen = json.loads(intruder.cli("status", "--json").stdout)
        assert [n for n in seen["nodes"] if n["up"]] == [
            n for n in seen["nodes"] if n["id"] == seen["node"]
        ]
        assert seen["layout_version"] == 0
        members = json.loads(cluster3.nodes[0].cli("status", "--json").stdout)["nodes"]
        assert seen["node"] not in [n["id"] for n in members]
    finally:
        intruder.kill()


def layout_of(node) -> dict:
    return json.loads(node.cli("layout", "show", "--json").stdout)


def test_five_nodes_three_zones_and_layout_changes_through_the_cli(tmp_path):
    cluster = start_cluster(tmp_path, 5, ["dc1", "dc1", "dc2", "dc2", "dc3"])
    try:
        nodes = cluster.nodes
        ids = cluster.node_ids()
        first = layout_of(nodes[0])
        assert first["version"] == 1
        assert sum(first["partitions"].values()) == 256 * 3
        clients = [node.client() for node in nodes]
        clients[0].create_bucket(Bucket="five")
        data = os.urandom(2 * (1 << 20) + 1)
        clients[1].put_object(Bucket="five", Key="obj", Body=data)
        for client in clients:
            assert client.get_object(Bucket="five", Key="obj")["Body"].read() == data

        nodes[2].cli("layout", "assign", "-z", "dc3", "-c", "2G", ids[4][:12])
        staged = layout_of(nodes[2])
        assert ids[4] in staged["staged_roles"]
        shown = nodes[2].cli("layout", "show").stdout
        assert "Staged changes" in shown and "Preview of version 2" in shown
        nodes[2].cli("layout", "revert")
        assert layout_of(nodes[2])["staged_roles"] == {}

        nodes[3].cli("layout", "remove", ids[1][:12])
        wrong = nodes[3].cli("layout", "apply", "--version", "5", check=False)
        assert wrong.returncode != 0 and "expected version 2" in wrong.stderr
        report = nodes[3].cli("layout", "apply", "--version", "2").stdout
        assert "Usable capacity" in report
        for node in nodes:
            wait_until(lambda n=node: layout_of(n)["version"] == 2, what="layout version 2")
        assert ids[1] not in layout_of(nodes[0])["roles"]
        history = nodes[0].cli("layout", "history").stdout
        assert "version 2: 4 storage node(s)" in history and "version 1: 5" in history
        wait_until(
            lambda: clients[4].get_object(Bucket="five", Key="obj")["Body"].read() == data,
            what="the object readable after the layout change",
        )
    finally:
        cluster.stop()


def test_two_different_layouts_under_one_version_are_reported(tmp_path):
    cluster = start_cluster(tmp_path, 3, ["dc1", "dc2", "dc3"])
    try:
        a, b, c = cluster.nodes
        ids = cluster.node_ids()
        c.kill()
        a.cli("layout", "assign", "-z", "dc3", "-c", "2G", ids[2])
        a.cli("layout", "apply", "--version", "2")
        a.kill()
        b.kill()
        c.start()
        c.cli("layout", "assign", "-z", "dc1", "-c", "3G", ids[0])
        c.cli("layout", "apply", "--version", "2")
        a.start()
        wait_until(lambda: layout_of(a)["conflict"] is not None, what="the conflict to be seen")
        assert "version 2" in layout_of(a)["conflict"]
        a.cli("layout", "assign", "-z", "dc2", "-c", "1G", ids[1])
        a.cli("layout", "apply", "--version", "3")
        wait_until(lambda: layout_of(c)["version"] == 3, what="version 3 to settle it")
        wait_until(lambda: layout_of(a)["conflict"] is None, what="the conflict to clear")
    finally:
        cluster.stop()


def test_health_endpoint_follows_quorum(tmp_path):
    cluster = start_cluster(tmp_path, 3, ["dc1", "dc2", "dc3"])
    try:
        a, b, c = cluster.nodes

        def health() -> tuple[int, str]:
            connection = http.client.HTTPConnection("127.0.0.1", a.admin_port, timeout=10)
            connection.request("GET", "/health")
            response = connection.getresponse()
            return response.status, json.loads(response.read())["status"]

        assert health() == (200, "healthy")
        c.kill()
        wait_until(lambda: health() == (200, "degraded"), what="degraded")
        b.kill()
        wait_until(lambda: health() == (503, "unavailable"), what="unavailable")
        with pytest.raises(ClientError) as caught:
            a.client().put_object(Bucket="nope-bucket", Key="k", Body=b"x")
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in (404, 503)
    finally:
        cluster.stop()


def test_writes_through_a_node_whose_clock_is_behind_still_win(tmp_path):
    """Node 2's clock runs a minute late: its writes must still replace earlier ones."""
    cluster = start_cluster(
        tmp_path, 3, ["dc1", "dc2", "dc3"], per_node={2: {"clock_offset_ms": -60_000}}
    )
    try:
        on_time, late = cluster.nodes[0].client(), cluster.nodes[2].client()
        on_time.create_bucket(Bucket="skew")
        for round_ in range(3):
            on_time.put_object(Bucket="skew", Key="k", Body=f"on-time {round_}".encode())
            late.put_object(Bucket="skew", Key="k", Body=f"late {round_}".encode())
            for client in (on_time, late):
                body = client.get_object(Bucket="skew", Key="k")["Body"].read()
                assert body == f"late {round_}".encode()
        late.delete_object(Bucket="skew", Key="k")
        with pytest.raises(ClientError):
            on_time.head_object(Bucket="skew", Key="k")
    finally:
        cluster.stop()
