"""Running aiohttp applications until SIGINT/SIGTERM, on uvloop or asyncio, and what every HTTP
port of Pforte shares: TLS, the client's address behind trusted proxies, idle limits, the server's
name. Shared by every ``pforte`` command that serves (broker, gateway, demo).

Shutdown order: on SIGTERM each application's :data:`DRAIN` hook runs first, while the listener
still accepts and every connection is still read (so a draining gateway can answer new connections
with "try again" and open sessions keep working); only then does aiohttp's cleanup close the
listener and the connections.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import resource
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

SHUTDOWN_TIMEOUT = 10.0  # seconds open connections get to finish on shutdown
LISTEN_BACKLOG = 4096    # a morning's burst of connects waits in the kernel, not refused
HTTP_IDLE_TIMEOUT = 15.0  # seconds a connection may be silent: before its first request is
                          # complete (slow or idle clients) and between keep-alive requests
SERVER_NAME = "Pforte"   # the Server header: no library names or versions

DRAIN = web.AppKey("drain", Callable[[], Awaitable[None]])  # run on SIGTERM before cleanup

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(peer: str | None, forwarded_for: Sequence[str],
                   trusted: Sequence[Network]) -> str:
    """The client's address: the peer's, or when the peer is a trusted proxy, the last address in
    ``X-Forwarded-For`` that is not itself a trusted proxy (anything before it is the client's
    word and proves nothing).

    Args:
        forwarded_for: every ``X-Forwarded-For`` line of the request, in order. A proxy such as
            HAProxy (``option forwardfor``) adds a line of its own after the client's: reading
            only the first line would take the client's word for its address.
    """
    address = peer or "-"
    if not forwarded_for or not is_trusted(address, trusted):
        return address
    hops = [h.strip() for line in forwarded_for for h in line.split(",")]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return address  # not an address: the proxy's own
    return address


def forwarded_proto(peer: str | None, lines: Sequence[str], trusted: Sequence[Network]) -> str:
    """The scheme a trusted proxy says the client used (the last ``X-Forwarded-Proto`` value of
    every line, in lower case); "" when the peer is no trusted proxy or said nothing."""
    if not lines or not is_trusted(peer, trusted):
        return ""
    return lines[-1].split(",")[-1].strip().lower()


def is_trusted(address: str | None, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def bearer(request: web.BaseRequest) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header; None without one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def bearer_is(request: web.BaseRequest, secret: bytes) -> bool:
    """Whether the request's bearer token is ``secret`` (compared in constant time)."""
    token = bearer(request)
    return token is not None and hmac.compare_digest(token.encode(), secret)


def tls_context(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """A server TLS context (TLS 1.2 or newer) from a certificate chain and key; None: plain."""
    if cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


async def name_the_server(_request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: the Server header names no library and no version."""
    response.headers["Server"] = SERVER_NAME


async def plain_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook for ports that serve no pages (the gateway's): the
    security headers of :data:`REFUSAL_HEADERS` on every response."""
    for name, value in REFUSAL_HEADERS.items():
        response.headers.setdefault(name, value)


ProtocolFactory = Callable[[], asyncio.Protocol]


@dataclass(frozen=True)
class Site:
    """One HTTP port: an application on (host, port), over TLS when given a context; also on a
    Unix socket when given its path. ``front``, given aiohttp's protocol factory, returns the
    listener's own: a server that reads some requests itself (the gateway's websockets) and hands
    the others to aiohttp."""
    app: web.Application
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    idle_timeout: float = HTTP_IDLE_TIMEOUT
    unix_path: Path | None = None
    front: Callable[[ProtocolFactory], ProtocolFactory] | None = None


# what a request gets that never reached an application (one the HTTP parser refused)
REFUSAL_HEADERS = {"Server": SERVER_NAME, "Content-Security-Policy": "default-src 'none'",
                   "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


class _RequestHandler(RequestHandler):
    """aiohttp's HTTP protocol, but a request its parser refuses (two ``Content-Length``s, one
    with ``Transfer-Encoding``, a NUL or control character in the target, a method in lower
    case, ...) is answered by Pforte: its own short text, its security headers, no library
    name, never a word of what was sent; and a hostile client's garbage logs at DEBUG only."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
        else:
            self.logger.debug("refused a malformed request: %s", exc)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        response = web.Response(status=status, text=f"{status} {phrase}\n",
                                headers=REFUSAL_HEADERS)
        response.force_close()
        return response


def protocol_factory(runner: web.AppRunner) -> ProtocolFactory:
    """aiohttp's protocol for a set-up runner, as Pforte serves it (:class:`_RequestHandler`)."""
    server = runner.server
    loop = asyncio.get_running_loop()
    return lambda: _RequestHandler(server, loop=loop, **server._kwargs)


def make_runner(app: web.Application, idle_timeout: float = HTTP_IDLE_TIMEOUT) -> web.AppRunner:
    """The runner every Pforte HTTP port uses: no access log (it would log URLs and addresses
    twice), the idle limit (which aiohttp applies from the moment a connection opens, so it also
    ends clients that never complete a request), the shutdown grace."""
    return web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT,
                         keepalive_timeout=idle_timeout)


def raise_file_limit() -> None:
    """Let this process hold as many sockets as the system allows (every relayed session takes
    two). Root may go past the hard limit up to the kernel's ``fs.nr_open``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as fh:
            ceiling = int(fh.read())
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, ceiling))
    except (OSError, ValueError):
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_workers(workers: int, child: Callable[[int], None]) -> None:
    """Run ``child(index)`` in ``workers`` forked processes (which share their port with
    SO_REUSEPORT); SIGINT/SIGTERM are passed on, and this returns when all have exited."""
    pids = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                child(index)
            finally:
                os._exit(0)
        pids.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    for pid in pids:
        os.waitpid(pid, 0)


def run(main: Callable[[], Awaitable[None]], *, use_uvloop: bool = True) -> None:
    """Run ``main()`` on a fresh event loop (uvloop unless told otherwise)."""
    raise_file_limit()
    if use_uvloop:
        import uvloop
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    else:
        asyncio.run(main())


class Listening:
    """Sites being served: their bound (host, port), and :meth:`close`."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.servers: list[asyncio.AbstractServer] = []
        self.bound: list[tuple[str, int]] = []

    async def close(self) -> None:
        """Stop listening, then close every connection (aiohttp's cleanup, in reverse order)."""
        for server in self.servers:
            server.close()
        for runner in reversed(self.runners):
            await runner.cleanup()


async def listen(sites: Sequence[Site], *, reuse_port: bool = False) -> Listening:
    """Start serving ``sites``."""
    loop = asyncio.get_running_loop()
    listening = Listening()
    try:
        for spec in sites:
            runner = make_runner(spec.app, spec.idle_timeout)
            await runner.setup()
            listening.runners.append(runner)
            factory = protocol_factory(runner)
            if spec.front is not None:
                factory = spec.front(factory)
            server = await loop.create_server(factory, spec.host, spec.port,
                                              reuse_address=True, reuse_port=reuse_port,
                                              backlog=LISTEN_BACKLOG, ssl=spec.ssl_context)
            listening.servers.append(server)
            sock = server.sockets[0]
            if spec.unix_path is not None:
                listening.servers.append(await loop.create_unix_server(
                    factory, str(spec.unix_path), backlog=LISTEN_BACKLOG))
            listening.bound.append(sock.getsockname()[:2])
    except BaseException:
        await listening.close()
        raise
    return listening


async def serve(sites: Sequence[Site], *,
                on_started: Callable[[list[tuple[str, int]]], Awaitable[None] | None] | None = None,
                reuse_port: bool = False) -> None:
    """Serve sites until SIGINT or SIGTERM; then run every application's :data:`DRAIN` hook (all
    at once), then clean up in reverse order.

    ``on_started`` receives the bound (host, port) of each site (useful with port 0).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    listening: Listening | None = None
    try:
        listening = await listen(sites, reuse_port=reuse_port)
        if on_started is not None:
            result = on_started(listening.bound)
            if asyncio.iscoroutine(result):
                await result
        await stop.wait()
        await asyncio.gather(*(s.app[DRAIN]() for s in sites if DRAIN in s.app))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if listening is not None:
            await listening.close()
