"""Resumable sessions: what the gateway keeps so that a dropped websocket can be reattached with
no byte lost or repeated. Pure bookkeeping, no I/O.

Theory of operation
-------------------
Each side counts the stream bytes it has sent and received. The receiver acknowledges what it has
(a text frame ``{"ack": N}`` at least every :data:`ACK_EVERY` bytes); the sender keeps what was sent
but not yet acknowledged in a :class:`ReplayBuffer`. When the websocket drops, the gateway holds the
desktop connection for a grace period (and stops reading from the desktop, so nothing piles up).
The gateway gives the token with its own name, ``{"resume": TOKEN, "gateway": NAME}``; the client
reconnects to the same URL with ``?gateway=NAME`` (:func:`resume_url`), so that a load balancer in
front of several gateways sends it to the one holding the session (README, "Running a fleet").
The client reattaches with ``{"resume": TOKEN, "offset": RECEIVED}``; the gateway answers
``{"resumed": RECEIVED_FROM_CLIENT}``, resends from its buffer everything after ``RECEIVED``, and the
client resends everything after the gateway's figure. Neither side ever holds more than the
unacknowledged window; a sender whose window is full stops reading from its source.

Control messages are text frames with a JSON object (:class:`Offer` or, before an RDP client's
RDCleanPath request, :class:`ResumableRdp`; :class:`Resume`,
:class:`ResumeToken`, :class:`Resumed`, :class:`Ack`, :class:`Ping`/:class:`Pong`, and the
:class:`Notice` a user reads; :func:`encode` and :func:`decode` are the
only way in and out); the stream travels only in binary frames.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ACK_EVERY = 64 * 1024          # bytes received between two acknowledgements


class CannotResume(Exception):
    """The requested offset is no longer (or not yet) in the buffer."""


class ReplayBuffer:
    """Sent bytes not yet acknowledged, as the chunks they were sent in (never copied).

    ``start`` is the stream offset of the first byte held, ``end`` the total bytes sent.
    """

    __slots__ = ("chunks", "start", "end")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.start = 0
        self.end = 0

    @property
    def held(self) -> int:
        return self.end - self.start

    def append(self, data: bytes) -> None:
        self.chunks.append(data)
        self.end += len(data)

    def ack(self, offset: int) -> None:
        """Forget whole chunks the peer has received (offsets outside the stream are ignored)."""
        if not self.start <= offset <= self.end:
            return
        while self.chunks and self.start + len(self.chunks[0]) <= offset:
            self.start += len(self.chunks.popleft())

    def since(self, offset: int) -> list[bytes]:
        """The bytes after ``offset``, to send again.

        Raises:
            CannotResume: ``offset`` lies before what is held or after what was sent.
        """
        if not self.start <= offset <= self.end:
            raise CannotResume(f"offset {offset} outside {self.start}..{self.end}")
        out, position = [], self.start
        for chunk in self.chunks:
            if position + len(chunk) > offset:
                out.append(chunk[max(0, offset - position):])
            position += len(chunk)
        return out


# -- control messages ---------------------------------------------------------------------------
# Text frames carrying one JSON object each; the page's PforteChannel (static/pforte-channel.js)
# speaks the same words, and tests/test_resume_protocol.py checks that both agree.

@dataclass(frozen=True)
class Offer:
    """Client → gateway, first message: a ticket; ``resumable`` asks for a resume token."""
    ticket: str
    resumable: bool = False


@dataclass(frozen=True)
class ResumableRdp:
    """Client → gateway, first message of an RDP client that can resume (the page's and the
    tunnel's): its RDCleanPath request with the ticket follows as the second, and the session
    is resumable. The stream, counted on both sides, begins after the RDCleanPath exchange."""


@dataclass(frozen=True)
class Resume:
    """Client → gateway, first message: reattach the session of ``token``; the client has
    received ``offset`` bytes of it."""
    token: str
    offset: int


@dataclass(frozen=True)
class ResumeToken:
    """Gateway → client: the session is resumable with this token, at the gateway of this name
    (empty from gateways before version 0.2)."""
    token: str
    gateway: str = ""


@dataclass(frozen=True)
class Resumed:
    """Gateway → client: reattached; the gateway has received ``offset`` bytes from the client."""
    offset: int


@dataclass(frozen=True)
class Ack:
    """Either way: the sender has received the stream up to ``offset``."""
    offset: int


@dataclass(frozen=True)
class Ping:
    """Client → gateway: answer with :class:`Pong` carrying the same ``mark`` (the client's clock,
    so that it measures the round trip through the gateway; the page shows it to the user)."""
    mark: int


@dataclass(frozen=True)
class Pong:
    """Gateway → client: the answer to a :class:`Ping`."""
    mark: int


@dataclass(frozen=True)
class Notice:
    """Gateway → client: a message for the user, from the broker (a drain's warning or an admin's
    words); ``deadline``: when the session will be logged off (Unix seconds), 0 for none. The
    client shows it in the user's language around the text."""
    text: str
    deadline: int = 0


MAX_NOTICE = 1000   # characters of a notice's text


Message = Offer | ResumableRdp | Resume | ResumeToken | Resumed | Ack | Ping | Pong | Notice


def encode(message: Message) -> str:
    """The text frame of a control message."""
    if isinstance(message, Offer):
        fields: dict[str, object] = {"ticket": message.ticket, "resumable": message.resumable}
    elif isinstance(message, ResumableRdp):
        fields = {"resumable": True}
    elif isinstance(message, Resume):
        fields = {"resume": message.token, "offset": message.offset}
    elif isinstance(message, ResumeToken):
        fields = {"resume": message.token, "gateway": message.gateway}
    elif isinstance(message, Resumed):
        fields = {"resumed": message.offset}
    elif isinstance(message, Ping):
        fields = {"ping": message.mark}
    elif isinstance(message, Pong):
        fields = {"pong": message.mark}
    elif isinstance(message, Notice):
        fields = {"notice": message.text, "deadline": message.deadline}
    else:
        fields = {"ack": message.offset}
    return json.dumps(fields, separators=(",", ":"))


def decode(text: str) -> Message | None:
    """The control message a text frame carries; None for anything that is none (malformed
    JSON, a JSON nested past the parser's depth, wrong types)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    if "ticket" in value:
        ticket = value["ticket"]
        return Offer(ticket, value.get("resumable") is True) if isinstance(ticket, str) else None
    if "resumable" in value:
        return ResumableRdp() if value["resumable"] is True and len(value) == 1 else None
    if "resume" in value:
        token, offset = value["resume"], value.get("offset")
        if not isinstance(token, str):
            return None
        if "offset" not in value:
            gateway = value.get("gateway", "")
            return ResumeToken(token, gateway) if isinstance(gateway, str) else None
        return Resume(token, offset) if _offset(offset) else None
    if "notice" in value:
        text, deadline = value["notice"], value.get("deadline", 0)
        ok = isinstance(text, str) and len(text) <= MAX_NOTICE and _offset(deadline)
        return Notice(text, deadline) if ok else None
    for key, kind in (("resumed", Resumed), ("ack", Ack), ("ping", Ping), ("pong", Pong)):
        if key in value:
            return kind(value[key]) if _offset(value[key]) else None
    return None


def resume_url(url: str, gateway: str) -> str:
    """Where a client reattaches: the URL it connected to, naming the gateway that holds it."""
    if not gateway:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "gateway"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("gateway", gateway)])))


def _offset(value: object) -> bool:
    return type(value) is int and value >= 0


class AckClock:
    """When a receiver acknowledges: after every :data:`ACK_EVERY` bytes received."""

    __slots__ = ("received", "_acked")

    def __init__(self, received: int = 0) -> None:
        self.received = received
        self._acked = received

    def count(self, n: int) -> Ack | None:
        """Count ``n`` bytes received; the acknowledgement to send now, if one is due."""
        self.received += n
        if self.received - self._acked < ACK_EVERY:
            return None
        self._acked = self.received
        return Ack(self.received)
