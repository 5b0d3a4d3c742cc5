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

from . import der
from .der import Malformed

VERSION = 3390
MAX_REQUEST = 16 * 1024       # bytes: a ticket, a name, an X.224 request and a small blob

GENERAL_ERROR = 1
NEGOTIATION_ERROR = 2

__all__ = ["Malformed", "Request", "Response", "Refusal", "decode_request", "encode_request",
           "decode_response", "encode_response", "encode_error", "looks_like_request"]


@dataclass(frozen=True)
class Request:
    """What a page's RDP client asks of the proxy."""
    token: str                   # [3] proxy_auth: the ticket
    x224: bytes                  # [6] the client's X.224 Connection Request
    destination: str = ""        # [2] ignored: the ticket names the desktop
    preconnection_blob: str | None = None   # [5]


def looks_like_request(data: bytes) -> bool:
    """Whether a first message is DER (a ``SEQUENCE``) rather than one of Pforte's own texts."""
    return data[:1] == bytes((der.SEQUENCE,))


def decode_request(data: bytes) -> Request:
    """A client's RDCleanPath request.

    Raises:
        Malformed: anything else (also a response, a wrong version, a request without a token
            or an X.224 request).
    """
    if len(data) > MAX_REQUEST:
        raise Malformed("too long")
    tag, body, end = der.read_tlv(data, 0)
    if tag != der.SEQUENCE or end != len(data):
        raise Malformed("not one SEQUENCE")
    fields = der.fields(body)
    if 0 not in fields or der.number(fields[0]) != VERSION:
        raise Malformed("version")
    if 3 not in fields or 6 not in fields or fields.keys() & {1, 7, 9}:
        raise Malformed("not a request")
    return Request(token=der.utf8(fields[3]), x224=der.inner(fields[6], der.OCTETS),
                   destination=der.utf8(fields[2]) if 2 in fields else "",
                   preconnection_blob=der.utf8(fields[5]) if 5 in fields else None)


def _text(value: str) -> bytes:
    return der.tlv(der.UTF8, value.encode())


def _octets(value: bytes) -> bytes:
    return der.tlv(der.OCTETS, value)


def encode_request(request: Request) -> bytes:
    """A request as a page's client sends it (for tests and Pforte's own clients)."""
    body = der.explicit(0, der.integer(VERSION))
    if request.destination:
        body += der.explicit(2, _text(request.destination))
    body += der.explicit(3, _text(request.token))
    if request.preconnection_blob is not None:
        body += der.explicit(5, _text(request.preconnection_blob))
    body += der.explicit(6, _octets(request.x224))
    return der.tlv(der.SEQUENCE, body)


def encode_response(x224: bytes, certificates: list[bytes], server_address: str) -> bytes:
    """The proxy's answer once the host's TLS session is up."""
    chain = der.tlv(der.SEQUENCE, b"".join(_octets(c) for c in certificates))
    return der.tlv(der.SEQUENCE, der.explicit(0, der.integer(VERSION))
                   + der.explicit(6, _octets(x224)) + der.explicit(7, chain)
                   + der.explicit(9, _text(server_address)))


def encode_error(http_status: int, code: int = GENERAL_ERROR) -> bytes:
    """The proxy's refusal, with the HTTP status the page's client shows."""
    error = der.tlv(der.SEQUENCE, der.explicit(0, der.integer(code))
                    + der.explicit(1, der.integer(http_status)))
    return der.tlv(der.SEQUENCE, der.explicit(0, der.integer(VERSION)) + der.explicit(1, error))


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
    tag, body, end = der.read_tlv(data, 0)
    if tag != der.SEQUENCE or end != len(data):
        raise Malformed("not one SEQUENCE")
    fields = der.fields(body)
    if 1 in fields:
        error = der.fields(der.inner(fields[1], der.SEQUENCE))
        return Refusal(der.number(error[0]), der.number(error[1]) if 1 in error else None)
    if not {6, 7, 9} <= fields.keys():
        raise Malformed("not a response")
    certificates = [value for _, value in der.sequence_of(der.inner(fields[7], der.SEQUENCE))]
    return Response(der.inner(fields[6], der.OCTETS), certificates, der.utf8(fields[9]))
