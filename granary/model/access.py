"""Operations on buckets, bucket names and access keys.

Full-copy tables are read from the local replica: every node holds all of
their rows, so authorising a request costs no network round trip. The two
bucket operations that race other writers read at quorum instead, as below.

**DeleteBucket against the writes that make an object exist.** There is no
consensus protocol, so both sides write first and read second (as in
Dekker's mutual exclusion), on quorums that intersect:

- DeleteBucket writes a *closing* intent on the bucket row (its node's slot
  of `BucketParams.closing`, at the write quorum), then reads the bucket's
  objects at the read quorum (`bucket_is_empty`). Not empty: it withdraws
  the intent and answers BucketNotEmpty. Empty: it ends the multipart
  uploads in progress (S3 deletes a bucket with them) and writes the
  bucket's tombstone. CreateMultipartUpload checks the bucket after listing
  its upload, as the writes below do, and ends the upload if it is gone.
- A write that makes an object exist (PutObject, CopyObject,
  CompleteMultipartUpload, POST Object) first writes its version at the write
  quorum, then reads the bucket row at the read quorum (`bucket_outlives_write`,
  never the local copy). A bucket gone: it writes a delete marker over its
  version (which releases its blocks) and answers NoSuchBucket. A closing
  intent: it waits for that DeleteBucket's outcome (polling the row) and
  then acts as above. Otherwise it answers success.

Why no acknowledged object is lost: suppose DeleteBucket D deletes the
bucket while a write P succeeds. P's bucket read saw neither D's intent nor
D's tombstone (or it would have waited for D's outcome, the tombstone, and
undone itself). A read quorum of the bucket row (a majority of the nodes)
meets the majority that acknowledged D's intent, so P's read ran before D's
intent was written, hence before D's emptiness read began; and P's version
was acknowledged before P's read began. So D's emptiness read began after
P's version was on a write quorum of the object's partition, and a read
quorum of that partition meets it (R + W > N): D saw the object and
answered BucketNotEmpty, a contradiction. A DeleteBucket that answered
BucketNotEmpty deleted nothing, and a write that answered NoSuchBucket
left only a delete marker. Two DeleteBuckets on two nodes use two slots, so
one withdrawing its intent never hides the other's; on one node they run
one at a time.

An intent binds for `INTENT_LEASE_MS` after it is written (its `deadline`),
so a node that crashes mid-operation blocks writers for that long at most,
and a waiting writer never waits longer than that. The node acts on its
intent (writes the tombstone, or settles a name) only within half of it.
The argument above therefore assumes that the clocks of two nodes differ,
plus the time a tombstone write takes to reach its quorum, by less than
half the lease (15 s): the same kind of assumption the last-writer-wins
registers of these tables make.

**CreateBucket of one name on several nodes.** Exactly one winner needs
agreement (a per-key consensus for conditional writes, planned for 0.7).
Until then the same write-then-read scheme gives *at most one* winner. A
creator writes a claim on the alias row (its node's slot of
`BucketAlias.claims`), then reads the row at quorum. If the name leads to a
live bucket, it answers BucketAlreadyExists. If another node's claim is
under way, it waits for it when that node's id is larger (`_settle_name`:
the rival gives way on seeing this claim, or wins if it did not see it),
and otherwise gives way at once: it withdraws its claim, waits a little to
answer BucketAlreadyExists if the rival wins, and else answers
OperationAborted (409, "try again"). With no other claim under way, it
creates the bucket and points the name at it, in one write that also
withdraws its claim.

Why at most one wins: a creator goes ahead only after a read, made once its
own claim was acknowledged, that shows no other claim under way and no
live bucket under the name. Of two creators that both went ahead, by the
intersection argument above one's read came after the other's claim was
acknowledged, and saw it: under way (so it did not go ahead), or withdrawn,
which happens only when giving way or in the write that settles the name
(after the bucket is written: so it answered BucketAlreadyExists). Hence
a loser never answers 200. Waiting changes who wins, not how many, and as
a creator waits only on larger ids, no two wait on each other. Not
guaranteed: that someone wins (both may give way), nor that a crashed
node's claim does not block the name until its deadline. On one node,
creates of a name run one at a time, so exactly one of two racing
creators wins there.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing

from msgspec.structs import replace

from granary.model.buckets import (
    NO_PERMISSION,
    VERSIONING_ENABLED,
    AccessKey,
    Bucket,
    BucketAlias,
    BucketParams,
    Intent,
    KeyParams,
    Permission,
    Tags,
    binding_intents,
    own_slot,
)
from granary.model.key_secrets import SecretSealer, SecretUnreadable, is_sealed, open_secret
from granary.model.lifecycle import Lifecycle
from granary.model.lock import LockConfig
from granary.model.mpu import MultipartUpload, end_upload
from granary.model.store import Model
from granary.table.table import Table
from granary.util.crdt import Deletable, Lww, LwwMap
from granary.util.process_locks import KeyLocks, process_local_locks
from granary.util.time import now_ms

log = logging.getLogger("granary.access")

INTENT_LEASE_MS = 30_000
"""How long a DeleteBucket's or a CreateBucket's intent binds the writers it races."""
ACT_WITHIN_SECS = INTENT_LEASE_MS / 2000
"""How long after announcing its intent a node may still act on it."""
POLL_SECS = (0.005, 0.1)
"""First and longest pause between two reads of a row while another node's intent binds."""
CLAIM_WAIT_SECS = 2.0
"""How long a CreateBucket waits for a rival claim to be settled or withdrawn."""


class AccessError(Exception):
    """A bucket or key operation that cannot be done; `reason` says why."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class BucketGone(Exception):
    """The bucket an object was just written into was deleted meanwhile (and the write undone)."""


async def bucket_outlives_write(model: Model, bucket_id: bytes) -> bool:
    """Whether a bucket exists once a write into it was acknowledged (see the module docstring).

    Reads the bucket row at the read quorum, and while a DeleteBucket is
    under way on it, reads again until that one is over.
    """
    waiting_since = time.monotonic()
    pause = POLL_SECS[0]
    while True:
        entry = await model.buckets.get(b"", bucket_id)
        params = None if entry is None else entry.params
        if params is None:
            return False
        closing = binding_intents(params.closing, now_ms())
        if not closing or time.monotonic() - waiting_since > INTENT_LEASE_MS / 1000:
            return True
        await asyncio.sleep(pause)
        pause = min(2 * pause, POLL_SECS[1])


async def finish_anyway(operation: Awaitable[None], what: str) -> None:
    """Run `operation` to its end even if the caller is cancelled; log its failure.

    For withdrawing an intent on the way out of a failed operation: if it
    fails too, the intent lapses at its deadline.
    """
    task = asyncio.ensure_future(operation)

    def report(done: asyncio.Future) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.warning("could not %s: %s", what, done.exception())

    task.add_done_callback(report)
    await asyncio.gather(asyncio.shield(task), return_exceptions=True)


def new_key_id() -> str:
    return "GK" + secrets.token_hex(12)


def new_secret() -> str:
    return secrets.token_hex(32)


def _live(key: AccessKey) -> KeyParams:
    """The params of a key that `get_key` or `list_keys` returned (never deleted)."""
    if key.params is None:
        raise AccessError("no-such-key", f"access key {key.key_id} was deleted")
    return key.params


class Access:
    """`sealer` encrypts keys' secrets at rest; without one they are stored in clear."""

    def __init__(
        self,
        model: Model,
        sealer: SecretSealer | None = None,
        locks: Callable[[str], KeyLocks] = process_local_locks,
    ) -> None:
        self.model = model
        self.sealer = sealer
        self.node = model.buckets.local_node
        # The node's claims and deletions have one slot per node: its processes take turns.
        self._creating = locks("bucket-names")
        self._deleting = locks("bucket-deletions")

    async def _write(self, table: Table, entry: object) -> None:
        """Write to a full-copy table, and make sure this node's copy has it too.

        The write returns at a majority, which may not include this node; the
        operations here read their own writes back locally.
        """
        await table.insert(entry)
        await table.local_merge([entry])

    # ---- keys -----------------------------------------------------------

    def get_key(self, key_id: str) -> AccessKey | None:
        entry = self.model.keys.local_get(b"", key_id.encode())
        return entry if entry is not None and entry.params is not None else None

    async def refresh_key(self, key_id: str) -> AccessKey | None:
        """Ask a quorum for a key this node does not know yet (just created elsewhere)."""
        entry = await self.model.keys.get(b"", key_id.encode())
        if entry is not None:
            await self.model.keys.local_merge([entry])
        return self.get_key(key_id)

    def reveal_secret(self, key: AccessKey) -> str:
        """The clear secret of a live key row (stored sealed, or in clear before 0.4)."""
        return open_secret(self.sealer, key.key_id, _live(key).secret)

    def secret_of(self, key_id: str) -> str | None:
        """The secret that signs a key's requests; None for an unknown or unreadable key."""
        found = self.key_and_secret(key_id)
        return found[1] if found is not None else None

    def key_and_secret(self, key_id: str) -> tuple[AccessKey, str] | None:
        """A live key and the secret that signs its requests, read once; None for an
        unknown or unreadable key."""
        key = self.get_key(key_id)
        if key is None:
            return None
        try:
            return key, self.reveal_secret(key)
        except SecretUnreadable as error:
            log.error("%s", error)
            return None

    def unreadable_secrets(self) -> list[str]:
        """The keys whose secrets this node cannot open (checked at start)."""
        unreadable = []
        for key in self.list_keys():
            try:
                self.reveal_secret(key)
            except SecretUnreadable:
                unreadable.append(key.key_id)
        return unreadable

    async def seal_clear_secrets(self) -> int:
        """Encrypt, in this node's copy, the secrets stored in clear (before 0.4).

        Anti-entropy spreads the sealed rows; the merge keeps a sealed secret
        over a clear one, so every node ends with one sealed value.
        """
        if self.sealer is None:
            return 0
        sealed = []
        for key in self.list_keys():
            params = _live(key)
            if not is_sealed(params.secret):
                secret = self.sealer.seal(key.key_id, params.secret)
                value = replace(params, secret=secret)
                sealed.append(AccessKey(key.key_id, Deletable(deleted=False, value=value)))
        if sealed:
            await self.model.keys.local_merge(sealed)
        return len(sealed)

    def list_keys(self) -> list[AccessKey]:
        return [k for k in self.model.keys.local_range(b"") if k.params is not None]

    async def create_key(
        self,
        name: str,
        *,
        key_id: str | None = None,
        secret: str | None = None,
        allow_create_bucket: bool = False,
    ) -> AccessKey:
        key_id = key_id or new_key_id()
        existing = self.model.keys.local_get(b"", key_id.encode())
        if existing is not None:
            reason = "deleted" if existing.params is None else "exists"
            raise AccessError(reason, f"access key {key_id} already exists or was deleted")
        now = now_ms()
        secret = secret or new_secret()
        params = KeyParams(
            secret=secret if self.sealer is None else self.sealer.seal(key_id, secret),
            name=Lww(now, name),
            allow_create_bucket=Lww(now, allow_create_bucket),
            authorized_buckets=LwwMap(),
        )
        key = AccessKey(key_id, Deletable(deleted=False, value=params))
        await self._write(self.model.keys, key)
        return key

    async def update_key(
        self, key_id: str, *, name: str | None = None, allow_create_bucket: bool | None = None
    ) -> AccessKey:
        params = _live(self._require_key(key_id))
        now = now_ms()
        if name is not None:
            params = replace(params, name=params.name.update(name, now))
        if allow_create_bucket is not None:
            params = replace(
                params,
                allow_create_bucket=params.allow_create_bucket.update(allow_create_bucket, now),
            )
        updated = AccessKey(key_id, Deletable(deleted=False, value=params))
        await self._write(self.model.keys, updated)
        return updated

    async def delete_key(self, key_id: str) -> None:
        params = _live(self._require_key(key_id))
        for bucket_id, permission in params.authorized_buckets.items():
            if permission is not None and permission.any:
                await self.set_permission(bucket_id, key_id, NO_PERMISSION)
        await self._write(self.model.keys, AccessKey(key_id, Deletable(deleted=True, value=None)))

    def _require_key(self, key_id: str) -> AccessKey:
        key = self.get_key(key_id)
        if key is None:
            raise AccessError("no-such-key", f"no access key {key_id}")
        return key

    # ---- buckets --------------------------------------------------------

    def get_bucket(self, bucket_id: bytes) -> Bucket | None:
        entry = self.model.buckets.local_get(b"", bucket_id)
        return entry if entry is not None and entry.params is not None else None

    def resolve_bucket(self, name: str) -> Bucket | None:
        alias = self.model.aliases.local_get(b"", name.encode())
        if alias is None or alias.target.value is None:
            return None
        return self.get_bucket(alias.target.value)

    async def bucket_for_request(self, name: str) -> Bucket | None:
        """The bucket a request names, with settings as fresh as it needs: from this
        node's copy of the bucket tables, or from a quorum if it has no copy of them
        (a node without a role: the tables' writes never reach it, and a stale
        setting such as versioning would make it write the wrong kind of version)
        or does not know the name yet."""
        if self.holds_bucket_tables():
            found = self.resolve_bucket(name)
            if found is not None:
                return found
        return await self.refresh_bucket(name)

    def holds_bucket_tables(self) -> bool:
        return self.node in self.model.buckets.replication.storage_nodes(0)

    async def refresh_bucket(self, name: str) -> Bucket | None:
        """Ask a quorum for a bucket, and keep what it answers (the bucket tables'
        rows are merged into this node's copy)."""
        alias = await self.model.aliases.get(b"", name.encode())
        if alias is None or alias.target.value is None:
            return None
        await self.model.aliases.local_merge([alias])
        bucket = await self.model.buckets.get(b"", alias.target.value)
        if bucket is not None:
            await self.model.buckets.local_merge([bucket])
        return self.get_bucket(alias.target.value)

    def bucket_names(self) -> dict[bytes, str]:
        """Bucket id -> its global name, for every named bucket."""
        return {
            a.target.value: a.name
            for a in self.model.aliases.local_range(b"")
            if a.target.value is not None
        }

    def list_buckets(self) -> list[tuple[str, Bucket]]:
        names = self.bucket_names()
        found = []
        for bucket in self.model.buckets.local_range(b""):
            if bucket.params is not None and bucket.id in names:
                found.append((names[bucket.id], bucket))
        return sorted(found, key=lambda item: item[0])

    async def create_bucket(
        self, name: str, owner_key_id: str | None, *, object_lock: bool = False
    ) -> Bucket:
        """Create a bucket under a new name, claiming the name first (module docstring);
        with `object_lock`, the bucket is born with versioning and object lock enabled.

        Raises AccessError: "owned" or "exists" when the name leads to a
        bucket, "conflict" when another node is creating it at this moment.
        """
        async with self._creating.hold(name):
            self._refuse_taken(name, self.resolve_bucket(name), owner_key_id)
            started = time.monotonic()
            intent = Intent(now_ms() + INTENT_LEASE_MS)
            claim = await self._claim_name(name, intent)
            withdrawal = own_slot(claim.claims, self.node, replace(intent, active=False), now_ms())
            try:
                bucket = await self._settle_name(
                    name, claim, withdrawal, owner_key_id, started, object_lock
                )
            except BaseException as error:
                withdrawn = replace(claim, claims=withdrawal)
                await finish_anyway(
                    self._write(self.model.aliases, withdrawn), f"withdraw the claim on {name}"
                )
                if isinstance(error, AccessError) and error.reason == "conflict":
                    await self._refuse_if_rival_wins(name, owner_key_id)
                raise
        if owner_key_id is not None:
            await self._grant_on_key(owner_key_id, bucket.id, Permission(True, True, True))
        return self.get_bucket(bucket.id) or bucket

    @staticmethod
    def _refuse_taken(name: str, bucket: Bucket | None, key_id: str | None) -> None:
        if bucket is None:
            return
        if key_id is not None and bucket.permission(key_id).owner:
            raise AccessError("owned", f"bucket {name} already exists and is yours")
        raise AccessError("exists", f"bucket {name} already exists")

    async def _claim_name(self, name: str, intent: Intent) -> BucketAlias:
        """Write this node's claim on a name; returns the row written (only that slot)."""
        known = self.model.aliases.local_get(b"", name.encode())
        claims = known.claims if known is not None else LwwMap()
        claim = BucketAlias(name, Lww(0, None), own_slot(claims, self.node, intent, now_ms()))
        await self._write(self.model.aliases, claim)
        return claim

    async def _settle_name(
        self,
        name: str,
        claim: BucketAlias,
        withdrawal: LwwMap[bytes, Intent],
        owner_key_id: str | None,
        started: float,
        object_lock: bool,
    ) -> Bucket:
        """With this claim written: create the bucket unless the name is taken or contested.

        A rival claim from a node with a smaller id makes this one give way
        at once; rivals with larger ids are waited for, `CLAIM_WAIT_SECS` at
        most (module docstring). The name is settled in one write with
        `withdrawal`, this node's claim no longer active.
        """
        pause = POLL_SECS[0]
        while True:
            alias = await self.model.aliases.get(b"", name.encode())
            alias = claim if alias is None else alias.merge(claim)
            self._refuse_taken(name, await self._live_target(alias), owner_key_id)
            rivals = binding_intents(alias.claims, now_ms(), besides=self.node)
            if not rivals:
                break
            if min(rivals) < self.node or time.monotonic() - started > CLAIM_WAIT_SECS:
                raise AccessError("conflict", f"bucket {name} is being created by another request")
            await asyncio.sleep(pause)
            pause = min(2 * pause, POLL_SECS[1])
        if time.monotonic() - started > ACT_WITHIN_SECS:
            raise AccessError("conflict", f"creating bucket {name} took too long")
        now = now_ms()
        grants: LwwMap[str, Permission] = LwwMap()
        if owner_key_id is not None:
            grants = grants.set(owner_key_id, Permission(True, True, True), now)
        params = BucketParams(now, grants)
        if object_lock:
            params = replace(
                params,
                versioning=Lww(now, VERSIONING_ENABLED),
                object_lock=Lww(now, LockConfig()),
            )
        bucket = Bucket(secrets.token_bytes(16), Deletable.present(params))
        await self._write(self.model.buckets, bucket)
        settled = BucketAlias(name, alias.target.update(bucket.id, now), withdrawal)
        await self._write(self.model.aliases, settled)
        return bucket

    async def _refuse_if_rival_wins(self, name: str, owner_key_id: str | None) -> None:
        """Having given way to a rival claim, answer BucketAlreadyExists if it wins soon."""
        waiting_since = time.monotonic()
        pause = POLL_SECS[0]
        while time.monotonic() - waiting_since < CLAIM_WAIT_SECS:
            alias = await self.model.aliases.get(b"", name.encode())
            if alias is None:
                return
            self._refuse_taken(name, await self._live_target(alias), owner_key_id)
            if not binding_intents(alias.claims, now_ms(), besides=self.node):
                return
            await asyncio.sleep(pause)
            pause = min(2 * pause, POLL_SECS[1])

    async def _live_target(self, alias: BucketAlias) -> Bucket | None:
        """The bucket a name leads to, read at quorum; None if the name is free."""
        if alias.target.value is None:
            return None
        entry = await self.model.buckets.get(b"", alias.target.value)
        return entry if entry is not None and entry.params is not None else None

    async def bucket_is_empty(self, bucket_id: bytes) -> bool:
        """No object version in the bucket, not even a versioned delete marker (uploads
        in progress do not count, as in S3).

        Each table read is bounded; the walk goes on past deleted objects of
        unversioned buckets until it finds a version or the end of the bucket.
        """
        async with aclosing(
            self.model.objects.range_entries(bucket_id, filter="versions")
        ) as found:
            async for _ in found:
                return False
        return True

    async def abort_uploads(self, bucket_id: bytes) -> int:
        """End every multipart upload in progress in a bucket, releasing its parts.

        S3 deletes a bucket whose only content is uploads in progress, and
        they go with it. An upload created while this runs either is found
        here or finds the bucket closing and ends itself (`Multipart.create`).
        """
        ended = 0
        index = self.model.upload_index
        async with aclosing(index.range_entries(bucket_id, filter="in_progress")) as listed:
            async for entry in listed:
                upload = await self.model.uploads.get(entry.upload_id, b"")
                if upload is None:
                    upload = MultipartUpload(entry.upload_id, 0, bucket_id, entry.key)
                await end_upload(self.model.uploads, index, upload)
                ended += 1
        return ended

    async def delete_bucket(self, name: str) -> None:
        """Delete an empty bucket, never one a racing write put an object into.

        Announces the deletion, checks emptiness at quorum, then ends the
        uploads in progress and deletes, or withdraws (module docstring).
        Raises AccessError: "no-such-bucket", "not-empty", or "conflict" if
        the check took too long to act on.
        """
        bucket = self.resolve_bucket(name)
        if bucket is None:
            raise AccessError("no-such-bucket", f"no bucket {name}")
        async with self._deleting.hold(bucket.id):
            started = time.monotonic()
            deadline = now_ms() + INTENT_LEASE_MS
            await self._announce_closing(bucket.id, Intent(deadline))
            try:
                if not await self.bucket_is_empty(bucket.id):
                    raise AccessError("not-empty", f"bucket {name} is not empty")
                self._act_in_time(started, name)
                await self.abort_uploads(bucket.id)
                self._act_in_time(started, name)  # uploads ended meanwhile stay ended
            except BaseException:
                await finish_anyway(
                    self._announce_closing(bucket.id, Intent(deadline, active=False)),
                    f"withdraw the deletion of {name}",
                )
                raise
            await self._write(self.model.buckets, Bucket(bucket.id, Deletable.tombstone()))
        await self._release_name(name, bucket.id)
        for key_id, permission in bucket.params.authorized_keys.items():
            if permission is not None and permission.any:
                await self._grant_on_key(key_id, bucket.id, NO_PERMISSION)

    @staticmethod
    def _act_in_time(started: float, name: str) -> None:
        """A node acts on its intent only within `ACT_WITHIN_SECS` (module docstring)."""
        if time.monotonic() - started > ACT_WITHIN_SECS:
            raise AccessError("conflict", f"deleting bucket {name} took too long")

    async def _announce_closing(self, bucket_id: bytes, intent: Intent) -> None:
        """Write this node's slot of a bucket's `closing` intents."""
        bucket = self.get_bucket(bucket_id)
        params = None if bucket is None else bucket.params
        if params is None:
            raise AccessError("no-such-bucket", "no such bucket")
        closing = own_slot(params.closing, self.node, intent, now_ms())
        announced = replace(params, closing=closing)
        await self._write(self.model.buckets, Bucket(bucket_id, Deletable.present(announced)))

    async def _release_name(self, name: str, bucket_id: bytes) -> None:
        """Free a name that leads to a deleted bucket.

        The release is stamped just after the target it replaces, not with
        the clock: a creator that found the bucket deleted may already have
        pointed the name at its new bucket, with a fresher stamp, and that
        must win whatever order the two writes land in.
        """
        alias = self.model.aliases.local_get(b"", name.encode())
        if alias is None or alias.target.value != bucket_id:
            return
        released = BucketAlias(name, Lww(alias.target.ts + 1, None))
        await self._write(self.model.aliases, released)

    async def set_bucket_tags(self, bucket_id: bytes, tags: Tags | None) -> None:
        """Replace a bucket's tag set (None: remove it); the latest write wins."""
        await self._change_params(
            bucket_id, lambda params, now: replace(params, tags=params.tags.update(tags, now))
        )

    async def set_object_lock(self, bucket_id: bytes, config: LockConfig) -> None:
        """Enable object lock (for good) or change its default retention."""
        await self._change_params(
            bucket_id,
            lambda params, now: replace(params, object_lock=params.object_lock.update(config, now)),
        )

    async def set_lifecycle(self, bucket_id: bytes, rules: Lifecycle | None) -> None:
        """Replace a bucket's lifecycle rules (None: remove them)."""
        await self._change_params(
            bucket_id,
            lambda params, now: replace(params, lifecycle=params.lifecycle.update(rules, now)),
        )

    async def set_versioning(self, bucket_id: bytes, status: str) -> None:
        """Enable or suspend a bucket's versioning; the latest write wins."""
        await self._change_params(
            bucket_id,
            lambda params, now: replace(params, versioning=params.versioning.update(status, now)),
        )

    async def _change_params(
        self, bucket_id: bytes, change: Callable[[BucketParams, int], BucketParams]
    ) -> None:
        """Write one setting of a bucket: `change` gets its params and the time."""
        bucket = self.get_bucket(bucket_id)
        params = None if bucket is None else bucket.params
        if params is None:
            raise AccessError("no-such-bucket", "no such bucket")
        changed = change(params, now_ms())
        await self._write(self.model.buckets, Bucket(bucket_id, Deletable.present(changed)))

    async def set_permission(self, bucket_id: bytes, key_id: str, permission: Permission) -> None:
        """Record a key's rights on a bucket, on both rows."""
        bucket = self.get_bucket(bucket_id)
        key = self.get_key(key_id)
        if bucket is None:
            raise AccessError("no-such-bucket", "no such bucket")
        if key is None:
            raise AccessError("no-such-key", f"no access key {key_id}")
        now = now_ms()
        params = bucket.params
        await self._write(
            self.model.buckets,
            Bucket(
                bucket.id,
                Deletable(
                    deleted=False,
                    value=replace(
                        params,
                        authorized_keys=params.authorized_keys.set(key_id, permission, now),
                    ),
                ),
            ),
        )
        key_params = key.params
        await self._write(
            self.model.keys,
            AccessKey(
                key_id,
                Deletable(
                    deleted=False,
                    value=replace(
                        key_params,
                        authorized_buckets=key_params.authorized_buckets.set(
                            bucket_id, permission, now
                        ),
                    ),
                ),
            ),
        )

    async def _grant_on_key(self, key_id: str, bucket_id: bytes, permission: Permission) -> None:
        """Record a key's rights on a bucket on the key's row only."""
        key = self.get_key(key_id)
        params = None if key is None else key.params
        if params is None:
            return
        granted = params.authorized_buckets.set(bucket_id, permission, now_ms())
        updated = replace(params, authorized_buckets=granted)
        await self._write(self.model.keys, AccessKey(key_id, Deletable.present(updated)))
