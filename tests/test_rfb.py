"""The RFB handshake the gateway speaks to desktops: against scripted servers and random bytes."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from wire.errors import DesktopError
from wire.rfb import SEC_NONE, SEC_VNC_AUTH, authenticate_desktop, vnc_auth_response
from gateway.relay import DesktopLink


class _Transport:
    """Collects what the link writes; enough of a transport for the handshake."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def get_extra_info(self, name: str, default=None):
        return default

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def handshake(server_bytes: bytes, secret: bytes | None) -> bytes:
    link = DesktopLink(1 << 20)
    transport = _Transport()
    link.connection_made(transport)
    link.data_received(server_bytes)
    link.eof_received()
    await asyncio.wait_for(authenticate_desktop(link, secret), 2)
    return bytes(transport.written)


async def test_vnc_authentication_answers_the_challenge_with_des():
    challenge = bytes(range(16))
    written = await handshake(b"RFB 003.008\n" + bytes([1, SEC_VNC_AUTH]) + challenge
                              + struct.pack("!I", 0), b"secret")
    assert written == b"RFB 003.008\n" + bytes([SEC_VNC_AUTH]) + vnc_auth_response(
        b"secret", challenge)


async def test_a_refused_password_is_a_desktop_error_with_the_reason():
    reason = b"Authentication failed"
    with pytest.raises(DesktopError, match="Authentication failed"):
        await handshake(b"RFB 003.008\n" + bytes([1, SEC_VNC_AUTH]) + bytes(16)
                        + struct.pack("!I", 1) + struct.pack("!I", len(reason)) + reason, b"x")


async def test_a_desktop_without_usable_security_is_refused():
    with pytest.raises(DesktopError, match="no security type"):
        await handshake(b"RFB 003.008\n" + bytes([1, 19]), b"x")  # VeNCrypt only


async def test_none_is_used_when_the_desktop_asks_for_no_password():
    written = await handshake(b"RFB 003.008\n" + bytes([1, SEC_NONE]) + struct.pack("!I", 0), None)
    assert written.endswith(bytes([SEC_NONE]))


def test_the_des_key_uses_the_first_eight_bytes_bit_reversed():
    assert vnc_auth_response(b"password", bytes(16)) == vnc_auth_response(b"password-long",
                                                                           bytes(16))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=80),
                 st.binary(max_size=60).map(lambda b: b"RFB 003.008\n" + b)))
def test_random_desktop_bytes_give_only_clean_errors(data):
    async def run():
        try:
            await handshake(data, b"secret")
        except (DesktopError, ConnectionError):
            pass
    asyncio.run(run())
