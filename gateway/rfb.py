"""RFB (VNC) security handshake, spoken by the gateway on the user's behalf.

Theory of operation
-------------------
The desktop is protected by a VNC password the user never sees. The gateway opens the desktop
connection, completes the RFB 3.8 handshake as a client with VNC authentication (DES over the
server's challenge, with the secret from the ticket), and only then greets the user's viewer as a
server offering the security type "None": the ticket has already proved who the user is. From the
ClientInit message on, both directions are relayed untouched.

Doing the desktop half first means a dead or refusing desktop is reported before the viewer sees a
single byte, and a typo can never count against TigerVNC's per-address blacklist (every user comes
from the gateway's address).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from aiohttp import WSMsgType, web
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from .errors import DesktopError
from .relay import DesktopLink

VERSION_3_8 = b"RFB 003.008\n"
SEC_NONE = 1
SEC_VNC_AUTH = 2
MAX_REASON = 4096  # bytes of a failure reason we are willing to read


def vnc_auth_response(secret: bytes, challenge: bytes) -> bytes:
    """The 16-byte answer to a VNC authentication challenge.

    VNC uses DES with the password (first 8 bytes, zero padded) as key, each key byte bit-reversed.
    """
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in secret[:8].ljust(8, b"\0"))
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(challenge) + enc.finalize()


async def _reason(link: DesktopLink) -> str:
    (length,) = struct.unpack("!I", await link.read_exactly(4))
    return (await link.read_exactly(min(length, MAX_REASON))).decode("latin-1", "replace")


async def authenticate_desktop(link: DesktopLink, secret: bytes | None) -> None:
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


class _WsBytes:
    """Reads an exact number of bytes from binary websocket messages, keeping what is left over."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.pending = bytearray()

    async def read_exactly(self, n: int) -> bytes:
        while len(self.pending) < n:
            msg = await self.ws.receive()
            if msg.type is not WSMsgType.BINARY:
                raise ConnectionError("viewer left during the RFB handshake")
            self.pending += msg.data
        data = bytes(self.pending[:n])
        del self.pending[:n]
        return data


@dataclass(frozen=True)
class Greeting:
    """What the viewer handshake exchanged: the stream accounting of a resumable session needs it."""
    sent: bytes          # bytes the gateway sent to the viewer
    received: int        # bytes of the viewer's that the handshake consumed
    leftover: bytes      # bytes the viewer sent beyond the handshake (its ClientInit): forward them


async def greet_viewer(ws: web.WebSocketResponse) -> Greeting:
    """Greet the viewer as an RFB server that needs no password.

    Raises:
        ConnectionError: the viewer closed or spoke no RFB 3.7+.
    """
    reader = _WsBytes(ws)
    sent = VERSION_3_8
    await ws.send_bytes(VERSION_3_8)
    version = await reader.read_exactly(12)
    if not version.startswith(b"RFB 003.") or version < b"RFB 003.007\n":
        raise ConnectionError("viewer does not speak RFB 3.7 or later")
    await ws.send_bytes(bytes([1, SEC_NONE]))
    sent += bytes([1, SEC_NONE])
    if (await reader.read_exactly(1))[0] != SEC_NONE:
        raise ConnectionError("viewer chose a security type that was not offered")
    if version >= VERSION_3_8:
        await ws.send_bytes(struct.pack("!I", 0))
        sent += struct.pack("!I", 0)
    return Greeting(sent, 13, bytes(reader.pending))
