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
import subprocess
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
from tests.integration.conftest import GranaryServer, block_files, cluster_config, wait_until
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


def discovery(
    api: KubernetesApi, folder: Path, node: bytes, port: int, **config
) -> KubernetesDiscovery:
    return KubernetesDiscovery(
        NAMESPACE,
        SERVICE,
        node,
        f"10.0.0.{node[0]}:{port}",
        **config,
        environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port)},
        account_dir=api.account_dir(folder),
    )


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
    a = discovery(api, tmp_path / "a", first, 3901)
    b = discovery(api, tmp_path / "b", second, 3902)

    async def passes() -> None:
        assert await a.discover() == []
        assert await b.discover() == [(first, "10.0.0.1:3901")]
        assert await a.discover() == [(second, "10.0.0.2:3902")]

    asyncio.run(passes())
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
    client = discovery(api, tmp_path / "a", node, 3901)
    asyncio.run(client.discover())
    api.token = "rotated"
    with pytest.raises(KubernetesError, match="401"):
        asyncio.run(client.discover())
    (tmp_path / "a" / "token").write_text("rotated")
    asyncio.run(client.discover())


def test_the_zone_of_a_kubernetes_node_is_its_topology_label(api, tmp_path):
    api.add_node("worker-1", {"topology.kubernetes.io/zone": "eu-west-1a"})
    api.add_node("worker-2", {"kubernetes.io/hostname": "worker-2"})
    client = discovery(api, tmp_path / "a", bytes([1]) * 32, 3901)
    assert asyncio.run(client.zone_of("worker-1")) == "eu-west-1a"
    assert asyncio.run(client.zone_of("worker-2")) is None
    with pytest.raises(KubernetesError, match="404"):
        asyncio.run(client.zone_of("worker-3"))


def test_outside_a_pod_the_server_says_what_is_missing(tmp_path):
    node = GranaryServer(tmp_path / "node")
    node.root.mkdir(parents=True)
    node.config_text = cluster_config(node, free_port(), []) + (
        f'[kubernetes_discovery]\nnamespace = "{NAMESPACE}"\nservice_name = "{SERVICE}"\n'
    )
    (node.root / "granary.toml").write_text(node.config_text)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    failed = subprocess.run(
        [*node.command()], capture_output=True, text=True, timeout=60, env=environ
    )
    assert failed.returncode != 0
    assert "KUBERNETES_SERVICE_HOST" in failed.stdout + failed.stderr


def test_skip_crd_does_not_create_the_definition(api, tmp_path):
    client = discovery(api, tmp_path / "a", bytes([1]) * 32, 3901, skip_crd=True)
    with pytest.raises(KubernetesError, match="404"):
        asyncio.run(client.discover())
    assert not api.definitions


def pod(root: Path, index: int, api: KubernetesApi, account: Path) -> GranaryServer:
    """Node `index` as pod granary-<index> of a StatefulSet: its host name, service
    account and API server; automatic layout, in the zone of the Kubernetes node it
    runs on (a zone of its own); no bootstrap peers."""
    node = GranaryServer(root / f"node{index}")
    sections = f'[kubernetes_discovery]\nnamespace = "{NAMESPACE}"\nservice_name = "{SERVICE}"\n'
    sections += '[auto_layout]\ncoordinator = "granary-0"\ncapacity = "1G"\nexpected_nodes = 3\n'
    node.config_text = cluster_config(node, free_port(), []) + sections
    node.wrapper = ["unshare", "--mount", "--uts", "--propagation", "private"]
    node.wrapper += ["sh", "-c", f"hostname granary-{index} && {IN_A_POD}", str(account)]
    node.env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "NODE_NAME": f"worker-{index}",  # its zone: the label of the machine it runs on
    }
    api.add_node(f"worker-{index}", {"topology.kubernetes.io/zone": f"zone-{'abcd'[index]}"})
    return node


def node_id(node: GranaryServer) -> str:
    return node.cli("node", "id").stdout.strip().split("@")[0]


def up(node: GranaryServer) -> set[str]:
    status = json.loads(node.cli("status", "--json", check=False).stdout or "{}")
    return {n["id"] for n in status.get("nodes", []) if n["up"]}


def layout_of(node: GranaryServer) -> dict:
    return json.loads(node.cli("layout", "show", "--json", check=False).stdout or "{}")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mount and UTS namespaces need root and unshare",
)
def test_pods_find_each_other_lay_themselves_out_and_a_fourth_gets_data(api, tmp_path):
    """No bootstrap peer and no CLI call: three pods find each other through the
    custom resources and lay themselves out; a fourth, started later, joins and
    receives its share of the data; a pod killed and started on its volume is back."""
    account = api.account_dir(tmp_path / "serviceaccount")
    nodes = [pod(tmp_path, index, api, account) for index in range(4)]
    try:
        for node in nodes[:3]:
            node.start()
        ids = [node_id(node) for node in nodes[:3]]
        for node in nodes[:3]:
            wait_until(lambda n=node: layout_of(n).get("version", 0) >= 1, what="layout 1")
        assert set(api.stored(NAMESPACE, PLURAL)) == set(ids)
        assert all(up(node) >= set(ids) for node in nodes[:3])
        zones = sorted(role["zone"] for role in layout_of(nodes[0])["roles"].values())
        assert zones == ["zone-a", "zone-b", "zone-c"]
        client = nodes[1].client()
        client.create_bucket(Bucket="found")
        bodies = {f"k{n}": os.urandom(100_000 + n) for n in range(24)}
        for key, body in bodies.items():
            client.put_object(Bucket="found", Key=key, Body=body)

        nodes[3].start()
        fourth = node_id(nodes[3])

        def holds_its_share() -> bool:
            layouts = [layout_of(node) for node in nodes]
            assigned = all(layout.get("partitions", {}).get(fourth, 0) > 0 for layout in layouts)
            return assigned and layouts[3]["done"]["sync"] == 4

        wait_until(holds_its_share, timeout=60, what="the fourth pod's share, synced")
        wait_until(lambda: block_files(nodes[3].data_dir), timeout=60, what="blocks moved to it")
        assert all(layout_of(node)["conflict"] is None for node in nodes)
        for key, body in bodies.items():
            assert nodes[3].client().get_object(Bucket="found", Key=key)["Body"].read() == body

        # A pod killed and started again on its volume comes back.
        nodes[2].kill()
        nodes[2].start()
        wait_until(lambda: fourth in up(nodes[2]) and ids[0] in up(nodes[2]), what="back")
        assert nodes[2].client().get_object(Bucket="found", Key="k0")["Body"].read() == bodies["k0"]
    finally:
        for node in nodes:
            if node.process is not None:
                node.kill()
