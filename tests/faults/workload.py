"""Client threads running random PutObject / GetObject / DeleteObject / ListObjectsV2.

Each operation goes to a random node with a fresh attempt (botocore retries
off, short timeouts) and is recorded with its start and end times and
outcome. A write whose outcome is not known for sure - a timeout, a dropped
connection, a 5xx after which the server may still finish it - is UNKNOWN;
only a request refused before it reached the server, or a 4xx, is FAIL.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import boto3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError

from .history import (
    INLINE_LIMIT,
    MUTATIONS,
    CorruptBody,
    History,
    Kind,
    Op,
    Outcome,
    Values,
    body_of,
    etag_of,
    value_of,
)

BUCKET = "faults"
PREFIX = "k/"
KEYS = [f"{PREFIX}{index:02d}" for index in range(12)]
FROZEN_PREFIX = "frozen/"
WEIGHTS = {Kind.PUT: 35, Kind.GET: 40, Kind.DELETE: 10, Kind.LIST: 15}
SWAP_KEYS = [f"swap/{index}" for index in range(3)]
CREATE_PREFIX = "create/"
CREATE_WINDOW = 0.25
"""Seconds during which every client creating a key creates the same one."""


def s3_client(endpoint: str, credentials: tuple[str, str], *, timeout: float, session=None):
    """An S3 client with no retries; clients of one `session` share its loaded models."""
    return (session or boto3.session.Session()).client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=credentials[0],
        aws_secret_access_key=credentials[1],
        region_name="us-east-1",
        config=BotoConfig(
            retries={"total_max_attempts": 1},  # ("max_attempts": 1 would retry once)
            connect_timeout=min(timeout, 2.0),
            read_timeout=timeout,
            tcp_keepalive=True,
        ),
    )


def classify(error: Exception, *, write: bool) -> Outcome:
    """The outcome of an operation that raised `error`."""
    if isinstance(error, ConnectTimeoutError | EndpointConnectionError):
        return Outcome.FAIL  # never reached the server
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if 400 <= status < 500:
            return Outcome.FAIL
    return Outcome.UNKNOWN if write else Outcome.FAIL


def describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{status} {info.get('Code')}: {info.get('Message')}"
    return f"{type(error).__name__}: {error}"


class Client:
    """One logical client: an S3 client per node, and its operations, recorded."""

    def __init__(
        self,
        process: int,
        endpoints: dict[str, str],
        credentials: tuple[str, str],
        history: History,
        values: Values,
        *,
        timeout: float,
        final: bool = False,
    ) -> None:
        """`final`: record the operations as the final reads, not the workload."""
        self.process = process
        self.final = final
        self.history = history
        self.values = values
        self.endpoints = endpoints
        self.credentials = credentials
        session = boto3.session.Session()
        self.clients = {
            name: s3_client(url, credentials, timeout=timeout, session=session)
            for name, url in endpoints.items()
        }

    def _record(
        self, kind: Kind, key: str | None, node: str, call: Callable[[], dict], **known
    ) -> Op:
        """Run `call` (it returns what the operation observed) and record the operation."""
        start = self.history.now()
        error = ""
        try:
            observed, outcome = call(), Outcome.OK
        except CorruptBody as corrupt:
            observed, outcome, error = {"value": f"<{corrupt}>"}, Outcome.OK, str(corrupt)
        except Exception as failure:  # every failure is part of the history
            observed, error = {}, describe(failure)
            outcome = classify(failure, write=kind in MUTATIONS)
        op = Op(
            self.process,
            kind,
            key,
            node,
            start,
            self.history.now(),
            outcome,
            error=error,
            **known,
            **observed,
        )
        self.history.add(op, final=self.final)
        return op

    def put(self, node: str, key: str, value: str | None = None, lock: dict | None = None) -> Op:
        """PutObject; `lock`: the object lock arguments of the call (legal hold, retention)."""
        value = value or self.values.next(self.process)

        def call() -> dict:
            body = body_of(value)
            reply = self.clients[node].put_object(Bucket=BUCKET, Key=key, Body=body, **(lock or {}))
            return {"version_id": reply.get("VersionId")}

        return self._record(Kind.PUT, key, node, call, value=value, locked=bool(lock))

    def create(self, node: str, key: str) -> Op:
        """PutObject with If-None-Match: * (S3's create-if-absent)."""
        value = self.values.next(self.process)

        def call() -> dict:
            body = body_of(value)
            self.clients[node].put_object(Bucket=BUCKET, Key=key, Body=body, IfNoneMatch="*")
            return {}

        return self._record(Kind.CREATE, key, node, call, value=value)

    def swap(self, node: str, key: str, expected: str) -> Op:
        """PutObject with If-Match: the ETag of `expected` (compare-and-set)."""
        value = self.values.next(self.process)

        def call() -> dict:
            body, tag = body_of(value), etag_of(expected)
            self.clients[node].put_object(Bucket=BUCKET, Key=key, Body=body, IfMatch=f'"{tag}"')
            return {}

        return self._record(Kind.SWAP, key, node, call, value=value, expected=expected)

    def interrupted_put(self, node: str, key: str, crash: Callable[[], None]) -> Op:
        """Send part of a PutObject's body to `node`, then `crash` it: a write that
        cannot have happened, recorded as FAIL, and an upload left in flight."""
        value = self.values.next(self.process)
        body = body_of(value)
        while len(body) < 4 * INLINE_LIMIT:
            value = self.values.next(self.process)
            body = body_of(value)
        url = f"{self.endpoints[node]}/{BUCKET}/{key}"
        split = urlsplit(url)
        headers = {"host": split.netloc, "content-length": str(len(body))}
        request = AWSRequest(method="PUT", url=url, headers=headers)
        request.context["payload_signing_enabled"] = False
        S3SigV4Auth(Credentials(*self.credentials), "s3", "us-east-1").add_auth(request)
        head = "".join(f"{name}: {text}\r\n" for name, text in request.headers.items())
        start = self.history.now()
        with socket.socket() as sock:
            with contextlib.suppress(OSError):  # refused: the node is killed all the same
                sock.settimeout(5)
                sock.connect((split.hostname, split.port))
                sock.sendall(f"PUT {split.path} HTTP/1.1\r\n{head}\r\n".encode())
                sock.sendall(body[: len(body) // 2])
                time.sleep(0.5)  # the node stores the first blocks
            crash()  # the connection still open
        op = Op(
            self.process,
            Kind.PUT,
            key,
            node,
            start,
            self.history.now(),
            Outcome.FAIL,
            value=value,
            error="half sent, then the node was killed",
        )
        self.history.add(op, final=self.final)
        return op

    def delete(self, node: str, key: str) -> Op:
        def call() -> dict:
            reply = self.clients[node].delete_object(Bucket=BUCKET, Key=key)
            return {"version_id": reply.get("VersionId")}

        return self._record(Kind.DELETE, key, node, call)

    def get_version(self, node: str, key: str, version_id: str) -> Op:
        """The value of one version; None when there is no such version (any more)."""

        def call() -> dict:
            client = self.clients[node]
            try:
                body = client.get_object(Bucket=BUCKET, Key=key, VersionId=version_id)["Body"]
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "NoSuchVersion":
                    raise
                return {"value": None}
            return {"value": value_of(body.read())}

        return self._record(Kind.VGET, key, node, call, version_id=version_id)

    def delete_version(self, node: str, key: str, version_id: str) -> Op:
        def call() -> dict:
            self.clients[node].delete_object(Bucket=BUCKET, Key=key, VersionId=version_id)
            return {}

        return self._record(Kind.VDELETE, key, node, call, version_id=version_id)

    def list_versions(self, node: str, key: str) -> Op:
        """The versions and delete markers of `key`, each kind newest first, all pages."""

        def call() -> dict:
            versions: list[str] = []
            markers: list[str] = []
            pages = self.clients[node].get_paginator("list_object_versions")
            for page in pages.paginate(Bucket=BUCKET, Prefix=key):
                versions += [v["VersionId"] for v in page.get("Versions", []) if v["Key"] == key]
                markers += [
                    m["VersionId"] for m in page.get("DeleteMarkers", []) if m["Key"] == key
                ]
            return {"versions": tuple(versions), "markers": tuple(markers)}

        return self._record(Kind.VLIST, key, node, call)

    def get(self, node: str, key: str) -> Op:
        def call() -> dict:
            try:
                body = self.clients[node].get_object(Bucket=BUCKET, Key=key)["Body"].read()
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "NoSuchKey":
                    raise
                return {"value": None}
            return {"value": value_of(body)}

        return self._record(Kind.GET, key, node, call)

    def list(self, node: str, prefix: str) -> Op:
        def call() -> dict:
            reply = self.clients[node].list_objects_v2(Bucket=BUCKET, Prefix=prefix)
            return {"keys": frozenset(item["Key"] for item in reply.get("Contents", []))}

        return self._record(Kind.LIST, None, node, call)


class Workload:
    """`threads` clients hammering `keys` on random nodes until stopped."""

    def __init__(
        self,
        endpoints: dict[str, str],
        credentials: tuple[str, str],
        history: History,
        values: Values,
        *,
        keys: list[str],
        read_only_keys: list[str],
        threads: int,
        seed: int,
        timeout: float,
    ) -> None:
        self.keys = keys
        self.key_weights = [1 / (rank + 1) for rank in range(len(keys))]  # a few hot keys
        self.read_only_keys = read_only_keys
        self.stop_event = threading.Event()
        self.clients = [
            Client(index, endpoints, credentials, history, values, timeout=timeout)
            for index in range(threads)
        ]
        self._seeds = [seed * 1000 + index for index in range(threads)]
        self._threads: list[threading.Thread] = []

    def _run(self, client: Client, seed: int) -> None:
        rng = random.Random(seed)
        nodes = list(client.clients)
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        while not self.stop_event.is_set():
            kind = rng.choices(kinds, weights)[0]
            node = rng.choice(nodes)
            key = rng.choices(self.keys, self.key_weights)[0]
            if kind is Kind.PUT:
                client.put(node, key)
            elif kind is Kind.DELETE:
                client.delete(node, key)
            elif kind is Kind.LIST:
                client.list(node, PREFIX)
            elif self.read_only_keys and rng.random() < 0.2:
                client.get(node, rng.choice(self.read_only_keys))
            else:
                client.get(node, key)

    def start(self) -> None:
        for client, seed in zip(self.clients, self._seeds, strict=True):
            thread = threading.Thread(target=self._run, args=(client, seed), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=timeout)


class ConditionalWorkload(Workload):
    """Conditional writes racing on a few keys: creates (If-None-Match: *) of a new
    key that every client takes up in the same short window, and compare-and-set
    chains (a read, then If-Match on what it returned) on `SWAP_KEYS`, which the
    run writes first."""

    def _run(self, client: Client, seed: int) -> None:
        rng = random.Random(seed)
        nodes = list(client.clients)
        while not self.stop_event.is_set():
            node = rng.choice(nodes)
            if rng.random() < 0.4:
                window = int(client.history.now() / CREATE_WINDOW)
                client.create(node, f"{CREATE_PREFIX}{window}")
                continue
            key = rng.choice(SWAP_KEYS)
            read = client.get(node, key)
            if read.outcome is Outcome.OK and read.value is not None:
                client.swap(rng.choice(nodes), key, read.value)


def created_keys(ops: list[Op]) -> list[str]:
    """The keys the creates of a history went to."""
    return sorted({op.key for op in ops if op.kind is Kind.CREATE and op.key is not None})


VERSIONED_WEIGHTS = {Kind.PUT: 35, Kind.DELETE: 5, Kind.VGET: 30, Kind.VDELETE: 10, Kind.VLIST: 20}


LOCKS = (
    {"ObjectLockLegalHoldStatus": "ON"},
    {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": "2999-01-01T00:00:00Z"},
)
"""The object locks a versioned workload's writes put on a fifth of their versions
(held or retained for longer than any run: their deletions must all be refused)."""


class VersionedWorkload(Workload):
    """Writes, delete markers, reads and deletions of versions by id, and listings of
    a key's versions, in a bucket with versioning and object lock enabled. The ids
    read and deleted are those of acknowledged writes (of any client); a fifth of
    the writes lock their version."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.written: dict[str, list[str]] = {key: [] for key in self.keys}
        """key -> the ids of its acknowledged versions holding data (appends are atomic)."""
        self.marked: dict[str, list[str]] = {key: [] for key in self.keys}
        """key -> the ids of its acknowledged delete markers."""

    def _run(self, client: Client, seed: int) -> None:
        rng = random.Random(seed)
        nodes = list(client.clients)
        kinds, weights = list(VERSIONED_WEIGHTS), list(VERSIONED_WEIGHTS.values())
        while not self.stop_event.is_set():
            kind = rng.choices(kinds, weights)[0]
            node = rng.choice(nodes)
            key = rng.choices(self.keys, self.key_weights)[0]
            written, marked = self.written[key], self.marked[key]
            if kind is Kind.VGET and written:
                client.get_version(node, key, rng.choice(written))
            elif kind is Kind.VDELETE and written:
                client.delete_version(node, key, rng.choice(written + marked))
            elif kind is Kind.VLIST:
                client.list_versions(node, key)
            elif kind is Kind.DELETE:
                op = client.delete(node, key)
                if op.outcome is Outcome.OK and op.version_id is not None:
                    marked.append(op.version_id)
            else:
                lock = rng.choice(LOCKS) if rng.random() < 0.2 else None
                op = client.put(node, key, lock=lock)
                if op.outcome is Outcome.OK and op.version_id is not None:
                    written.append(op.version_id)
