"""A gateway run as several worker processes on one port (``pforte gateway --workers N``): the
kernel hands each new connection to any worker (SO_REUSEPORT), so a client reattaching after a
network drop may reach a worker other than the one that holds its session.

Each worker also listens on a Unix socket of its own, in a directory only the gateway's user can
enter. A resume token begins with the index of the worker that issued it (``"2.…"``); a worker
that receives a resume for a sibling carries the connection on to that sibling's socket, frame by
frame, with the client's address in ``X-Forwarded-For``. The holder sees an ordinary reattach.
A client that drops again is dropped again (the inner connection breaks without a close frame, so
the holder keeps the session for the next resume); the holder's close code reaches the client.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType

from wire.closes import Close
from wire.resume import Resume, encode

from .doorway import Upgrade
from .viewer import Ended, Ending, Kind, ViewerLink


@dataclass(frozen=True)
class Workers:
    """This process's place among the gateway's workers, and each worker's socket by index."""
    index: int
    sockets: tuple[Path, ...]

    def new_token(self) -> str:
        return f"{self.index}.{secrets.token_urlsafe(32)}"

    def holder(self, token: str) -> int | None:
        """The sibling worker that issued ``token``; None when it is this one's (or no worker's)."""
        head, dot, _ = token.partition(".")
        if not dot or not head.isdigit() or len(head) > 4:
            return None
        index = int(head)
        return index if index != self.index and index < len(self.sockets) else None


def socket_directory(workers: int) -> tuple[Path, tuple[Path, ...]]:
    """A private directory (mode 0700) and the socket path of each worker in it."""
    directory = Path(tempfile.mkdtemp(prefix="pforte-gateway-"))
    return directory, tuple(directory / f"worker-{i}.sock" for i in range(workers))


def remove_socket_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


async def carry(viewer: ViewerLink, upgrade: Upgrade, source: str,
                socket: Path, resume: Resume, max_message: int) -> None:
    """Carry the client's connection ``viewer`` to the sibling listening on ``socket``, which
    holds the session of ``resume``, until either side ends."""
    headers = {"X-Forwarded-For": source}
    if "origin" in upgrade.headers:
        headers["Origin"] = upgrade.headers["origin"]
    http = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket)))
    try:
        try:
            inner = await http.ws_connect("http://worker/ws", headers=headers,
                                          max_msg_size=max_message, autoclose=False)
        except (aiohttp.ClientError, OSError):
            viewer.close_with(Close.RESUME)
            return
        await inner.send_str(encode(resume))
        inward = asyncio.ensure_future(_inward(viewer, inner))
        outward = asyncio.ensure_future(_outward(inner, viewer))
        done, pending = await asyncio.wait({inward, outward},
                                           return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if inward in done:
            said = inward.result()
            if isinstance(said, tuple):               # the client said goodbye: so do we
                await inner.close(code=said[0], message=said[1].encode())
                return
            if said is _BROKE:                        # the client broke off: so do we, below
                return
            holder_said = None                        # writing to the holder failed
        else:
            holder_said = outward.result()
            if holder_said is _SINK_FAILED:           # writing to the client failed
                return
        code, reason = (holder_said if isinstance(holder_said, tuple)
                        else (Close.RESUME.code, Close.RESUME.reason))
        await inner.close()
        viewer.close(code, reason)                    # the client hears the holder's word
    finally:
        await http.close()                            # frameless, if still open


_BROKE = object()          # the side read from ended without a close frame
_SINK_FAILED = object()    # the side written to failed


async def _inward(viewer: ViewerLink, inner: aiohttp.ClientWebSocketResponse):
    """The client's messages to the holder until the client ends: its close (code, reason),
    ``_BROKE`` when it ended without one, ``_SINK_FAILED`` when writing to the holder failed."""
    while True:
        msg = await viewer.receive()
        try:
            if isinstance(msg, Ended):
                return (msg.code, msg.reason) if msg.how is Ending.CLOSE else _BROKE
            if msg.kind is Kind.BINARY:
                await inner.send_bytes(msg.data)
            else:
                await inner.send_str(msg.data)
        except (ConnectionError, aiohttp.ClientError):
            return _SINK_FAILED


async def _outward(inner: aiohttp.ClientWebSocketResponse, viewer: ViewerLink):
    """The holder's messages to the client until the holder ends: its close (code, reason),
    ``_BROKE`` when it ended without one, ``_SINK_FAILED`` when the client is gone."""
    while True:
        msg = await inner.receive()
        if viewer.lost:
            return _SINK_FAILED
        if msg.type is WSMsgType.BINARY:
            viewer.send_binary(msg.data)
            await viewer.drain()
        elif msg.type is WSMsgType.TEXT:
            viewer.send_text(msg.data)
        elif msg.type is WSMsgType.CLOSE:
            return msg.data, msg.extra or ""
        else:
            return _BROKE
