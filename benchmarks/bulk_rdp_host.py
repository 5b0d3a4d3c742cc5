"""An RDP host for measuring the relay: it speaks the connection sequence's first steps (X.224
confirm selecting TLS, TLS, the MCS Connect Response with its channel ids), reads the client's
packets until its Client Info PDU, then sends ``--bytes`` of screen data in fast-path packets as
fast as the connection takes them, and closes. What a real host's bulk looks like to the gateway
(TLS records of fast-path updates); what the pixels are does not matter to a relay.

Usage: ``python -m benchmarks.bulk_rdp_host --port P --cert-dir DIR --bytes N`` (it writes its
certificate's SHA-256 to ``DIR/sha256`` once it listens). ``client_sequence`` is what a client
sends after TLS, for the benchmark's clients.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ssl
import struct
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from client.rdp_stream import self_signed_rsa

CONFIRM_TLS = bytes.fromhex("030000130ed000001234000200080001000000")
CHUNK = 64 * 1024


def tpkt(mcs: bytes) -> bytes:
    body = b"\x02\xf0\x80" + mcs
    return struct.pack("!BBH", 3, 0, 4 + len(body)) + body


def _per_length(n: int) -> bytes:
    return bytes((n,)) if n < 0x80 else struct.pack("!H", 0x8000 | n)


def client_sequence(user: str = "bench") -> list[bytes]:
    """A client's packets after TLS up to its logon: Connect Initial (core data, no channels),
    Erect Domain, Attach User, two Channel Joins, Client Info."""
    core = struct.pack("<IHHHHI", 0x00080004, 1280, 800, 0xCA01, 0xAA03, 0x409).ljust(212, b"\0")
    blocks = struct.pack("<HH", 0xC001, 4 + len(core)) + core
    blocks += struct.pack("<HHI", 0xC003, 8, 0)
    gcc = (bytes.fromhex("000500147c0001") + _per_length(14 + len(blocks) + 2)
           + bytes.fromhex("000800100001c000") + b"Duca" + _per_length(len(blocks)) + blocks)
    body = b"\x04\x01\x01\x04\x01\x01\x01\x01\xff" + b"\x04\x82" + struct.pack("!H", len(gcc)) + gcc
    connect = tpkt(b"\x7f\x65\x82" + struct.pack("!H", len(body)) + body)
    fields = [f.encode("utf-16-le") for f in ("", user, "", "", "")]
    info = struct.pack("<IIHHHHH", 0, 0x0010 | 0x0001, *(len(f) for f in fields))
    info = struct.pack("<HH", 0x0040, 0) + info + b"".join(f + b"\0\0" for f in fields)
    return [connect, tpkt(b"\x04\x01\x00\x01\x00"), tpkt(b"\x28"),
            tpkt(b"\x38\x00\x07\x03\xeb"), tpkt(b"\x38\x00\x07\x03\xec"),
            tpkt(b"\x64\x00\x07\x03\xeb\x70" + _per_length(len(info)) + info)]


def connect_response() -> bytes:
    """An MCS Connect Response with core and network data (no static channels)."""
    blocks = struct.pack("<HHI", 0x0C01, 8, 0x00080004) + struct.pack("<HHHH", 0x0C03, 8, 1003, 0)
    gcc = (bytes.fromhex("000500147c0001") + b"\x2a\x14\x76\x0a\x01\x01\x00\x01\xc0\x00McDn"
           + _per_length(len(blocks)) + blocks)
    body = b"\x0a\x01\x00\x02\x01\x00\x30\x1a" + bytes(28) + b"\x04\x82" \
        + struct.pack("!H", len(gcc)) + gcc
    return tpkt(b"\x7f\x66\x82" + struct.pack("!H", len(body)) + body)


async def read_tpkt(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    return head + await reader.readexactly(struct.unpack("!H", head[2:])[0] - 4)


def fast_path_chunk() -> bytes:
    """64 KiB of fast-path update packets (each 16 KiB: header, 2-byte length, filler)."""
    size = 16 * 1024
    packet = bytes((0x00, 0x80 | (size >> 8), size & 0xFF)) + bytes(range(256)) * 64
    return packet[:size] * (CHUNK // size)


async def serve(port: int, context: ssl.SSLContext, total: int) -> None:
    chunk = fast_path_chunk()

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_tpkt(reader)                       # X.224 Connection Request
            writer.write(CONFIRM_TLS)
            await writer.drain()
            await writer.start_tls(context)
            await read_tpkt(reader)                       # MCS Connect Initial
            writer.write(connect_response())
            while (await read_tpkt(reader))[7] & 0xFC != 0x64:   # until the Client Info PDU
                pass
            sent = 0
            while sent < total:
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(one, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--bytes", type=int, required=True)
    args = parser.parse_args()
    cert, key = self_signed_rsa("bulk-rdp-host")
    (args.cert_dir / "host.pem").write_bytes(key + cert)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert_dir / "host.pem")
    der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    (args.cert_dir / "sha256").write_text(hashlib.sha256(der).hexdigest())
    asyncio.run(serve(args.port, context, args.bytes))


if __name__ == "__main__":
    main()
