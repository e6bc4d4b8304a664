"""Tables talking to the same tables on other nodes, over the cluster RPC.

Each table answers on the endpoint ``table/<name>``: merging rows, reading
one row or a range, and the digest exchanges of anti-entropy. Requests and
replies are msgspec msgpack; rows travel in their stored encoding. No reply
grows with the size of a table: range reads and row digests come in bounded
pages with a cursor, fetched rows stop at `FETCH_ROWS` and `FETCH_BYTES`.
"""

from __future__ import annotations

import msgspec

from granary.net.errors import RpcError
from granary.net.messages import BACKGROUND, NORMAL
from granary.table.merkle import DigestPage, MerkleIndex, RowIndexNotReady
from granary.table.paxos import Ballot
from granary.table.table import PhaseAnswer, Table


class MergeRows(msgspec.Struct, tag="merge", array_like=True):
    rows: list[bytes]


class GetRow(msgspec.Struct, tag="get", array_like=True):
    pk: bytes
    sk: bytes


class Prepare(msgspec.Struct, tag="prepare", array_like=True):
    """Phase 1 of a conditional update's round (Table.conditional_update)."""

    pk: bytes
    sk: bytes
    ballot: Ballot


class Accept(msgspec.Struct, tag="accept", array_like=True):
    """Phase 2 of a conditional update's round: the row to merge at `ballot`."""

    pk: bytes
    sk: bytes
    ballot: Ballot
    row: bytes | None


class ScanRows(msgspec.Struct, tag="scan", array_like=True):
    pk: bytes
    start: bytes | None
    filter: str | None
    limit: int


class ScannedRows(msgspec.Struct, array_like=True):
    """The reply to `ScanRows`, bounded by the replica's `Table.scan_bounds`."""

    rows: list[bytes]
    horizon: bytes | None


class PartitionDigests(msgspec.Struct, tag="pdig", array_like=True):
    pass


class BucketDigests(msgspec.Struct, tag="bdig", array_like=True):
    partition: int


class RowDigests(msgspec.Struct, tag="rdig", array_like=True):
    """One page of row digests of some buckets of a partition, from position `start`."""

    partition: int
    buckets: list[int]
    start: bytes | None
    limit: int


class RowDigestPage(msgspec.Struct, array_like=True):
    """The reply to `RowDigests` (see `merkle.DigestPage`)."""

    rows: list[tuple[bytes, bytes]]
    horizon: bytes | None


class FetchRows(msgspec.Struct, tag="fetch", array_like=True):
    """Rows by storage key; the reply holds the rows of a prefix of the keys (see `fetch`)."""

    keys: list[bytes]


class DeleteIfEqual(msgspec.Struct, tag="forget", array_like=True):
    key: bytes
    digest: bytes


TableRequest = (
    MergeRows
    | GetRow
    | Prepare
    | Accept
    | ScanRows
    | PartitionDigests
    | BucketDigests
    | RowDigests
    | FetchRows
    | DeleteIfEqual
)

_request_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(TableRequest)


FETCH_ROWS = 1000
FETCH_BYTES = 4 << 20
"""A `FetchRows` reply stops at FETCH_ROWS rows, or after the row that reaches FETCH_BYTES."""
ROW_INDEX_NOT_READY = "row_index_not_ready"


def endpoint_name(table: str) -> str:
    return f"table/{table}"


class TableRpc:
    """Serves the local tables to peers, and calls the peers' (a `TablePeers`)."""

    def __init__(self, net, tables: list[Table]) -> None:
        self.net = net
        self.tables = {table.name: table for table in tables}
        for table in tables:
            net.endpoint(endpoint_name(table.name), self._handler(table))
            table.peers = self

    # ---- serving -----------------------------------------------------------

    def _handler(self, table: Table):
        async def handle(from_node: bytes, body: bytes, stream) -> tuple[bytes, None]:
            request = _request_decoder.decode(body)
            return msgspec.msgpack.encode(await self._serve(table, request)), None

        return handle

    async def _serve(self, table: Table, request: TableRequest) -> object:
        merkle: MerkleIndex = table.merkle
        match request:
            case MergeRows(rows=rows):
                await table.local_merge([table.decode(raw) for raw in rows])
                return None
            case GetRow(pk=pk, sk=sk):
                entry = table.local_get(pk, sk)
                return None if entry is None else table.encode(entry)
            case Prepare(pk=pk, sk=sk, ballot=ballot):
                return await table.local_prepare(pk, sk, ballot)
            case Accept(pk=pk, sk=sk, ballot=ballot, row=row):
                return await table.local_accept(pk, sk, ballot, row)
            case ScanRows(pk=pk, start=start, filter=name, limit=limit):
                scanned, horizon = table.local_scan(pk, start, name, limit)
                return ScannedRows([raw for raw, _ in scanned], horizon)
            case PartitionDigests():
                return merkle.partition_digests()
            case BucketDigests(partition=partition):
                return merkle.bucket_digests(partition)
            case RowDigests(partition=partition, buckets=buckets, start=start, limit=limit):
                try:
                    page = merkle.rows_in(partition, buckets, start, limit)
                except RowIndexNotReady as error:
                    raise RpcError(ROW_INDEX_NOT_READY, str(error)) from None
                return RowDigestPage(page.rows, page.horizon)
            case FetchRows(keys=keys):
                return fetch_bounded(table, keys)
            case DeleteIfEqual(key=key, digest=digest):
                gc = table.tombstone_gc
                if gc is None:
                    return False
                return await table.db.transact(lambda tx: gc.delete_if_equal(tx, key, digest))

    # ---- calling (TablePeers) ---------------------------------------------

    async def _call(self, node: bytes, table: str, request: TableRequest, *, priority: int):
        reply, _ = await self.net.call(
            node, endpoint_name(table), _request_encoder.encode(request), priority=priority
        )
        return msgspec.msgpack.decode(reply)

    async def merge(
        self, node: bytes, table: str, entries: list[bytes], *, priority: int = NORMAL
    ) -> None:
        await self._call(node, table, MergeRows(entries), priority=priority)

    async def get(self, node: bytes, table: str, pk: bytes, sk: bytes) -> bytes | None:
        return await self._call(node, table, GetRow(pk, sk), priority=NORMAL)

    async def prepare(
        self, node: bytes, table: str, pk: bytes, sk: bytes, ballot: Ballot
    ) -> PhaseAnswer:
        ok, promised, row, clock = await self._call(
            node, table, Prepare(pk, sk, ballot), priority=NORMAL
        )
        return ok, _ballot(promised), row, clock

    async def accept(
        self, node: bytes, table: str, pk: bytes, sk: bytes, ballot: Ballot, row: bytes | None
    ) -> PhaseAnswer:
        ok, promised, _, clock = await self._call(
            node, table, Accept(pk, sk, ballot, row), priority=NORMAL
        )
        return ok, _ballot(promised), None, clock

    async def scan(
        self,
        node: bytes,
        table: str,
        pk: bytes,
        start: bytes | None,
        filter: str | None,
        limit: int,
    ) -> tuple[list[bytes], bytes | None]:
        """One replica's bounded part of a range read: its rows (stored bytes), its horizon."""
        rows, horizon = await self._call(
            node, table, ScanRows(pk, start, filter, limit), priority=NORMAL
        )
        return rows, horizon

    async def partition_digests(self, node: bytes, table: str) -> dict[int, bytes]:
        return await self._call(node, table, PartitionDigests(), priority=BACKGROUND)

    async def bucket_digests(self, node: bytes, table: str, partition: int) -> dict[int, bytes]:
        return await self._call(node, table, BucketDigests(partition), priority=BACKGROUND)

    async def row_digests(
        self,
        node: bytes,
        table: str,
        partition: int,
        buckets: list[int],
        start: bytes | None,
        limit: int,
    ) -> DigestPage:
        rows, horizon = await self._call(
            node, table, RowDigests(partition, buckets, start, limit), priority=BACKGROUND
        )
        return DigestPage([(position, digest) for position, digest in rows], horizon)

    async def fetch(self, node: bytes, table: str, keys: list[bytes]) -> list[bytes | None]:
        """The rows of a prefix of `keys` (None: absent), at least one: ask again for the rest."""
        return await self._call(node, table, FetchRows(keys), priority=BACKGROUND)

    async def delete_if_equal(self, node: bytes, table: str, key: bytes, digest: bytes) -> bool:
        return await self._call(node, table, DeleteIfEqual(key, digest), priority=BACKGROUND)


def _ballot(value: list) -> Ballot:
    """A ballot as it comes back in a reply (msgpack has arrays, not tuples)."""
    counter, node, nonce = value
    return int(counter), bytes(node), int(nonce)


def fetch_bounded(table: Table, keys: list[bytes]) -> list[bytes | None]:
    """The stored rows of a prefix of `keys`, in order, within FETCH_ROWS and FETCH_BYTES."""
    rows: list[bytes | None] = []
    size = 0
    for key in keys[:FETCH_ROWS]:
        raw = table.tree.get(key)
        rows.append(raw)
        size += 0 if raw is None else len(raw)
        if size >= FETCH_BYTES:
            break
    return rows
