"""How a gateway session ends: the websocket close codes clients see, and the end reasons the
gateway reports to the broker. One table each; the README's close-code table is this one.
"""

from __future__ import annotations

import enum


class Close(enum.Enum):
    """Every way the gateway closes a websocket: (code, reason). The member's name, in lower
    case, is the short word for logs and metrics."""

    MALFORMED = (4400, "ticket malformed")
    FORGED = (4401, "ticket invalid")
    EXPIRED = (4401, "ticket expired")
    AUDIENCE = (4401, "ticket not for this gateway")
    TARGET = (4403, "target not allowed")
    PROTOCOL = (4415, "the desktop takes another kind of viewer")
    TIMEOUT = (4408, "no ticket in time")
    VIEWER_TIMEOUT = (4408, "viewer did not complete the handshake")
    REPLAYED = (4409, "ticket already used")
    RESUME = (4410, "session cannot be resumed")
    POLICY = (4406, "stream not allowed by the pool's policy")
    BUSY = (4429, "too many connections")
    DESKTOP = (4502, "desktop unavailable")
    BROKER = (4503, "broker unavailable")
    IDLE = (4000, "idle timeout")
    SUPERSEDED = (4001, "superseded by a resumed connection")
    LOGOFF = (4003, "logged off")
    DRAINING = (1013, "gateway draining, try again")
    SHUTDOWN = (1001, "gateway shutting down")
    INTERNAL = (1011, "internal error")
    VIEWER_PROTOCOL = (1002, "viewer did not complete the handshake")
    ENDED = (1000, "session ended")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def reason(self) -> str:
        return self.value[1]

    @property
    def word(self) -> str:
        return self.name.lower()


# Close codes that end a session on purpose (the viewer closed, idle timeout, logged off): a
# client does not reconnect by itself after them, unlike after a drop or a gateway shutting down.
ENDED_ON_PURPOSE = frozenset({1000, Close.IDLE.code, Close.LOGOFF.code})


class EndReason(str, enum.Enum):
    """Why a relayed session ended, as the gateway reports it to the broker."""

    CLIENT_CLOSED = "client closed"            # the viewer said goodbye
    CLIENT_LOST = "client lost"                # the connection broke without a close frame
    CLIENT_FAILED = "client failed"
    TEXT_FRAME = "text frame"                  # a stream that is not resumable takes no text
    POLICY = "policy"                          # the clipboard guard could not read the stream
    DESKTOP_CLOSED = "desktop closed"
    DESKTOP_UNAVAILABLE = "desktop unavailable"
    VIEWER_TIMEOUT = "viewer handshake timeout"
    VIEWER_LEFT = "viewer left in the handshake"
    IDLE = "idle timeout"                      # the broker logs such a session off
    LOGGED_OFF = "logged off"
    NOT_RESUMED = "not resumed in time"
    RESUME_IMPOSSIBLE = "resume impossible"
    SHUTDOWN = "gateway shutting down"

    @classmethod
    def parse(cls, text: object) -> "EndReason | None":
        """The reason a report names; None for anything else (a newer gateway's word)."""
        try:
            return cls(text)
        except ValueError:
            return None
