"""The errors an RPC call raises; every one of them is an `RpcError`."""

from __future__ import annotations

HANDLER_ERROR = "handler_error"
NO_SUCH_ENDPOINT = "no_such_endpoint"
STREAM_ERROR = "stream_error"
UNAVAILABLE = "unavailable"
TIMEOUT = "timeout"


class RpcError(Exception):
    """A call failed: the remote handler raised, or the peer could not answer.

    A handler may raise it itself to send a chosen code to the caller.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PeerUnavailable(RpcError):
    """No answer: not connected, connection lost, handshake refused or timed out."""

    def __init__(self, message: str, code: str = UNAVAILABLE) -> None:
        super().__init__(code, message)


class CallTimeout(PeerUnavailable):
    """The peer did not answer within the call's timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, TIMEOUT)


class HandshakeError(Exception):
    """A connection was refused before any request could be exchanged."""
