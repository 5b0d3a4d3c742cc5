"""The connection ticket: pure functions shared by the broker (mint) and the gateway (verify).

Theory of operation
-------------------
A ticket is ``base64url(payload) "." base64url(signature)``. The payload is compact JSON with the
claims below; the signature is Ed25519 over the payload bytes, made with the broker's private key.
Gateways hold only the public key, so a gateway (or anyone who reads its disk) cannot mint tickets.

The ticket names its target, so the gateway never lets a client choose where to connect. A desktop
secret (the VNC password the gateway uses for the RFB handshake) travels inside the ticket only
encrypted with AES-256-GCM under a key that broker and gateway share; the user who holds the ticket
cannot read it. Single use is not a property of the codec: the gateway redeems the ticket id with
the broker, which records it atomically (see ``gateway.server``).

No function here reads a clock or a file: pass ``now`` and the keys.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import sealing
from .errors import TicketExpired, TicketForged, TicketMalformed, TicketWrongAudience

VERSION = 1
MAX_LIFETIME = 60          # seconds: the contract says a ticket lives at most a minute
MAX_TICKET_LENGTH = 4096   # bytes: anything longer is not one of ours
CLOCK_SKEW = 5             # seconds a ticket may appear to come from the future
# Which way text may cross between the user's computer and the desktop: both ways, only into the
# desktop, only out of it, or not at all (a pool's setting; the gateway enforces it).
CLIPBOARD_POLICIES = ("both", "in", "out", "none")
# The keyboard layouts an RDP pool can name, as Windows identifies them (the ticket's ``kbd``).
KEYBOARD_LAYOUTS = {"de": 0x0407, "de-ch": 0x0807, "de-at": 0x0C07, "en-us": 0x0409,
                    "en-gb": 0x0809, "fr": 0x040C, "it": 0x0410, "nl": 0x0413}


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    protocol: str  # "vnc", "rdp" or "spice"


@dataclass(frozen=True)
class Claims:
    ticket_id: str
    issued_at: int
    expires_at: int
    audience: str
    tenant: str
    user: str
    session: str
    target: Target
    sealed_secret: str | None = None  # AES-GCM sealed desktop secret, see seal_secret()
    idle_after: int = 0               # seconds without traffic before the gateway ends it; 0: never
    clipboard: str = "both"           # the pool's clipboard policy, one of CLIPBOARD_POLICIES
    outage: bool = False              # minted from a reconnect pass while the database was down:
                                      # a gateway may admit it once without the broker's record
    keyboard: int = 0                 # RDP: the Windows keyboard layout to apply; 0: the host's
    channels: tuple[str, ...] = ()    # RDP: the switched channels the pool allows besides the
                                      # clipboard ("drives", "printers", "audio")
    certificate: str | None = None    # RDP: SHA-256 (hex) of the certificate the host must show


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_ticket_id() -> str:
    return _b64e(os.urandom(16))


def seal_secret(key: bytes, ticket_id: str, secret: bytes) -> str:
    """Encrypt a desktop secret for the gateway, bound to one ticket id."""
    return sealing.seal(key, secret, ticket_id.encode())


def open_secret(key: bytes, claims: Claims) -> bytes | None:
    """Decrypt the ticket's desktop secret; None when it carries none.

    Raises:
        TicketForged: the sealed secret was not made with this key for this ticket.
    """
    if claims.sealed_secret is None:
        return None
    try:
        return sealing.unseal(key, claims.sealed_secret, claims.ticket_id.encode())
    except sealing.SealBroken:
        raise TicketForged("sealed secret does not open") from None


def logon_secret(user: str, domain: str, password: str) -> bytes:
    """The secret an RDP ticket seals: the Windows logon the gateway fills in for the user."""
    return json.dumps({"u": user, "d": domain, "p": password}, separators=(",", ":")).encode()


def open_logon(key: bytes, claims: Claims) -> tuple[str, str, str] | None:
    """The user, domain and password an RDP ticket's sealed secret holds; None when it carries
    none (the host then asks the user itself).

    Raises:
        TicketForged: the sealed secret does not open, or holds no logon.
    """
    secret = open_secret(key, claims)
    if secret is None:
        return None
    try:
        d = json.loads(secret)
        logon = d["u"], d["d"], d["p"]
    except (ValueError, KeyError, TypeError):
        raise TicketForged("sealed secret holds no logon") from None
    if not all(isinstance(x, str) for x in logon):
        raise TicketForged("sealed secret holds no logon")
    return logon


def mint(private_key: Ed25519PrivateKey, claims: Claims) -> str:
    """Sign claims into a ticket string.

    Raises:
        ValueError: the claimed lifetime exceeds MAX_LIFETIME or is not positive.
    """
    lifetime = claims.expires_at - claims.issued_at
    if not 0 < lifetime <= MAX_LIFETIME:
        raise ValueError(f"ticket lifetime must be 1..{MAX_LIFETIME} s, got {lifetime}")
    body = {
        "v": VERSION, "jti": claims.ticket_id, "iat": claims.issued_at, "exp": claims.expires_at,
        "aud": claims.audience, "ten": claims.tenant, "usr": claims.user, "ses": claims.session,
        "tgt": [claims.target.host, claims.target.port, claims.target.protocol],
    }
    if claims.sealed_secret is not None:
        body["sec"] = claims.sealed_secret
    if claims.idle_after:
        body["idl"] = claims.idle_after
    if claims.outage:
        body["out"] = 1
    if claims.clipboard != "both":
        body["clp"] = claims.clipboard
    if claims.keyboard:
        body["kbd"] = claims.keyboard
    if claims.channels:
        body["chn"] = list(claims.channels)
    if claims.certificate is not None:
        body["crt"] = claims.certificate
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64e(payload)}.{_b64e(private_key.sign(payload))}"


def verify(public_key: Ed25519PublicKey, ticket: str | bytes, *, now: float, audience: str) -> Claims:
    """Check a ticket's form, signature, lifetime and audience.

    Returns:
        The claims of a ticket that may be redeemed (redemption itself is the caller's next step).

    Raises:
        TicketMalformed, TicketForged, TicketExpired, TicketWrongAudience.
    """
    claims = signed_claims(public_key, ticket, audience=audience)
    if not (claims.issued_at - CLOCK_SKEW <= now < claims.expires_at) or (
            claims.expires_at - claims.issued_at > MAX_LIFETIME):
        raise TicketExpired("outside its lifetime")
    return claims


def signed_claims(public_key: Ed25519PublicKey, ticket: str | bytes, *,
                  audience: str) -> Claims:
    """A ticket's claims when its form, signature and audience are right, at any time: what
    the broker issued, as evidence (a gateway shows an outage ticket it admitted), never as
    leave to redeem (that is :func:`verify`).

    Raises:
        TicketMalformed, TicketForged, TicketWrongAudience.
    """
    if isinstance(ticket, bytes):
        try:
            ticket = ticket.decode("ascii")
        except UnicodeDecodeError:
            raise TicketMalformed("not ASCII") from None
    if not isinstance(ticket, str):  # e.g. {"ticket": 123} in a first message
        raise TicketMalformed("not text")
    if len(ticket) > MAX_TICKET_LENGTH or ticket.count(".") != 1:
        raise TicketMalformed("wrong shape")
    payload_b64, sig_b64 = ticket.split(".")
    try:
        payload, signature = _b64d(payload_b64), _b64d(sig_b64)
    except (binascii.Error, ValueError):
        raise TicketMalformed("not base64url") from None
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        raise TicketForged("signature does not verify") from None
    claims = _claims(payload)
    if claims.audience != audience:
        raise TicketWrongAudience(f"minted for {claims.audience!r}")
    return claims


def _claims(payload: bytes) -> Claims:
    # Signed by our key, so well-formed unless the key itself was misused; checked all the same.
    try:
        d = json.loads(payload)
        host, port, protocol = d["tgt"]
        claims = Claims(
            ticket_id=d["jti"], issued_at=d["iat"], expires_at=d["exp"], audience=d["aud"],
            tenant=d["ten"], user=d["usr"], session=d["ses"],
            target=Target(host, port, protocol), sealed_secret=d.get("sec"),
            idle_after=d.get("idl", 0), outage=d.get("out") == 1,
            clipboard=d.get("clp", "both"), keyboard=d.get("kbd", 0),
            channels=tuple(d.get("chn", ())), certificate=d.get("crt"),
        )
        ok = (d["v"] == VERSION and all(isinstance(x, str) for x in (
            claims.ticket_id, claims.audience, claims.tenant, claims.user, claims.session, host,
            protocol)) and all(type(x) is int for x in (port, claims.issued_at, claims.expires_at,
                                                         claims.idle_after, claims.keyboard))
            and all(isinstance(x, str) for x in claims.channels)
            and isinstance(claims.certificate, (str, type(None)))
            and 0 < port < 65536 and claims.clipboard in CLIPBOARD_POLICIES)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise TicketMalformed("claims do not parse")
    return claims
