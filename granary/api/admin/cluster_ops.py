"""The cluster side of the admin API: status, health, peers and layout changes."""

from __future__ import annotations

import asyncio

from granary.layout.health import Health, cluster_health
from granary.layout.history import ClusterLayout, LayoutHistory
from granary.layout.manager import LayoutManager
from granary.layout.roles import LayoutError, LayoutParameters, NodeRole, ZoneRedundancy
from granary.layout.trackers import TRACKER_NAMES
from granary.net.node_info import NodeInfoService, local_info
from granary.net.peering import Peering
from granary.util.sizes import parse_size
from granary.util.time import now_ms


class ClusterAdmin:
    def __init__(
        self,
        layout: LayoutManager,
        peering: Peering,
        net,
        info: NodeInfoService,
        write_quorum: int,
        rpc_public_addr: str,
        tables: list,
    ) -> None:
        self.tables = tables
        self.layout = layout
        self.peering = peering
        self.net = net
        self.info = info
        self.write_quorum = write_quorum
        self.rpc_public_addr = rpc_public_addr

    # ---- status ------------------------------------------------------------

    def up_nodes(self) -> set[str]:
        up = {self.net.node_id.hex()}
        up.update(p.node_id.hex() for p in self.peering.peer_status() if p.up)
        return up

    def health(self) -> Health:
        return cluster_health(self.layout.current, self.up_nodes(), self.write_quorum)

    def node_id_string(self) -> str:
        return f"{self.net.node_id.hex()}@{self.rpc_public_addr}"

    async def status(self) -> dict:
        current = self.layout.current
        peers = {p.node_id.hex(): p for p in self.peering.peer_status()}
        me = self.net.node_id.hex()
        known = sorted({me, *peers, *current.roles})
        infos = await asyncio.gather(
            *(self._info(node, node in peers and peers[node].up) for node in known)
        )
        nodes = []
        for node, info in zip(known, infos, strict=True):
            role = current.roles.get(node)
            peer = peers.get(node)
            address = self.rpc_public_addr if node == me else (peer.addr if peer else None)
            nodes.append(
                {
                    "id": node,
                    "hostname": info.hostname if info else None,
                    "address": address,
                    "zone": role.zone if role else None,
                    "capacity": role.capacity if role else None,
                    "gateway": role.is_gateway if role else None,
                    "data_total": info.data_total if info else None,
                    "data_free": info.data_free if info else None,
                    "up": node == me or bool(peer and peer.up),
                    "last_seen": peer.last_seen if peer else None,
                    "rtt_ms": round(peer.rtt * 1000, 2) if peer and peer.rtt is not None else None,
                }
            )
        health = self.health()
        return {
            "node": me,
            "layout_version": current.version,
            "layout_progress": self.progress(),
            "layout_conflict": self.layout.conflict,
            "health": {
                "status": health.status,
                "partitions": health.partitions,
                "partitions_with_quorum": health.partitions_with_quorum,
                "partitions_all_up": health.partitions_all_up,
                "storage_nodes": health.storage_nodes,
                "storage_nodes_up": health.storage_nodes_up,
            },
            "nodes": nodes,
        }

    async def _info(self, node: str, reachable: bool):
        if node == self.net.node_id.hex():
            return local_info(self.info.data_dirs)
        if not reachable:
            return None
        return await self.info.fetch(bytes.fromhex(node))

    def table_digests(self) -> dict:
        """Per table, this node's row count and partition digests (to compare replicas)."""
        return {
            table.name: {
                "rows": table.tree.count(),
                "partitions": {
                    str(p): digest.hex() for p, digest in table.merkle.partition_digests().items()
                },
            }
            for table in self.tables
        }

    async def connect(self, peer: str) -> str:
        return (await self.peering.connect(peer)).hex()

    # ---- layout ------------------------------------------------------------

    def resolve(self, prefix: str) -> str:
        """A full node id from a unique prefix of a known node's id."""
        current = self.layout.current
        known = {self.net.node_id.hex(), *current.roles, *current.staged_roles}
        known.update(p.node_id.hex() for p in self.peering.peer_status())
        matches = sorted(node for node in known if node.startswith(prefix.lower()))
        if len(matches) != 1:
            detail = "no known node" if not matches else f"{len(matches)} nodes"
            raise LayoutError(f"{detail} with an id starting with {prefix!r}")
        return matches[0]

    def show(self) -> dict:
        current = self.layout.current
        preview = None
        preview_error = None
        if current.staged_roles or current.staged_parameters is not None:
            try:
                _, report = current.preview()
                preview = report.render()
            except LayoutError as error:
                preview_error = str(error)
        return {
            "version": current.version,
            "replication_factor": current.replication_factor,
            "zone_redundancy": current.parameters.zone_redundancy,
            "roles": {node: _role_json(role) for node, role in current.roles.items()},
            "partitions": current.assignment.partition_counts() if current.assignment.ring else {},
            "partition_size": current.assignment.partition_size,
            "staged_roles": {
                node: _role_json(role) if role else None
                for node, role in current.staged_roles.items()
            },
            "staged_zone_redundancy": current.staged_parameters.zone_redundancy
            if current.staged_parameters
            else None,
            "preview": preview,
            "preview_error": preview_error,
            "conflict": self.layout.conflict,
            **self.progress(),
        }

    def progress(self) -> dict:
        """How far the cluster has got through the layout versions still active.

        `trackers`: each active version's node and the version its ack, sync
        and sync_ack reached. `done`: how many of those nodes reached the
        current version, per tracker.
        """
        history = self.layout.history
        nodes = history.active_nodes()
        trackers = history.trackers
        return {
            "active_versions": sorted(layout.version for layout in history.active()),
            "read_version": self.layout.read_version(),
            "trackers": {
                node: {name: trackers.get(name, node) for name in TRACKER_NAMES} for node in nodes
            },
            "done": {
                name: trackers.count_at_least(name, nodes, history.current.version)
                for name in TRACKER_NAMES
            },
        }

    async def skip_dead_nodes(self, version: int, allow_missing_data: bool) -> dict:
        skipped = await self.layout.skip_dead_nodes(
            version, self.up_nodes(), allow_missing_data=allow_missing_data
        )
        return {**self.show(), "skipped": skipped}

    async def _stage(self, stage) -> dict:
        await self.layout.update(lambda history: history.update(stage(history.current)))
        return self.show()

    async def assign(
        self, nodes: list[str], zone: str, capacity: str | None, tags: list[str], gateway: bool
    ) -> dict:
        if gateway == (capacity is not None):
            raise LayoutError("give either a capacity or --gateway")
        role = NodeRole(zone, None if capacity is None else parse_size(capacity), tuple(tags))
        ids = [self.resolve(node) for node in nodes]

        def stage(layout: ClusterLayout) -> ClusterLayout:
            for node in ids:
                layout = layout.stage_role(node, role, now_ms())
            return layout

        return await self._stage(stage)

    async def remove(self, nodes: list[str]) -> dict:
        ids = [self.resolve(node) for node in nodes]

        def stage(layout: ClusterLayout) -> ClusterLayout:
            for node in ids:
                layout = layout.stage_remove(node, now_ms())
            return layout

        return await self._stage(stage)

    async def configure(self, zone_redundancy: ZoneRedundancy) -> dict:
        parameters = LayoutParameters(zone_redundancy)
        return await self._stage(lambda layout: layout.stage_parameters(parameters, now_ms()))

    async def apply(self, version: int) -> dict:
        reports = []

        def apply(history: LayoutHistory) -> LayoutHistory:
            applied, report = history.current.apply_staged(version)
            reports.append(report.render())
            return history.update(applied)

        await self.layout.update(apply)
        return {**self.show(), "report": reports[-1]}

    async def revert(self) -> dict:
        return await self._stage(lambda layout: layout.revert_staged())

    def history(self) -> list[dict]:
        history = self.layout.history
        return [
            {
                "version": layout.version,
                "storage_nodes": sum(not r.is_gateway for r in layout.roles.values()),
                "gateways": sum(r.is_gateway for r in layout.roles.values()),
                "zone_redundancy": layout.parameters.zone_redundancy,
                "partition_size": layout.assignment.partition_size,
            }
            for layout in (history.current, *history.older)
        ]


def _role_json(role: NodeRole) -> dict:
    return {"zone": role.zone, "capacity": role.capacity, "tags": list(role.tags)}
