"""What an S3 operation handler receives: the services and the parsed request."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from granary.api.http.types import Request
from granary.api.s3.errors import S3Error
from granary.api.s3.payload import Payload
from granary.api.s3.sigv4 import AuthContext
from granary.model.access import Access
from granary.model.buckets import AccessKey, Bucket
from granary.model.multipart import Multipart
from granary.model.objects import Objects


@dataclass(frozen=True)
class S3Settings:
    region: str = "us-east-1"
    root_domain: str | None = None
    block_size: int = 1 << 20
    inline_threshold: int = 4096
    lifecycle_day_ms: int = 86_400_000
    max_part_size: int = 5 << 30


@dataclass
class S3Services:
    access: Access
    objects: Objects
    multipart: Multipart
    executor: Executor
    settings: S3Settings
    # Names this node's full disk (metadata or data), if one is: asked when a write fails.
    full_disk: Callable[[], str | None] = lambda: None


@dataclass
class S3Context:
    """One authenticated request, routed to an operation."""

    services: S3Services
    http: Request
    operation: str
    bucket_name: str | None
    key: str | None
    query: dict[str, str]
    auth: AuthContext
    access_key: AccessKey
    """The signer's key: an anonymous request never gets this far."""
    request_id: str
    bucket: Bucket | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def key_id(self) -> str:
        return self.access_key.key_id

    def header(self, name: str) -> str | None:
        return self.http.headers.get(name)

    def payload(self) -> Payload:
        return Payload(self.http.body, self.http.headers, self.auth, self.services.executor)

    def require_bucket(self) -> Bucket:
        if self.bucket is None:
            raise S3Error("NoSuchBucket", BucketName=self.bucket_name or "")
        return self.bucket

    def require_bucket_name(self) -> str:
        if self.bucket_name is None:
            raise S3Error("InvalidRequest", "This operation needs a bucket name.")
        return self.bucket_name

    def require_key(self) -> str:
        if self.key is None:
            raise S3Error("InvalidRequest", "This operation needs an object key.")
        return self.key
