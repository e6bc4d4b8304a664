"""ReadAhead: how far it fetches ahead of a fast, a slow and a stalled consumer."""

from __future__ import annotations

import asyncio
import gc
import weakref

from granary.model.read_ahead import ReadAhead

PATIENCE = 0.01


class Item:
    def __init__(self, index: int) -> None:
        self.index = index


class Fetches:
    """Fetches that complete when the test says so; what they return is tracked weakly."""

    def __init__(self) -> None:
        self.launches: list[int] = []
        self.running: dict[int, asyncio.Future[Item]] = {}
        self.items: weakref.WeakValueDictionary[int, Item] = weakref.WeakValueDictionary()

    def __call__(self, index: int) -> asyncio.Future[Item]:
        self.launches.append(index)
        future: asyncio.Future[Item] = asyncio.get_running_loop().create_future()
        self.running[index] = future
        future.add_done_callback(self._forget_if_cancelled)
        return future

    def _forget_if_cancelled(self, future: asyncio.Future[Item]) -> None:
        for index, running in list(self.running.items()):
            if running is future and future.cancelled():
                del self.running[index]

    def complete(self, *indexes: int) -> None:
        for index in indexes:
            item = Item(index)
            self.items[index] = item
            self.running.pop(index).set_result(item)

    def alive(self) -> set[int]:
        gc.collect()
        return set(self.items.keys())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def take_waiting(reader: ReadAhead[Item], fetches: Fetches, index: int) -> Item:
    """The consumer asks for item `index` and waits until its fetch completes."""
    taking = asyncio.ensure_future(reader.next())
    await settle()
    if index in fetches.running:
        fetches.complete(index)
    item = await taking
    assert item.index == index
    return item


def test_a_consumer_that_waits_has_up_to_max_ahead_fetches_ahead():
    async def scenario() -> list[int]:
        fetches = Fetches()
        reader = ReadAhead(fetches, 10, max_ahead=2, patience=60)
        in_flight = []
        for index in range(10):
            await take_waiting(reader, fetches, index)
            in_flight.append(len(fetches.running))
        reader.close()
        assert fetches.launches == list(range(10))  # each fetched once
        return in_flight

    assert asyncio.run(scenario()) == [1, 2, 2, 2, 2, 2, 2, 2, 1, 0]


def test_a_stalled_consumer_keeps_only_its_item():
    async def scenario() -> None:
        fetches = Fetches()
        reader = ReadAhead(fetches, 10, max_ahead=2, patience=PATIENCE)
        for index in range(3):
            held = await take_waiting(reader, fetches, index)
        fetches.complete(*list(fetches.running))  # the fetches ahead complete
        assert fetches.alive() == {2, 3, 4}
        await asyncio.sleep(PATIENCE * 5)  # the consumer does not come back
        assert fetches.alive() == {2}
        assert held.index == 2
        del held
        # Back, the consumer gets every item in order; 3 and 4 are fetched again.
        for index in range(3, 10):
            await take_waiting(reader, fetches, index)
        assert sorted(fetches.launches) == [0, 1, 2, 3, 3, 4, 4, 5, 6, 7, 8, 9]

    asyncio.run(scenario())


def test_a_consumer_slower_than_patience_gets_its_items_on_demand():
    async def scenario() -> None:
        fetches = Fetches()
        reader = ReadAhead(fetches, 10, max_ahead=2, patience=PATIENCE)
        for index in range(3):
            await take_waiting(reader, fetches, index)
        for index in range(3, 10):
            await asyncio.sleep(PATIENCE * 5)  # the consumer takes long over each item
            await take_waiting(reader, fetches, index)
            assert fetches.launches[-1] == index  # fetched when asked for
            assert not fetches.running  # and nothing ahead
        assert sorted(fetches.launches) == [0, 1, 2, 3, 3, 4, 4, 5, 6, 7, 8, 9]

    asyncio.run(scenario())


def test_a_consumer_back_in_time_gets_read_ahead_again():
    async def scenario() -> None:
        fetches = Fetches()
        reader = ReadAhead(fetches, 10, max_ahead=2, patience=PATIENCE)
        await take_waiting(reader, fetches, 0)
        await asyncio.sleep(PATIENCE * 5)
        await take_waiting(reader, fetches, 1)  # on demand
        assert not fetches.running
        await take_waiting(reader, fetches, 2)  # back in time: one fetched ahead
        assert list(fetches.running) == [3]
        await take_waiting(reader, fetches, 3)
        assert list(fetches.running) == [4, 5]
        reader.close()

    asyncio.run(scenario())


def test_the_first_items_are_fetched_on_demand():
    async def scenario() -> None:
        fetches = Fetches()
        reader = ReadAhead(fetches, 10, max_ahead=2, patience=60, warmup=4)
        for index in range(4):
            await take_waiting(reader, fetches, index)
            assert not fetches.running
        await take_waiting(reader, fetches, 4)
        assert list(fetches.running) == [5]
        reader.close()

    asyncio.run(scenario())


def test_closing_cancels_the_fetches_in_flight():
    async def scenario() -> None:
        fetches = Fetches()
        reader = ReadAhead(fetches, 10, max_ahead=2, patience=60)
        await take_waiting(reader, fetches, 0)
        await take_waiting(reader, fetches, 1)
        running = list(fetches.running.values())
        assert len(running) == 2
        reader.close()
        await settle()
        assert all(future.cancelled() for future in running)

    asyncio.run(scenario())
