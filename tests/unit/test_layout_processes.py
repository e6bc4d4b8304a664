"""A node's other processes and its layout progress: the primary acks no version
that a worker's write may still miss, and a worker reports when its writes have moved."""

from __future__ import annotations

import asyncio

import msgspec

from granary.layout import progress
from granary.layout.history import LayoutHistory
from granary.layout.manager import LAYOUT_FILE, LayoutManager
from granary.layout.view import FollowerLayout, ProcessProgress
from tests.unit.test_layout_progress import V2, W, settled, stable_v1


class QuietNet:
    """What the layout manager asks of the RPC layer, with no peer connected."""

    node_id = bytes.fromhex("aa")

    def endpoint(self, name, handler) -> None:
        pass

    def connected_peers(self) -> list[bytes]:
        return []


def manager_at_v1(tmp_path) -> LayoutManager:
    (tmp_path / LAYOUT_FILE).write_bytes(msgspec.msgpack.encode(stable_v1()))
    return LayoutManager(tmp_path, 3, QuietNet())


def test_the_primary_acks_no_version_a_worker_may_still_write_under(tmp_path):
    manager = manager_at_v1(tmp_path)

    async def main() -> None:
        manager.report_process(1, ProcessProgress(1, 1))  # a worker started under version 1
        await manager.update(lambda history: history.update(V2))
        assert manager.current.version == 2
        assert manager.history.trackers.get("ack", "aa") == 1
        manager.report_process(1, ProcessProgress(2, 1))  # at version 2, nothing older in flight
        assert manager.history.trackers.get("ack", "aa") == 2

    asyncio.run(main())


def test_a_dead_workers_writes_hold_nothing_back(tmp_path):
    manager = manager_at_v1(tmp_path)

    async def main() -> None:
        manager.report_process(1, ProcessProgress(1, 1))
        manager.report_process(2, ProcessProgress(1, 1))
        await manager.update(lambda history: history.update(V2))
        manager.report_process(1, None)
        assert manager.history.trackers.get("ack", "aa") == 1  # worker 2 still counts
        manager.report_process(2, None)
        assert manager.history.trackers.get("ack", "aa") == 2

    asyncio.run(main())


def test_a_worker_reports_its_oldest_write_as_it_follows_and_as_its_writes_end():
    reports: list[ProcessProgress] = []
    v1: LayoutHistory = stable_v1()
    follower = FollowerLayout(v1, W, reports.append)
    with follower.write_guard():
        follower.follow(v1.update(V2))
        assert follower.current.version == 2
        assert reports == [ProcessProgress(1, 1)]  # a write under version 1 still runs
        with follower.write_guard():
            pass
        assert len(reports) == 1
    assert reports == [ProcessProgress(1, 1), ProcessProgress(2, 1)]
    follower.follow(follower.history)  # the same history again: nothing to say
    assert len(reports) == 2


def test_a_worker_without_writes_in_flight_reports_the_new_version_at_once():
    reports: list[ProcessProgress] = []
    follower = FollowerLayout(stable_v1(), W, reports.append)
    seen: list[int] = []
    follower.on_change(lambda history: seen.append(history.current.version))
    follower.follow(stable_v1().update(V2))
    assert reports == [ProcessProgress(2, 1)]  # reads stay on 1 until version 2 is synced
    assert seen == [2]
    assert [layout.version for layout in follower.write_layouts()] == [2, 1]


def test_the_node_reads_from_a_new_version_only_once_its_workers_do():
    """A worker follows the primary's history a moment later: until it reports
    reading from version 2, the node's sync_ack stays at 1, so version 1 (which
    the worker's reads still go to) cannot retire and be handed over."""
    everyone = ["aa", "bb", "cc", "dd"]
    history = settled(stable_v1().update(V2), everyone, acked=2, synced=0)
    history = settled(history, ["bb", "cc", "dd"], acked=2, synced=2)
    assert progress.read_version(history, W) == 2
    assert history.trackers.get("sync_ack", "aa") == 1  # aa's turn: the primary's node
    primary_alone = progress.settle(history, "aa", acked=2, synced=0, write_quorum=W)
    assert primary_alone.trackers.get("sync_ack", "aa") == 2
    assert [v.version for v in primary_alone.active()] == [2]
    with_worker = progress.settle(history, "aa", acked=2, synced=0, write_quorum=W, others_read=1)
    assert with_worker.trackers.get("sync_ack", "aa") == 1
    assert [v.version for v in with_worker.active()] == [2, 1]
