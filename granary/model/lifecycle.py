"""Lifecycle rules and what they make of an object's row at a given time. Sans-IO.

A rule applies to the versions its filter matches (key prefix, tags, size)
and, while enabled, asks for some of:
- Expiration (Days, or Date): the current version expires, as S3 counts it
  from the version's creation: at the first day boundary (midnight UTC) at
  least `days` days after it. In a versioned bucket a delete marker goes over
  it; otherwise it is deleted.
- ExpiredObjectDeleteMarker: a delete marker that is the only version left of
  its key is removed.
- NoncurrentVersionExpiration: a version that stopped being current (when the
  next one was written) `days` days ago is deleted, except the newest
  `newer_noncurrent` noncurrent ones.
- AbortIncompleteMultipartUpload: an upload started `days` days ago is ended.

"A day" is `day_ms`: 86,400,000 in production; a test may make it seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from granary.model.object import Object, ObjectVersion, Tags

DAY_MS = 86_400_000


class LifecycleFilter(msgspec.Struct, array_like=True, frozen=True):
    prefix: str = ""
    tags: Tags = []
    size_greater_than: int | None = None
    size_less_than: int | None = None
    form: str = "filter"
    """How the rule named it, to be given back as it came: "prefix" (the rule's own
    Prefix element), "filter" (a Filter with one condition or none) or "and"."""

    def matches_key(self, key: str) -> bool:
        return key.startswith(self.prefix)

    def matches(self, key: str, version: ObjectVersion) -> bool:
        if not self.matches_key(key):
            return False
        tags = dict(version.tags.value)
        if any(tags.get(name) != value for name, value in self.tags):
            return False
        if (self.size_greater_than is not None or self.size_less_than is not None) and (
            not version.is_data
        ):
            return False
        size = version.meta.size if version.meta is not None else 0
        if self.size_greater_than is not None and not size > self.size_greater_than:
            return False
        return self.size_less_than is None or size < self.size_less_than


class LifecycleRule(msgspec.Struct, array_like=True, frozen=True):
    id: str
    enabled: bool
    filter: LifecycleFilter = LifecycleFilter()
    expiration_days: int | None = None
    expiration_date_ms: int | None = None
    expired_object_delete_marker: bool = False
    noncurrent_days: int | None = None
    newer_noncurrent: int | None = None
    abort_upload_days: int | None = None


Lifecycle = list[LifecycleRule]


def day_boundary_after(moment_ms: int, day_ms: int) -> int:
    """The first day boundary (midnight UTC for real days) at or after `moment_ms`."""
    return -(-moment_ms // day_ms) * day_ms


def expiry_of(rule: LifecycleRule, created_ms: int, day_ms: int) -> int | None:
    """When the rule's Expiration makes a current version created at `created_ms`
    expire, if it has one."""
    if rule.expiration_date_ms is not None:
        return rule.expiration_date_ms
    if rule.expiration_days is not None:
        return day_boundary_after(created_ms + rule.expiration_days * day_ms, day_ms)
    return None


def expiration_header(
    rules: Lifecycle, key: str, version: ObjectVersion, day_ms: int
) -> tuple[int, str] | None:
    """(expiry, rule id) of the earliest Expiration that applies to a current version,
    for S3's x-amz-expiration header."""
    found = []
    for rule in rules:
        if rule.enabled and rule.filter.matches(key, version):
            expiry = expiry_of(rule, version.timestamp, day_ms)
            if expiry is not None:
                found.append((expiry, rule.id))
    return min(found) if found else None


@dataclass(frozen=True)
class Expire:
    """The current version expires: a delete marker goes over it (or, unversioned,
    it is deleted)."""

    version: ObjectVersion


@dataclass(frozen=True)
class DeleteVersion:
    """A version (or a delete marker) is deleted for good, by its id."""

    version: ObjectVersion


Action = Expire | DeleteVersion


def actions_for(row: Object, rules: Lifecycle, now_ms: int, day_ms: int) -> list[Action]:
    """What the enabled `rules` ask of one object row at `now_ms`."""
    listed = row.listed()  # newest first
    if not listed:
        return []
    actions: list[Action] = []
    current = listed[0]
    live = [r for r in rules if r.enabled and r.filter.matches_key(row.key)]
    if current.is_data:
        for rule in live:
            expiry = expiry_of(rule, current.timestamp, day_ms)
            if expiry is not None and expiry <= now_ms and rule.filter.matches(row.key, current):
                actions.append(Expire(current))
                break
    elif len(listed) == 1 and any(r.expired_object_delete_marker for r in live):
        actions.append(DeleteVersion(current))
    deleted: set[bytes] = set()
    for rule in live:
        if rule.noncurrent_days is None:
            continue
        noncurrent = [
            (version, listed[index].timestamp)  # noncurrent since its successor was written
            for index, version in enumerate(listed[1:], start=0)
        ]
        for rank, (version, since) in enumerate(noncurrent):
            if rank < (rule.newer_noncurrent or 0) or version.uuid in deleted:
                continue
            due = day_boundary_after(since + rule.noncurrent_days * day_ms, day_ms)
            if due <= now_ms and rule.filter.matches(row.key, version):
                actions.append(DeleteVersion(version))
                deleted.add(version.uuid)
    return actions


def upload_due(rules: Lifecycle, key: str, started_ms: int, now_ms: int, day_ms: int) -> bool:
    """Whether an enabled AbortIncompleteMultipartUpload rule ends an upload of `key`
    started at `started_ms`."""
    return any(
        rule.enabled
        and rule.abort_upload_days is not None
        and rule.filter.matches_key(key)
        and day_boundary_after(started_ms + rule.abort_upload_days * day_ms, day_ms) <= now_ms
        for rule in rules
    )
