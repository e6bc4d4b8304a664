"""Layout changes under load keep read-after-write, then retire the old versions."""

from __future__ import annotations

import itertools
import json
import os
import threading
from dataclasses import dataclass, field

from conftest import (
    Cluster,
    GranaryServer,
    admin_call,
    block_files,
    cluster_config,
    free_port,
    start_cluster,
    wait_until,
)

KEYS = 40


@dataclass
class Workload:
    """Writes a key through one node and reads it back through another, then reads
    an older key through a third, in a loop.

    A read that does not return the last value written is a violation. A
    failed write leaves its key uncertain (old or new value) until the next
    successful write of that key.
    """

    nodes: list[GranaryServer]
    bucket: str
    stop: threading.Event = field(default_factory=threading.Event)
    operations: int = 0
    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    latest: dict[str, set[bytes]] = field(default_factory=dict)

    def run(self) -> None:
        clients: dict[int, object] = {}
        for step in itertools.count():
            if self.stop.is_set():
                return
            nodes = list(self.nodes)
            writer, reader = nodes[step % len(nodes)], nodes[(step * 7 + 1) % len(nodes)]
            if reader is writer:
                reader = nodes[(step + 1) % len(nodes)]
            for node in (writer, reader):
                clients.setdefault(id(node), node.client())
            key = f"k{step % KEYS}"
            size = 6000 if step % 5 == 0 else 100  # every fifth one goes to a block
            body = f"{step}:".encode() + os.urandom(size)
            try:
                clients[id(writer)].put_object(Bucket=self.bucket, Key=key, Body=body)
            except Exception as error:  # every failure is recorded
                self.errors.append(f"put {key} via {writer.root.name}: {error}")
                self.latest.setdefault(key, set()).add(body)
                continue
            self.latest[key] = {body}
            try:
                got = clients[id(reader)].get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except Exception as error:
                self.errors.append(f"get {key} via {reader.root.name}: {error}")
                continue
            self.operations += 1
            if got != body:
                self.violations.append(
                    f"step {step}: {key} written via {writer.root.name}, read via "
                    f"{reader.root.name} gave {got[:12]!r}, not {body[:12]!r}"
                )
            older = f"k{(step * 13) % min(step + 1, KEYS)}"
            third = nodes[(step * 3 + 2) % len(nodes)]
            clients.setdefault(id(third), third.client())
            try:
                got = clients[id(third)].get_object(Bucket=self.bucket, Key=older)["Body"].read()
            except Exception as error:
                self.errors.append(f"get {older} via {third.root.name}: {error}")
                continue
            if got not in self.latest[older]:
                self.violations.append(
                    f"step {step}: {older} read via {third.root.name} gave an older value"
                )


def layout_of(node: GranaryServer) -> dict:
    return json.loads(node.cli("layout", "show", "--json").stdout)


def rows(node: GranaryServer, table: str) -> int:
    return admin_call(node, "GET", "/v1/tables")[table]["rows"]


def counted_blocks(node: GranaryServer) -> int:
    return admin_call(node, "GET", "/v1/workers/block-resync")["counted_blocks"]


def progress_of(node: GranaryServer) -> tuple[list[int], int]:
    shown = layout_of(node)
    return shown["active_versions"], shown["read_version"]


def test_adding_then_removing_a_node_under_load_keeps_read_after_write(tmp_path) -> None:
    cluster: Cluster = start_cluster(tmp_path, 3, ["dc1", "dc2", "dc3"])
    newcomer = GranaryServer(tmp_path / "node3")
    newcomer.config_text = cluster_config(
        newcomer, free_port(), [f"127.0.0.1:{cluster.rpc_ports[0]}"]
    )
    cluster.nodes.append(newcomer)
    try:
        first, second, third = cluster.nodes[:3]
        newcomer.start()
        ids = cluster.node_ids()
        first.client().create_bucket(Bucket="moving")
        workload = Workload([first, second], "moving")
        loop = threading.Thread(target=workload.run, daemon=True)
        loop.start()
        wait_until(lambda: workload.operations >= 20, what="the workload to get going")

        # Version 2: the newcomer joins in a fourth zone and takes partitions,
        # while the third node is down: it cannot ack, so nobody syncs for
        # version 2 and reads stay on version 1 while writes go to both.
        third.stop()
        second.cli("layout", "assign", "-z", "dc4", "-c", "1G", ids[3])
        shown = second.cli("layout", "apply", "--version", "2").stdout
        assert "Active versions 1,2; read version 1;" in shown
        for node in (first, second, newcomer):
            wait_until(lambda n=node: progress_of(n) == ([1, 2], 1), what="version 2 known")
        wait_until(lambda: newcomer.client().head_bucket(Bucket="moving"), what="newcomer")
        workload.nodes.append(newcomer)
        mixed = workload.operations
        wait_until(lambda: workload.operations >= mixed + 30, what="operations across versions")
        assert progress_of(newcomer) == ([1, 2], 1)
        shown = newcomer.cli("layout", "show").stdout
        assert "ack 2: 3/4" in shown and "sync_ack 2: 0/4" in shown

        third.start()
        workload.nodes.append(third)
        for node in cluster.nodes:
            wait_until(
                lambda n=node: progress_of(n) == ([2], 2), timeout=60, what="version 1 to retire"
            )
        moved = workload.operations

        # Version 3: the first node leaves; it keeps serving requests meanwhile.
        second.cli("layout", "remove", ids[0])
        second.cli("layout", "apply", "--version", "3")
        for node in cluster.nodes:
            wait_until(
                lambda n=node: progress_of(n) == ([3], 3), timeout=60, what="version 2 to retire"
            )
        wait_until(lambda: workload.operations >= moved + 40, what="more operations")
        workload.stop.set()
        loop.join(timeout=60)

        assert workload.violations == []
        assert workload.errors == []
        shown = layout_of(third)
        assert shown["done"] == {"ack": 3, "sync": 3, "sync_ack": 3}
        assert "Active versions 3; read version 3" in third.cli("layout", "show").stdout
        status = json.loads(third.cli("status", "--json").stdout)
        assert status["layout_progress"]["active_versions"] == [3]
        assert sorted(status["layout_progress"]["trackers"]) == sorted(ids[1:])

        # The node that left handed its partitions over and forgot them.
        wait_until(lambda: rows(first, "object") == 0, timeout=60, what="the handover")
        # ... and its blocks: offloaded to their holders (or collected), none left,
        # nor any count of their references.
        wait_until(
            lambda: block_files(first.data_dir) == [] and counted_blocks(first) == 0,
            timeout=60,
            what="the blocks offloaded",
        )
        for node in cluster.nodes:
            client = node.client()
            for key, bodies in workload.latest.items():
                got = client.get_object(Bucket="moving", Key=key)["Body"].read()
                assert got in bodies, f"{key} via {node.root.name}"
    finally:
        cluster.stop()


def test_skip_dead_nodes_lets_a_layout_change_finish_without_a_lost_node(tmp_path) -> None:
    cluster = start_cluster(tmp_path, 4, ["dc1", "dc2", "dc3", "dc4"])
    try:
        a, b, c, lost = cluster.nodes
        ids = cluster.node_ids()
        client = a.client()
        client.create_bucket(Bucket="lasting")
        for index in range(20):
            client.put_object(Bucket="lasting", Key=f"k{index}", Body=b"%d" % index)
        lost.kill()
        b.cli("layout", "remove", ids[3])
        b.cli("layout", "apply", "--version", "2")
        for node in (a, b, c):
            wait_until(lambda n=node: progress_of(n) == ([1, 2], 1), what="version 2 known")
        refused = b.cli("layout", "skip-dead-nodes", "--version", "3", check=False)
        assert refused.returncode != 0 and "at most 2" in refused.stderr

        # The lost node never acks version 2, so the change cannot finish alone.
        c.client().put_object(Bucket="lasting", Key="during", Body=b"both versions")
        assert progress_of(a) == ([1, 2], 1)
        skipped = b.cli("layout", "skip-dead-nodes", "--version", "2").stdout
        assert f"skipped: {ids[3][:16]}" in skipped
        for node in (a, b, c):
            wait_until(
                lambda n=node: progress_of(n) == ([2], 2), timeout=60, what="version 1 to retire"
            )
        nothing = b.cli("layout", "skip-dead-nodes", "--version", "2", check=False)
        assert nothing.returncode != 0
        for node in (a, b, c):
            reader = node.client()
            assert reader.get_object(Bucket="lasting", Key="k7")["Body"].read() == b"7"
            assert reader.get_object(Bucket="lasting", Key="during")["Body"].read() == (
                b"both versions"
            )
    finally:
        cluster.stop()
