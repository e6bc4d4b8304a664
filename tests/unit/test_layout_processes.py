"""A node's other processes and its layout progress: the primary acks no version
that a worker's write may still miss, and a worker reports when its writes have moved."""

from __future__ import annotations

import asyncio

import msgspec

from granary.layout.history import LayoutHistory
from granary.layout.manager import LAYOUT_FILE, LayoutManager
from granary.layout.view import FollowerLayout
from tests.unit.test_layout_progress import V2, W, stable_v1


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
        manager.report_process_writes(1, 1)  # a worker started under version 1
        await manager.update(lambda history: history.update(V2))
        assert manager.current.version == 2
        assert manager.history.trackers.get("ack", "aa") == 1
        manager.report_process_writes(1, 2)  # it follows version 2, nothing older in flight
        assert manager.history.trackers.get("ack", "aa") == 2

    asyncio.run(main())


def test_a_dead_workers_writes_hold_nothing_back(tmp_path):
    manager = manager_at_v1(tmp_path)

    async def main() -> None:
        manager.report_process_writes(1, 1)
        manager.report_process_writes(2, 1)
        await manager.update(lambda history: history.update(V2))
        manager.report_process_writes(1, None)
        assert manager.history.trackers.get("ack", "aa") == 1  # worker 2 still counts
        manager.report_process_writes(2, None)
        assert manager.history.trackers.get("ack", "aa") == 2

    asyncio.run(main())


def test_a_worker_reports_its_oldest_write_as_it_follows_and_as_its_writes_end():
    reports: list[int] = []
    v1: LayoutHistory = stable_v1()
    follower = FollowerLayout(v1, W, reports.append)
    with follower.write_guard():
        follower.follow(v1.update(V2))
        assert follower.current.version == 2
        assert reports == [1]  # a write under version 1 still runs
        with follower.write_guard():
            pass
        assert reports == [1]
    assert reports == [1, 2]
    follower.follow(follower.history)  # the same history again: nothing to say
    assert reports == [1, 2]


def test_a_worker_without_writes_in_flight_reports_the_new_version_at_once():
    reports: list[int] = []
    follower = FollowerLayout(stable_v1(), W, reports.append)
    seen: list[int] = []
    follower.on_change(lambda history: seen.append(history.current.version))
    follower.follow(stable_v1().update(V2))
    assert reports == [2]
    assert seen == [2]
    assert [layout.version for layout in follower.write_layouts()] == [2, 1]
