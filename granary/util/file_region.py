"""A stretch of an open file that a response can send without reading it into memory.

A GET sends most blocks straight from the page cache to the socket
(``sendfile``): the bytes are never copied into the process. The file stays
open while any region of it is referenced and is closed when the last one
is dropped, so a region fetched ahead and then let go (a client that
stalled, a hedged read that lost) closes its file without anyone having to.
"""

from __future__ import annotations

import os
import weakref


class OpenFile:
    """A read-only file descriptor, closed when this object is collected (or `close`d)."""

    __slots__ = ("__weakref__", "_close", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._close = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        self._close()


class FileRegion:
    """`length` bytes of `file` from `offset`; the file must not change while referenced
    (block files never do: a block is written once under a new name)."""

    __slots__ = ("file", "length", "offset")

    def __init__(self, file: OpenFile, offset: int, length: int) -> None:
        self.file = file
        self.offset = offset
        self.length = length

    def __len__(self) -> int:
        return self.length

    def slice(self, low: int, high: int) -> FileRegion:
        """The bytes [low, high) of this region, as `bytes[low:high]` would cut them."""
        low, high, _ = slice(low, high).indices(self.length)
        return FileRegion(self.file, self.offset + low, max(high - low, 0))

    def read(self) -> bytes:
        """The region's bytes (for a path that cannot send from the file)."""
        data = os.pread(self.file.fd, self.length, self.offset)
        if len(data) != self.length:
            raise OSError(f"file shorter than its region: {len(data)} of {self.length} bytes")
        return data
