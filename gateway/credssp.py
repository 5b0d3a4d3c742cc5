"""Network Level Authentication for the user: the gateway runs CredSSP ([MS-CSSP]) with an RDP
host that requires it, over the host's TLS, with the user's logon from the ticket — so the page's
client (which never holds the password) gets a host that already knows who she is.

The exchange, as :class:`CredSspClient` steps it (messages in, messages out; the caller moves
the bytes): NTLM's three messages travel in ``TSRequest.negoTokens`` (plain NTLM, which FreeRDP
and Windows take; see FIELD-NOTES); with the last one goes ``pubKeyAuth``, the SHA-256 of a
client nonce and the host's public key, sealed with NTLM's session key — it binds the
authentication to this TLS session; the host answers with its own hash, which is checked (a
man in the middle with another key fails here); then the credentials go, sealed. Protocol
version 6 (with the CVE-2018-0886 nonce); a host's ``errorCode`` refuses.

NTLM itself is pyspnego's (``spnego.client(..., protocol="ntlm")``, its public API).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

import spnego
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from wire import der

VERSION = 6
_CLIENT_HASH = b"CredSSP Client-To-Server Binding Hash\0"
_SERVER_HASH = b"CredSSP Server-To-Client Binding Hash\0"


class CredSspFailed(Exception):
    """The host refused the logon, or answered what CredSSP does not allow."""


@dataclass(frozen=True)
class TsRequest:
    version: int
    nego_token: bytes | None = None
    auth_info: bytes | None = None
    pub_key_auth: bytes | None = None
    error_code: int | None = None
    client_nonce: bytes | None = None


def encode(request: TsRequest) -> bytes:
    def octets(value: bytes) -> bytes:
        return der.tlv(der.OCTETS, value)
    body = der.explicit(0, der.integer(request.version))
    if request.nego_token is not None:
        item = der.tlv(der.SEQUENCE, der.explicit(0, octets(request.nego_token)))
        body += der.explicit(1, der.tlv(der.SEQUENCE, item))
    if request.auth_info is not None:
        body += der.explicit(2, octets(request.auth_info))
    if request.pub_key_auth is not None:
        body += der.explicit(3, octets(request.pub_key_auth))
    if request.client_nonce is not None:
        body += der.explicit(5, octets(request.client_nonce))
    return der.tlv(der.SEQUENCE, body)


def decode(data: bytes) -> TsRequest:
    """A host's TSRequest.

    Raises:
        der.Malformed: anything else.
    """
    tag, body, end = der.read_tlv(data, 0)
    if tag != der.SEQUENCE or end != len(data):
        raise der.Malformed("not one SEQUENCE")
    fields = der.fields(body)
    nego = None
    if 1 in fields:
        items = der.sequence_of(der.inner(fields[1], der.SEQUENCE))
        if items:
            nego = der.inner(der.fields(items[0][1])[0], der.OCTETS)
    return TsRequest(
        version=der.number(fields[0]), nego_token=nego,
        auth_info=der.inner(fields[2], der.OCTETS) if 2 in fields else None,
        pub_key_auth=der.inner(fields[3], der.OCTETS) if 3 in fields else None,
        error_code=der.number(fields[4]) if 4 in fields else None)


def credentials(domain: str, user: str, password: str) -> bytes:
    """TSCredentials holding TSPasswordCreds (UTF-16LE, as Windows reads them)."""
    def field(n: int, value: str) -> bytes:
        return der.explicit(n, der.tlv(der.OCTETS, value.encode("utf-16-le")))
    password_creds = der.tlv(der.SEQUENCE, field(0, domain) + field(1, user) + field(2, password))
    return der.tlv(der.SEQUENCE, der.explicit(0, der.integer(1))
                   + der.explicit(1, der.tlv(der.OCTETS, password_creds)))


def subject_public_key(certificate: bytes) -> bytes:
    """The key CredSSP binds to: the certificate's subjectPublicKey (PKCS#1 for RSA)."""
    key = x509.load_der_x509_certificate(certificate).public_key()
    try:
        return key.public_bytes(Encoding.DER, PublicFormat.PKCS1)
    except ValueError:      # not RSA: the BIT STRING's contents as they are
        spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        _, body, _ = der.read_tlv(spki, 0)
        items = der.sequence_of(body)
        return items[1][1][1:]


class CredSspClient:
    """One CredSSP exchange (see the module's docstring): send :meth:`first`, then the
    :meth:`answer` to each of the host's messages until :attr:`done`."""

    def __init__(self, domain: str, user: str, password: str, certificate: bytes) -> None:
        self._logon = (domain, user, password)
        self._public_key = subject_public_key(certificate)
        self._ntlm = spnego.client(f"{domain}\\{user}" if domain else user, password,
                                   hostname="unspecified", protocol="ntlm")
        self._nonce = os.urandom(32)
        self._step = "negotiate"

    @property
    def done(self) -> bool:
        """The credentials are on their way: the RDP connection goes on."""
        return self._step == "done"

    def first(self) -> bytes:
        return encode(TsRequest(VERSION, nego_token=self._ntlm.step()))

    def answer(self, data: bytes) -> bytes:
        """Our next message to the host's ``data`` (the last one carries the credentials).

        Raises:
            CredSspFailed: the host refused or broke the protocol.
        """
        try:
            request = decode(data)
        except (der.Malformed, KeyError, IndexError) as exc:
            raise CredSspFailed(f"not a TSRequest: {exc}") from None
        if request.error_code:
            raise CredSspFailed(f"the host refused the logon (error {request.error_code:#x})")
        try:
            if self._step == "negotiate" and request.nego_token:
                if request.version < 5:
                    raise CredSspFailed(f"CredSSP version {request.version}: the host lacks "
                                        "the fix for CVE-2018-0886")
                authenticate = self._ntlm.step(request.nego_token)
                self._step = "public key"
                return encode(TsRequest(
                    VERSION, nego_token=authenticate, client_nonce=self._nonce,
                    pub_key_auth=self._ntlm.wrap(self._binding(_CLIENT_HASH)).data))
            if self._step == "public key" and request.pub_key_auth:
                answered = self._ntlm.unwrap(request.pub_key_auth).data
                if not hmac.compare_digest(answered, self._binding(_SERVER_HASH)):
                    raise CredSspFailed("the host's public key answer does not match its TLS key")
                self._step = "done"
                return encode(TsRequest(VERSION, auth_info=self._ntlm.wrap(
                    credentials(*self._logon)).data))
        except spnego.exceptions.SpnegoError as exc:
            raise CredSspFailed(f"NTLM: {type(exc).__name__}") from None
        raise CredSspFailed(f"unexpected TSRequest in step {self._step!r}")

    def _binding(self, direction: bytes) -> bytes:
        return hashlib.sha256(direction + self._nonce + self._public_key).digest()
