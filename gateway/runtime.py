"""Running aiohttp applications until SIGINT/SIGTERM, on uvloop or asyncio. Shared by every
``pforte`` command that serves (broker, gateway, demo)."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import ssl
from typing import Awaitable, Callable, Sequence

from aiohttp import web

SHUTDOWN_TIMEOUT = 10.0  # seconds open connections get to finish on shutdown
LISTEN_BACKLOG = 4096    # a morning's burst of connects waits in the kernel, not refused


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


def run_workers(workers: int, child: Callable[[], None]) -> None:
    """Run ``child`` in ``workers`` forked processes (which share their port with SO_REUSEPORT);
    SIGINT/SIGTERM are passed on, and this returns when all have exited."""
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                child()
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


async def serve(sites: Sequence[tuple[web.Application, str, int]], *,
                on_started: Callable[[list[tuple[str, int]]], Awaitable[None] | None] | None = None,
                reuse_port: bool = False, ssl_context: ssl.SSLContext | None = None) -> None:
    """Serve applications on (host, port) until SIGINT or SIGTERM, then clean up in reverse order.

    ``on_started`` receives the bound (host, port) of each site (useful with port 0).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runners: list[web.AppRunner] = []
    try:
        bound = []
        for app, host, port in sites:
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port,
                               backlog=LISTEN_BACKLOG, ssl_context=ssl_context)
            await site.start()
            sock = site._server.sockets[0]  # aiohttp exposes the bound address only here
            bound.append(sock.getsockname()[:2])
        if on_started is not None:
            result = on_started(bound)
            if asyncio.iscoroutine(result):
                await result
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for runner in reversed(runners):
            await runner.cleanup()
