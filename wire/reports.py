"""What gateways tell the broker (``POST /api/v1/gateway/...``, authenticated with the report
token): the redemption of a ticket, the end of a session, the sessions a gateway still holds
(and the broker's answer to that: which of them it has ended). One dataclass each, with the one
encoder and the one checking decoder both sides use."""

from __future__ import annotations

from dataclasses import dataclass

from .closes import EndReason
from .ticket import Claims

REDEEM = "/api/v1/gateway/redeem"
DISCONNECT = "/api/v1/gateway/disconnect"
CONNECTED = "/api/v1/gateway/connected"
ALIVE = "/api/v1/gateway/alive"


MAX_BATCH = 400        # logon reports in one batch (well inside the broker's 64 KiB limit)
MAX_DISCONNECTS = 150  # disconnect reports in one batch (the same)
CLIPBOARD_COUNTS = ("in", "in_blocked", "out", "out_blocked")


class BadReport(ValueError):
    """A report body that is not what its path expects (the text says what is wrong)."""


@dataclass(frozen=True)
class Redemption:
    """Record the ticket's single use and its session as connected (204), or refuse (409)."""
    ticket_id: str
    expires_at: int
    tenant: str
    user: str
    session: str

    @classmethod
    def of(cls, claims: Claims) -> "Redemption":
        return cls(claims.ticket_id, claims.expires_at, claims.tenant, claims.user,
                   claims.session)

    def to_json(self) -> dict:
        return {"ticket_id": self.ticket_id, "expires_at": self.expires_at,
                "tenant": self.tenant, "user": self.user, "session": self.session}

    @classmethod
    def from_json(cls, body: object) -> "Redemption":
        body = _object(body)
        if type(body.get("expires_at")) is not int:
            raise BadReport("expires_at missing")
        return cls(_text(body, "ticket_id"), body["expires_at"], _text(body, "tenant"),
                   _text(body, "user"), _text(body, "session"))


@dataclass(frozen=True)
class Redemptions:
    """A gateway's redemptions of the same moment, together: one request, one transaction at the
    broker. The broker answers ``{"results": [...]}``, one of :data:`REDEEMED`, ``"replayed"``
    or ``"unknown_session"`` per redemption, in order."""
    redemptions: tuple[Redemption, ...]

    def to_json(self) -> dict:
        return {"redemptions": [r.to_json() for r in self.redemptions]}

    @classmethod
    def from_json(cls, body: object) -> "Redemptions":
        return cls(_batch(body, "redemptions", Redemption, MAX_REDEMPTIONS))


REDEEMED = "redeemed"
MAX_REDEMPTIONS = 200   # in one batch (well inside the broker's 64 KiB request limit)


@dataclass(frozen=True)
class Disconnect:
    """A viewer of the session left; ``reason`` is None for a word this broker does not know.
    ``ticket`` is the id of the ticket whose redemption made this viewer: only the gateway that
    redeemed it knows it, so a report about another gateway's viewer (or none: a gateway of
    0.2) changes nothing. ``clipboard`` counts the cut texts of a session whose pool restricts
    the clipboard (keys ``in``, ``in_blocked``, ``out``, ``out_blocked``); None where nothing
    was inspected."""
    tenant: str
    session: str
    bytes_up: int
    bytes_down: int
    reason: EndReason | None
    user: str = ""
    clipboard: dict[str, int] | None = None
    ticket: str = ""

    def to_json(self) -> dict:
        body = {"tenant": self.tenant, "session": self.session, "user": self.user,
                "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                "reason": self.reason.value if self.reason else None, "ticket": self.ticket}
        if self.clipboard is not None:
            body["clipboard"] = self.clipboard
        return body

    @classmethod
    def from_json(cls, body: object) -> "Disconnect":
        body = _object(body)
        counts = [body.get(k) if type(body.get(k)) is int else 0 for k in ("bytes_up",
                                                                          "bytes_down")]
        clipboard = body.get("clipboard")
        if clipboard is not None:
            if not isinstance(clipboard, dict):
                raise BadReport("clipboard is not an object")
            clipboard = {k: clipboard[k] for k in CLIPBOARD_COUNTS
                         if type(clipboard.get(k)) is int and clipboard[k] >= 0}
        user, ticket = body.get("user"), body.get("ticket")
        return cls(_text(body, "tenant"), _text(body, "session"), *counts,
                   EndReason.parse(body.get("reason")), user if isinstance(user, str) else "",
                   clipboard, ticket if isinstance(ticket, str) else "")


@dataclass(frozen=True)
class Connected:
    """A session's viewer is through the gateway: what the gateway's part of the logon took."""
    tenant: str
    session: str
    redeem_seconds: float       # from the first message to the redeemed ticket
    desktop_seconds: float      # reaching the desktop and its VNC authentication

    def to_json(self) -> dict:
        return {"tenant": self.tenant, "session": self.session,
                "redeem_seconds": round(self.redeem_seconds, 6),
                "desktop_seconds": round(self.desktop_seconds, 6)}

    @classmethod
    def from_json(cls, body: object) -> "Connected":
        body = _object(body)
        times = [body.get(k) for k in ("redeem_seconds", "desktop_seconds")]
        if not all(type(t) in (int, float) and 0 <= t < 3600 for t in times):
            raise BadReport("redeem_seconds and desktop_seconds must be seconds")
        return cls(_text(body, "tenant"), _text(body, "session"), *times)


@dataclass(frozen=True)
class Logons:
    """The gateway's logon reports of the last moment, together (one request, one transaction
    at the broker, however many viewers came through: a boot storm sends a few, not thousands)."""
    connected: tuple[Connected, ...]

    def to_json(self) -> dict:
        return {"logons": [c.to_json() for c in self.connected]}

    @classmethod
    def from_json(cls, body: object) -> "Logons":
        return cls(_batch(body, "logons", Connected, MAX_BATCH))


@dataclass(frozen=True)
class Disconnects:
    """A gateway's disconnect reports of the same moment, together (one request, one
    transaction for the sessions' states)."""
    disconnects: tuple[Disconnect, ...]

    def to_json(self) -> dict:
        return {"disconnects": [d.to_json() for d in self.disconnects]}

    @classmethod
    def from_json(cls, body: object) -> "Disconnects":
        return cls(_batch(body, "disconnects", Disconnect, MAX_DISCONNECTS))


@dataclass(frozen=True)
class Held:
    """A session a gateway holds, and its proof that a viewer came through this gateway: the id
    of the ticket whose redemption made the viewer (only the gateway shown the ticket knows it)
    or, for a viewer admitted while no broker could record it, that outage ticket itself (the
    broker's own signature names the session)."""
    tenant: str
    session: str
    ticket: str
    outage_ticket: str | None = None

    def to_json(self) -> dict:
        body = {"tenant": self.tenant, "session": self.session, "ticket": self.ticket}
        if self.outage_ticket is not None:
            body["outage_ticket"] = self.outage_ticket
        return body

    @classmethod
    def from_json(cls, body: object) -> "Held":
        body = _object(body)
        proof = body.get("outage_ticket")
        if proof is not None and not isinstance(proof, str):
            raise BadReport("outage_ticket is not text")
        return cls(_text(body, "tenant"), _text(body, "session"), _text(body, "ticket"), proof)


@dataclass(frozen=True)
class Alive:
    """The sessions a gateway holds, attached or awaiting a resume. The broker counts each that
    the gateway proves as connected (a session admitted while no broker could record it
    included) and answers with :class:`Over`."""
    sessions: tuple[Held, ...]

    def to_json(self) -> dict:
        return {"sessions": [h.to_json() for h in self.sessions]}

    @classmethod
    def from_json(cls, body: object) -> "Alive":
        items = _object(body).get("sessions")
        if not isinstance(items, list):
            raise BadReport("sessions must be a list")
        return cls(tuple(Held.from_json(item) for item in items))


@dataclass(frozen=True)
class Over:
    """The broker's answer to :class:`Alive`: those of the sessions that it has ended (or never
    knew). They hold no seat, so the gateway closes them."""
    sessions: tuple[tuple[str, str], ...]

    def to_json(self) -> dict:
        return {"ended": _pairs_to_json(self.sessions)}

    @classmethod
    def from_json(cls, body: object) -> "Over":
        return cls(_pairs(body, "ended"))


def _pairs_to_json(pairs: tuple[tuple[str, str], ...]) -> list[dict]:
    return [{"tenant": t, "session": s} for t, s in pairs]


def _pairs(body: object, key: str) -> tuple[tuple[str, str], ...]:
    items = _object(body).get(key)
    if not isinstance(items, list) or not all(
            isinstance(s, dict) and isinstance(s.get("tenant"), str)
            and isinstance(s.get("session"), str) for s in items):
        raise BadReport(f"{key} must be a list of {{tenant, session}}")
    return tuple((s["tenant"], s["session"]) for s in items)


def _batch(body: object, key: str, kind, most: int) -> tuple:
    """The reports of a batch, each checked by its own decoder."""
    items = _object(body).get(key)
    if not isinstance(items, list) or not 0 < len(items) <= most:
        raise BadReport(f"{key} must be a list of 1 to {most}")
    return tuple(kind.from_json(item) for item in items)


def _object(body: object) -> dict:
    if not isinstance(body, dict):
        raise BadReport("body is not a JSON object")
    return body


def _text(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadReport(f"{name} missing")
    return value
