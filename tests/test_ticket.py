"""The ticket codec: pure functions, checked with plain values and hypothesis."""

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, strategies as st

from wire import ticket
from wire.errors import (TicketError, TicketExpired, TicketForged, TicketMalformed,
                            TicketWrongAudience)

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
AES = bytes(range(32))
NOW = 1_800_000_000


def claims(**over) -> ticket.Claims:
    base = dict(ticket_id="t1", issued_at=NOW, expires_at=NOW + 30, audience="gw", tenant="town",
                user="anna", session="s1", target=ticket.Target("127.0.0.1", 5901, "vnc"))
    base.update(over)
    return ticket.Claims(**base)


def test_a_minted_ticket_verifies_to_its_claims():
    c = claims(sealed_secret=ticket.seal_secret(AES, "t1", b"vncpass"))
    assert ticket.verify(KEY.public_key(), ticket.mint(KEY, c), now=NOW + 1, audience="gw") == c


def test_an_expired_ticket_is_refused():
    t = ticket.mint(KEY, claims())
    with pytest.raises(TicketExpired):
        ticket.verify(KEY.public_key(), t, now=NOW + 30, audience="gw")


def test_a_ticket_from_the_future_is_refused_beyond_the_clock_skew():
    t = ticket.mint(KEY, claims())
    ticket.verify(KEY.public_key(), t, now=NOW - ticket.CLOCK_SKEW, audience="gw")
    with pytest.raises(TicketExpired):
        ticket.verify(KEY.public_key(), t, now=NOW - ticket.CLOCK_SKEW - 1, audience="gw")


def test_a_ticket_signed_with_another_key_is_forged():
    with pytest.raises(TicketForged):
        ticket.verify(KEY.public_key(), ticket.mint(OTHER_KEY, claims()), now=NOW, audience="gw")


def test_a_ticket_whose_target_was_changed_is_forged():
    payload, sig = ticket.mint(KEY, claims()).split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["tgt"] = ["10.0.0.1", 22, "vnc"]
    tampered = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(TicketForged):
        ticket.verify(KEY.public_key(), f"{tampered}.{sig}", now=NOW, audience="gw")


def test_a_ticket_for_another_gateway_is_refused():
    with pytest.raises(TicketWrongAudience):
        ticket.verify(KEY.public_key(), ticket.mint(KEY, claims()), now=NOW, audience="other")


@pytest.mark.parametrize("lifetime", [0, -5, ticket.MAX_LIFETIME + 1])
def test_minting_refuses_lifetimes_outside_one_minute(lifetime):
    with pytest.raises(ValueError):
        ticket.mint(KEY, claims(expires_at=NOW + lifetime))


def test_the_sealed_secret_opens_only_for_its_ticket_and_key():
    sealed = ticket.seal_secret(AES, "t1", b"vncpass")
    assert ticket.open_secret(AES, claims(sealed_secret=sealed)) == b"vncpass"
    with pytest.raises(TicketForged):
        ticket.open_secret(AES, claims(ticket_id="t2", sealed_secret=sealed))
    with pytest.raises(TicketForged):
        ticket.open_secret(bytes(32), claims(sealed_secret=sealed))


def test_the_ticket_text_does_not_contain_the_desktop_secret():
    sealed = ticket.seal_secret(AES, "t1", b"vncpass")
    text = ticket.mint(KEY, claims(sealed_secret=sealed))
    decoded = base64.urlsafe_b64decode(text.split(".")[0] + "==")
    assert b"vncpass" not in decoded


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_is_refused_with_a_ticket_error_only(data):
    with pytest.raises(TicketError):
        ticket.verify(KEY.public_key(), data, now=NOW, audience="gw")


@given(st.integers(0, 200), st.integers(0, 255))
def test_flipping_any_byte_of_a_ticket_is_refused(position, value):
    t = ticket.mint(KEY, claims()).encode()
    position %= len(t)
    flipped = t[:position] + bytes([value]) + t[position + 1:]
    if flipped == t:
        return
    with pytest.raises(TicketError):
        ticket.verify(KEY.public_key(), flipped, now=NOW, audience="gw")


def test_an_oversized_ticket_is_malformed():
    with pytest.raises(TicketMalformed):
        ticket.verify(KEY.public_key(), "a" * 5000 + ".b", now=NOW, audience="gw")
