"""RDCleanPath, the first exchange of an RDP client in a web page with its proxy (Devolutions'
IronRDP): pure encoding and decoding, no I/O.

The client's first websocket message is one DER ``SEQUENCE`` of explicitly tagged fields: [0] the
version (3390), [2] the destination it would like, [3] a token for the proxy (Pforte's ticket),
[5] a pre-connection blob, [6] its X.224 Connection Request. The proxy connects, forwards the
X.224 request, does TLS with the host, and answers with [0], [6] the host's X.224 Connection
Confirm, [7] the host's certificate chain (a ``SEQUENCE`` of ``OCTET STRING``) and [9] the
address it reached — or with [1] an error (``SEQUENCE`` of [0] code, [1] an HTTP status, [2] a
socket error, [3] a TLS alert). After that the websocket carries the RDP stream in the clear
(the proxy holds the TLS session with the host).

Only definite lengths are read, at most :data:`MAX_REQUEST` bytes, strings must be UTF-8; a
message that is anything else is :class:`Malformed`.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION = 3390
MAX_REQUEST = 16 * 1024       # bytes: a ticket, a name, an X.224 request and a small blob

GENERAL_ERROR = 1
NEGOTIATION_ERROR = 2

_SEQUENCE, _INTEGER, _OCTETS, _UTF8 = 0x30, 0x02, 0x04, 0x0C


class Malformed(ValueError):
    """Not an RDCleanPath request this proxy reads."""


@dataclass(frozen=True)
class Request:
    """What a page's RDP client asks of the proxy."""
    token: str                   # [3] proxy_auth: the ticket
    x224: bytes                  # [6] the client's X.224 Connection Request
    destination: str = ""        # [2] ignored: the ticket names the desktop
    preconnection_blob: str | None = None   # [5]


def looks_like_request(data: bytes) -> bool:
    """Whether a first message is DER (a ``SEQUENCE``) rather than one of Pforte's own texts."""
    return data[:1] == bytes((_SEQUENCE,))


# -- DER ----------------------------------------------------------------------------------------

def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _length(len(value)) + value


def _integer(n: int) -> bytes:
    raw = n.to_bytes(n.bit_length() // 8 + 1, "big")     # a leading 0 keeps it positive
    return _tlv(_INTEGER, raw)


def _explicit(number: int, inner: bytes) -> bytes:
    return _tlv(0xA0 | number, inner)


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """The tag, value and end of the TLV at ``pos``.

    Raises:
        Malformed: truncated, an indefinite or oversized length, a multi-byte tag.
    """
    if pos + 2 > len(data):
        raise Malformed("truncated")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise Malformed("multi-byte tag")
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 3 or pos + count > len(data):
            raise Malformed("length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise Malformed("truncated")
    return tag, data[pos:end], end


def _fields(body: bytes) -> dict[int, bytes]:
    """The explicitly tagged fields of a SEQUENCE's body: number → the inner TLV."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(body):
        tag, value, pos = _read_tlv(body, pos)
        if tag & 0xE0 != 0xA0 or tag & 0x1F in fields:
            raise Malformed("field")
        fields[tag & 0x1F] = value
    return fields


def _inner(field: bytes, tag: int) -> bytes:
    got, value, end = _read_tlv(field, 0)
    if got != tag or end != len(field):
        raise Malformed("field type")
    return value


def _text(field: bytes) -> str:
    try:
        return _inner(field, _UTF8).decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("not UTF-8") from None


def decode_request(data: bytes) -> Request:
    """A client's RDCleanPath request.

    Raises:
        Malformed: anything else (also a response, a wrong version, a request without a token
            or an X.224 request).
    """
    if len(data) > MAX_REQUEST:
        raise Malformed("too long")
    tag, body, end = _read_tlv(data, 0)
    if tag != _SEQUENCE or end != len(data):
        raise Malformed("not one SEQUENCE")
    fields = _fields(body)
    if 0 not in fields or int.from_bytes(_inner(fields[0], _INTEGER), "big") != VERSION:
        raise Malformed("version")
    if 3 not in fields or 6 not in fields or fields.keys() & {1, 7, 9}:
        raise Malformed("not a request")
    return Request(token=_text(fields[3]), x224=_inner(fields[6], _OCTETS),
                   destination=_text(fields[2]) if 2 in fields else "",
                   preconnection_blob=_text(fields[5]) if 5 in fields else None)


def encode_request(request: Request) -> bytes:
    """A request as a page's client sends it (for tests and Pforte's own clients)."""
    body = _explicit(0, _integer(VERSION))
    if request.destination:
        body += _explicit(2, _tlv(_UTF8, request.destination.encode()))
    body += _explicit(3, _tlv(_UTF8, request.token.encode()))
    if request.preconnection_blob is not None:
        body += _explicit(5, _tlv(_UTF8, request.preconnection_blob.encode()))
    body += _explicit(6, _tlv(_OCTETS, request.x224))
    return _tlv(_SEQUENCE, body)


def encode_response(x224: bytes, certificates: list[bytes], server_address: str) -> bytes:
    """The proxy's answer once the host's TLS session is up."""
    chain = _tlv(_SEQUENCE, b"".join(_tlv(_OCTETS, c) for c in certificates))
    return _tlv(_SEQUENCE, _explicit(0, _integer(VERSION)) + _explicit(6, _tlv(_OCTETS, x224))
                + _explicit(7, chain) + _explicit(9, _tlv(_UTF8, server_address.encode())))


def encode_error(http_status: int, code: int = GENERAL_ERROR) -> bytes:
    """The proxy's refusal, with the HTTP status the page's client shows."""
    error = _tlv(_SEQUENCE, _explicit(0, _integer(code)) + _explicit(1, _integer(http_status)))
    return _tlv(_SEQUENCE, _explicit(0, _integer(VERSION)) + _explicit(1, error))


@dataclass(frozen=True)
class Response:
    x224: bytes
    certificates: list[bytes]
    server_address: str


@dataclass(frozen=True)
class Refusal:
    code: int
    http_status: int | None


def decode_response(data: bytes) -> Response | Refusal:
    """The proxy's answer (for Pforte's own clients and tests).

    Raises:
        Malformed: neither an answer nor a refusal.
    """
    tag, body, end = _read_tlv(data, 0)
    if tag != _SEQUENCE or end != len(data):
        raise Malformed("not one SEQUENCE")
    fields = _fields(body)
    if 1 in fields:
        error = _fields(_inner(fields[1], _SEQUENCE))
        status = error.get(1)
        return Refusal(int.from_bytes(_inner(error[0], _INTEGER), "big"),
                       int.from_bytes(_inner(status, _INTEGER), "big") if status else None)
    if not {6, 7, 9} <= fields.keys():
        raise Malformed("not a response")
    chain, certificates, pos = _inner(fields[7], _SEQUENCE), [], 0
    while pos < len(chain):
        tag, value, pos = _read_tlv(chain, pos)
        certificates.append(value)
    return Response(_inner(fields[6], _OCTETS), certificates, _text(fields[9]))
