"""TLS for actor links that cross nodes: one self-signed certificate per app.

The driver makes it when it deploys the app and keeps it beside the link
secret; CallActors serve it, connection actors pin it (they trust that one
certificate and nothing else), so a peer without the app's key cannot pose as
a CallActor even before the link's own handshake, and nothing on the wire
between nodes is readable. Links on one node use a private Unix socket instead.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import ssl
import tempfile

__all__ = ["SERVER_NAME", "client_context", "generate_identity", "server_context"]

#: The name in the certificate; clients check it (node addresses vary, the key does not).
SERVER_NAME = "relay-actors-link"


def generate_identity(days: int = 3650) -> dict[str, str]:
    """A fresh key and self-signed certificate, as PEM text: ``{"cert": ..., "key": ...}``."""
    # Imported here: only the driver makes an identity, and x509 costs every actor
    # process ~50 ms of start-up (a restarted connection actor serves later by that much).
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {"cert": cert.public_bytes(serialization.Encoding.PEM).decode(), "key": key_pem.decode()}


def server_context(identity: dict[str, str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # load_cert_chain reads files only: a private temporary file, removed at once.
    fd, path = tempfile.mkstemp(prefix="rl-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(identity["key"])
            fh.write(identity["cert"])
        ctx.load_cert_chain(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return ctx


def client_context(identity: dict[str, str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=identity["cert"])
    ctx.check_hostname = True
    return ctx
