"""Checks a history: read-after-write per key, final reads, and listings.

Every object is a register; a delete writes "absent" (None) and every key
starts absent (a virtual delete before time began). A write that FAILed had
no effect; an UNKNOWN write may take effect at any time after it started, so
it never counts as completed (its end is +inf).

1. Read-after-write: a read that returned value v is legal iff some write w
   of v did not start after the read ended, and no write that completed
   before the read started is newer than w, "newer" meaning it started after
   w completed. (A value no write wrote, a corrupt body included, is illegal.)
2. Final reads, on every node after healing, obey rule 1 and must succeed:
   every acknowledged write, or a newer one, is still there.
3. Listings: a listing must contain a key if a put of it completed before
   the listing started and no delete of it that could come after that put
   (not failed, started before the listing ended, not completed before the
   put started) exists; symmetrically it must not contain a key whose delete
   (or initial absence) completed before it started with no such put.
4. Conditional writes (`check_conditional`): a key that did not exist is
   created (If-None-Match: *) by at most one acknowledged create, and the
   acknowledged swaps (If-Match) of a key form one chain from its first value,
   each naming its predecessor, in an order that real time allows: the
   history of a compare-and-set register. Values are unique, so a chain is
   determined by who names whom.
5. Versions (`check_versions`), in a versioned bucket: acknowledged writes get
   distinct version ids; a version read by id returns the value its write
   wrote, and is never missing (from a read or from a listing of its key that
   started after the write was acknowledged) unless a deletion of that id may
   have happened by then; a version whose deletion by id was acknowledged is
   never seen again; and a listing shows a key's versions newest first: of two
   writes one acknowledged before the other started, the later one first.
   A version its write put under a legal hold or a retention longer than the
   run (object lock) is never deleted: no deletion of it is acknowledged, and
   no deletion excuses its absence ("locked-lost").
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from .history import Kind, Op, Outcome

INFINITY = math.inf


@dataclass(frozen=True)
class Violation:
    rule: str
    key: str | None
    detail: str


@dataclass(frozen=True)
class _Write:
    start: float
    end: float  # +inf when the outcome is unknown
    value: str | None
    op: Op | None  # None for the initial absence


def _writes(ops: Iterable[Op]) -> dict[str, list[_Write]]:
    """Per key, the writes that may have taken effect, plus the initial absence."""
    by_key: dict[str, list[_Write]] = defaultdict(
        lambda: [_Write(-INFINITY, -INFINITY, None, None)]
    )
    for op in ops:
        if op.is_write and op.outcome is not Outcome.FAIL:
            end = op.end if op.outcome is Outcome.OK else INFINITY
            value = op.value if op.writes_value else None
            by_key[op.key].append(_Write(op.start, end, value, op))
    return by_key


class _Register:
    """One key's writes, indexed for the read-after-write rule."""

    def __init__(self, writes: list[_Write]) -> None:
        self.by_value: dict[str | None, list[_Write]] = defaultdict(list)
        for write in writes:
            self.by_value[write.value].append(write)
        completed = sorted((w for w in writes if w.end < INFINITY), key=lambda w: w.end)
        self._ends = [w.end for w in completed]
        self._latest: list[_Write] = []  # the latest-starting write among the first i completed
        for write in completed:
            if not self._latest or write.start > self._latest[-1].start:
                self._latest.append(write)
            else:
                self._latest.append(self._latest[-1])

    def latest_completed_before(self, moment: float) -> _Write | None:
        """Of the writes completed before `moment`, the one that started last."""
        index = bisect.bisect_left(self._ends, moment)
        return self._latest[index - 1] if index else None

    def check(self, read: Op) -> str | None:
        """Why `read` is illegal, or None."""
        candidates = self.by_value.get(read.value, [])
        if not candidates:
            return "read a value that no write (that may have happened) wrote"
        started = [w for w in candidates if w.start <= read.end]
        if not started:
            return "read a value whose write started after the read ended"
        latest = self.latest_completed_before(read.start)
        if latest is None or any(w.end >= latest.start for w in started):
            return None
        return f"stale: {_show_write(latest)} completed before the read started"


def _show_write(write: _Write) -> str:
    if write.op is None:
        return "the initial absence"
    op = write.op
    what = f"{op.kind} {op.value}" if op.writes_value else "delete"
    return f"{what} via {op.node} [{op.start:.3f}, {op.end:.3f}] {op.outcome}"


def _show_read(op: Op) -> str:
    value = "absent" if op.value is None else op.value
    return f"{op.kind} via {op.node} [{op.start:.3f}, {op.end:.3f}] returned {value}"


def check_reads(ops: list[Op], final: list[Op]) -> list[Violation]:
    """Rules 1 and 2."""
    writes = _writes(ops)
    registers: dict[str, _Register] = {}
    violations = []
    for rule, reads in (("read-after-write", ops), ("final-read", final)):
        for op in reads:
            if op.kind is not Kind.GET:
                continue
            if op.outcome is not Outcome.OK:
                if rule == "final-read":
                    violations.append(Violation(rule, op.key, f"failed at the end: {op.error}"))
                continue
            if op.key not in registers:
                registers[op.key] = _Register(writes[op.key])
            register = registers[op.key]
            reason = register.check(op)
            if reason is not None:
                origin = "; ".join(_show_write(w) for w in register.by_value.get(op.value, [])[:2])
                violations.append(
                    Violation(
                        rule, op.key, f"{_show_read(op)}: {reason} (written by: {origin or '-'})"
                    )
                )
    return violations


def check_listings(ops: list[Op], keys: Iterable[str]) -> list[Violation]:
    """Rule 3, over the workload's `keys`."""
    writes = _writes(ops)
    violations = []
    for listing in ops:
        if listing.kind is not Kind.LIST or listing.outcome is not Outcome.OK:
            continue
        for key in keys:
            history = writes[key]
            puts = [w for w in history if w.op is not None and w.op.writes_value]
            deletes = [w for w in history if w.value is None]
            listed = key in listing.keys
            if not listed and _must_hold(puts, deletes, listing):
                violations.append(Violation("listing", key, f"missing from {_show_list(listing)}"))
            if listed and _must_hold(deletes, puts, listing):
                violations.append(
                    Violation("listing", key, f"deleted, yet in {_show_list(listing)}")
                )
    return violations


def _must_hold(made: list[_Write], unmade: list[_Write], listing: Op) -> bool:
    """Whether a write in `made` completed before `listing` with no write in `unmade`
    (a write of the opposite kind) able to come after it by the listing's end."""
    done = [w.start for w in made if w.end < listing.start]
    if not done:
        return False
    undoing = [w.end for w in unmade if w.start < listing.end]
    return max(done) >= max(undoing, default=-INFINITY)


def _show_list(op: Op) -> str:
    return f"list via {op.node} [{op.start:.3f}, {op.end:.3f}] of {len(op.keys or ())} keys"


def summary(ops: list[Op]) -> Counter[tuple[str, str]]:
    """Operations counted by (kind, outcome)."""
    return Counter((str(op.kind), str(op.outcome)) for op in ops)


def check_conditional(ops: list[Op]) -> list[Violation]:
    """Rule 4, over the creates and swaps of a history."""
    violations = []
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind in (Kind.CREATE, Kind.SWAP, Kind.PUT) and op.key is not None:
            by_key[op.key].append(op)
    for key, writes in by_key.items():
        created = [op for op in writes if op.kind is Kind.CREATE and op.outcome is Outcome.OK]
        if len(created) > 1:
            shown = "; ".join(_show_op(op) for op in created)
            violations.append(Violation("two-creates", key, f"{len(created)} creates won: {shown}"))
        violations += _check_chain(key, writes)
    return violations


def _check_chain(key: str, writes: list[Op]) -> list[Violation]:
    """The acknowledged swaps of `key` as one chain, in an order real time allows.

    A swap of unknown outcome is on the chain when an acknowledged one names the
    value it wrote: it took effect."""
    swaps = [op for op in writes if op.kind is Kind.SWAP and op.outcome is not Outcome.FAIL]
    members = {op for op in swaps if op.outcome is Outcome.OK}
    named = {op.expected for op in members}
    more = {op for op in swaps if op.outcome is Outcome.UNKNOWN and op.value in named}
    while more:
        members |= more
        named |= {op.expected for op in more}
        more = {op for op in swaps if op not in members and op.value in named}
    if not members:
        return []
    violations = []
    successor: dict[str | None, Op] = {}
    for op in sorted(members, key=lambda op: op.start):  # the fork report names the first
        other = successor.setdefault(op.expected, op)
        if other is not op:
            detail = f"{_show_op(other)} and {_show_op(op)} both replaced {op.expected}"
            violations.append(Violation("fork", key, detail))
    written = {op.value for op in members}
    roots = sorted(str(value) for value in successor if value not in written)
    if len(roots) != 1:
        violations.append(Violation("chain", key, f"swaps start from {roots or 'a cycle'}"))
    for root in successor.keys() - written:
        chain: list[Op] = []
        op = successor.get(root)
        while op is not None and op not in chain:
            chain.append(op)
            op = successor.get(op.value)
        violations += _out_of_order(key, [op for op in chain if op.outcome is Outcome.OK])
    return violations


def _out_of_order(key: str, chain: list[Op]) -> list[Violation]:
    """Swaps of one chain whose order real time forbids: a later one ended first."""
    violations = []
    for index, earlier in enumerate(chain):
        for later in chain[index + 1 :]:
            if later.end < earlier.start:
                detail = f"{_show_op(later)} ended before {_show_op(earlier)} began"
                violations.append(Violation("swap-order", key, detail))
    return violations


def _show_op(op: Op) -> str:
    named = f" (named {op.expected})" if op.kind is Kind.SWAP else ""
    return f"{op.kind} {op.value}{named} via {op.node} [{op.start:.3f}, {op.end:.3f}]"


def check_versions(ops: list[Op], final: list[Op]) -> list[Violation]:
    """Rule 5, over the workload's operations and the final reads and listings."""
    violations = []
    made: dict[str, Op] = {}  # version id -> the acknowledged write that made it
    for op in ops:
        if op.kind in (Kind.PUT, Kind.DELETE) and op.outcome is Outcome.OK and op.version_id:
            if op.version_id in made:
                detail = f"{_show_op(made[op.version_id])} and {_show_op(op)}"
                violations.append(Violation("version-unique", op.key, detail))
            made[op.version_id] = op
    locked = {version_id for version_id, write in made.items() if write.locked}
    deletions: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind is Kind.VDELETE and op.outcome is not Outcome.FAIL and op.version_id:
            deletions[op.version_id].append(op)
            if op.version_id in locked and op.outcome is Outcome.OK:
                detail = f"deletion of {op.version_id} via {op.node} acknowledged"
                violations.append(Violation("locked-deleted", op.key, detail))

    def may_be_deleted(version_id: str, by: float) -> bool:
        """Whether a deletion may excuse the version's absence (never a locked one's)."""
        if version_id in locked:
            return False
        return any(d.start < by for d in deletions[version_id])

    def surely_deleted(version_id: str, before: float) -> bool:
        return any(d.outcome is Outcome.OK and d.end < before for d in deletions[version_id])

    final_ops = set(map(id, final))
    for op in [*ops, *final]:
        if op.kind not in (Kind.VGET, Kind.VLIST):
            continue
        if op.outcome is not Outcome.OK:
            if id(op) in final_ops:
                violations.append(Violation("final-read", op.key, f"failed at the end: {op.error}"))
            continue
        if op.kind is Kind.VGET and op.version_id:
            for violation in _check_version_read(op, made.get(op.version_id), may_be_deleted):
                rule = violation.rule
                if rule == "version-lost":
                    rule = _lost(op.version_id, locked)
                violations.append(Violation(rule, violation.key, violation.detail))
            if op.value is not None and surely_deleted(op.version_id, op.start):
                violations.append(Violation("version-resurrected", op.key, _show_vop(op)))
            continue
        listed = {*(op.versions or ()), *(op.markers or ())}
        for version_id, write in made.items():
            expected = write.key == op.key and write.end < op.start
            if expected and version_id not in listed and not may_be_deleted(version_id, op.end):
                detail = f"{_show_op(write)} ({version_id}) missing from {_show_vop(op)}"
                violations.append(Violation(_lost(version_id, locked), op.key, detail))
        for version_id in listed:
            if surely_deleted(version_id, op.start):
                detail = f"{version_id} deleted, yet in {_show_vop(op)}"
                violations.append(Violation("version-resurrected", op.key, detail))
        for order in (op.versions or (), op.markers or ()):
            violations += _check_version_order(op, order, made)
    return violations


def _lost(version_id: str, locked: set[str]) -> str:
    return "locked-lost" if version_id in locked else "version-lost"


def _check_version_read(op: Op, write: Op | None, may_be_deleted) -> list[Violation]:
    if write is None:
        return [Violation("version-value", op.key, f"{_show_vop(op)}: no write made it")]
    if op.value is not None and op.value != write.value:
        detail = f"{_show_vop(op)}, but {_show_op(write)} wrote it"
        return [Violation("version-value", op.key, detail)]
    if op.value is None and write.end < op.start and not may_be_deleted(op.version_id, op.end):
        detail = f"{_show_vop(op)}: missing, written by {_show_op(write)}"
        return [Violation("version-lost", op.key, detail)]
    return []


def _check_version_order(
    listing: Op, order: tuple[str, ...], made: dict[str, Op]
) -> list[Violation]:
    """Newest first: no version listed before one whose write began after its own ended."""
    violations = []
    writes = [(version_id, made[version_id]) for version_id in order if version_id in made]
    for index, (newer_id, newer) in enumerate(writes):
        for older_id, older in writes[index + 1 :]:
            if newer.end < older.start:
                detail = f"{newer_id} listed before {older_id}, which was written after it"
                violations.append(Violation("version-order", listing.key, detail))
    return violations


def _show_vop(op: Op) -> str:
    if op.kind is Kind.VGET:
        what = f"read of {op.version_id} that gave {op.value}"
    else:
        what = f"listing of {len(op.versions or ())} versions"
    return f"{what} via {op.node} [{op.start:.3f}, {op.end:.3f}]"
