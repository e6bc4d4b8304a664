"""Keyed locks shared by a node's processes: real child processes hold them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from granary.util.process_locks import ProcessSlots, SharedKeyedLocks

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from granary.util.process_locks import ProcessSlots, SharedKeyedLocks

    async def main():
        locks = SharedKeyedLocks(Path(sys.argv[1]))
        async with locks.hold(sys.argv[2].encode()):
            print("held", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print("released", flush=True)

    asyncio.run(main())
    """
)


def start_child(script: str, *args: str, says: str) -> subprocess.Popen:
    """A Python child running `script`, once it has printed `says`; it waits for a
    line on its stdin to go on."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == says
    return child


def start_holder(path: Path, key: bytes) -> subprocess.Popen:
    return start_child(HOLDER, str(path), key.decode(), says="held")


async def acquired_within(locks: SharedKeyedLocks, key: bytes, seconds: float) -> bool:
    async def take() -> None:
        async with locks.hold(key):
            pass

    try:
        await asyncio.wait_for(take(), seconds)
    except TimeoutError:
        return False
    return True


def test_tasks_of_one_process_take_a_key_in_turn(tmp_path):
    locks = SharedKeyedLocks(tmp_path / "locks")
    inside: list[int] = []
    overlaps: list[int] = []

    async def user(n: int) -> None:
        async with locks.hold(b"block"):
            if inside:
                overlaps.append(n)
            inside.append(n)
            await asyncio.sleep(0.01)
            inside.remove(n)

    async def main() -> None:
        await asyncio.gather(*(user(n) for n in range(5)))

    asyncio.run(main())
    assert overlaps == []
    assert len(locks) == 0  # nothing kept once released
    locks.close()


def test_a_key_held_by_another_process_waits_until_it_lets_go(tmp_path):
    path = tmp_path / "locks"
    locks = SharedKeyedLocks(path)
    holder = start_holder(path, b"block-a")
    try:
        assert locks.held_elsewhere(b"block-a")
        assert not asyncio.run(acquired_within(locks, b"block-a", 0.3))
        other = next(
            k
            for k in (b"b%d" % n for n in range(100))
            if locks.stripe_of(k) != locks.stripe_of(b"block-a")
        )
        assert asyncio.run(acquired_within(locks, other, 1.0))  # other stripes stay free

        async def wait_then_release() -> bool:
            waiting = asyncio.ensure_future(acquired_within(locks, b"block-a", 30))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.flush()
            return await waiting

        assert asyncio.run(wait_then_release())
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.kill()
        holder.wait()
        locks.close()


def test_a_killed_holder_leaves_the_key_free(tmp_path):
    path = tmp_path / "locks"
    locks = SharedKeyedLocks(path)
    holder = start_holder(path, b"upload")
    holder.kill()
    holder.wait()
    assert not locks.held_elsewhere(b"upload")
    assert asyncio.run(acquired_within(locks, b"upload", 5))
    locks.close()


def test_a_wait_cancelled_leaves_nothing_held(tmp_path):
    path = tmp_path / "locks"
    locks = SharedKeyedLocks(path)
    holder = start_holder(path, b"k")
    try:
        assert not asyncio.run(acquired_within(locks, b"k", 0.05))
        assert len(locks) == 0
    finally:
        holder.kill()
        holder.wait()
    assert asyncio.run(acquired_within(locks, b"k", 5))
    locks.close()


def test_the_lock_is_held_across_processes_while_this_process_holds_it(tmp_path):
    path = tmp_path / "locks"
    locks = SharedKeyedLocks(path)
    probe = SharedKeyedLocks(path)  # another open file: what another process would see

    async def main() -> None:
        assert not probe.held_elsewhere(b"k")
        async with locks.hold(b"k"):
            assert probe.held_elsewhere(b"k")
        assert not probe.held_elsewhere(b"k")

    asyncio.run(main())
    locks.close()
    probe.close()


@pytest.mark.parametrize("key", [b"", b"x" * 1000, ("upload", b"id", 3)])
def test_any_hashable_key_maps_to_a_stripe(tmp_path, key):
    locks = SharedKeyedLocks(tmp_path / "locks", stripes=16)
    assert 0 <= locks.stripe_of(key) < 16
    assert locks.stripe_of(key) == locks.stripe_of(key)
    locks.close()


SLOT_HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from granary.util.process_locks import ProcessSlots

    slots = ProcessSlots(Path(sys.argv[1]))
    print("claimed" if slots.claim(int(sys.argv[2])) else "refused", flush=True)
    sys.stdin.readline()
    """
)


def test_a_process_slot_is_held_for_its_process_life_and_freed_when_it_dies(tmp_path):
    path = tmp_path / "processes"
    holder = start_child(SLOT_HOLDER, str(path), "2", says="claimed")
    slots = ProcessSlots(path)
    try:
        assert slots.held_elsewhere(2)
        assert not slots.held_elsewhere(1)
        assert not slots.claim(2)
        assert slots.claim(1)
        with pytest.raises(TimeoutError):  # slot 2 stays taken while its process lives
            asyncio.run(asyncio.wait_for(slots.wait_until_free(range(2, 3), 0.01), 0.2))
    finally:
        holder.kill()
        holder.wait()
    asyncio.run(asyncio.wait_for(slots.wait_until_free(range(0, 64)), 5))
    assert slots.claim(2)
    slots.close()
