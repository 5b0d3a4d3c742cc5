"""The viewer's websocket: the gateway owns the client's socket from its first byte.

Theory of operation
-------------------
The connection's first protocol is :class:`gateway.doorway.Doorway` (the request head);
:class:`ViewerLink` is then the websocket, one small object on the socket (``__slots__``, no task
of its own): the client's frames read by a :class:`~gateway.frames.FrameReader` (bytes in,
events out), a frame writer (a header and its payload in one ``writelines``), pings answered,
and the closing handshake — every close the gateway makes carries a close code. Its
:class:`Mode`:

* *messages* (the ticket, the RFB greeting, a resume carried to a sibling worker): complete
  messages queue and ``await receive()`` takes them (a :class:`Message`, or at the end how the
  websocket :class:`Ended`);
* *relaying* (:meth:`ViewerLink.attach`): each message goes straight to a sink (the session's
  :class:`~gateway.relay.DesktopLink`), with no task and no queue in between; a binary message's
  bytes go on as they arrive, unmasked in place (a large frame in pieces: the desktop reads a
  byte stream, and nothing waits for or copies a whole message);
* *done*: the relay ended, or the session went on without this link; what arrives is dropped.

Liveness is one timer for the whole gateway: :meth:`ViewerLink.beat` is called every
``HEARTBEAT / 2`` seconds; a viewer heard from in that time is fine, one that was not is pinged,
and one that did not answer by the next beat is dropped without a close frame (the connection is
dead: a resumable session is held for its resume). A viewer whose write buffer drained has read,
and so counts as heard.

What one connection can cost is bounded, before and after the ticket, whatever the viewer sends:
reading stops while the viewer's own write buffer is over :data:`WRITE_BUFFER_HIGH` (a viewer
that sends and never reads is not answered into the gateway's memory), while the desktop's is
full (the relay), and while :data:`INBOX_MESSAGES` complete messages wait to be taken; a ping
waiting behind a full write buffer is answered once, with the latest payload; a message has at
most ``max_message`` bytes in at most :data:`~gateway.frames.MAX_FRAGMENTS` frames; more than
:data:`MAX_CONTROLS` pings and pongs between two beats fail the connection (1008). A viewer
that breaks the protocol is failed at once (RFC 6455 §7.1.7): our close frame, then the TCP
connection closed without waiting for an answer, and nothing it sends after that is read.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import struct
from dataclasses import dataclass
from typing import Callable, Protocol

from wire.closes import Close

from .frames import BINARY as _BINARY
from .frames import CLOSE as _CLOSE
from .frames import PING as _PING
from .frames import PONG as _PONG
from .frames import TEXT as _TEXT
from .frames import FrameReader

CLOSE_WAIT = 3.0          # seconds a closing viewer gets to answer our close frame (and a
                          # failed one to take it), before the connection is cut
WRITE_BUFFER_HIGH = 64 * 1024  # bytes waiting for a viewer before reading from it (and from its
                               # desktop) stops
INBOX_MESSAGES = 8        # complete messages waiting to be taken before reading stops
MAX_CONTROLS = 64         # pings and pongs a viewer may send between two beats (clients ping
                          # every 20 s or so; a flood costs the gateway CPU, and is refused)

_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack
_SMALL = 1024             # a payload below this is joined to its header before the write


def frame(opcode: int, payload: bytes) -> list[bytes] | bytes:
    """An unmasked, final server frame: one bytes object for small payloads, else a header and
    the payload itself (never copied)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = _LEN16(first, 126, n)
    else:
        header = _LEN64(first, 127, n)
    return header + payload if n < _SMALL else [header, payload]


# -- the websocket -------------------------------------------------------------------------------

class Kind(enum.Enum):
    BINARY = "binary"   # data: bytes
    TEXT = "text"       # data: str


@dataclass(frozen=True, slots=True)
class Message:
    """A message the viewer sent."""
    kind: Kind
    data: bytes | str


class Ending(enum.Enum):
    CLOSE = "close"     # the viewer closed (its code and reason)
    LOST = "lost"       # the connection ended without a close frame
    SHUT = "shut"       # the gateway closed it (our code and reason)
    FAILED = "failed"   # the viewer broke the protocol; closed with ``code``


@dataclass(frozen=True, slots=True)
class Ended:
    """How the viewer's websocket ended."""
    how: Ending
    code: int | None = None
    reason: str = ""


class Mode(enum.Enum):
    MESSAGES = "messages"   # complete messages queue for ``receive()``
    RELAYING = "relaying"   # each message goes straight to the sink
    DONE = "done"           # the relay ended or went on without this link: messages are dropped


class Sink(Protocol):
    """Where a relaying viewer's messages go (:class:`gateway.relay.DesktopLink`)."""
    def viewer_binary(self, data: bytes) -> None: ...
    def viewer_text(self, text: str) -> None: ...
    def viewer_ended(self, ended: Ended) -> None: ...
    def viewer_drained(self) -> None: ...


_HELD_BY_SINK, _HELD_BY_WRITES, _HELD_BY_INBOX = 1, 2, 4   # reasons reading stops


def _ignored(_data: object) -> None:
    pass


class ViewerLink(asyncio.Protocol):
    """One client's websocket (see the module's docstring)."""

    __slots__ = ("transport", "max_message", "heard", "pinged", "writing_paused", "close_code",
                 "lost", "on_lost", "_reader", "_mode", "_inbox", "_waiter", "_drained", "_sink",
                 "_linger", "_holds", "_pong", "_controls")

    def __init__(self, transport: asyncio.Transport, max_message: int) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.max_message = max_message
        self.heard = True
        self.pinged = False
        self.writing_paused = False
        self.close_code: int | None = None       # the code we closed with, once we did
        self.lost = False
        self.on_lost: Callable[[], None] | None = None
        self._reader = FrameReader(max_message)  # the client's frames, in messages mode:
        self._reader.on_binary = self._binary_message
        self._reader.on_text = self._text_message
        self._reader.on_ping = self._ping
        self._reader.on_pong = self._counted_control   # heard from: all a pong says
        self._reader.on_close, self._reader.on_fail = self._closed_by_viewer, self._fail
        self._mode = Mode.MESSAGES
        self._inbox: collections.deque[Message | Ended] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._sink: Sink | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._holds = 0                          # why reading stops: _HELD_BY_* bits
        self._pong: bytes | None = None          # a ping's answer waiting for the write buffer
        self._controls = 0                       # pings and pongs since the last beat

    @property
    def closed(self) -> bool:
        """Whether the websocket is closing or gone: nothing more is sent on it."""
        return self.close_code is not None or self.lost

    # -- asyncio.Protocol --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.heard = True
        self._reader.feed(data)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._hold(_HELD_BY_WRITES)

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.heard = True                       # it read what we wrote
        if self._pong is not None:
            pong, self._pong = self._pong, None
            self._send(_PONG, pong)
            if self.writing_paused:
                return
        self._release(_HELD_BY_WRITES)
        if self._sink is not None:
            self._sink.viewer_drained()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        if self._linger is not None:
            self._linger.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)     # a carry waiting to write: it sees ``lost``
        self._deliver(Ended(Ending.LOST))
        if self.on_lost is not None:
            self.on_lost()

    # -- the reader's events -----------------------------------------------------------------
    def _binary_message(self, data: bytes) -> None:
        self._deliver(Message(Kind.BINARY, data))

    def _text_message(self, text: str) -> None:
        self._deliver(Message(Kind.TEXT, text))

    def _ping(self, payload: bytes) -> bool:
        if not self._counted_control():
            return False
        if self.writing_paused:
            self._pong = payload        # answered when it has read: the latest only
        else:
            self._send(_PONG, payload)
        return True

    def _counted_control(self) -> bool:
        self._controls += 1
        if self._controls > MAX_CONTROLS:
            return self._fail(1008, "too many pings")
        return True

    def _closed_by_viewer(self, code: int, reason: str, echo: bytes) -> None:
        if self.close_code is None:   # answer with the viewer's code, then hang up
            self.close_code = code if code != 1005 else 1000
            self.transport.write(frame(_CLOSE, echo))
        self.transport.close()
        self._deliver(Ended(Ending.CLOSE, code, reason))

    def _fail(self, code: int, reason: str) -> bool:
        """Fail the connection (RFC 6455 §7.1.7): our close frame if none was sent yet, then the
        connection closed at once; nothing more is read or kept."""
        first = self._send_close(code, reason)
        self._reader.stop()
        self.transport.close()
        if first:
            self._deliver(Ended(Ending.FAILED, code, reason))
        return False

    def _ignore_messages(self) -> None:
        """From now on what the viewer still sends is read and dropped."""
        reader = self._reader
        reader.stream = False
        reader.on_binary = reader.on_text = _ignored

    def _deliver(self, item: Message | Ended) -> None:
        if self._mode is Mode.RELAYING:     # only the end comes here
            self._stop_relaying().viewer_ended(item)
            return
        if self._mode is Mode.DONE:
            return
        self._inbox.append(item)
        if len(self._inbox) >= INBOX_MESSAGES:
            self._hold(_HELD_BY_INBOX)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- messages mode -----------------------------------------------------------------------
    async def receive(self) -> Message | Ended:
        """The next message (messages mode), or how the websocket ended."""
        inbox = self._inbox
        while not inbox:
            if self.lost:
                return Ended(Ending.LOST)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = inbox.popleft()
        if not inbox:
            self._release(_HELD_BY_INBOX)
        return message

    async def drain(self) -> None:
        """Wait while the client's write buffer is over its limit."""
        if self.writing_paused and not self.lost:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    # -- relay mode --------------------------------------------------------------------------
    def attach(self, sink: Sink) -> None:
        """From now on each message goes to ``sink``; messages already queued go first."""
        inbox, self._inbox = self._inbox, collections.deque()
        self._mode, self._sink = Mode.RELAYING, sink
        if not self.closed:
            reader = self._reader
            reader.on_binary, reader.on_text = sink.viewer_binary, sink.viewer_text
            reader.stream = True
        self._release(_HELD_BY_INBOX)
        for message in inbox:
            if isinstance(message, Ended):
                self._stop_relaying().viewer_ended(message)
                return
            if message.kind is Kind.BINARY:
                sink.viewer_binary(message.data)
            else:
                sink.viewer_text(message.data)
            if self._sink is not sink:
                return
        if self.lost and self._sink is sink:
            self._stop_relaying().viewer_ended(Ended(Ending.LOST))

    def detach(self) -> None:
        """Stop giving messages to the sink (the session went on without this connection)."""
        self._stop_relaying()

    def _stop_relaying(self) -> Sink | None:
        """The relay is over for this link: the sink it had; what still arrives is dropped."""
        sink, self._sink, self._mode = self._sink, None, Mode.DONE
        self._ignore_messages()
        return sink

    def pause_reading(self) -> None:
        """Stop reading the viewer while its desktop's write buffer is full."""
        self._hold(_HELD_BY_SINK)

    def resume_reading(self) -> None:
        self._release(_HELD_BY_SINK)

    def _hold(self, reason: int) -> None:
        if not self._holds and not self.closed:
            self.transport.pause_reading()
        self._holds |= reason

    def _release(self, reason: int) -> None:
        if not self._holds & reason:
            return
        self._holds &= ~reason
        if not self._holds and not self.closed:
            self.transport.resume_reading()

    # -- frames out --------------------------------------------------------------------------
    def send_binary(self, data: bytes) -> None:
        self._send(_BINARY, data)

    def send_text(self, text: str) -> None:
        self._send(_TEXT, text.encode())

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.closed:
            return
        out = frame(opcode, payload)
        if type(out) is list:
            self.transport.writelines(out)
        else:
            self.transport.write(out)

    def close_with(self, close: Close) -> None:
        """Close with one of the gateway's answers (a member of :class:`wire.closes.Close`)."""
        self.close(close.code, close.reason)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once) and hang up when the viewer answers, or after
        :data:`CLOSE_WAIT` seconds. Reading goes on meanwhile, so the viewer's own last frames do
        not turn the hang-up into a reset that could lose our close frame."""
        if self._send_close(code, reason):
            self._deliver(Ended(Ending.SHUT, code, reason))

    def _send_close(self, code: int, reason: str) -> bool:
        if self.closed:
            return False
        self.close_code = code
        self._ignore_messages()       # closing: what still arrives is read and dropped
        self.transport.write(frame(_CLOSE, code.to_bytes(2, "big") + reason.encode()[:123]))
        if self._holds:                # closing: read on, and drop, until the viewer answers
            self._holds = 0
            self.transport.resume_reading()
        self._linger = asyncio.get_running_loop().call_later(CLOSE_WAIT, self.transport.abort)
        return True

    def abort(self) -> None:
        """End the connection without a close frame (it is dead)."""
        self.transport.abort()

    def beat(self) -> None:
        """Called every ``HEARTBEAT / 2`` seconds (see the module's docstring)."""
        self._controls = 0
        if self.heard:
            self.heard = self.pinged = False
        elif self.pinged:
            self.abort()
        else:
            self.pinged = True
            self._send(_PING, b"")
