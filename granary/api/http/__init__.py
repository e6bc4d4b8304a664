"""A small HTTP/1.1 server on asyncio + httptools, shared by the S3, admin and web APIs."""

from granary.api.http.body import Body, BodyError
from granary.api.http.server import HttpServer
from granary.api.http.types import (
    ErrorRenderer,
    Handler,
    HandlerExceptionHook,
    Headers,
    HttpLimits,
    Request,
    Response,
)

__all__ = [
    "Body",
    "BodyError",
    "ErrorRenderer",
    "Handler",
    "HandlerExceptionHook",
    "Headers",
    "HttpLimits",
    "HttpServer",
    "Request",
    "Response",
]
