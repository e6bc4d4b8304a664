"""A process's view of the layout history: where writes and reads go, and the
writes in flight under each version.

`LayoutManager` (the node's primary process) extends it with persistence,
gossip and the node's own progress. A node's S3 worker processes follow the
primary's history with a `FollowerLayout` and report their writes in flight
and the version they read from, so the primary acks no version that one of
their writes may still miss, nor says the node reads from a version they do
not read from yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from granary.layout import progress
from granary.layout.history import ClusterLayout, LayoutHistory


@dataclass(frozen=True)
class ProcessProgress:
    """Where another process of the node stands in the layout history."""

    oldest_write: int  # the oldest version one of its writes may still use
    read_version: int  # the version its reads go to


class LayoutView:
    def __init__(self, history: LayoutHistory, write_quorum: int) -> None:
        self.write_quorum = write_quorum
        self._listeners: list[Callable[[LayoutHistory], None]] = []
        self._writes: Counter[int] = Counter()  # writes in flight, by current version at start
        self._set(history)

    def _set(self, history: LayoutHistory) -> None:
        self.history = history
        self._active = history.active()
        version = progress.read_version(history, self.write_quorum)
        self._read = next(layout for layout in self._active if layout.version == version)

    @property
    def current(self) -> ClusterLayout:
        return self.history.current

    def on_change(self, listener: Callable[[LayoutHistory], None]) -> None:
        self._listeners.append(listener)

    def _tell_listeners(self) -> None:
        for listener in self._listeners:
            listener(self.history)

    # ---- placement -----------------------------------------------------------

    def write_layouts(self) -> tuple[ClusterLayout, ...]:
        """The active versions, newest first: a write goes to each of them."""
        return self._active

    def read_layout(self) -> ClusterLayout:
        """The version reads go to."""
        return self._read

    def read_version(self) -> int:
        return self._read.version

    # ---- writes in flight --------------------------------------------------------

    @contextmanager
    def write_guard(self) -> Iterator[None]:
        """Hold while a write runs: this node acks no newer version until it is done.

        Take it, then compute the write sets, with no await in between, so the
        version recorded is one the write goes to.
        """
        version = self.current.version
        self._writes[version] += 1
        try:
            yield
        finally:
            self._writes[version] -= 1
            if not self._writes[version]:
                del self._writes[version]
                if version < self.current.version:
                    self._old_writes_done()

    def oldest_write_version(self) -> int:
        """The oldest version one of this process's writes may still use."""
        return min(self._writes, default=self.current.version)

    def _old_writes_done(self) -> None:
        """The last write started under an older version than the current one finished."""


class FollowerLayout(LayoutView):
    """A worker process's view: the primary's history, and reports of its progress."""

    def __init__(
        self,
        history: LayoutHistory,
        write_quorum: int,
        report: Callable[[ProcessProgress], None],
    ) -> None:
        super().__init__(history, write_quorum)
        self._report = report

    def progress(self) -> ProcessProgress:
        return ProcessProgress(self.oldest_write_version(), self.read_version())

    def follow(self, history: LayoutHistory) -> None:
        """Take the primary's new history; report the writes it may still wait for
        and the version it reads from now."""
        if history == self.history:
            return
        self._set(history)
        self._report(self.progress())
        self._tell_listeners()

    def _old_writes_done(self) -> None:
        self._report(self.progress())
