"""TLS 1.3 between nodes, gated by the cluster's rpc_secret.

Every node derives the same certificate authority from rpc_secret (HKDF-SHA256
to an Ed25519 seed; Ed25519 signatures are deterministic, so the CA
certificate is byte-identical everywhere) and issues itself a certificate whose
subject public key is its own Ed25519 node key. The TLS 1.3 CertificateVerify
is then a signature by the node key, so a completed mutual handshake proves
both that the peer holds the secret (its certificate chains to the derived CA)
and which node it is (the certificate's public key is the node id).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from granary.net.errors import HandshakeError
from granary.net.identity import node_id

SECRET_LENGTH = 32
CA_KEY_INFO = b"granary/net/tls ca key v1"
CA_SERIAL = 1
# Fixed validity: certificates are re-derived at every start and the CA is
# replaced by rotating rpc_secret, so expiry would only add clock-skew failures.
NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
NODE_URI_PREFIX = "urn:granary:node:"


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def derive_ca(rpc_secret: bytes) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """The cluster CA key and self-signed certificate, identical on every node."""
    if len(rpc_secret) != SECRET_LENGTH:
        raise ValueError(f"rpc_secret must be {SECRET_LENGTH} bytes, got {len(rpc_secret)}")
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=CA_KEY_INFO).derive(
        rpc_secret
    )
    key = Ed25519PrivateKey.from_private_bytes(seed)
    fingerprint = raw_public_key(key.public_key())[:8].hex()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"granary cluster CA {fingerprint}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(CA_SERIAL)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, None)
    )
    return key, cert


def issue_node_certificate(
    ca_key: Ed25519PrivateKey, ca_cert: x509.Certificate, node_key: Ed25519PrivateKey
) -> x509.Certificate:
    """A certificate for the node key, naming the node id (hex) in CN and SAN."""
    ident = node_id(node_key)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ident.hex())]))
        .issuer_name(ca_cert.subject)
        .public_key(node_key.public_key())
        .serial_number(int.from_bytes(ident[:16]) >> 1 or 1)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(NODE_URI_PREFIX + ident.hex())]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, None)
    )


@dataclass(frozen=True)
class ClusterTls:
    """The SSL contexts of one node, and the check of a peer's identity."""

    ca_cert: x509.Certificate
    server: ssl.SSLContext
    client: ssl.SSLContext

    def peer_id(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes:
        """The node id proven by the peer in a completed handshake."""
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None:
            raise HandshakeError("the peer presented no certificate")
        cert = x509.load_der_x509_certificate(der)
        try:
            # The ssl layer already verified the chain; this pins it to our CA directly.
            cert.verify_directly_issued_by(self.ca_cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise HandshakeError(f"certificate not issued by the cluster CA: {exc}") from None
        key = cert.public_key()
        if not isinstance(key, Ed25519PublicKey):
            raise HandshakeError("the peer's certificate key is not an Ed25519 node key")
        ident = raw_public_key(key)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [name.value for name in names] != [ident.hex()]:
            raise HandshakeError("the peer's certificate names another node id than its key")
        return ident


def cluster_tls(node_key: Ed25519PrivateKey, rpc_secret: bytes) -> ClusterTls:
    """Contexts for TLS 1.3 only, mutual authentication, trusting only the derived CA."""
    ca_key, ca_cert = derive_ca(rpc_secret)
    cert = issue_node_certificate(ca_key, ca_cert, node_key)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = node_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    contexts = []
    for protocol in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
        context = ssl.SSLContext(protocol)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.maximum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False  # the node id is checked instead, by peer_id()
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=ca_pem)
        _load_chain(context, cert_pem, key_pem)
        contexts.append(context)
    server, client = contexts
    server.num_tickets = 0  # connections are long-lived; resumption is never used
    return ClusterTls(ca_cert=ca_cert, server=server, client=client)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _load_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """`ssl` loads keys only from paths: give it in-memory files, never a disk copy."""
    with _memory_file(cert_pem) as cert_path, _memory_file(key_pem) as key_path:
        context.load_cert_chain(cert_path, key_path)


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("granary-tls")
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as folder:  # created mode 0700
        path = Path(folder) / "pem"
        path.write_bytes(data)
        yield str(path)
