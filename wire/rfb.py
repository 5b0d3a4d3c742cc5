"""RFB (VNC) security handshake, spoken by the gateway on the user's behalf.

Theory of operation
-------------------
The desktop is protected by a VNC password the user never sees. The gateway opens the desktop
connection, completes the RFB 3.8 handshake as a client with VNC authentication (DES over the
server's challenge, with the secret from the ticket), and only then greets the user's viewer as a
server offering the security type "None": the ticket has already proved who the user is. From the
ClientInit message on, both directions are relayed untouched.

Both halves speak over a :class:`ByteLink` — any object that reads an exact number of bytes and
writes bytes — so the broker's health probe and the gateway use the same code on their own links.

Doing the desktop half first means a dead or refusing desktop is reported before the viewer sees a
single byte, and a typo can never count against TigerVNC's per-address blacklist (every user comes
from the gateway's address).
"""

from __future__ import annotations

import asyncio

import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from .errors import DesktopError

VERSION_3_8 = b"RFB 003.008\n"
SEC_NONE = 1
SEC_VNC_AUTH = 2
MAX_REASON = 4096  # bytes of a failure reason we are willing to read


class ByteLink(Protocol):
    """The two methods a handshake needs of a connection."""

    async def read_exactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; raises ConnectionError when the peer closes first."""

    def write(self, data: bytes) -> None:
        """Send bytes (buffered: the next read, or the caller, flushes them)."""


def vnc_auth_response(secret: bytes, challenge: bytes) -> bytes:
    """The 16-byte answer to a VNC authentication challenge.

    VNC uses DES with the password (first 8 bytes, zero padded) as key, each key byte bit-reversed.
    """
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in secret[:8].ljust(8, b"\0"))
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(challenge) + enc.finalize()


class StreamLink:
    """An asyncio stream pair as the byte link a handshake speaks over."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read_exactly(self, n: int) -> bytes:
        try:
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise ConnectionError("the peer closed the connection") from None

    def write(self, data: bytes) -> None:
        self.writer.write(data)


async def _reason(link: ByteLink) -> str:
    (length,) = struct.unpack("!I", await link.read_exactly(4))
    return (await link.read_exactly(min(length, MAX_REASON))).decode("latin-1", "replace")


async def authenticate_desktop(link: ByteLink, secret: bytes | None) -> None:
    """Complete the desktop's RFB security handshake as a client.

    Raises:
        DesktopError: the desktop speaks no RFB 3.7+, offers no usable security type, or refuses.
        ConnectionError: the desktop closed the connection.
    """
    version = await link.read_exactly(12)
    if not version.startswith(b"RFB 003.") or version < b"RFB 003.007\n":
        raise DesktopError("desktop does not speak RFB 3.7 or later")
    link.write(VERSION_3_8)
    (count,) = await link.read_exactly(1)
    if count == 0:
        raise DesktopError(f"desktop refused: {await _reason(link)}")
    types = await link.read_exactly(count)
    if secret is not None and SEC_VNC_AUTH in types:
        link.write(bytes([SEC_VNC_AUTH]))
        link.write(vnc_auth_response(secret, await link.read_exactly(16)))
    elif SEC_NONE in types:
        link.write(bytes([SEC_NONE]))
    else:
        raise DesktopError("desktop offers no security type the gateway can use")
    (result,) = struct.unpack("!I", await link.read_exactly(4))
    if result != 0:
        raise DesktopError(f"desktop refused authentication: {await _reason(link)}")


@dataclass(frozen=True)
class Greeting:
    """What the viewer handshake exchanged: the stream accounting of a resumable session needs it."""
    sent: bytes          # bytes the gateway sent to the viewer
    received: int        # bytes of the viewer's that the handshake consumed


async def greet_viewer(link: ByteLink) -> Greeting:
    """Greet the viewer as an RFB server that needs no password. The last write (the security
    result) is left for the caller to flush.

    Raises:
        ConnectionError: the viewer closed or spoke no RFB 3.7+.
    """
    link.write(VERSION_3_8)
    sent = VERSION_3_8
    version = await link.read_exactly(12)
    if not version.startswith(b"RFB 003.") or version < b"RFB 003.007\n":
        raise ConnectionError("viewer does not speak RFB 3.7 or later")
    link.write(bytes([1, SEC_NONE]))
    sent += bytes([1, SEC_NONE])
    if (await link.read_exactly(1))[0] != SEC_NONE:
        raise ConnectionError("viewer chose a security type that was not offered")
    if version >= VERSION_3_8:
        link.write(struct.pack("!I", 0))
        sent += struct.pack("!I", 0)
    return Greeting(sent, 13)
