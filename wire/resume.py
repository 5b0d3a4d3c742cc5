"""Resumable sessions: what the gateway keeps so that a dropped websocket can be reattached with
no byte lost or repeated. Pure bookkeeping, no I/O.

Theory of operation
-------------------
Each side counts the stream bytes it has sent and received. The receiver acknowledges what it has
(a text frame ``{"ack": N}`` at least every :data:`ACK_EVERY` bytes); the sender keeps what was sent
but not yet acknowledged in a :class:`ReplayBuffer`. When the websocket drops, the gateway holds the
desktop connection for a grace period (and stops reading from the desktop, so nothing piles up).
The client reattaches with ``{"resume": TOKEN, "offset": RECEIVED}``; the gateway answers
``{"resumed": RECEIVED_FROM_CLIENT}``, resends from its buffer everything after ``RECEIVED``, and the
client resends everything after the gateway's figure. Neither side ever holds more than the
unacknowledged window; a sender whose window is full stops reading from its source.

Control messages are text frames with a JSON object; the stream travels only in binary frames.
"""

from __future__ import annotations

import json
from collections import deque

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


def control(**fields: object) -> str:
    return json.dumps(fields, separators=(",", ":"))


def parse_control(text: str) -> dict:
    """A control message; an empty dict for anything that is not a JSON object."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested past the parser's depth
        return {}
    return value if isinstance(value, dict) else {}
