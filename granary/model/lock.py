"""Object lock: a version's retention and legal hold, a bucket's lock configuration,
and the rules that say what a lock forbids. Sans-IO.

A version's retention is a register whose merge never shortens COMPLIANCE
retention: any COMPLIANCE retention outranks any GOVERNANCE one (or none), and
of two COMPLIANCE ones the later date wins; between the others the later write
wins. So no stale replica and no merge order can shorten or lift a COMPLIANCE
lock, and a GOVERNANCE lock changes only by a newer write. Every change to an
existing version's lock, and every deletion of a version by id in a bucket
with object lock, is decided in one consensus round on the object's row
(`Objects.change_version`), which sees every change committed before it, and
is judged by the lowest clock of the round's acceptors: a node whose clock
runs ahead cannot end a retention early.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

import msgspec

GOVERNANCE = "GOVERNANCE"
COMPLIANCE = "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)
DAY_MS = 86_400_000


class Retention(msgspec.Struct, array_like=True, frozen=True):
    mode: str = ""
    """GOVERNANCE, COMPLIANCE, or empty: no retention."""
    until_ms: int = 0
    ts: int = 0
    """When it was set: of two writes that are not COMPLIANCE, the later wins."""

    def merge(self, other: Retention) -> Retention:
        return max(self, other, key=_rank)

    def active(self, now_ms: int) -> bool:
        return self.mode in MODES and self.until_ms > now_ms


def _rank(retention: Retention) -> tuple[bool, int, int, int, str]:
    compliance = retention.mode == COMPLIANCE
    first = retention.until_ms if compliance else retention.ts
    return (compliance, first, retention.ts, retention.until_ms, retention.mode)


NO_RETENTION = Retention()


class DefaultRetention(msgspec.Struct, array_like=True, frozen=True):
    mode: str
    days: int = 0
    years: int = 0

    def until(self, now_ms: int) -> int:
        """When a version written at `now_ms` stops being retained (a year: 365 days)."""
        return now_ms + (self.days + 365 * self.years) * DAY_MS


class LockConfig(msgspec.Struct, array_like=True, frozen=True):
    """A bucket's object lock: on for good once enabled, with a default retention."""

    default: DefaultRetention | None = None

    def retention_for_new(self, now_ms: int) -> Retention:
        if self.default is None:
            return NO_RETENTION
        return Retention(self.default.mode, self.default.until(now_ms), now_ms)


class LockRefused(Exception):
    """What a lock forbids: S3 answers AccessDenied."""


def check_deletion(retention: Retention, legal_hold: bool, bypass: bool, now_ms: int) -> None:
    """Raise LockRefused unless a version under this lock may be deleted at `now_ms`:
    no legal hold, and no retention still running (GOVERNANCE may be bypassed)."""
    if legal_hold:
        raise LockRefused("the object version is under a legal hold")
    if retention.active(now_ms) and not (retention.mode == GOVERNANCE and bypass):
        raise LockRefused(f"the object version is under {retention.mode} retention")


def check_retention_change(current: Retention, new: Retention, bypass: bool, now_ms: int) -> None:
    """Raise LockRefused unless `current` may become `new`: a running retention keeps
    its mode and only extends, except that a GOVERNANCE one may be changed in any way
    (shortened, lifted, made COMPLIANCE) with the bypass."""
    if not current.active(now_ms):
        return
    keeps = new.mode == current.mode and new.until_ms >= current.until_ms
    if current.mode == COMPLIANCE and not keeps:
        raise LockRefused("a COMPLIANCE retention can only be extended")
    if current.mode == GOVERNANCE and not keeps and not bypass:
        raise LockRefused(
            "changing a GOVERNANCE retention other than extending it needs the bypass"
        )


def parse_retain_until(text: str) -> int:
    """An ISO 8601 date-time (as S3 sends it) in ms since the epoch; ValueError if not."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    utc = parsed.astimezone(UTC)
    return calendar.timegm(utc.timetuple()) * 1000 + utc.microsecond // 1000
