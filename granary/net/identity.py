"""This node's identity: an Ed25519 key pair kept in the metadata directory.

The node id is the raw 32-byte public key; peers write it in hex.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from granary.util.files import write_atomic

KEY_FILE = "node_key"


def load_or_create_identity(metadata_dir: Path) -> Ed25519PrivateKey:
    """Read the node key, creating it (readable by the owner only) on first start."""
    path = metadata_dir / KEY_FILE
    if path.exists():
        stored = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(stored, Ed25519PrivateKey):
            raise ValueError(f"{path} holds no Ed25519 key")
        return stored
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    metadata_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, pem, private=True)
    return key


def node_id(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
