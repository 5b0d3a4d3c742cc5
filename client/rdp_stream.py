"""A native RDP viewer's way through the gateway (``xfreerdp`` on a thin client): the local
tunnel speaks RDCleanPath for it, as the page's RDP client does.

The viewer connects to the tunnel's loopback port as to an RDP host. Its X.224 Connection
Request goes to the gateway inside an RDCleanPath request with the ticket; the host's Connection
Confirm comes back and is handed to the viewer, which then starts TLS — with the tunnel, on
loopback, under a certificate the tunnel made for itself at start (the host's own certificate
is the gateway's to check: it is pinned in the ticket). After that the viewer's RDP stream is
relayed in the clear over the websocket, and the gateway fills in the user's Windows logon: the
viewer is given no password at all. A network drop between tunnel and gateway is bridged as for
VNC (the gateway holds the host's TLS session; the stream resumes where it broke).
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import struct
import tempfile
from pathlib import Path

import aiohttp

from wire import rdcleanpath
from wire.resume import ResumableRdp, ResumeToken, decode, encode, resume_url

from .stream import GatewayStream, StreamClosed

MAX_X224 = 1024     # bytes of a viewer's X.224 Connection Request


def self_signed_rsa(common_name: str, days: int = 30) -> tuple[bytes, bytes]:
    """A self-signed RSA certificate and its key, PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def loopback_tls() -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate (never written anywhere but a
    temporary file that is gone when this returns)."""
    cert, key = self_signed_rsa("pforte-tunnel")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as directory:
        pem = Path(directory) / "tunnel.pem"
        pem.touch(0o600)
        pem.write_bytes(key + cert)
        context.load_cert_chain(pem)
    return context


class RdpStream(GatewayStream):
    """One RDP viewer connection through the gateway, resumable as
    :class:`client.stream.GatewayStream` is: it announces itself (``ResumableRdp``) before its
    RDCleanPath request, and the stream both sides count begins after the RDCleanPath answer."""

    async def open(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   tls: ssl.SSLContext) -> None:
        """Carry the viewer's X.224 request to the gateway, its answer back, and take the
        viewer's TLS.

        Raises:
            StreamClosed: the viewer sent no X.224 request, or the gateway refused (its close
                code and the HTTP status it gave).
        """
        header = await reader.readexactly(4)
        length = struct.unpack("!H", header[2:4])[0]
        if header[0] != 3 or not 11 <= length <= MAX_X224:
            raise StreamClosed(None, "the viewer sent no X.224 Connection Request")
        x224 = header + await reader.readexactly(length - 4)
        ticket, self._ticket = self._ticket, ""
        self.ws = await self.http.ws_connect(self.url, **self.ws_options)
        await self.ws.send_str(encode(ResumableRdp()))
        await self.ws.send_bytes(rdcleanpath.encode_request(
            rdcleanpath.Request(ticket, x224, "pforte")))
        msg = await self.ws.receive()
        token = decode(msg.data) if msg.type is aiohttp.WSMsgType.TEXT else None
        if isinstance(token, ResumeToken):
            self.token, self.resume_url = token.token, resume_url(self.url, token.gateway)
            msg = await self.ws.receive()
        if msg.type is not aiohttp.WSMsgType.BINARY:
            raise StreamClosed(self.ws.close_code, str(msg.extra or ""))
        answer = rdcleanpath.decode_response(msg.data)
        if isinstance(answer, rdcleanpath.Refusal):
            await self.ws.receive()                     # its close frame
            raise StreamClosed(self.ws.close_code, f"refused with HTTP {answer.http_status}")
        writer.write(answer.x224)
        await writer.drain()
        await writer.start_tls(tls)
