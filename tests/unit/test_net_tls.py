"""The cluster CA derived from rpc_secret, node certificates, and the peer-id check."""

from __future__ import annotations

import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from granary.net.errors import HandshakeError
from granary.net.identity import node_id
from granary.net.tls import cluster_tls, derive_ca, issue_node_certificate

SECRET = bytes(range(32))


class FakeSsl:
    """Stands in for an SSLObject after a handshake: only the peer certificate."""

    def __init__(self, cert: x509.Certificate | None) -> None:
        self.cert = cert

    def getpeercert(self, binary_form: bool) -> bytes | None:
        assert binary_form
        return None if self.cert is None else self.cert.public_bytes(serialization.Encoding.DER)


def test_ca_is_identical_for_one_secret_and_differs_for_another() -> None:
    key_a, cert_a = derive_ca(SECRET)
    key_b, cert_b = derive_ca(bytes(SECRET))
    _, other = derive_ca(bytes(32))
    der = serialization.Encoding.DER
    assert cert_a.public_bytes(der) == cert_b.public_bytes(der)
    assert key_a.private_bytes_raw() == key_b.private_bytes_raw()
    assert other.public_key() != cert_a.public_key()
    assert cert_a.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_secret_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        derive_ca(b"short")


def test_node_certificate_carries_the_node_key_and_id() -> None:
    ca_key, ca_cert = derive_ca(SECRET)
    node_key = Ed25519PrivateKey.generate()
    ident = node_id(node_key)
    cert = issue_node_certificate(ca_key, ca_cert, node_key)
    cert.verify_directly_issued_by(ca_cert)
    assert cert.public_key() == node_key.public_key()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ident.hex()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:granary:node:{ident.hex()}"
    ]


def test_contexts_are_tls13_only_with_mutual_authentication() -> None:
    tls = cluster_tls(Ed25519PrivateKey.generate(), SECRET)
    for context in (tls.server, tls.client):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert context.maximum_version == ssl.TLSVersion.TLSv1_3
        assert context.verify_mode == ssl.CERT_REQUIRED
    assert not tls.client.check_hostname


def test_peer_id_is_the_certificate_key() -> None:
    tls = cluster_tls(Ed25519PrivateKey.generate(), SECRET)
    ca_key, ca_cert = derive_ca(SECRET)
    peer_key = Ed25519PrivateKey.generate()
    cert = issue_node_certificate(ca_key, ca_cert, peer_key)
    assert tls.peer_id(FakeSsl(cert)) == node_id(peer_key)


def test_peer_id_refuses_another_cluster_and_missing_certificates() -> None:
    tls = cluster_tls(Ed25519PrivateKey.generate(), SECRET)
    other_key, other_ca = derive_ca(bytes(32))
    foreign = issue_node_certificate(other_key, other_ca, Ed25519PrivateKey.generate())
    with pytest.raises(HandshakeError, match="cluster CA"):
        tls.peer_id(FakeSsl(foreign))
    with pytest.raises(HandshakeError, match="no certificate"):
        tls.peer_id(FakeSsl(None))


def test_peer_id_refuses_a_name_that_is_not_the_key() -> None:
    tls = cluster_tls(Ed25519PrivateKey.generate(), SECRET)
    ca_key, ca_cert = derive_ca(SECRET)
    honest = issue_node_certificate(ca_key, ca_cert, Ed25519PrivateKey.generate())
    lying = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "00" * 32)]))
        .issuer_name(ca_cert.subject)
        .public_key(honest.public_key())
        .serial_number(7)
        .not_valid_before(honest.not_valid_before_utc)
        .not_valid_after(honest.not_valid_after_utc)
        .sign(ca_key, None)
    )
    with pytest.raises(HandshakeError, match="another node id"):
        tls.peer_id(FakeSsl(lying))
