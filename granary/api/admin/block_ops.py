"""The block and worker side of the admin API: workers, block errors, repairs, purge.

Routes (added to the admin app, all under the admin token):
  GET  /v1/workers                 GET /v1/workers/{name}
  GET  /v1/workers/vars[?name=V]   POST /v1/workers/vars {name, value}
  GET  /v1/blocks/errors           GET /v1/blocks/{hash or unique prefix}
  POST /v1/blocks/retry-now {all?, blocks?}
  POST /v1/blocks/purge {blocks}
  POST /v1/repair/blocks | /v1/repair/rebalance | /v1/repair/tables
  POST /v1/repair/scrub {command: start|pause|resume|cancel}

`block info` and `list-errors` describe this node only: its count, its
block_ref rows, its files and its resync state.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import msgspec

from granary.api.admin.app import AdminError
from granary.block.healing import BlockHealing
from granary.block.resync import ResyncError
from granary.model.access import Access
from granary.model.objects import Objects
from granary.model.version import tombstone
from granary.table.sync import TableSync
from granary.util.background import Workers

Route = tuple[str, re.Pattern, Callable[..., Awaitable[object]]]
ReadBody = Callable[[Any, type], Awaitable[Any]]

HASH_HEX = 64


class VariableSet(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    value: str


class BlockList(msgspec.Struct, forbid_unknown_fields=True):
    blocks: list[str] = []
    all: bool = False


class ScrubCommand(msgspec.Struct, forbid_unknown_fields=True):
    command: str


def parse_block_id(text: str) -> bytes:
    try:
        block_id = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"not a block hash: {text!r}") from None
    if len(block_id) != HASH_HEX // 2:
        raise ValueError(f"a block hash has {HASH_HEX} hex digits: {text!r}")
    return block_id


def error_json(block_id: bytes, error: ResyncError) -> dict:
    return {
        "hash": block_id.hex(),
        "failures": error.failures,
        "last_try_ms": error.last_try_ms,
        "next_try_ms": error.next_try_ms,
        "last_error": error.message,
    }


class BlockOps:
    def __init__(
        self,
        workers: Workers,
        healing: BlockHealing,
        objects: Objects,
        access: Access,
        syncs: list[TableSync],
    ) -> None:
        self.workers = workers
        self.healing = healing
        self.blocks = healing.manager
        self.objects = objects
        self.model = objects.model
        self.access = access
        self.syncs = syncs
        self._read_body: ReadBody | None = None

    async def _body(self, request: Any, kind: type) -> Any:
        assert self._read_body is not None  # set by routes(), before any route runs
        return await self._read_body(request, kind)

    def routes(self, read_body: ReadBody) -> list[Route]:
        """The routes, reading JSON bodies with the admin app's `read_body`."""
        self._read_body = read_body
        return [
            ("GET", re.compile(r"^/v1/workers$"), self.worker_list),
            ("GET", re.compile(r"^/v1/workers/vars$"), self.worker_get),
            ("POST", re.compile(r"^/v1/workers/vars$"), self.worker_set),
            ("GET", re.compile(r"^/v1/workers/([^/]+)$"), self.worker_info),
            ("GET", re.compile(r"^/v1/blocks/errors$"), self.list_errors),
            ("POST", re.compile(r"^/v1/blocks/retry-now$"), self.retry_now),
            ("POST", re.compile(r"^/v1/blocks/purge$"), self.purge),
            ("GET", re.compile(r"^/v1/blocks/([0-9a-fA-F]+)$"), self.block_info),
            ("POST", re.compile(r"^/v1/repair/blocks$"), self.repair_blocks),
            ("POST", re.compile(r"^/v1/repair/rebalance$"), self.repair_rebalance),
            ("POST", re.compile(r"^/v1/repair/tables$"), self.repair_tables),
            ("POST", re.compile(r"^/v1/repair/scrub$"), self.repair_scrub),
        ]

    # ---- workers ---------------------------------------------------------------

    async def worker_list(self, request) -> list:
        return self.workers.statuses()

    async def worker_info(self, request, name: str) -> dict:
        try:
            return self.workers.info(name)
        except KeyError as exc:
            raise AdminError(404, exc.args[0]) from None

    async def worker_get(self, request) -> dict:
        names = parse_qs(request.query_string).get("name")
        try:
            return self.workers.get(names[0] if names else None)
        except KeyError as exc:
            raise AdminError(404, exc.args[0]) from None

    async def worker_set(self, request) -> dict:
        body: VariableSet = await self._body(request, VariableSet)
        try:
            return self.workers.set(body.name, body.value)
        except KeyError as exc:
            raise AdminError(404, exc.args[0]) from None

    # ---- blocks ----------------------------------------------------------------

    async def list_errors(self, request) -> list:
        refcounts = self.blocks.refcounts
        return [
            {**error_json(block_id, error), "refcount": refcounts.get(block_id)}
            for block_id, error in self.blocks.resync.list_errors()
        ]

    def _resolve(self, text: str) -> bytes:
        """A full block hash, or the one counted or failing block it is a prefix of."""
        text = text.lower()
        if len(text) == HASH_HEX:
            return parse_block_id(text)
        start = bytes.fromhex(text[: len(text) // 2 * 2])
        found: set[bytes] = set()
        for tree in (self.blocks.refcounts.counts, self.blocks.resync.errors):
            for key, _ in tree.range(start):
                prefix = key.hex()[: len(text)]
                if prefix > text:
                    break
                if prefix == text:
                    found.add(key)
        if not found:
            raise AdminError(404, f"no block known here starts with {text}")
        if len(found) > 1:
            raise ValueError(f"{text} is the prefix of {len(found)} blocks: give more digits")
        return found.pop()

    async def block_info(self, request, text: str) -> dict:
        block_id = self._resolve(text)
        blocks = self.blocks
        entry = blocks.refcounts.entry(block_id)
        error = blocks.resync.error(block_id)
        files = await blocks.in_thread(blocks.store.locations, block_id)
        refs = self.model.block_refs.local_range(block_id)
        first, fallback = blocks.read_order(block_id)
        return {
            "hash": block_id.hex(),
            "refcount": None if entry is None else entry[0],
            "deletable_at_ms": entry[1] if entry is not None and entry[0] == 0 else None,
            "should_hold": blocks.should_hold(block_id),
            "holders": [n.hex() for n in blocks.holders.current(block_id)],
            "older_holders": [n.hex() for n in blocks.holders.older(block_id)],
            "read_order": [n.hex() for n in first + fallback],
            "versions": [{"version": r.version.hex(), "deleted": r.deleted} for r in refs],
            "files": [{"path": str(path), "size": size} for path, size in files],
            "resync_queued_at_ms": blocks.resync.queued_at(block_id),
            "resync_error": None if error is None else error_json(block_id, error),
        }

    async def retry_now(self, request) -> dict:
        body: BlockList = await self._body(request, BlockList)
        if body.all == bool(body.blocks):
            raise ValueError("give either all or a list of blocks")
        wanted = None if body.all else [parse_block_id(b) for b in body.blocks]
        return {"queued": await self.blocks.resync.retry(wanted)}

    async def purge(self, request) -> dict:
        """Delete every object and version that uses the given (lost) blocks.

        For each block: the versions referencing it are found through its
        block_ref rows (a quorum read); every object whose current version is
        one of them gets a delete marker, then each of those versions is
        deleted (which releases all of its blocks, so the lost block's count
        drops to zero and it leaves the resync errors). Uploads still running
        and multipart parts that use the block are deleted the same way.
        This cannot be undone; older versions of the objects are not restored.
        """
        body: BlockList = await self._body(request, BlockList)
        block_ids = [parse_block_id(b) for b in body.blocks]
        uuids: set[bytes] = set()
        for block_id in block_ids:
            uuids.update(await self._referencing_versions(block_id))
        deleted_objects = await self._delete_objects_using(uuids)
        for uuid in uuids:
            await self.model.versions.insert(tombstone(uuid))
        await self.blocks.resync.push(block_ids)
        return {
            "blocks": [b.hex() for b in block_ids],
            "versions_deleted": sorted(u.hex() for u in uuids),
            "objects_deleted": deleted_objects,
        }

    async def _referencing_versions(self, block_id: bytes) -> set[bytes]:
        return {
            ref.version
            async for ref in self.model.block_refs.range_entries(block_id)
            if not ref.deleted
        }

    async def _delete_objects_using(self, uuids: set[bytes]) -> list[str]:
        """Write a delete marker on every object whose current version is in `uuids`."""
        deleted: list[str] = []
        if not uuids:
            return deleted
        for name, bucket in self.access.list_buckets():
            async for entry in self.model.objects.range_entries(bucket.id, filter="data"):
                current = entry.current()
                if current is not None and current.uuid in uuids:
                    await self.objects.delete(bucket.id, entry.key)
                    deleted.append(f"{name}/{entry.key}")
        return deleted

    # ---- repairs ---------------------------------------------------------------

    async def repair_blocks(self, request) -> dict:
        return {"queued": await self.healing.repair_blocks()}

    async def repair_rebalance(self, request) -> dict:
        return {"started": self.healing.repair_rebalance()}

    async def repair_tables(self, request) -> dict:
        for sync in self.syncs:
            sync.wakeup.set()
        return {"tables": [sync.table.name for sync in self.syncs]}

    async def repair_scrub(self, request) -> dict:
        body: ScrubCommand = await self._body(request, ScrubCommand)
        return await self.healing.scrub.command(body.command)
