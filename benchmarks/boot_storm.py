"""The 8 a.m. boot storm: N thin clients (default 2,200, our operator's fleet) boot within a window
against a real broker, gateway (two processes), slapd and TigerVNC Xvnc desktops.

Each simulated thin client does what the boot agent does: fetch its profile with its device
credential, sign the user in (password, then a fresh TOTP code), ask for a desktop (placement and
a ticket), open the gateway websocket with the ticket and wait for the first byte of the desktop's
stream (the gateway has then completed the VNC password handshake with the real Xvnc). Answers
that say "busy" (503/429) are retried with the agent's jittered backoff, like the real agent
(after the ``Retry-After`` a busy broker names); a desktop the gateway could not open for now
(4503, 4502, 1013, 4429) is asked for again, showing the broker's reconnect pass as the agent's
tunnel does.
The desktops are real Xvnc servers, shared by many users each like multi-session hosts: by default
44 hosts of 50 seats for 2,200 clients (not a lighter fake). Each pool keeps its default cap of
logons in flight per host, as an operator's would.

Afterwards, while every client still holds its desktop, it checks the broker's records against
the clients' own: no host holds more sessions than seats, every desktop a client holds is one
connected session, and no session is connected that no client holds (pending ones are counted
apart, never as desktops).

Usage: ``.venv/bin/python -m benchmarks.boot_storm [--clients 2200] [--window 10] [--hosts 44]``;
writes ``var/benchmarks/boot_storm.json`` (``benchmarks/results/`` with ``--record``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp

from broker import mfa
from broker.config import load_config
from testbed.demo import DOMAIN, TENANT, DesktopEntry, write_config
from broker.service import Broker
from broker.store import Store
from testbed import (Processes, XvncDesktop, directory_of_users, exit_on_sigterm,
                            free_port, wait_for_port)
from client.agent import backoff
from wire.api import RECONNECT_PASS_HEADER
from wire.closes import Close
from wire.serving import raise_file_limit
from benchmarks import add_record_option, results_dir

RESULTS = "boot_storm.json"  # under benchmarks.results_dir()
EXAMPLES = Path(__file__).resolve().parent.parent / "client_profiles" / "examples"
PASSWORD = "Storm-pass-1"
GIVE_UP = 120.0  # seconds a simulated client keeps retrying
# a desktop the gateway could not open for now: asked for again, like the agent's tunnel does
ASK_AGAIN = {Close.BROKER.code, Close.DESKTOP.code, Close.DRAINING.code, Close.BUSY.code}


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its live children (the gateway's forked workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1] is the parent's PID
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_by_part(parts: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in parts.items()}


class Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def request(http: aiohttp.ClientSession, method: str, url: str, rng: random.Random,
                  retried: collections.Counter, *,
                  body: dict | Callable[[], dict] | None = None,
                  token: str | None = None, headers: dict[str, str] | None = None) -> dict:
    """One call of the agent's, retried like the agent does; ``retried`` counts the "busy"
    answers and unreachable moments by kind. ``body`` may be made afresh for each attempt (a
    one-time code: the user reads the app again)."""
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    deadline = time.monotonic() + GIVE_UP
    attempt = 0
    while True:
        retry_after = None
        try:
            sent = body() if callable(body) else body
            async with http.request(method, url, json=sent, headers=headers) as r:
                try:
                    data = await r.json(content_type=None) if r.status != 204 else {}
                except ValueError:  # a proxy's error page: like the agent, judge by status
                    data = {}
                if r.status < 400:
                    return data or {}
                if (r.status != 429 and r.status < 500) or time.monotonic() > deadline:
                    raise Failed(f"{r.status} {data.get('error', '')}".strip())
                retried[f"{r.status} {data.get('error', '')}"] += 1
                wait = r.headers.get("Retry-After", "")
                retry_after = float(wait) if wait.isdigit() else None
        except aiohttp.ClientError as exc:
            if time.monotonic() > deadline:
                raise Failed(type(exc).__name__) from None
            retried[type(exc).__name__] += 1
        await asyncio.sleep(backoff(attempt, rng, at_least=retry_after))
        attempt += 1


async def one_client(base: str, user: str, secret: str, credential: str, start_at: float,
                     held: list, desktops: list, rng: random.Random,
                     retried: collections.Counter, dropped: collections.Counter) -> float:
    """One thin client's boot, with an HTTP client of its own (keep-alive, like the agent's)."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    t0 = time.monotonic()
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=GIVE_UP))
    held.append(http)
    await request(http, "GET", f"{base}/api/v1/devices/profile", rng, retried,
                  token=credential)
    login = await request(http, "POST", f"{base}/api/v1/login", rng, retried,
                          body={"username": f"{user}@{DOMAIN}", "password": PASSWORD})
    await request(http, "POST", f"{base}/api/v1/mfa", rng, retried, token=login["token"],
                  body=lambda: {"code": mfa.current_code(secret, time.time())})
    ws, session, first_byte = await open_desktop(http, base, login["token"], rng, retried)
    held.append(ws)
    held.append(asyncio.ensure_future(read_on(ws, dropped)))  # a viewer reads (and answers pings)
    desktops.append((session, ws))
    return first_byte - t0


async def viewer_handshake(ws: aiohttp.ClientWebSocketResponse, first: bytes) -> None:
    """Speak RFB 3.8 as a viewer up to the desktop's ServerInit, so that the session stays
    connected (the gateway ends viewers that never finish the handshake); ``first``: what the
    first message brought."""
    pending = bytearray(first)

    async def read(n: int) -> bytes:
        while len(pending) < n:
            msg = await ws.receive(timeout=GIVE_UP)
            if msg.type is not aiohttp.WSMsgType.BINARY:
                raise Failed(f"gateway closed {ws.close_code}")
            pending.extend(msg.data)
        data = bytes(pending[:n])
        del pending[:n]
        return data
    await read(12)
    await ws.send_bytes(b"RFB 003.008\n")
    count = (await read(1))[0]
    await read(count)
    await ws.send_bytes(b"\x01")              # security type None (the gateway's offer)
    await read(4)                              # SecurityResult OK
    await ws.send_bytes(b"\x01")              # ClientInit: shared
    await read(24)                             # ServerInit up to the name's length


async def read_on(ws: aiohttp.ClientWebSocketResponse, dropped: collections.Counter) -> None:
    """Read the desktop's stream as a viewer does until it ends (aiohttp answers the
    gateway's pings while it reads); how it ended is counted in ``dropped``."""
    async for _ in ws:
        pass
    dropped[f"{ws.close_code}"] += 1


async def open_desktop(http: aiohttp.ClientSession, base: str, token: str, rng: random.Random,
                       retried: collections.Counter
                       ) -> tuple[aiohttp.ClientWebSocketResponse, str, float]:
    """Ask for the desktop and open it through the gateway, as a viewer does, asking again
    (with the broker's reconnect pass, jittered waits) while the gateway says "not now": the
    open websocket, the session it belongs to, and when its first byte came."""
    deadline = time.monotonic() + GIVE_UP
    shown: dict[str, str] = {}
    for attempt in range(1 << 30):
        conn = await request(http, "POST", f"{base}/api/v1/pools/buero/connect", rng, retried,
                             token=token, headers=shown)
        shown = {RECONNECT_PASS_HEADER: conn["reconnect_pass"]} if conn.get("reconnect_pass") \
            else {}
        try:
            ws = await http.ws_connect(conn["gateway_url"], max_msg_size=0, heartbeat=None)
        except aiohttp.ClientError as exc:
            raise Failed(f"gateway {type(exc).__name__}") from None
        await ws.send_str(conn["ticket"])
        try:
            msg = await ws.receive(timeout=GIVE_UP)
        except asyncio.TimeoutError:
            raise Failed("no first byte from the desktop") from None
        if msg.type is aiohttp.WSMsgType.BINARY:
            first_byte = time.monotonic()
            await viewer_handshake(ws, msg.data)
            return ws, conn["session"], first_byte
        if ws.close_code not in ASK_AGAIN or time.monotonic() > deadline:
            raise Failed(f"gateway closed {ws.close_code} {msg.extra}")
        retried[f"gateway closed {ws.close_code}"] += 1
        await asyncio.sleep(backoff(attempt, rng))
    raise AssertionError("unreachable")


async def storm(base: str, users: list[str], secrets_by_user: dict[str, str],
                credentials: list[str], window: float,
                check: Callable[[list[str]], Awaitable[dict]] | None = None) -> dict:
    """The storm; ``check(desktops)`` is awaited at its end, while the clients still hold their
    desktops (``desktops``: the session of each desktop a client holds open, by its own
    record: one whose websocket was closed does not count)."""
    rng = random.Random(7)
    held: list = []  # the clients' HTTP sessions, desktop websockets and readers, until the end
    desktops: list[tuple[str, aiohttp.ClientWebSocketResponse]] = []
    retried: collections.Counter = collections.Counter()
    dropped: collections.Counter = collections.Counter()   # desktops closed, by close code
    start = time.monotonic() + 0.5
    tasks = [asyncio.ensure_future(one_client(
        base, u, secrets_by_user[u], credentials[i], start + rng.uniform(0, window), held,
        desktops, random.Random(i), retried, dropped)) for i, u in enumerate(users)]
    await asyncio.gather(*tasks, return_exceptions=True)
    finished = time.monotonic()
    open_desktops = [session for session, ws in desktops if not ws.closed]
    checked = await check(open_desktops) if check is not None else None
    latencies, failures = [], collections.Counter()
    for t in tasks:
        exc = t.exception()
        if exc is None:
            latencies.append(t.result())
        else:
            failures[getattr(exc, "reason", type(exc).__name__)] += 1
    for part in reversed(held):
        if isinstance(part, asyncio.Future):
            part.cancel()
        else:
            await part.close()
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 3) \
            if latencies else None
    return {"clients": len(users), "window_s": window, "completed": len(latencies),
            "all_done_after_s": round(finished - start, 2),
            "completions_per_s": round(len(latencies) / (finished - start), 1),
            "desktops_dropped_before_the_end": dict(dropped),
            "time_to_first_byte_s": {"p50": pct(.5), "p95": pct(.95), "p99": pct(.99)},
            "failures": dict(failures), "retried": dict(retried),
            **({"check": checked} if checked is not None else {})}


async def enrol_clients(config, users: list[str]) -> tuple[dict[str, str], list[str]]:
    """Every user enrolled with a TOTP secret, and a thin client enrolled for each: (secrets
    by user, device credentials in the users' order)."""
    broker = Broker(config, Store.for_config(config))
    await broker.store.open()
    totp, credentials = {}, []
    for u in users:
        totp[u] = mfa.new_secret()
        await broker.second_factor.import_enrolment(TENANT, u, totp[u])
        code = secrets.token_hex(6)
        await broker.store.devices.create_enrolment_code(code, TENANT, "rathaus-front-office",
                                                 "thin-client", expires=time.time() + 600)
        credential = "pfd_" + secrets.token_urlsafe(24)
        await broker.store.devices.enrol(code, u, credential, now=time.time())
        credentials.append(credential)
    await broker.close()
    return totp, credentials


async def late_clients(base: str, users: list[str], secrets_by_user: dict[str, str]) -> dict:
    """Users who come once every seat is held: each signs in and asks for a desktop once; how
    the broker answered (every one must be refused: "no free desktop")."""
    answers: collections.Counter = collections.Counter()
    async with aiohttp.ClientSession() as http:
        for user in users:
            async with http.post(f"{base}/api/v1/login", json={
                    "username": f"{user}@{DOMAIN}", "password": PASSWORD}) as r:
                token = (await r.json())["token"]
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(f"{base}/api/v1/mfa", headers=headers, json={
                    "code": mfa.current_code(secrets_by_user[user], time.time())}) as r:
                assert r.status == 204, await r.text()
            async with http.post(f"{base}/api/v1/pools/buero/connect", headers=headers) as r:
                answers[f"{r.status} {(await r.json()).get('error', 'a desktop')}"] += 1
    return dict(answers)


async def check_sessions(config, seats: int, desktops: list[str] | None,
                         settle: float = 3.0) -> dict:
    """At a storm's end, the broker's records against the clients' own (``desktops``: the
    session each client holds a desktop of): seats taken per host (live sessions, pending ones
    included: they hold a seat), and whether every held desktop is one connected session and
    every connected session a held desktop. Desktops admitted with an outage ticket are
    recorded within a gateway's report (a second): the check waits up to ``settle`` seconds.
    Without ``desktops`` (the clients are gone), only the seats are checked."""
    store = Store.for_config(config)
    await store.open()
    held = collections.Counter(desktops or ())
    deadline = time.monotonic() + settle
    while True:
        live = await store.sessions.live(TENANT)
        connected = {s.id for s in live if s.state.value == "connected"}
        if desktops is None or set(held) <= connected or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await store.close()
    per_host = collections.Counter(s.host for s in live)
    per_user = collections.Counter(s.login for s in live)
    states = collections.Counter(s.state.value for s in live)
    seats_taken = {"sessions_by_state": dict(states),
                   "max_per_host": max(per_host.values(), default=0), "seats_per_host": seats,
                   "overbooked": any(v > seats for v in per_host.values()),
                   "users_with_more_than_one_session": sum(1 for v in per_user.values()
                                                           if v > 1)}
    if desktops is None:
        return seats_taken
    return {"clients_with_a_desktop": len(desktops), "connected_sessions": len(connected),
            "desktops_not_connected": len(set(held) - connected),
            "desktops_shared_by_clients": sum(1 for n in held.values() if n > 1),
            "connected_without_a_client": len(connected - set(held)), **seats_taken}


def run(n: int, window: float, n_hosts: int, keep: bool = False) -> dict:
    raise_file_limit()
    state = Path(tempfile.mkdtemp(prefix="pforte-storm-"))
    processes = Processes()
    users = [f"u{i:05d}" for i in range(n)]
    try:
        slapd = directory_of_users(state / "slapd", processes, "Storm", users, PASSWORD)
        seats = -(-n // n_hosts)
        desktops = [XvncDesktop(state / f"desk{i}", f"Storm {i}", "#2e7d32",
                                password=secrets.token_hex(4)) for i in range(n_hosts)]
        with concurrent.futures.ThreadPoolExecutor(8) as starting:
            list(starting.map(lambda d: d.start(processes), desktops))
        portal, gw = free_port(), free_port()
        config_path = write_config(
            state, slapd=slapd, group=slapd.group_dn("desktop-users"), host="127.0.0.1",
            portal_port=portal, gateway_port=gw,
            desktops=[DesktopEntry(f"d{i}", d.port, seats, d.password)
                      for i, d in enumerate(desktops)],
            broker_options={"failures_per_source": 10**6, "profiles_dir": str(EXAMPLES)},
            gateway_options={"max_sessions_per_source": 10**6, "max_sessions": 10**6})
        config = load_config(config_path)
        totp, credentials = asyncio.run(enrol_clients(config, users))
        python = [sys.executable, "-m", "pforte", "--log-level", "WARNING"]
        broker = processes.start([*python, "broker", "--config", str(config_path)],
                                 log=state / "broker.log")
        wait_for_port("127.0.0.1", portal, broker, what="broker")
        gateway = processes.start([*python, "gateway", "--config", str(config_path),
                                   "--workers", "2"], log=state / "gateway.log")
        wait_for_port("127.0.0.1", gw, gateway, what="gateway")
        import uvloop
        parts = {"broker": [broker.pid], "gateway (2 workers)": [gateway.pid],
                 "slapd": [p.pid for p in processes.started if "slapd" in p.args[0]],
                 "Xvnc desktops": [p.pid for p in processes.started if "Xvnc" in p.args[0]]}
        cpu_before, generator_before = cpu_by_part(parts), time.process_time()
        report = uvloop.run(storm(f"http://127.0.0.1:{portal}", users, totp, credentials,
                                  window, lambda held: check_sessions(config, seats, held)))
        cpu_after = cpu_by_part(parts)
        report["cpu_seconds"] = {name: round(cpu_after[name] - cpu_before[name], 1)
                                 for name in parts}
        report["cpu_seconds"]["load generator"] = round(time.process_time() - generator_before, 1)

        report["hosts"] = n_hosts
        report["desktops"] = "real TigerVNC Xvnc, VNC password auth by the gateway"
        return report
    finally:
        processes.stop()
        if keep:
            print(f"state and logs kept in {state}", file=sys.stderr)
        else:
            shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description="Boot storm: thin clients against real parts.")
    parser.add_argument("--clients", type=int, default=2200)
    parser.add_argument("--window", type=float, default=10.0, help="seconds over which they boot")
    parser.add_argument("--hosts", type=int, default=44, help="Xvnc desktop hosts")
    parser.add_argument("--keep", action="store_true", help="keep state and logs")
    add_record_option(parser)
    args = parser.parse_args()
    report = run(args.clients, args.window, args.hosts, args.keep)
    (results_dir(args) / RESULTS).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
