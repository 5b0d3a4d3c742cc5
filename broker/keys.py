"""Key material for a Pforte installation, generated once into a directory.

=====================  ===========================================  ==========================
file                   what                                         who holds it
=====================  ===========================================  ==========================
ticket-signing.pem     Ed25519 private key that signs tickets       brokers only
ticket-verify.pem      its public key                               gateways
credential.key         AES-256 key sealing desktop secrets          brokers and gateways
totp.key               AES-256 key sealing TOTP secrets at rest     brokers only
report.token           token gateways use for their reports         brokers and gateways
=====================  ===========================================  ==========================

Existing files are never overwritten: rotating a key is a deliberate act.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def generate_keys(directory: Path) -> list[Path]:
    """Create whatever key files are missing; returns the files it created."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = []
    signing = directory / "ticket-signing.pem"
    if not signing.exists():
        key = Ed25519PrivateKey.generate()
        _write(signing, key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        created.append(signing)
    verify = directory / "ticket-verify.pem"
    if not verify.exists():
        key = serialization.load_pem_private_key(signing.read_bytes(), password=None)
        _write(verify, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
        created.append(verify)
    for name in ("credential.key", "totp.key"):
        path = directory / name
        if not path.exists():
            _write(path, secrets.token_hex(32).encode() + b"\n")
            created.append(path)
    token = directory / "report.token"
    if not token.exists():
        _write(token, secrets.token_urlsafe(32).encode() + b"\n")
        created.append(token)
    return created
