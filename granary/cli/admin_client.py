"""A blocking client of the admin API, for the CLI."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from granary.config import ADMIN_ENDPOINT_FILE, ADMIN_TOKEN_FILE, Config, parse_host_port


class AdminClientError(Exception):
    pass


class AdminClient:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host = host
        self.port = port
        self.token = token

    @classmethod
    def locate(cls, config: Config | None, data_dir: Path) -> AdminClient:
        """Find the admin endpoint and token of the node a config (or data folder) belongs to."""
        metadata_dir = Path(config.metadata_dir) if config else data_dir / "meta"
        token = config.admin.admin_token if config else None
        if token is None:
            token = _read(metadata_dir / ADMIN_TOKEN_FILE, "admin token")
        if config is not None and config.admin.api_bind_addr:
            address = config.admin.api_bind_addr
        else:
            address = _read(metadata_dir / ADMIN_ENDPOINT_FILE, "admin endpoint")
        host, port = parse_host_port(address, what="admin address")
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return cls(host, port, token)

    def call(self, method: str, path: str, body: dict | None = None):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as error:
            raise AdminClientError(
                f"cannot reach the node's admin API at {self.host}:{self.port}: {error}"
            ) from None
        finally:
            connection.close()
        if response.status == 204:
            return None
        try:
            decoded = json.loads(data or b"null")
        except ValueError:
            raise AdminClientError(f"admin API answered {response.status} with non-JSON") from None
        if response.status >= 400:
            message = decoded.get("error") if isinstance(decoded, dict) else decoded
            raise AdminClientError(f"{message} (HTTP {response.status})")
        return decoded


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        raise AdminClientError(
            f"no {what} at {path}: is the server running with this data folder or config?"
        ) from None
