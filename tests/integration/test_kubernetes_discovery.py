"""Peer discovery through Kubernetes custom resources, against a stand-in for the API
server (tests/k8s_api.py says why it is one and what it serves): the calls a node
makes, then three real nodes that find each other with no bootstrap_peers.

Each node runs in a mount namespace of its own (`unshare`) with a tmpfs over /run
and the test's service-account folder bound where a pod has it
(/var/run/secrets/kubernetes.io/serviceaccount), and KUBERNETES_SERVICE_HOST/PORT
naming the stand-in, as the kubelet sets them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from granary.net.discovery.kubernetes import (
    PLURAL,
    SERVICE_LABEL,
    KubernetesDiscovery,
    KubernetesError,
    node_resource,
    peers_in,
)
from tests.integration.conftest import CLUSTER_SECRET, GranaryServer, node_config, wait_until
from tests.k8s_api import CRD_PATH, KubernetesApi
from tests.ports import free_port

NAMESPACE = "storage"
SERVICE = "granary"
IN_A_POD = (
    "mount -t tmpfs tmpfs /run"
    " && mkdir -p /run/secrets/kubernetes.io/serviceaccount"
    ' && mount --bind "$0" /run/secrets/kubernetes.io/serviceaccount'
    ' && exec "$@"'
)


@pytest.fixture
def api(tmp_path):
    server = KubernetesApi(tmp_path)
    server.start()
    yield server
    server.stop()


def discovery(api: KubernetesApi, folder: Path, node: bytes, port: int, **config) -> tuple:
    found: list = []
    client = KubernetesDiscovery(
        NAMESPACE,
        SERVICE,
        node,
        f"10.0.0.{node[0]}:{port}",
        found.extend,
        **config,
        environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)},
        account_dir=api.account_dir(folder),
    )
    return client, found


def test_the_documents_and_what_a_listing_yields():
    own, other = bytes([1]) * 32, bytes([2]) * 32
    mine = node_resource(own, NAMESPACE, SERVICE, "pod-0", "10.0.0.1:3901")
    assert mine["metadata"]["labels"] == {SERVICE_LABEL: SERVICE}
    theirs = node_resource(other, NAMESPACE, SERVICE, "pod-1", "[fd00::2]:3901")
    broken = [{"metadata": {"name": "zz"}, "spec": {}}, {"metadata": {"name": "ab" * 32}}]
    listing = {"items": [mine, theirs, *broken]}
    assert peers_in(listing, own) == [(other, "[fd00::2]:3901")]


def test_nodes_publish_themselves_and_find_each_other(api, tmp_path):
    first, second = bytes([1]) * 32, bytes([2]) * 32
    a, found_by_a = discovery(api, tmp_path / "a", first, 3901)
    b, found_by_b = discovery(api, tmp_path / "b", second, 3902)

    async def passes() -> None:
        assert await a.refresh() == []
        assert await b.refresh() == [(first, "10.0.0.1:3901")]
        assert await a.refresh() == [(second, "10.0.0.2:3902")]

    asyncio.run(passes())
    assert found_by_a == [(second, "10.0.0.2:3902")]
    assert found_by_b == [(first, "10.0.0.1:3901")]
    # One definition, created once; each node one resource, applied again in place.
    assert [r.method for r in api.requests if r.path == CRD_PATH] == ["POST"]
    stored = api.stored(NAMESPACE, PLURAL)
    assert set(stored) == {first.hex(), second.hex()}
    assert stored[first.hex()]["spec"] == {
        "hostname": os.uname().nodename,
        "address": "10.0.0.1",
        "port": 3901,
    }
    assert int(stored[first.hex()]["metadata"]["resourceVersion"]) > int(
        stored[second.hex()]["metadata"]["resourceVersion"]
    )
    applies = [r for r in api.requests if r.method == "PATCH"]
    assert all(r.query == {"fieldManager": "granary", "force": "true"} for r in applies)


def test_a_rotated_token_is_read_again_and_a_stale_one_is_refused(api, tmp_path):
    node = bytes([1]) * 32
    client, _ = discovery(api, tmp_path / "a", node, 3901)
    asyncio.run(client.refresh())
    api.token = "rotated"
    with pytest.raises(KubernetesError, match="401"):
        asyncio.run(client.refresh())
    (tmp_path / "a" / "token").write_text("rotated")
    asyncio.run(client.refresh())


def test_skip_crd_does_not_create_the_definition(api, tmp_path):
    client, _ = discovery(api, tmp_path / "a", bytes([1]) * 32, 3901, skip_crd=True)
    with pytest.raises(KubernetesError, match="404"):
        asyncio.run(client.refresh())
    assert not api.definitions


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mount namespaces need root and unshare",
)
def test_three_nodes_find_each_other_through_the_custom_resources(api, tmp_path):
    account = api.account_dir(tmp_path / "serviceaccount")
    nodes = []
    for index in range(3):
        node = GranaryServer(tmp_path / f"node{index}")
        port = free_port()
        text = node_config(
            node, replication_factor=3, rpc_secret=CLUSTER_SECRET, ping_interval_secs=0.5
        ).replace('rpc_bind_addr = "127.0.0.1:0"', f'rpc_bind_addr = "127.0.0.1:{port}"')
        discovery_section = f'[kubernetes_discovery]\nnamespace = "{NAMESPACE}"\n'
        discovery_section += f'service_name = "{SERVICE}"\n'
        node.config_text = f'rpc_public_addr = "127.0.0.1:{port}"\n' + text + discovery_section
        node.wrapper = ["unshare", "--mount", "--propagation", "private"]
        node.wrapper += ["sh", "-c", IN_A_POD, str(account)]
        node.env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(api.port),
        }
        nodes.append(node)
    try:
        for node in nodes:
            node.start()
        ids = [node.cli("node", "id").stdout.strip().split("@")[0] for node in nodes]

        def up(node: GranaryServer) -> set[str]:
            status = json.loads(node.cli("status", "--json", check=False).stdout or "{}")
            return {n["id"] for n in status.get("nodes", []) if n["up"]}

        for node in nodes:
            wait_until(lambda n=node: up(n) >= set(ids), what="every node up everywhere")
        assert set(api.stored(NAMESPACE, PLURAL)) == set(ids)
        admin = nodes[0]
        for node_id, zone in zip(ids, ["a", "b", "c"], strict=True):
            admin.cli("layout", "assign", "-z", zone, "-c", "1G", node_id)
        admin.cli("layout", "apply", "--version", "1")
        nodes[1].client().create_bucket(Bucket="found")
        nodes[1].client().put_object(Bucket="found", Key="k", Body=b"through the api")
        got = nodes[2].client().get_object(Bucket="found", Key="k")["Body"].read()
        assert got == b"through the api"
    finally:
        for node in nodes:
            if node.process is not None:
                node.kill()
