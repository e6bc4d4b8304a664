"""Access keys' secrets sealed under rpc_secret: round trip, binding, merge order."""

from __future__ import annotations

import pytest

from granary.model.buckets import KeyParams
from granary.model.key_secrets import SecretSealer, SecretUnreadable, is_sealed, open_secret
from granary.util.crdt import Lww, LwwMap

KEY_ID = "GK" + "0" * 24
SECRET = "f" * 64  # the largest clear secret there is: a sealed one must still win a merge


def params(secret: str) -> KeyParams:
    return KeyParams(secret, Lww(1, "k"), Lww(1, False), LwwMap())


def test_sealed_secret_opens_only_with_the_same_rpc_secret_and_key_id():
    sealer = SecretSealer(b"\x01" * 32)
    sealed = sealer.seal(KEY_ID, SECRET)
    assert is_sealed(sealed) and SECRET not in sealed
    assert sealer.open(KEY_ID, sealed) == SECRET
    with pytest.raises(SecretUnreadable):
        SecretSealer(b"\x02" * 32).open(KEY_ID, sealed)
    with pytest.raises(SecretUnreadable):
        sealer.open("GK" + "1" * 24, sealed)


def test_clear_secrets_of_older_versions_still_open():
    assert SecretSealer(b"\x01" * 32).open(KEY_ID, SECRET) == SECRET
    assert open_secret(None, KEY_ID, SECRET) == SECRET
    with pytest.raises(SecretUnreadable, match="no rpc_secret"):
        open_secret(None, KEY_ID, SecretSealer(b"\x01" * 32).seal(KEY_ID, SECRET))


def test_merge_keeps_a_sealed_secret_and_converges():
    sealer = SecretSealer(b"\x01" * 32)
    one, other = sealer.seal(KEY_ID, SECRET), sealer.seal(KEY_ID, SECRET)
    assert params(SECRET).merge(params(one)).secret == one
    assert params(one).merge(params(SECRET)).secret == one
    assert params(one).merge(params(other)).secret == params(other).merge(params(one)).secret
