"""The clipboard policy of a pool, enforced on the RFB stream itself. Pure logic, no I/O.

Theory of operation
-------------------
A pool says which way text may cross between the user's computer and the desktop: ``both``,
``in`` (only into the desktop), ``out`` (only out of it) or ``none``. The page hides what the
policy forbids, but a page can be changed by its user, so the gateway enforces it: a
:class:`ClipboardGuard` walks both directions of a session's RFB stream message by message and
removes the cut-text messages the policy blocks (ClientCutText into the desktop, ServerCutText
out of it), counting what it let through and what it blocked.

Walking the desktop's stream means knowing the length of every message and of every rectangle of
a framebuffer update, so a guarded session speaks only encodings whose length can be read without
decoding (:data:`READABLE_ENCODINGS`): the guard rewrites the viewer's SetEncodings to that set
(Raw, CopyRect, Zlib, ZRLE, the pseudo-encodings noVNC uses and the extended clipboard; Tight is
left out). The extended (UTF-8) clipboard is read by its actions: what carries or announces text
the policy blocks is cut out, capabilities and requests pass. Rectangle sizes of Raw and Cursor
data depend on the pixel format, so the viewer may change it only before its first update
request. Anything the guard cannot read — an unknown message, an encoding it did not allow, a
late pixel format — ends the session (:class:`StreamNotUnderstood`): what cannot be read could
carry what is blocked.

A session with policy ``both`` has no guard: its stream is relayed untouched, at full speed.

Each direction is a :class:`_Walk`: header bytes are collected (copied, they are small), bodies
are counted off without copying, and the bytes of a blocked message are cut out of the chunk
that carried them. The steps of the walk are methods that read a header and say what comes
next.
"""

from __future__ import annotations

import struct
from typing import Callable

from wire.ticket import CLIPBOARD_POLICIES

_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_S32 = struct.Struct("!i").unpack_from

# Encodings whose rectangles the guard can step over by their header and length fields.
READABLE_ENCODINGS = frozenset({
    0,      # Raw
    1,      # CopyRect
    6,      # Zlib
    16,     # ZRLE
    -223,   # DesktopSize
    -224,   # LastRect
    -239,   # Cursor
    -258,   # QEMU extended key events
    -307,   # DesktopName
    -308,   # ExtendedDesktopSize
    -312,   # Fence
    -313,   # ContinuousUpdates
    -1063131698,  # the extended clipboard (0xC0A1E5CE): UTF-8 text, read by its actions
    *range(-32, -22),    # JPEG quality levels (no rectangles)
    *range(-256, -246),  # compression levels (no rectangles)
})

_PASS, _DROP, _HOLD = 0, 1, 2   # what happens to the bytes of the message being read

# The extended clipboard's actions (the high byte of its flags): a message names exactly one,
# except the capabilities message, which names every action its sender supports besides caps.
_CAPS, _REQUEST, _PEEK, _NOTIFY, _PROVIDE = (1 << 24, 1 << 25, 1 << 26, 1 << 27, 1 << 28)
_ACTIONS = 0xFF000000
_ONE_ACTION = frozenset({_REQUEST, _PEEK, _NOTIFY, _PROVIDE})


class StreamNotUnderstood(Exception):
    """The stream holds something the guard cannot read; the session must end."""


class _Walk:
    """One direction of the stream. Subclasses define the steps."""

    __slots__ = ("_want", "_got", "_step", "_skip", "_then", "_mode", "_out", "_kept",
                 "_pos", "_view")

    def __init__(self, want: int, step: Callable[[bytes], None]) -> None:
        self._want, self._step = want, step
        self._got = bytearray()
        self._skip = 0
        self._then: Callable[[], None] = self._next_message
        self._mode = _PASS
        self._out: list | None = None
        self._kept = self._pos = 0
        self._view = memoryview(b"")

    def feed(self, data: bytes) -> bytes:
        """The chunk as it may go on (the same object when nothing was cut out)."""
        view = self._view = memoryview(data)
        n = len(data)
        self._out, self._kept, self._pos = None, 0, 0
        while self._pos < n:
            pos = self._pos
            if self._skip:
                take = min(self._skip, n - pos)
                self._pos = pos + take
                if self._mode != _PASS:
                    self._cut(pos, pos + take)
                self._skip -= take
                if not self._skip:
                    self._then()
                continue
            want = self._want
            if not self._got and n - pos >= want:   # the whole header in this chunk (usual)
                self._pos = pos + want
                if self._mode != _PASS:
                    self._cut(pos, pos + want)
                self._step(view[pos:pos + want].tobytes())
                continue
            take = min(want - len(self._got), n - pos)
            self._got += view[pos:pos + take]
            self._pos = pos + take
            if self._mode != _PASS:
                self._cut(pos, pos + take)
            if len(self._got) == want:
                header = bytes(self._got)
                self._got.clear()
                self._step(header)
        if self._out is None:
            return data
        self._out.append(view[self._kept:])
        out = b"".join(self._out)
        self._out = None
        return out

    # -- what the steps use --------------------------------------------------------------------
    def _cut(self, start: int, end: int) -> None:
        if self._out is None:
            self._out = []
        self._out.append(self._view[self._kept:start])
        self._kept = end

    def _emit(self, data: bytes) -> None:
        """Put ``data`` into the output where the walk stands (a held message, rewritten)."""
        self._cut(self._pos, self._pos)
        self._out.append(data)

    def _message_starts(self, mode: int) -> None:
        """Called by the type step: the type byte just read is the message's first byte."""
        self._mode = mode
        if mode != _PASS:
            self._cut(self._pos - 1, self._pos)

    def _expect(self, want: int, step: Callable[[bytes], None]) -> None:
        self._want, self._step = want, step

    def _body(self, length: int, then: Callable[[], None] | None = None) -> None:
        then = then or self._next_message
        if length <= 0:
            then()
        else:
            self._skip, self._then = length, then

    def _next_message(self) -> None:
        self._mode = _PASS
        self._expect(1, self._message)

    def _message(self, header: bytes) -> None:
        raise NotImplementedError

    # -- cut text, the same message both ways ------------------------------------------------
    # Plain: padding, a length and Latin-1 text. Extended clipboard (a negative length): flags
    # naming one action — caps, request, peek, notify (text is available) or provide (the text,
    # compressed) — then the data. What carries or announces text the policy blocks is cut out;
    # the rest (capabilities, requests) passes, so the other direction keeps working.
    def _cut_text_starts(self, allowed: bool, direction: str) -> None:
        self._message_starts(_HOLD)                        # decided once the header is read
        self._expect(7, lambda header: self._cut_text(header, allowed, direction))

    def _cut_text(self, header: bytes, allowed: bool, direction: str) -> None:
        length = _S32(header, 3)[0]
        if length >= 0:
            self._decide(b"\x06" if direction == "in" else b"\x03", header, allowed,
                         direction, carries_text=True)
            self._body(length)
        elif length <= -4:
            self._expect(4, lambda flags: self._extended(header + flags, allowed, direction,
                                                         -length - 4))
        else:
            raise StreamNotUnderstood("extended clipboard message without flags")

    def _extended(self, header: bytes, allowed: bool, direction: str, rest: int) -> None:
        actions = _U32(header, 7)[0] & _ACTIONS
        if actions & _CAPS:           # capabilities list every action the sender supports
            actions = _CAPS
        elif actions not in _ONE_ACTION:
            raise StreamNotUnderstood(f"extended clipboard actions {actions:#x}")
        carries_text = actions in (_NOTIFY, _PROVIDE)
        # a transfer is counted once: where it happens (provide), or where it was stopped
        self._decide(b"\x06" if direction == "in" else b"\x03", header, allowed, direction,
                     carries_text=carries_text,
                     counted=actions == _PROVIDE if allowed else carries_text)
        self._body(rest)

    def _decide(self, kind: bytes, header: bytes, allowed: bool, direction: str, *,
                carries_text: bool, counted: bool = True) -> None:
        """Let a held cut-text header (and its body) go on, or cut the whole message out."""
        if counted:
            self.guard.count(direction if allowed else f"{direction}_blocked")
        if allowed or not carries_text:
            self._emit(kind + header)
            self._mode = _PASS
        else:
            self._mode = _DROP


class _ViewerStream(_Walk):
    """Viewer → desktop: ClientInit, then client messages."""

    __slots__ = ("guard", "_held")

    def __init__(self, guard: "ClipboardGuard") -> None:
        super().__init__(1, lambda _: self._next_message())   # ClientInit (shared flag)
        self.guard = guard
        self._held = b""

    def _message(self, header: bytes) -> None:
        kind = header[0]
        if kind == 0:                                      # SetPixelFormat
            self._message_starts(_PASS)
            self._expect(19, self._pixel_format)
        elif kind == 2:                                    # SetEncodings: rewritten
            self._message_starts(_HOLD)
            self._expect(3, self._encoding_count)
        elif kind in (3, 150):                             # update request, continuous updates
            self._message_starts(_PASS)
            self.guard.updates_requested = True
            self._body(9)
        elif kind == 4:                                    # KeyEvent
            self._message_starts(_PASS)
            self._body(7)
        elif kind == 5:                                    # PointerEvent
            self._message_starts(_PASS)
            self._body(5)
        elif kind == 6:                                    # ClientCutText
            self._cut_text_starts(self.guard.allow_in, "in")
        elif kind == 248:                                  # ClientFence
            self._message_starts(_PASS)
            self._expect(8, lambda h: self._body(h[7]))
        elif kind == 250:                                  # xvp
            self._message_starts(_PASS)
            self._body(3)
        elif kind == 251:                                  # SetDesktopSize
            self._message_starts(_PASS)
            self._expect(7, lambda h: self._body(16 * h[5]))
        elif kind == 255:                                  # QEMU: extended key event only
            self._message_starts(_PASS)
            self._expect(1, self._qemu)
        else:
            raise StreamNotUnderstood(f"viewer message type {kind}")

    def _pixel_format(self, header: bytes) -> None:
        if self.guard.updates_requested:
            raise StreamNotUnderstood("pixel format changed after the first update request")
        self.guard.set_pixel_format(header[3], by_viewer=True)
        self._next_message()

    def _encoding_count(self, header: bytes) -> None:
        count = _U16(header, 1)[0]
        if count == 0:
            self._emit(b"\x02" + header)
            self._next_message()
        else:
            self._held = header
            self._expect(4 * count, self._encodings)

    def _encodings(self, body: bytes) -> None:
        kept = [e for e in struct.unpack(f"!{len(body) // 4}i", body) if e in READABLE_ENCODINGS]
        self._emit(struct.pack(f"!BxH{len(kept)}i", 2, len(kept), *kept))
        self._next_message()

    def _qemu(self, header: bytes) -> None:
        if header[0] != 0:
            raise StreamNotUnderstood(f"QEMU message subtype {header[0]}")
        self._body(10)


class _DesktopStream(_Walk):
    """Desktop → viewer: ServerInit, then server messages."""

    __slots__ = ("guard", "_rects")

    def __init__(self, guard: "ClipboardGuard") -> None:
        super().__init__(24, self._server_init)
        self.guard = guard
        self._rects = 0

    def _server_init(self, header: bytes) -> None:
        self.guard.set_pixel_format(header[4])
        self._body(_U32(header, 20)[0])

    def _message(self, header: bytes) -> None:
        kind = header[0]
        if kind == 0:                                      # FramebufferUpdate
            self._message_starts(_PASS)
            self._expect(3, self._update)
        elif kind == 1:                                    # SetColourMapEntries
            self._message_starts(_PASS)
            self._expect(5, lambda h: self._body(6 * _U16(h, 3)[0]))
        elif kind in (2, 150):                             # Bell, EndOfContinuousUpdates
            self._message_starts(_PASS)
            self._next_message()
        elif kind == 3:                                    # ServerCutText
            self._cut_text_starts(self.guard.allow_out, "out")
        elif kind == 248:                                  # ServerFence
            self._message_starts(_PASS)
            self._expect(8, lambda h: self._body(h[7]))
        elif kind == 250:                                  # xvp
            self._message_starts(_PASS)
            self._body(3)
        else:
            raise StreamNotUnderstood(f"desktop message type {kind}")

    def _update(self, header: bytes) -> None:
        self._rects = _U16(header, 1)[0]
        self._next_rect()

    def _next_rect(self) -> None:
        if self._rects == 0:
            self._next_message()
        else:
            self._rects -= 1
            self._expect(12, self._rect)

    def _rect(self, header: bytes) -> None:
        width, height = _U16(header, 4)[0], _U16(header, 6)[0]
        encoding = _S32(header, 8)[0]
        pixel = self.guard.bytes_per_pixel
        if encoding == 0:
            self._body(width * height * pixel, self._next_rect)
        elif encoding == 1:
            self._body(4, self._next_rect)
        elif encoding in (6, 16, -307):                    # Zlib, ZRLE, DesktopName: length
            self._expect(4, lambda h: self._body(_U32(h)[0], self._next_rect))
        elif encoding == -239:                             # Cursor: pixels and a bit mask
            self._body(width * height * pixel + (width + 7) // 8 * height, self._next_rect)
        elif encoding == -308:                             # ExtendedDesktopSize: screens
            self._expect(4, lambda h: self._body(16 * h[0], self._next_rect))
        elif encoding == -224:                             # LastRect: the update ends here
            self._rects = 0
            self._next_rect()
        elif encoding in READABLE_ENCODINGS:               # pseudo-encodings without data
            self._next_rect()
        else:
            raise StreamNotUnderstood(f"rectangle encoding {encoding}")


class ClipboardGuard:
    """Both directions of one guarded session, and what it counted."""

    __slots__ = ("allow_in", "allow_out", "counts", "totals", "bytes_per_pixel",
                 "format_by_viewer", "updates_requested", "viewer", "desktop")

    def __init__(self, policy: str, totals: dict[str, int] | None = None) -> None:
        if policy not in CLIPBOARD_POLICIES or policy == "both":
            raise ValueError(f"no guard for clipboard policy {policy!r}")
        self.allow_in = policy == "in"
        self.allow_out = policy == "out"
        self.counts = {"in": 0, "in_blocked": 0, "out": 0, "out_blocked": 0}
        self.totals = totals    # the gateway's counters, kept up to date as well
        self.bytes_per_pixel = 4
        self.format_by_viewer = False   # a viewer's SetPixelFormat outranks the ServerInit's
        self.updates_requested = False
        self.viewer = _ViewerStream(self)
        self.desktop = _DesktopStream(self)

    @classmethod
    def for_policy(cls, policy: str,
                   totals: dict[str, int] | None = None) -> "ClipboardGuard | None":
        """The guard a session with this policy needs (None for ``both``)."""
        return None if policy == "both" else cls(policy, totals)

    def count(self, what: str) -> None:
        self.counts[what] += 1
        if self.totals is not None:
            self.totals[what] += 1

    def set_pixel_format(self, bits_per_pixel: int, *, by_viewer: bool = False) -> None:
        """The pixel size of the updates to come: the desktop's own (its ServerInit) until the
        viewer chooses one (which the desktop then uses, however the two messages crossed)."""
        if bits_per_pixel not in (8, 16, 32):
            raise StreamNotUnderstood(f"{bits_per_pixel} bits per pixel")
        if by_viewer or not self.format_by_viewer:
            self.bytes_per_pixel = bits_per_pixel // 8
            self.format_by_viewer = self.format_by_viewer or by_viewer
