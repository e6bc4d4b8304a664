"""Real multi-node clusters on 127.0.0.1: replicated metadata and data through any node."""

from __future__ import annotations

import json
import os

import pytest
from botocore.exceptions import ClientError
from conftest import Cluster, start_cluster, wait_until


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory) -> Cluster:
    cluster = start_cluster(tmp_path_factory.mktemp("cluster3"), 3, ["dc1", "dc2", "dc3"])
    yield cluster
    cluster.stop()


def test_bucket_and_key_created_on_one_node_work_through_every_node(cluster3):
    a, b, c = cluster3.nodes
    created = json.loads(a.cli("key", "create", "alice", "--create-bucket").stdout)
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
