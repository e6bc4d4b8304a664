"""Automatic layout: three nodes lay themselves out with no CLI call, a fourth started
later joins and gets its share of the partitions, and no layout conflict ever shows.

Each node runs in a UTS namespace of its own (`unshare --uts`) with the host name
a StatefulSet would give it (granary-0, granary-1, ...): the configuration names
granary-0 as the coordinator, the one node that applies layouts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.integration.conftest import GranaryServer, cluster_config, node_config, wait_until
from tests.ports import free_port

ZONES = ["a", "b", "c", "d"]  # a fourth zone: the fourth node adds usable capacity
AS_HOST = 'hostname "$0" && exec "$@"'

needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="UTS namespaces need root and unshare",
)


def auto_node(root: Path, index: int, rpc_ports: list[int]) -> GranaryServer:
    node = GranaryServer(root / f"node{index}")
    bootstrap = [f"127.0.0.1:{rpc_ports[0]}"] if index else []
    node.config_text = cluster_config(node, rpc_ports[index], bootstrap) + (
        "[auto_layout]\n"
        'coordinator = "granary-0"\n'
        f'zone = "{ZONES[index]}"\n'
        'capacity = "1G"\n'
        "expected_nodes = 3\n"
    )
    node.wrapper = ["unshare", "--uts", "sh", "-c", AS_HOST, f"granary-{index}"]
    return node


def layout_of(node: GranaryServer) -> dict:
    return json.loads(node.cli("layout", "show", "--json", check=False).stdout or "{}")


@needs_namespaces
def test_nodes_lay_themselves_out_and_a_later_one_joins(tmp_path):
    rpc_ports = [free_port() for _ in ZONES]
    nodes = [auto_node(tmp_path, index, rpc_ports) for index in range(len(ZONES))]
    try:
        for node in nodes[:3]:
            node.start()
        for node in nodes[:3]:
            wait_until(lambda n=node: layout_of(n).get("version", 0) >= 1, what="layout 1")
        first = layout_of(nodes[1])
        assert first["version"] == 1
        assert sorted(role["zone"] for role in first["roles"].values()) == ["a", "b", "c"]
        client = nodes[1].client()
        client.create_bucket(Bucket="laid-out")
        client.put_object(Bucket="laid-out", Key="k", Body=b"no operator")
        assert nodes[2].client().get_object(Bucket="laid-out", Key="k")["Body"].read() == (
            b"no operator"
        )

        nodes[3].start()
        fourth = nodes[3].cli("node", "id").stdout.strip().split("@")[0]

        def holds_partitions(node: GranaryServer) -> bool:
            layout = layout_of(node)
            return layout.get("version", 0) >= 2 and layout["partitions"].get(fourth, 0) > 0

        for node in nodes:
            wait_until(lambda n=node: holds_partitions(n), what="the fourth node's partitions")
        assert nodes[3].client().get_object(Bucket="laid-out", Key="k")["Body"].read() == (
            b"no operator"
        )
        assert all(layout_of(node)["conflict"] is None for node in nodes)
        assert all("layout conflict" not in node.log() for node in nodes)
    finally:
        for node in nodes:
            if node.process is not None:
                node.kill()


def test_a_lone_node_lays_itself_out_with_its_disk_as_capacity(own_server):
    """No namespace needed: the coordinator is this machine's own host name."""
    own_server.config_text = node_config(own_server) + (
        f'[auto_layout]\ncoordinator = "{socket.gethostname()}"\nzone = "attic"\n'
    )
    own_server.start()
    wait_until(lambda: layout_of(own_server).get("version", 0) >= 1, what="layout 1")
    [role] = layout_of(own_server)["roles"].values()
    assert role == {
        "zone": "attic",
        "capacity": shutil.disk_usage(own_server.data_dir).total,
        "tags": [],
    }
    own_server.client().create_bucket(Bucket="alone")
