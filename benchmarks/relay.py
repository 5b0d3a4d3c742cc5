"""The gateway's hot path, side by side with peers, in one run.

Peers, each in front of the same fake desktop (``benchmarks.fake_desktop``):

* **pforte** — ``pforte gateway`` (uvloop) with a real ``pforte broker`` redeeming every ticket;
  clients send a freshly minted ticket as their first websocket message;
* **websockify** — noVNC's own websocket proxy (from PyPI);
* **socat** — a raw TCP relay (no websocket), forking per connection;
* **direct** — TCP straight to the fake desktop.

Measurements, alternating the peers in every round (median over ``--rounds``): downstream and
upstream MB/s with 1 and 8 connections (64 KiB frames), upstream small frames (10-byte messages,
like noVNC's pointer and key events), round-trip p50/p99 of 64-byte messages with 1 and 50
connections, connection setups per second (connect → ticket → first byte from the desktop) with
p99, memory per idle session at 1,000 and 10,000 sessions, and CPU seconds per GB relayed. The load
generator's own CPU use is reported next to every figure: near 100 % of a core means it, not the
relay, set the limit.

Usage: ``.venv/bin/python -m benchmarks.relay [--rounds 3] [--quick]``. Writes
``benchmarks/results/relay.json``, ``relay.md`` and ``relay.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from broker.keys import generate_keys
from broker.store import Store
from testbed import Processes, exit_on_sigterm, free_port, require, wait_for_port
from wire import ticket
from wire.serving import raise_file_limit

RESULTS = Path(__file__).parent / "results"
MiB = 1024 * 1024
TENANT, POOL, HOST = "bench", "bench", "desk"
SESSIONS = 64  # sessions the tickets are spread over (a session may have several viewers)


# -- connections ---------------------------------------------------------------------------------

class Conn:
    async def send(self, data: bytes) -> None: ...
    async def recv(self) -> bytes: ...
    async def close(self) -> None: ...

    async def recv_exactly(self, n: int) -> None:
        while n > 0:
            n -= len(await self.recv())


class WsConn(Conn):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def recv(self) -> bytes:
        msg = await self.ws.receive()
        if msg.type is not aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"websocket closed: {msg.type} {msg.data} {msg.extra}")
        return msg.data

    async def close(self) -> None:
        await self.ws.close()


class TcpConn(Conn):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> bytes:
        data = await self.reader.read(1024 * 1024)
        if not data:
            raise ConnectionError("closed")
        return data

    async def close(self) -> None:
        self.writer.close()


@dataclass
class Peer:
    name: str
    pids: list[int]
    open: Callable[[], Awaitable[Conn]]
    max_idle: int = 10_000  # sessions attempted in the idle-memory test


# -- process accounting (/proc) --------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                children.setdefault(int(st[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(roots: list[int]) -> float:
    """User+system CPU of the process trees, including reaped children."""
    total = 0
    for root in roots:
        for pid in _tree(root):
            st = _stat(pid)
            if st:
                total += sum(int(x) for x in st[11:13])  # utime, stime
                if pid == root:
                    total += sum(int(x) for x in st[13:15])  # cutime, cstime
    return total / CLK_TCK


def pss_bytes(roots: list[int]) -> int:
    total = 0
    for root in roots:
        for pid in _tree(root):
            try:
                with open(f"/proc/{pid}/smaps_rollup") as fh:
                    for line in fh:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
    return total


class GeneratorCpu:
    def __enter__(self) -> "GeneratorCpu":
        self.r0, self.t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        self.wall = time.perf_counter() - self.t0
        cpu = (r1.ru_utime - self.r0.ru_utime) + (r1.ru_stime - self.r0.ru_stime)
        self.percent = round(100 * cpu / self.wall, 1) if self.wall else 0.0


# -- the measurements ------------------------------------------------------------------------------

async def opened(peer: Peer, n: int, concurrency: int = 200) -> list[Conn]:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> Conn:
        async with sem:
            c = await peer.open()
            await c.recv_exactly(1)  # the desktop's greeting
            return c
    return list(await asyncio.gather(*(one() for _ in range(n))))


async def downstream(peer: Peer, conns: int, total: int) -> dict:
    cs = await opened(peer, conns)
    each = total // conns
    cpu0 = cpu_seconds(peer.pids)
    with GeneratorCpu() as gen:
        await asyncio.gather(*(c.send(b"D" + each.to_bytes(8, "big")) for c in cs))
        await asyncio.gather(*(c.recv_exactly(each) for c in cs))
    relay_cpu = cpu_seconds(peer.pids) - cpu0
    for c in cs:
        await c.close()
    moved = each * conns
    return {"MBps": round(moved / MiB / gen.wall, 1), "generator_cpu_pct": gen.percent,
            "relay_cpu_s_per_GB": round(relay_cpu / (moved / 1e9), 2) if peer.pids else None}


async def upstream(peer: Peer, conns: int, total: int, frame: int) -> dict:
    cs = await opened(peer, conns)
    each = (total // conns) // frame * frame
    payload = bytes(frame)

    async def pump(c: Conn) -> None:
        await c.send(b"U" + each.to_bytes(8, "big"))
        for _ in range(each // frame):
            await c.send(payload)
        await c.recv_exactly(1)
    with GeneratorCpu() as gen:
        await asyncio.gather(*(pump(c) for c in cs))
    for c in cs:
        await c.close()
    moved = each * conns
    return {"MBps": round(moved / MiB / gen.wall, 2), "msgs_per_s": round(moved / frame / gen.wall),
            "generator_cpu_pct": gen.percent}


async def round_trip(peer: Peer, conns: int, iterations: int) -> dict:
    cs = await opened(peer, conns)
    samples: list[float] = []
    message = bytes(64)

    async def ping(c: Conn) -> None:
        await c.send(b"E")
        for _ in range(iterations):
            t = time.perf_counter()
            await c.send(message)
            await c.recv_exactly(64)
            samples.append(time.perf_counter() - t)
    with GeneratorCpu() as gen:
        await asyncio.gather(*(ping(c) for c in cs))
    for c in cs:
        await c.close()
    samples.sort()
    return {"p50_us": round(samples[len(samples) // 2] * 1e6, 1),
            "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6, 1),
            "generator_cpu_pct": gen.percent}


async def setups(peer: Peer, total: int, concurrency: int) -> dict:
    samples: list[float] = []
    failures = 0
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failures
        async with sem:
            t = time.perf_counter()
            try:
                c = await peer.open()
                await c.recv_exactly(1)
            except (OSError, ConnectionError, aiohttp.ClientError):
                failures += 1
                return
            samples.append(time.perf_counter() - t)
            await c.close()
    with GeneratorCpu() as gen:
        await asyncio.gather(*(one() for _ in range(total)))
    samples.sort()
    return {"per_s": round(len(samples) / gen.wall), "p50_ms": round(samples[len(samples) // 2]
                                                                      * 1e3, 2),
            "p99_ms": round(samples[int(len(samples) * 0.99)] * 1e3, 2), "failures": failures,
            "generator_cpu_pct": gen.percent}


async def idle_memory(peer: Peer, n: int) -> dict:
    if n > peer.max_idle:
        return {"skipped": f"{peer.name} is not tried beyond {peer.max_idle} sessions"}
    before = pss_bytes(peer.pids)
    cs: list[Conn] = []
    error = None
    sem = asyncio.Semaphore(100)

    async def one() -> None:
        nonlocal error
        async with sem:
            try:
                c = await peer.open()
                await c.recv_exactly(1)
                await c.send(b"I")
                cs.append(c)
            except Exception as exc:  # noqa: BLE001 - reported, the point of the test
                error = error or f"{type(exc).__name__}: {exc}"[:120]
    await asyncio.gather(*(one() for _ in range(n)))
    await asyncio.sleep(1.0)
    after = pss_bytes(peer.pids)
    for c in cs:
        await c.close()
    result = {"opened": len(cs), "KiB_per_session": round((after - before) / max(len(cs), 1)
                                                          / 1024, 1)}
    if error:
        result["first_error"] = error
    return result


# -- the peers -------------------------------------------------------------------------------------

PFORTE_CONFIG = """\
[broker]
listen = "127.0.0.1:{broker_port}"
state_dir = "{state}/broker"
ticket_private_key_file = "keys/ticket-signing.pem"
credential_key_file = "keys/credential.key"
totp_key_file = "keys/totp.key"
report_token_file = "keys/report.token"
gateway_url = "ws://127.0.0.1:{gateway_port}/ws"
gateway_audience = "bench"

[gateway]
listen = "127.0.0.1:{gateway_port}"
audience = "bench"
ticket_public_key_file = "keys/ticket-verify.pem"
credential_key_file = "keys/credential.key"
report_token_file = "keys/report.token"
broker_url = "http://127.0.0.1:{broker_port}"
allowed_targets = ["127.0.0.0/8"]
max_sessions = 100000              # every benchmark connection comes from 127.0.0.1
max_sessions_per_source = 100000

[[tenants]]
id = "{tenant}"
name = "Benchmark"
domains = ["bench.example"]

[tenants.directory]
servers = ["ldap://127.0.0.1:9"]   # never contacted: the benchmark mints tickets itself
security = "plain"
base_dn = "dc=bench"
bind_dn = "cn=bench"
bind_password_file = "keys/report.token"

[[tenants.pools]]
id = "{pool}"
name = "Benchmark"
group = "cn=bench"
hosts = ["{host}"]

[[tenants.hosts]]
id = "{host}"
address = "127.0.0.1"
port = {desktop_port}
protocol = "rdp"
seats = 1000000
"""


class Tickets:
    """Mints tickets the way the broker does, for sessions created in the broker's own store."""

    def __init__(self, keys: Path, sessions: list[str], desktop_port: int) -> None:
        self.key = load_pem_private_key((keys / "ticket-signing.pem").read_bytes(), None)
        self.sessions = sessions
        self.target = ticket.Target("127.0.0.1", desktop_port, "rdp")

    def __call__(self) -> str:
        now = int(time.time())
        i = random.randrange(len(self.sessions))
        return ticket.mint(self.key, ticket.Claims(
            ticket_id=ticket.new_ticket_id(), issued_at=now, expires_at=now + 60,
            audience="bench", tenant=TENANT, user=f"u{i}", session=self.sessions[i],
            target=self.target))


async def create_sessions(db: Path) -> list[str]:
    store = Store(db)
    await store.open()
    try:
        out = []
        for i in range(SESSIONS):
            a = await store.sessions.assign(TENANT, f"u{i}", POOL, [(HOST, 10**6, True)],
                                            now=time.time(),
                                   pending_timeout=86400, keep_seconds=86400)
            out.append(a.session_id)
        return out
    finally:
        await store.close()


async def start_peers(state: Path, processes: Processes, http: aiohttp.ClientSession,
                      only: set[str] | None, workers: int) -> list[Peer]:
    python = sys.executable
    desktop_port = free_port()
    desk = processes.start([python, "-m", "benchmarks.fake_desktop", str(desktop_port)],
                           log=state / "desktop.log")
    wait_for_port("127.0.0.1", desktop_port, desk, what="fake desktop")

    async def tcp(port: int) -> Conn:
        return TcpConn(*await asyncio.open_connection("127.0.0.1", port))

    async def ws(url: str, first: Callable[[], str] | None = None) -> Conn:
        w = await http.ws_connect(url, max_msg_size=0, autoping=True)
        if first is not None:
            await w.send_str(first())
        return WsConn(w)

    peers = []
    if not only or "pforte" in only:
        keys = state / "keys"
        generate_keys(keys)
        broker_port, gateway_port = free_port(), free_port()
        config = state / "bench.toml"
        config.write_text(PFORTE_CONFIG.format(
            broker_port=broker_port, gateway_port=gateway_port, state=state, tenant=TENANT,
            pool=POOL, host=HOST, desktop_port=desktop_port))
        pforte = [python, "-m", "pforte", "--log-level", "WARNING"]
        broker = processes.start([*pforte, "broker", "--config", str(config)],
                                 log=state / "broker.log")
        wait_for_port("127.0.0.1", broker_port, broker, what="pforte broker")
        gateway = processes.start([*pforte, "gateway", "--config", str(config), "--workers",
                                   str(workers)], log=state / "gateway.log")
        wait_for_port("127.0.0.1", gateway_port, gateway, what="pforte gateway")
        tickets = Tickets(keys, await create_sessions(state / "broker" / "pforte.db"),
                          desktop_port)
        url = f"ws://127.0.0.1:{gateway_port}/ws"
        peers.append(Peer("pforte", [gateway.pid, broker.pid], lambda: ws(url, tickets)))
    if not only or "websockify" in only:
        port = free_port()
        proc = processes.start([str(Path(python).parent / "websockify"), f"127.0.0.1:{port}",
                                f"127.0.0.1:{desktop_port}"], log=state / "websockify.log")
        wait_for_port("127.0.0.1", port, proc, what="websockify")
        peers.append(Peer("websockify", [proc.pid], lambda p=port: ws(f"ws://127.0.0.1:{p}/"),
                          max_idle=1000))
    if not only or "socat" in only:
        port = free_port()
        proc = processes.start([require("socat"), f"TCP-LISTEN:{port},bind=127.0.0.1,fork,"
                                "reuseaddr,backlog=4096,nodelay", f"TCP:127.0.0.1:{desktop_port},"
                                "nodelay"], log=state / "socat.log")
        wait_for_port("127.0.0.1", port, proc, what="socat")
        peers.append(Peer("socat", [proc.pid], lambda p=port: tcp(p), max_idle=1000))
    if not only or "direct" in only:
        peers.append(Peer("direct", [], lambda: tcp(desktop_port)))
    return peers


# -- the run ---------------------------------------------------------------------------------------

def plan(quick: bool) -> list[tuple[str, Callable[[Peer], Awaitable[dict]]]]:
    scale = 4 if quick else 1
    return [
        ("down_1conn_64KiB", lambda p: downstream(p, 1, 512 * MiB // scale)),
        ("down_8conn_64KiB", lambda p: downstream(p, 8, 512 * MiB // scale)),
        ("up_1conn_64KiB", lambda p: upstream(p, 1, 256 * MiB // scale, 64 * 1024)),
        ("up_8conn_64KiB", lambda p: upstream(p, 8, 256 * MiB // scale, 64 * 1024)),
        ("up_1conn_10B", lambda p: upstream(p, 1, 2 * MiB // scale, 10)),
        ("rtt_1conn_64B", lambda p: round_trip(p, 1, 5000 // scale)),
        ("rtt_50conn_64B", lambda p: round_trip(p, 50, 200 // scale)),
        ("setups", lambda p: setups(p, 2000 // scale, 16)),
    ]


def median_result(runs: list[dict]) -> dict:
    out: dict = {}
    for key in runs[0]:
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        out[key] = statistics.median(values) if values else runs[0][key]
    return out


async def run(args: argparse.Namespace) -> dict:
    raise_file_limit()
    state = Path(tempfile.mkdtemp(prefix="pforte-relay-bench-"))
    processes = Processes()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    http = aiohttp.ClientSession(connector=connector)
    try:
        peers = await start_peers(state, processes, http, set(args.peers) if args.peers else None,
                                  args.workers)
        raw: dict[str, dict[str, list[dict]]] = {}
        for r in range(args.rounds):
            order = peers[r % len(peers):] + peers[:r % len(peers)]
            for name, measure in plan(args.quick):
                for peer in order:
                    result = await measure(peer)
                    raw.setdefault(name, {}).setdefault(peer.name, []).append(result)
                    print(f"round {r + 1} {name:<18} {peer.name:<10} {result}", flush=True)
        results = {name: {p: median_result(v) for p, v in per.items()} for name, per in raw.items()}
        for n in (1000, 10_000) if not args.quick else (1000,):
            for peer in peers:
                result = await idle_memory(peer, n)
                results.setdefault(f"idle_{n}", {})[peer.name] = result
                print(f"idle {n:<6} {peer.name:<10} {result}", flush=True)
        return {"rounds": args.rounds, "quick": args.quick, "cores": os.cpu_count(),
                "gateway_workers": args.workers,
                "results": results}
    finally:
        await http.close()
        processes.stop()
        shutil.rmtree(state, ignore_errors=True)


def ratio(results: dict, test: str, key: str, a: str, b: str) -> float | None:
    try:
        return round(results[test][a][key] / results[test][b][key], 2)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def markdown(report: dict) -> str:
    res = report["results"]
    peers = list(next(iter(res.values())))
    lines = ["| measurement | " + " | ".join(peers) + " |", "|---" * (len(peers) + 1) + "|"]

    def row(label: str, test: str, key: str, unit: str = "") -> None:
        cells = []
        for p in peers:
            v = res.get(test, {}).get(p, {}).get(key)
            cells.append("–" if v is None else f"{v}{unit}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("downstream, 1 conn, 64 KiB (MB/s)", "down_1conn_64KiB", "MBps")
    row("downstream, 8 conns, 64 KiB (MB/s)", "down_8conn_64KiB", "MBps")
    row("upstream, 1 conn, 64 KiB (MB/s)", "up_1conn_64KiB", "MBps")
    row("upstream, 8 conns, 64 KiB (MB/s)", "up_8conn_64KiB", "MBps")
    row("upstream, 1 conn, 10-byte messages (msg/s)", "up_1conn_10B", "msgs_per_s")
    row("round trip, 1 conn, p50 (µs)", "rtt_1conn_64B", "p50_us")
    row("round trip, 1 conn, p99 (µs)", "rtt_1conn_64B", "p99_us")
    row("round trip, 50 conns, p50 (µs)", "rtt_50conn_64B", "p50_us")
    row("round trip, 50 conns, p99 (µs)", "rtt_50conn_64B", "p99_us")
    row("setups/s (with ticket for pforte)", "setups", "per_s")
    row("setup p99 (ms)", "setups", "p99_ms")
    row("relay CPU s per GB (downstream, 8 conns)", "down_8conn_64KiB", "relay_cpu_s_per_GB")
    row("idle sessions opened of 1,000", "idle_1000", "opened")
    row("memory per idle session at 1,000 (KiB)", "idle_1000", "KiB_per_session")
    row("idle sessions opened of 10,000", "idle_10000", "opened")
    row("memory per idle session at 10,000 (KiB)", "idle_10000", "KiB_per_session")
    row("load generator CPU, downstream 8 conns (%)", "down_8conn_64KiB", "generator_cpu_pct")
    row("load generator CPU, setups (%)", "setups", "generator_cpu_pct")
    ratios = [
        ("downstream 8 conns, pforte / websockify", ratio(res, "down_8conn_64KiB", "MBps",
                                                          "pforte", "websockify")),
        ("downstream 8 conns, pforte / socat", ratio(res, "down_8conn_64KiB", "MBps", "pforte",
                                                     "socat")),
        ("upstream 8 conns, pforte / websockify", ratio(res, "up_8conn_64KiB", "MBps", "pforte",
                                                        "websockify")),
        ("setups/s, pforte / websockify", ratio(res, "setups", "per_s", "pforte", "websockify")),
    ]
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {label} | {'–' if v is None else v} |" for label, v in ratios]
    for label, test in (("1 conn", "rtt_1conn_64B"),):
        try:
            added = [round(res[test]["pforte"][k] - res[test]["direct"][k], 1)
                     for k in ("p50_us", "p99_us")]
            lines.append(f"| added round trip over direct, {label} (p50 / p99 µs) | "
                         f"{added[0]} / {added[1]} |")
        except KeyError:
            pass
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = report["results"]
    panels = [("downstream 8 conns (MB/s)", "down_8conn_64KiB", "MBps"),
              ("upstream 8 conns (MB/s)", "up_8conn_64KiB", "MBps"),
              ("setups per second", "setups", "per_s"),
              ("round trip p99, 1 conn (µs)", "rtt_1conn_64B", "p99_us")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    colours = {"pforte": "#00557f", "websockify": "#c0392b", "socat": "#7f8c8d",
               "direct": "#bdc3c7"}
    for ax, (title, test, key) in zip(axes, panels):
        names = [p for p in res.get(test, {}) if isinstance(res[test][p].get(key), (int, float))]
        values = [res[test][p][key] for p in names]
        ax.bar(names, values, color=[colours.get(n, "#999") for n in names])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("Pforte gateway vs. peers — 2 cores, loopback, one run", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description="Relay benchmark: pforte vs websockify, socat, "
                                     "direct.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller volumes, 1,000 idle only")
    parser.add_argument("--peers", nargs="*", help="only these peers")
    parser.add_argument("--workers", type=int, default=2,
                        help="pforte gateway processes (default 2: one per core; each process "
                        "holds two descriptors per session, and this machine allows 20,000)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import uvloop
    report = uvloop.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "relay.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "relay.md").write_text(table)
    plot(report, args.out / "relay.png")
    print(table)


if __name__ == "__main__":
    main()
