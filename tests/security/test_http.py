"""Both HTTP ports as an attacker meets them: headers on every kind of response, the client's
address and scheme behind a reverse proxy, TLS, and clients that are slow or send nothing."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import subprocess
import sys
import time

import aiohttp
import pytest

from testbed import self_signed_certificate

from testbed.demo import TENANT

from ..conftest import USERS
from .conftest import DOMAIN, IDLE

pytestmark = pytest.mark.integration

SECURITY_HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options",
                    "Referrer-Policy")


async def test_every_kind_of_portal_response_carries_the_security_headers(live):
    async with live.client("10.40.0.1") as http:
        for _ in range(6):   # five wrong passwords, then the sixth answer is 429
            locked = await http.post(f"{live.portal}/api/v1/login",
                                     json={"username": f"nobody@{DOMAIN}", "password": "x"})
        responses = {
            "redirect": await http.get(f"{live.portal}/", allow_redirects=False),
            "page": await http.get(f"{live.portal}/login"),
            "unauthorised": await http.get(f"{live.portal}/api/v1/pools"),
            "not found": await http.get(f"{live.portal}/no/such/page"),
            "api not found": await http.get(f"{live.portal}/api/v1/nothing"),
            "bad request": await http.post(f"{live.portal}/api/v1/login", data="nope"),
            "method": await http.put(f"{live.portal}/api/v1/login"),
            "locked": locked,
            "static": await http.get(f"{live.portal}/static/portal.css"),
            "openapi": await http.get(f"{live.portal}/api/v1/openapi.json"),
        }
    assert responses["locked"].status == 429 and responses["redirect"].status == 303
    for kind, r in responses.items():
        for header in SECURITY_HEADERS:
            assert header in r.headers, (kind, header)
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Server"] == "Pforte", kind
        if r.status >= 400 and r.url.path.startswith("/api/"):
            assert set(await r.json()) == {"error", "message"}, kind


async def test_the_gateway_names_no_library_or_version(live):
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz", "/metrics", "/nothing"):
            r = await http.get(f"{live.gateway_http}{path}")
            assert r.headers["Server"] == "Pforte", path
        async with http.ws_connect(live.gateway_ws) as ws:
            assert ws._response.headers["Server"] == "Pforte"


async def test_forwarded_headers_count_only_from_a_trusted_proxy(live):
    """Through the trusted proxy (127.0.0.1) one address's failures lock only that address; a
    client that is not a proxy (127.0.0.2) cannot choose its address by header."""
    url = f"{live.portal}/api/v1/login"
    for i in range(50):
        async with live.client("10.40.1.1") as http:
            await http.post(url, json={"username": f"ghost{i}@{DOMAIN}", "password": "x"})
    async with live.client("10.40.1.1") as http:
        r = await http.post(url, json={"username": f"bernd@{DOMAIN}",
                                       "password": USERS["bernd"][1]})
        assert r.status == 429                     # that address is locked ...
    async with live.client("10.40.1.2") as http:
        r = await http.post(url, json={"username": f"bernd@{DOMAIN}",
                                       "password": USERS["bernd"][1]})
        assert r.status == 200                     # ... everybody else is not
    untrusted = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=untrusted) as http:
        r = await http.post(url, json={"username": f"ghost@{DOMAIN}", "password": "x"},
                            headers={"X-Forwarded-For": "10.40.1.3",
                                     "X-Forwarded-Proto": "https"})
        assert r.status == 401 and "Strict-Transport-Security" not in r.headers
    sources = {e["source"] for e in await live.audit() if e["actor"] == "ghost"}
    assert "127.0.0.2" in sources and "10.40.1.3" not in sources


async def test_https_at_the_proxy_makes_the_cookie_secure_and_adds_hsts(live):
    async with aiohttp.ClientSession() as http:
        body = {"username": f"user5@{DOMAIN}", "password": USERS["user5"][1]}
        r = await http.post(f"{live.portal}/api/v1/login", json=body,
                            headers={"X-Forwarded-For": "10.40.2.1", "X-Forwarded-Proto": "https"})
        assert r.status == 200
        assert r.cookies["pforte_login"]["secure"] is True
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
        r = await http.post(f"{live.portal}/api/v1/login", json=body,
                            headers={"X-Forwarded-For": "10.40.2.1"})
        assert not r.cookies["pforte_login"]["secure"]
        assert "Strict-Transport-Security" not in r.headers


async def test_the_broker_serves_https_itself(own_live, tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    live = own_live(broker_options={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    client = ssl.create_default_context(cafile=str(cert))
    portal = live.portal.replace("http://", "https://")
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{portal}/api/v1/login", ssl=client, json={
            "username": f"bernd@{DOMAIN}", "password": USERS["bernd"][1]})
        assert r.status == 200
        assert r.cookies["pforte_login"]["secure"] is True
        assert "Strict-Transport-Security" in r.headers
        with pytest.raises(aiohttp.ClientError):
            await http.get(f"{live.portal}/login")          # no plain text on that port


async def test_pforte_admin_trusts_the_internal_ca_it_is_given(own_live, tmp_path):
    """A broker whose certificate an internal CA signed: ``pforte admin`` refuses it until it
    is given that CA (``--ca-file`` or ``PFORTE_CA_FILE``), and shows times with their zone."""
    cert, key = self_signed_certificate(tmp_path)
    live = own_live(broker_options={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    portal = live.portal.replace("http://", "https://")
    async with aiohttp.ClientSession() as http:        # something for the audit to show
        await http.post(f"{portal}/api/v1/login", ssl=ssl.create_default_context(
            cafile=str(cert)), json={"username": f"bernd@{DOMAIN}", "password": "wrong"})
    token_file = tmp_path / "token"
    token_file.write_text(live.admin_token)
    command = [sys.executable, "-m", "pforte", "admin", "--url", portal, "--token-file",
               str(token_file), "--tenant", TENANT, "audit", "--limit", "1"]
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("SSL_CERT_FILE", "PFORTE_CA_FILE")}

    def run(*extra: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(command[:4] + list(extra) + command[4:], capture_output=True,
                              text=True, timeout=60, env={**environment, **env})
    refused = run()
    assert refused.returncode == 1 and "broker unreachable" in refused.stderr
    given = run("--ca-file", str(cert), TZ="Europe/Berlin")
    assert given.returncode == 0, given.stderr
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CET", given.stdout), given.stdout
    from_environment = run(PFORTE_CA_FILE=str(cert), TZ="UTC")
    assert from_environment.returncode == 0 and " UTC" in from_environment.stdout


async def silent_connections(port: int, count: int) -> list[asyncio.StreamReader]:
    readers = []
    for _ in range(count):
        reader, _writer = await asyncio.open_connection("127.0.0.1", port)
        readers.append((reader, _writer))
    return readers


@pytest.mark.parametrize("port_of", ["portal_port", "gateway_port"])
async def test_idle_and_slow_clients_are_closed_and_hold_nothing(live, port_of):
    """Connections that never send a request, or drip its headers a byte at a time, are
    closed after ``http_idle_timeout``; meanwhile the port serves everyone else."""
    port = getattr(live, port_of)
    idle = await silent_connections(port, 300)
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
    slow_writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    async with aiohttp.ClientSession() as http:     # others are served meanwhile
        r = await http.get(f"http://127.0.0.1:{port}/healthz")
        assert r.status == 200
    started = time.monotonic()
    closed_at = None
    while closed_at is None:
        slow_writer.write(b"X")                       # one more header byte, each 200 ms
        await asyncio.sleep(0.2)
        if slow_reader.at_eof() or slow_writer.is_closing():
            closed_at = time.monotonic()
        else:
            try:
                if await asyncio.wait_for(slow_reader.read(1), 0.01) == b"":
                    closed_at = time.monotonic()
            except asyncio.TimeoutError:
                pass
        assert time.monotonic() - started < IDLE * 5, "a slow client was never closed"
    for reader, writer in idle:
        assert await asyncio.wait_for(reader.read(), IDLE * 3) == b""
        writer.close()
    slow_writer.close()


async def test_a_request_body_sent_a_byte_at_a_time_is_cut_off(live):
    reader, writer = await asyncio.open_connection("127.0.0.1", live.portal_port)
    writer.write(b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000\r\n\r\n{")
    answer = b""
    started = time.monotonic()
    while not answer:
        writer.write(b" ")
        try:
            answer = await asyncio.wait_for(reader.read(100), 0.5)
            if answer == b"":
                break
        except asyncio.TimeoutError:
            pass
        assert time.monotonic() - started < 30, "a slow body held the connection"
    assert answer == b"" or answer.startswith((b"HTTP/1.1 408", b"HTTP/1.1 413")), answer
    writer.close()


MALFORMED = {   # what a request smuggler or a scanner sends; the parser refuses each
    "two lengths": "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                   "Content-Length: 5\r\n\r\nabcde",
    "length and chunks": "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "a NUL in the path": "GET /ab\x00cd HTTP/1.1\r\nHost: x\r\n\r\n",
    "a script in the path": "GET /<script>alert(1)</script> HTTP/1.1\r\nHost: x\r\n\r\n",
    "a method in lower case": "get / HTTP/1.1\r\nHost: x\r\n\r\n",
    "a control character in a header": "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
}


@pytest.mark.parametrize("port", ["portal", "gateway"])
@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_request_is_answered_by_pforte_and_not_echoed(live, port, case):
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", live.portal_port if port == "portal" else live.gateway_port)
    writer.write(MALFORMED[case].encode("latin-1"))
    answer = await asyncio.wait_for(reader.read(), IDLE + 10)     # until it closes
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0].split()[1].startswith("4"), answer[:200]
    assert headers["server"] == "Pforte", headers
    for header in SECURITY_HEADERS:
        assert header.lower() in headers, (case, header)
    for echoed in (b"script", b"alert", b"abcde", b"get /"):
        assert echoed not in body.lower(), body
