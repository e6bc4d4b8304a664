"""Nodes find each other through one DNS name that resolves to all of them (as a
Kubernetes headless Service does), with no node address in their configuration.

Each node runs in a mount namespace of its own (`unshare`), where a hosts file of
the test's is bound over /etc/hosts: one name maps to every node's loopback
address (127.0.0.2 and up), all on the same RPC port, the node's own address first
(a resolver may answer in any order). Dialing the name alone would then reach the
node itself and no one else: every address must be dialed. The name is resolved
by the system resolver, as in a pod; nothing outside the namespaces changes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import GranaryServer, cluster_config, wait_until
from tests.ports import free_port

NAME = "granary-peers.test"
IN_OWN_HOSTS = 'mount --bind "$0" /etc/hosts && exec "$@"'

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mount namespaces need root and unshare",
)


def address(index: int) -> str:
    return f"127.0.0.{index + 2}"


def write_hosts(folder: Path, count: int) -> None:
    """For each of `count` nodes, a hosts file naming the `count` nodes, its own
    address first (rewritten in place: its namespace sees the same file)."""
    for own in range(count):
        order = [(own + i) % count for i in range(count)]
        hosts_file(folder, own).write_text("".join(f"{address(i)} {NAME}\n" for i in order))


def hosts_file(folder: Path, index: int) -> Path:
    return folder / f"hosts{index}"


def dns_node(root: Path, index: int, port: int, hosts: Path) -> GranaryServer:
    """Node `index`, its /etc/hosts the file for it in folder `hosts`."""
    node = GranaryServer(root / f"node{index}")
    node.config_text = cluster_config(node, port, [f"{NAME}:{port}"], host=address(index))
    node.wrapper = ["unshare", "--mount", "--propagation", "private"]
    node.wrapper += ["sh", "-c", IN_OWN_HOSTS, str(hosts_file(hosts, index))]
    return node


def peers_up(node: GranaryServer) -> set[str]:
    status = json.loads(node.cli("status", "--json", check=False).stdout or "{}")
    return {n["id"] for n in status.get("nodes", []) if n["up"]}


def test_nodes_named_by_one_dns_name_find_each_other_and_a_later_one_joins(tmp_path):
    port = free_port()
    write_hosts(tmp_path, 3)
    nodes = [dns_node(tmp_path, i, port, tmp_path) for i in range(4)]
    try:
        for node in nodes[:3]:
            node.start()
        ids = [node.cli("node", "id").stdout.strip().split("@")[0] for node in nodes[:3]]
        for node in nodes[:3]:
            wait_until(lambda n=node: peers_up(n) >= set(ids), what="every node up everywhere")
        admin = nodes[0]
        for node_id, zone in zip(ids, ["dc1", "dc2", "dc3"], strict=True):
            admin.cli("layout", "assign", "-z", zone, "-c", "1G", node_id)
        admin.cli("layout", "apply", "--version", "1")
        client = nodes[0].client()
        client.create_bucket(Bucket="found")
        client.put_object(Bucket="found", Key="k", Body=b"through dns")
        read = nodes[2].client().get_object(Bucket="found", Key="k")["Body"].read()
        assert read == b"through dns"

        # A fourth node, named by the same record once it exists, finds the others at
        # its start and they learn of it.
        write_hosts(tmp_path, 4)
        nodes[3].start()
        fourth = nodes[3].cli("node", "id").stdout.strip().split("@")[0]
        for node in nodes:
            wait_until(lambda n=node: fourth in peers_up(n), what="the fourth node up everywhere")
        assert nodes[3].client().get_object(Bucket="found", Key="k")["Body"].read() == read
    finally:
        for node in nodes:
            if node.process is not None:
                node.kill()
