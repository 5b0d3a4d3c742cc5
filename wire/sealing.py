"""Sealing small secrets with AES-256-GCM, bound to a context: the desktop's password inside a
ticket (bound to the ticket's id) and TOTP secrets at rest (bound to their owner). One format:
a random 96-bit nonce, then the ciphertext with its tag, in unpadded base64url.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE = 12


class SealBroken(ValueError):
    """Not sealed with this key for this context (or not a seal at all)."""


def seal(key: bytes, plaintext: bytes, context: bytes) -> str:
    nonce = os.urandom(NONCE)
    raw = nonce + AESGCM(key).encrypt(nonce, plaintext, context)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unseal(key: bytes, sealed: str, context: bytes) -> bytes:
    """The plaintext of a seal (also of one written in standard base64 with padding, as TOTP
    secrets stored before this format were).

    Raises:
        SealBroken: wrong key, wrong context, tampered or malformed.
    """
    text = sealed.replace("+", "-").replace("/", "_").rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        if len(raw) <= NONCE:
            raise SealBroken("too short")
        return AESGCM(key).decrypt(raw[:NONCE], raw[NONCE:], context)
    except (InvalidTag, ValueError, binascii.Error):
        raise SealBroken("does not open") from None
