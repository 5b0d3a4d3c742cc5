"""The reconnect pass (pure) and the gateway's once-only admission of outage tickets."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.reconnect_pass import ReconnectPass, issue, login_hash, open_pass
from gateway.admission import OutageTickets
from wire import sealing, ticket
from wire.ticket import Claims, Target

KEY = os.urandom(32)
PASS = ReconnectPass(login_hash=login_hash("tok-anna"), csrf="c", tenant="t", user="anna",
                     pool="buero", session="s1", host="desk1", port=5901, expires_at=1000)


def test_a_pass_opens_for_its_login_and_pool_until_it_expires():
    sealed = issue(KEY, PASS)
    assert open_pass(KEY, sealed, "tok-anna", pool="buero", now=999) == PASS
    assert open_pass(KEY, sealed, "tok-anna", pool="buero", now=1000) is None     # expired
    assert open_pass(KEY, sealed, "tok-bernd", pool="buero", now=0) is None       # another login
    assert open_pass(KEY, sealed, "tok-anna", pool="labor", now=0) is None        # another pool
    assert open_pass(os.urandom(32), sealed, "tok-anna", pool="buero", now=0) is None


def test_nothing_else_opens_as_a_pass():
    other_purpose = sealing.seal(KEY, b'{"login_hash": "x"}', b"pforte totp")
    for sealed in ("", "x", "A" * 5000, other_purpose, issue(KEY, PASS)[:-2], None, 7,
                   sealing.seal(KEY, b"[]", b"pforte reconnect pass v1"),
                   sealing.seal(KEY, b'{"user": "anna"}', b"pforte reconnect pass v1")):
        assert open_pass(KEY, sealed, "tok-anna", pool="buero", now=0) is None


def claims(ticket_id: str, outage: bool = True, expires_at: int = 100) -> Claims:
    return Claims(ticket_id=ticket_id, issued_at=expires_at - 15, expires_at=expires_at,
                  audience="gw", tenant="t", user="anna", session="s1",
                  target=Target("10.0.0.1", 5901, "vnc"), outage=outage)


def test_a_gateway_admits_an_outage_ticket_once_and_no_other_ticket():
    tickets = OutageTickets()
    assert tickets.admit_once(claims("a"), now=90)
    assert not tickets.admit_once(claims("a"), now=91)                 # replayed
    assert not tickets.admit_once(claims("b", outage=False), now=91)   # an ordinary ticket
    assert tickets.admit_once(claims("c"), now=92)
    assert tickets.admit_once(claims("d", expires_at=200), now=150)    # a, c forgotten: expired
    assert len(tickets._seen) == 1


def test_the_outage_mark_is_signed_into_the_ticket():
    key = Ed25519PrivateKey.generate()
    for outage in (True, False):
        minted = ticket.mint(key, claims("f", outage=outage))
        assert ticket.verify(key.public_key(), minted, now=90, audience="gw").outage is outage
