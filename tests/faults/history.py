"""The history: every client operation with its times and outcome, and every fault.

Writes carry a unique value; an object's body is derived from its value
alone (`body_of`), so a read proves which write it saw and that the bytes
are intact. A delete is a write of the value None ("absent").
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import blake3

# Bodies from a few bytes (stored inline in the object row) to several blocks.
INLINE_LIMIT = 4096
MAX_BODY = 48 * 1024


class Kind(StrEnum):
    PUT = "put"
    DELETE = "delete"
    GET = "get"
    LIST = "list"
    CREATE = "create"  # PutObject with If-None-Match: *
    SWAP = "swap"  # PutObject with If-Match: the ETag of `expected`
    VGET = "vget"  # GetObject of the version `version_id`
    VDELETE = "vdelete"  # DeleteObject of the version `version_id`, for good
    VLIST = "vlist"  # ListObjectVersions of one key


class Outcome(StrEnum):
    OK = "ok"
    FAIL = "fail"  # certainly had no effect
    UNKNOWN = "unknown"  # may have had an effect, now or later


@dataclass(frozen=True)
class Op:
    process: int
    kind: Kind
    key: str | None  # None for a listing
    node: str
    start: float  # History.now()
    end: float
    outcome: Outcome
    value: str | None = None  # written, or read (None: absent)
    keys: frozenset[str] | None = None  # a listing's keys
    error: str = ""
    expected: str | None = None  # the value a SWAP's If-Match names
    version_id: str | None = None  # written (a PUT's, a DELETE's marker), read or deleted
    versions: tuple[str, ...] | None = None  # a VLIST's versions holding data, newest first
    markers: tuple[str, ...] | None = None  # a VLIST's delete markers, newest first
    locked: bool = False  # a PUT that put its version under a legal hold or a retention

    @property
    def is_write(self) -> bool:
        return self.kind in WRITES

    @property
    def writes_value(self) -> bool:
        """A write of `value` (a delete writes absence)."""
        return self.kind in (Kind.PUT, Kind.CREATE, Kind.SWAP)


WRITES = frozenset((Kind.PUT, Kind.DELETE, Kind.CREATE, Kind.SWAP))
MUTATIONS = WRITES | {Kind.VDELETE}
"""Operations whose outcome is unknown when they fail after reaching the server."""


@dataclass(frozen=True)
class Fault:
    start: float
    end: float
    kind: str
    detail: str


@dataclass
class History:
    """Times are seconds since the history began (`now`)."""

    ops: list[Op] = field(default_factory=list)
    final: list[Op] = field(default_factory=list)  # the reads after healing
    faults: list[Fault] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _t0: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self._t0

    def add(self, op: Op, *, final: bool = False) -> None:
        with self._lock:
            (self.final if final else self.ops).append(op)

    def fault(self, start: float, kind: str, detail: str) -> None:
        with self._lock:
            self.faults.append(Fault(start, self.now(), kind, detail))

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(text)

    def dump(self, path: Path) -> None:
        """Write the history as JSON lines, for a closer look at a failed run."""
        with open(path, "w") as out:
            for section, items in (("op", self.ops), ("final", self.final), ("fault", self.faults)):
                for item in items:
                    record = {"section": section, **asdict(item)}
                    if record.get("keys") is not None:
                        record["keys"] = sorted(record["keys"])
                    out.write(json.dumps(record) + "\n")


class CorruptBody(ValueError):
    """A body that is not `body_of` any value."""


class Values:
    """Unique write values: a counter, the writer and a random suffix."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._counter = 0
        self._lock = threading.Lock()

    def next(self, process: int) -> str:
        with self._lock:
            self._counter += 1
            return f"v{self._counter:06d}-p{process}-{self._random.getrandbits(32):08x}"


def body_of(value: str) -> bytes:
    """The object body that carries `value`: the value on the first line, then padding.

    The size and padding follow from the value. A quarter of the bodies are
    small enough to be stored inline; the rest span one or more blocks, half
    of them compressible (stored as .zst), half not.
    """
    rng = random.Random(value)
    head = value.encode() + b"\n"
    if rng.random() < 0.25:
        return head + bytes(rng.randrange(32, 127) for _ in range(rng.randrange(INLINE_LIMIT // 2)))
    size = rng.randrange(INLINE_LIMIT * 2, MAX_BODY)
    if rng.random() < 0.5:
        return head + rng.randbytes(size)
    return head + rng.randbytes(64) * (size // 64)


def etag_of(value: str) -> str:
    """The ETag of the object that carries `value` (the MD5 of its body)."""
    return hashlib.md5(body_of(value)).hexdigest()


def value_of(body: bytes) -> str:
    """The value a body carries; CorruptBody if the body is not exactly `body_of(value)`."""
    head, _, _ = body.partition(b"\n")
    value = head.decode(errors="replace")
    if body != body_of(value):
        raise CorruptBody(f"corrupt body of {len(body)} bytes starting {body[:40]!r}")
    return value


def block_ids(body: bytes, block_size: int) -> list[bytes]:
    """The ids of the blocks a body is cut into (none when stored inline)."""
    if len(body) < INLINE_LIMIT:
        return []
    return [
        blake3.blake3(body[offset : offset + block_size]).digest()
        for offset in range(0, len(body), block_size)
    ]
