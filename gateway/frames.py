"""The websocket's frame reader (RFC 6455 §5): bytes in, events out — no socket, no clock.

:class:`FrameReader` takes what the client sent, in whatever pieces the network cut it, and
calls its owner back for each event: a binary message's bytes (``on_binary``), a text message
(``on_text``), a ping, a pong, the client's close, or a failure (a protocol error, with the
close code RFC 6455 names for it). A client's frames are masked; the payload is unmasked in C
(``websockets.speedups``).

While :attr:`FrameReader.stream` is set (the relay), a binary message's bytes go to
``on_binary`` as they arrive — a large frame in pieces, unmasked in place: the desktop reads a
byte stream, and nothing waits for or copies a whole message. Otherwise a message is handed on
whole, its fragments joined.

What one message can cost is bounded: at most ``max_message`` bytes in at most
:data:`MAX_FRAGMENTS` frames (1009 beyond). After a failure nothing more is read or kept.

=========== ===================================== ==============================
reading      a frame that …                        then
=========== ===================================== ==============================
MESSAGES     is whole (text, binary, control)      handed on; MESSAGES
MESSAGES     starts a fragmented message           collected; FRAGMENTS
MESSAGES     starts a binary message, ``stream``   streamed; STREAMING until final
FRAGMENTS    continues it / ends it                collected / joined; MESSAGES
STREAMING    continues it / ends it                streamed; MESSAGES when final
any          breaks the protocol                   ``on_fail``; FAILED
=========== ===================================== ==============================
"""

from __future__ import annotations

import enum
from typing import Callable

from websockets.speedups import apply_mask

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_FRAGMENTS = 1024      # frames one message may come in (browsers send one)


class Reading(enum.Enum):
    MESSAGES = "messages"      # between messages, or in a whole one
    FRAGMENTS = "fragments"    # a fragmented message is being collected
    STREAMING = "streaming"    # a binary message goes on as it arrives
    FAILED = "failed"          # the client broke the protocol: nothing more is read


_MESSAGES, _FRAGMENTS, _STREAMING, _FAILED = (Reading.MESSAGES, Reading.FRAGMENTS,
                                              Reading.STREAMING, Reading.FAILED)  # (fast names)


def _drop(_data: object) -> None:
    pass


class FrameReader:
    """Reads one client's frames (see the module's docstring). The owner sets the callbacks;
    ``on_ping`` and ``on_pong`` answer whether to go on reading."""

    __slots__ = ("max_message", "stream", "state", "on_binary", "on_text", "on_ping", "on_pong",
                 "on_close", "on_fail", "_in", "_parts", "_parts_opcode", "_size", "_fragments",
                 "_left", "_masked", "_mask", "_final")

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self.stream = False                        # a binary message may go on in pieces
        self.state = _MESSAGES
        self.on_binary: Callable[[bytes], None] = _drop
        self.on_text: Callable[[str], None] = _drop
        self.on_ping: Callable[[bytes], bool] = lambda payload: True
        self.on_pong: Callable[[], bool] = lambda: True
        self.on_close: Callable[[int, str, bytes], None] = lambda code, reason, echo: None
        self.on_fail: Callable[[int, str], None] = lambda code, reason: None
        self._in = bytearray()                     # an incomplete frame
        self._parts: list[bytes] = []              # FRAGMENTS: the message so far
        self._parts_opcode = 0
        self._size = 0                             # bytes of the message going on
        self._fragments = 0                        # frames of the message going on
        self._left = 0                             # STREAMING: this much of its frame is to come,
        self._masked = 0                           # after this much of it,
        self._mask = b""                           # unmasked with this key
        self._final = 0                            # (the frame ends the message)

    def stop(self) -> None:
        """Read nothing more, keep nothing (the connection is failing or gone)."""
        self.state = _FAILED
        self._in = bytearray()
        self._parts = []

    def feed(self, data: bytes) -> None:
        """Take what the client sent; the events follow, in order."""
        if self.state is _FAILED:
            return
        pos = self._stream_rest(data) if self._left else 0
        if self._in:
            self._in += data
            data = self._in
        size = len(data)
        with memoryview(data) as view:
            while size - pos >= 2:
                first, second = data[pos], data[pos + 1]
                length = second & 0x7F
                head = pos + 2
                if length == 126:
                    if size - pos < 4:
                        break
                    length = int.from_bytes(view[head:head + 2], "big")
                    head += 2
                elif length == 127:
                    if size - pos < 10:
                        break
                    length = int.from_bytes(view[head:head + 8], "big")
                    head += 8
                if not second & 0x80:
                    return self._fail(1002, "frames from a client must be masked")
                opcode = first & 0x0F
                if length > self.max_message or (opcode == CONTINUATION and
                                                 self._size + length > self.max_message):
                    return self._fail(1009, "message too big")
                start = head + 4
                if start > size:
                    break
                if not first & 0x70 and (
                        (opcode == BINARY and self.stream and self.state is _MESSAGES)
                        or (opcode == CONTINUATION and self.state is _STREAMING)):
                    if not self._counted(opcode):
                        return
                    take = min(length, size - start)
                    if take:
                        self.on_binary(apply_mask(view[start:start + take], view[head:start]))
                    self._size = length if opcode == BINARY else self._size + length
                    pos = start + take
                    if take < length:      # the rest of this frame comes in later reads
                        self._left, self._masked = length - take, take
                        self._mask, self._final = bytes(view[head:start]), first & 0x80
                        self.state = _STREAMING
                        break
                    self.state = _MESSAGES if first & 0x80 else _STREAMING
                    continue
                end = start + length
                if end > size:
                    break
                if not self._counted(opcode):
                    return
                payload = apply_mask(view[start:end], view[head:start])
                pos = end
                if not self._frame(first, payload):
                    return
        if pos == size:
            if self._in:
                self._in = bytearray()
        elif data is self._in:
            del self._in[:pos]
        else:
            self._in = bytearray(data[pos:])

    def _counted(self, opcode: int) -> bool:
        """Count a whole frame taken from the stream as its message's; False (failed) once a
        message has :data:`MAX_FRAGMENTS` of them."""
        if opcode == CONTINUATION:
            self._fragments += 1
            if self._fragments >= MAX_FRAGMENTS:
                return self._fail(1009, "message in too many fragments")
        elif opcode < CLOSE:
            self._fragments = 0
        return True

    def _stream_rest(self, data: bytes) -> int:
        """More of a streamed frame's payload; how much of ``data`` it took."""
        take = min(self._left, len(data))
        k = self._masked % 4
        mask = self._mask[k:] + self._mask[:k]
        with memoryview(data) as view:
            self.on_binary(apply_mask(view[:take], mask))
        self._left -= take
        self._masked += take
        if not self._left and self._final:
            self.state = _MESSAGES
        return take

    def _frame(self, first: int, payload: bytes) -> bool:
        """Handle one whole frame; False once reading stops."""
        opcode = first & 0x0F
        final = first & 0x80
        if first & 0x70:
            return self._fail(1002, "no extension was agreed")
        if opcode >= CLOSE:
            if not final or len(payload) > 125:
                return self._fail(1002, "control frames are short and whole")
            if opcode == PING:
                return self.on_ping(payload) and self.state is not _FAILED
            if opcode == PONG:
                return self.on_pong() and self.state is not _FAILED
            if opcode == CLOSE:
                return self._closed(payload)
            return self._fail(1002, "unknown opcode")
        if opcode == CONTINUATION:
            if self.state is not _FRAGMENTS:
                return self._fail(1002, "continuation of nothing")
            self._parts.append(payload)
            self._size += len(payload)
            if not final:
                return True
            opcode, payload = self._parts_opcode, b"".join(self._parts)
            self._parts, self._size, self.state = [], 0, _MESSAGES
        elif opcode not in (TEXT, BINARY):
            return self._fail(1002, "unknown opcode")
        elif self.state is not _MESSAGES:
            return self._fail(1002, "a new message inside a fragmented one")
        elif not final:
            self._parts, self._parts_opcode, self._size = [payload], opcode, len(payload)
            self.state = _FRAGMENTS
            return True
        if opcode == BINARY:
            self.on_binary(payload)
            return True
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail(1007, "text is not UTF-8")
        self.on_text(text)
        return True

    def _closed(self, payload: bytes) -> bool:
        """The client's close frame: checked, then handed on; reading stops."""
        code, reason = 1005, ""
        if len(payload) == 1:
            return self._fail(1002, "close frame of one byte")
        if payload:
            code = int.from_bytes(payload[:2], "big")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                return self._fail(1007, "close reason is not UTF-8")
            if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
                return self._fail(1002, "close code not allowed")
        self.on_close(code, reason, payload[:2])
        return False

    def _fail(self, code: int, reason: str) -> bool:
        self.stop()
        self.on_fail(code, reason)
        return False
