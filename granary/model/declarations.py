"""The access keys and buckets a configuration declares (`[[keys]]`, `[[buckets]]`),
made to exist at start, on every node, as often as it starts.

Applying them is idempotent: what exists and matches is left alone; a key's
name and bucket-creation right, a bucket's versioning and the declared rights
of keys on it are set where they differ. Nothing is deleted: a key or a right
no longer declared stays until an operator removes it. A declared key whose
stored secret differs, or whose id was deleted, is reported and left alone
(a secret cannot be changed in place, a deleted id never comes back). Nodes
that start together may all create the same bucket: the name's claim lets one
win, and the others, told of a conflict, try again and find it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import msgspec

from granary.model.access import Access, AccessError
from granary.model.buckets import (
    ACCESS_KEY_ID,
    VERSIONING_ENABLED,
    VERSIONING_SUSPENDED,
    Bucket,
    Permission,
)

log = logging.getLogger("granary.declarations")

PERMISSIONS = ("read", "write", "owner")


class DeclaredKey(msgspec.Struct, forbid_unknown_fields=True):
    """An access key to make exist at start, with its secret (or the file holding it)."""

    name: str
    access_key_id: str
    secret_access_key: str | None = None
    secret_access_key_file: str | None = None
    create_bucket: bool = False

    def __post_init__(self) -> None:
        if not ACCESS_KEY_ID.match(self.access_key_id):
            raise ValueError("access_key_id must be GK followed by 24 hex digits")
        if (self.secret_access_key is None) == (self.secret_access_key_file is None):
            raise ValueError(
                f"key {self.name}: give one of secret_access_key and secret_access_key_file"
            )


class DeclaredBucket(msgspec.Struct, forbid_unknown_fields=True):
    """A bucket to make exist at start, and the rights of keys on it (by key name or
    id: a subset of read, write, owner)."""

    name: str
    versioning: bool | None = None
    object_lock: bool = False
    allow: dict[str, list[str]] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        for who, rights in self.allow.items():
            if not rights or any(right not in PERMISSIONS for right in rights):
                raise ValueError(f"bucket {self.name}: allow.{who} takes read, write, owner")
        if self.object_lock and self.versioning is False:
            raise ValueError(f"bucket {self.name}: object lock keeps versioning on")


@dataclass
class Applied:
    """What applying the declarations changed, and what it could not."""

    changes: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


async def apply_declarations(
    access: Access, keys: list[DeclaredKey], buckets: list[DeclaredBucket]
) -> Applied:
    """Make the declared keys, then buckets, exist as declared.

    Raises QuorumError, or AccessError("conflict") while another node creates
    one of the buckets: the caller tries again.
    """
    applied = Applied()
    for key in keys:
        await _apply_key(access, key, applied)
    key_ids = {key.name: key.access_key_id for key in keys}
    for bucket in buckets:
        await _apply_bucket(access, bucket, key_ids, applied)
    for change in applied.changes:
        log.info("declared in the configuration: %s", change)
    for refusal in applied.refused:
        log.error("declared in the configuration, not applied: %s", refusal)
    return applied


async def _apply_key(access: Access, declared: DeclaredKey, applied: Applied) -> None:
    key_id, secret = declared.access_key_id, declared.secret_access_key
    assert secret is not None  # read from its file with the configuration (config.py)
    key = access.get_key(key_id) or await access.refresh_key(key_id)
    if key is None:
        try:
            await access.create_key(
                declared.name,
                key_id=key_id,
                secret=secret,
                allow_create_bucket=declared.create_bucket,
            )
        except AccessError as error:  # deleted before: its id never comes back
            applied.refused.append(f"key {declared.name} ({key_id}): {error}")
            return
        applied.changes.append(f"created key {declared.name} ({key_id})")
        return
    if access.reveal_secret(key) != secret:
        applied.refused.append(
            f"key {declared.name} ({key_id}) exists with another secret; it is kept"
        )
    params = key.params
    assert params is not None
    if params.name.value != declared.name or params.allow_create_bucket.value != (
        declared.create_bucket
    ):
        await access.update_key(
            key_id, name=declared.name, allow_create_bucket=declared.create_bucket
        )
        applied.changes.append(f"updated key {declared.name} ({key_id})")


async def _apply_bucket(
    access: Access, declared: DeclaredBucket, key_ids: dict[str, str], applied: Applied
) -> None:
    bucket = access.resolve_bucket(declared.name) or await _create_bucket(access, declared, applied)
    params = bucket.params
    assert params is not None
    if declared.versioning is not None:
        status = VERSIONING_ENABLED if declared.versioning else VERSIONING_SUSPENDED
        if params.versioning.value != status and (declared.versioning or params.versioning.value):
            await access.set_versioning(bucket.id, status)
            applied.changes.append(f"bucket {declared.name}: versioning {status}")
    for who, rights in sorted(declared.allow.items()):
        key_id = key_ids.get(who, who)
        wanted = Permission(*(right in rights for right in PERMISSIONS))
        if bucket.permission(key_id) == wanted:
            continue
        try:
            await access.set_permission(bucket.id, key_id, wanted)
        except AccessError as error:
            applied.refused.append(f"bucket {declared.name}: rights of {who}: {error}")
            continue
        applied.changes.append(f"bucket {declared.name}: {who} may {', '.join(rights)}")


async def _create_bucket(access: Access, declared: DeclaredBucket, applied: Applied) -> Bucket:
    try:
        bucket = await access.create_bucket(declared.name, None, object_lock=declared.object_lock)
    except AccessError as error:
        if error.reason != "exists":
            raise
    else:
        applied.changes.append(f"created bucket {declared.name}")
        return bucket
    found = access.resolve_bucket(declared.name)  # created meanwhile by another node
    if found is None:
        raise AccessError("conflict", f"bucket {declared.name} is being created")
    return found
