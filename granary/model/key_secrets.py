"""Access keys' secrets encrypted at rest, under a key derived from `rpc_secret`.

The keys table is a full copy on every node, so its LMDB file holds every S3
secret. Each secret is stored sealed with AES-256-GCM under a key derived
(HKDF-SHA256) from the cluster's `rpc_secret`, which every node has and which
comes from the config, a file or the environment, not from `metadata_dir`: a
copy of the metadata folder (a backup, a stolen disk) gives no secret.

A sealed secret is ``~gcm1:`` followed by the URL-safe base64 of a random
12-byte nonce and the ciphertext; the key id is the associated data, so a
sealed secret cannot be moved onto another key. The prefix sorts after every
character of a clear secret (hex digits): the key row's merge keeps the
larger secret, so a sealed copy wins over a clear one it meets, and two
nodes that sealed the same clear secret (different nonces) converge on one.
"""

from __future__ import annotations

import base64
import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEALED_PREFIX = "~gcm1:"
_NONCE = 12
_INFO = b"granary access key secrets v1"


class SecretUnreadable(Exception):
    """A sealed secret that this node cannot open (no or another rpc_secret)."""


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


class SecretSealer:
    """Seals and opens access keys' secrets with the cluster's derived key."""

    def __init__(self, rpc_secret: bytes) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            rpc_secret
        )
        self._aead = AESGCM(derived)

    def seal(self, key_id: str, secret: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, secret.encode(), key_id.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one sealer per node, kept for its life
    def open(self, key_id: str, stored: str) -> str:
        """The clear secret of a stored value, sealed or (from before 0.4) clear."""
        if not is_sealed(stored):
            return stored
        try:
            raw = base64.urlsafe_b64decode(stored[len(SEALED_PREFIX) :])
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], key_id.encode()).decode()
        except (InvalidTag, ValueError):
            raise SecretUnreadable(
                f"the secret of access key {key_id} was sealed under another rpc_secret"
            ) from None


def open_secret(sealer: SecretSealer | None, key_id: str, stored: str) -> str:
    """`stored` opened by `sealer`; a node without one can read clear secrets only."""
    if sealer is not None:
        return sealer.open(key_id, stored)
    if is_sealed(stored):
        raise SecretUnreadable(
            f"the secret of access key {key_id} is encrypted and no rpc_secret is configured"
        )
    return stored
