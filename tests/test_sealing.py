"""Sealing secrets (AES-256-GCM, bound to a context): pure."""

import base64
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, strategies as st

from wire.sealing import SealBroken, seal, unseal

KEY = bytes(range(32))


@given(st.binary(max_size=200), st.binary(max_size=40))
def test_what_is_sealed_opens_with_the_same_key_and_context(plaintext, context):
    assert unseal(KEY, seal(KEY, plaintext, context), context) == plaintext


@pytest.mark.parametrize("key, context", [(bytes(32), b"anna"), (KEY, b"bernd")])
def test_another_key_or_owner_cannot_open_it(key, context):
    with pytest.raises(SealBroken):
        unseal(key, seal(KEY, b"secret", b"anna"), context)


@pytest.mark.parametrize("garbage", ["", "abc", "!!!!", "A" * 10, seal(KEY, b"x", b"a")[:-2]])
def test_garbage_is_refused_as_broken(garbage):
    with pytest.raises(SealBroken):
        unseal(KEY, garbage, b"a")


def test_a_totp_secret_stored_in_the_earlier_format_still_opens():
    """Standard base64 with padding, as stored before one format served both uses."""
    nonce = os.urandom(12)
    old = base64.b64encode(nonce + AESGCM(KEY).encrypt(nonce, b"JBSWY3DPEHPK3PXP",
                                                       b"t/anna")).decode()
    assert unseal(KEY, old, b"t/anna") == b"JBSWY3DPEHPK3PXP"
