"""The gateway's hot path, side by side with peers, in one run.

Peers, each in front of the same fake desktop (``benchmarks.fake_desktop``), which speaks a real
RFB 3.8 handshake with VNC authentication before its benchmark commands:

* **pforte** — ``pforte gateway`` (uvloop, ``--workers`` processes) with a real ``pforte broker``
  redeeming every ticket; each connection sends a freshly minted ticket as its first message,
  the gateway authenticates to the desktop with the ticket's sealed secret and greets the viewer;
* **websockify** — noVNC's own websocket proxy (from PyPI); the client authenticates to the
  desktop itself, as noVNC does behind websockify;
* **socat** — a raw TCP relay (no websocket), forking per connection;
* **direct** — TCP straight to the fake desktop.

Load comes from ``benchmarks.loadgen``: one lean process per core (raw frames, C masking), whose
CPU is reported next to every figure, so that a generator at the limit is seen. Measurements,
peers taking turns in every round (median over ``--rounds``): downstream and upstream MB/s with 1
and 8 connections (64 KiB), upstream small messages (10 bytes, like noVNC's pointer and key
events), round trip p50/p99 of 64-byte messages with 1 and 50 connections, connection setups
(connect, ticket, redemption, both RFB handshakes, close) at the highest rate 32 connections at a
time sustain — the churn of a morning's logons — with p50/p99 and the CPU per setup of every
process, setup latency one at a time, and memory per idle session (RSS and PSS of anonymous
memory) at 1,000 and 10,000 sessions.

Usage: ``.venv/bin/python -m benchmarks.relay [--rounds 3] [--quick] [--database postgres]
[--baseline DIR]`` (``--peers``, ``--tests``: only these, for profiling; ``--baseline``: another
version's checkout as one more peer, for before and after in one run). Writes
``var/benchmarks/relay.json``, ``relay.md`` and ``relay.png`` (``relay-postgres.*``;
``benchmarks/results/`` with ``--record``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from benchmarks import add_record_option, results_dir
from broker.config import load_config
from broker.keys import generate_keys
from broker.store import Store
from testbed import Postgres, Processes, exit_on_sigterm, free_port, require, wait_for_port
from wire import ticket
from wire.serving import raise_file_limit

MiB = 1024 * 1024
TENANT, POOL, HOST = "bench", "bench", "desk"
SESSIONS = 64  # broker sessions the tickets are spread over (a session may have several viewers)
COMMAND = ".venv/bin/python -m benchmarks.relay"


# -- process accounting (/proc) --------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree(roots: list[int]) -> list[int]:
    """The processes of the trees rooted at ``roots``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))):
            children.setdefault(int(st[1]), []).append(int(entry))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(roots: list[int]) -> float:
    """User+system CPU of the process trees, including reaped children."""
    total = 0
    for pid in tree(roots):
        if st := _stat(pid):
            total += sum(int(x) for x in st[11:15])  # utime, stime, cutime, cstime
    return total / CLK_TCK


def memory_bytes(roots: list[int]) -> tuple[int, int]:
    """(RSS, PSS of anonymous memory) of the process trees."""
    rss = pss_anon = 0
    for pid in tree(roots):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss_Anon:"):
                        pss_anon += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss_anon


# -- peers -----------------------------------------------------------------------------------------

@dataclass
class Peer:
    name: str
    port: int
    ws: bool
    cpu: dict[str, list[int]]          # process group name -> root pids, for CPU accounting
    memory: list[int]                  # the relay's processes, for memory per session
    path: str = "/"
    vnc_password: str | None = None    # the client authenticates to the desktop itself
    mint: object = None                # pforte: makes n fresh tickets
    max_idle: int = 10_000

    def job(self, kind: str, **fields) -> dict:
        return {"kind": kind, "port": self.port, "ws": self.ws, "path": self.path,
                "vnc_password": self.vnc_password, **fields}


class Tickets:
    """Mints tickets as the broker does (with the desktop's sealed VNC password), for sessions
    created in the broker's own store."""

    def __init__(self, keys: Path, sessions: list[str], desktop_port: int, password: bytes):
        self.key = load_pem_private_key((keys / "ticket-signing.pem").read_bytes(), None)
        self.credential_key = bytes.fromhex((keys / "credential.key").read_text().strip())
        self.sessions, self.password = sessions, password
        self.target = ticket.Target("127.0.0.1", desktop_port, "vnc")

    def __call__(self, n: int) -> list[str]:
        now = int(time.time())
        out = []
        for _ in range(n):
            i = random.randrange(len(self.sessions))
            ticket_id = ticket.new_ticket_id()
            out.append(ticket.mint(self.key, ticket.Claims(
                ticket_id=ticket_id, issued_at=now, expires_at=now + 60, audience="bench",
                tenant=TENANT, user=f"u{i}", session=self.sessions[i], target=self.target,
                sealed_secret=ticket.seal_secret(self.credential_key, ticket_id,
                                                 self.password))))
        return out


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
{database}

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
protocol = "vnc"
secret_file = "keys/desktop.pass"
seats = 1000000
"""


async def create_sessions(config_path: Path) -> list[str]:
    store = Store.for_config(load_config(config_path))
    await store.open()
    try:
        out = []
        for i in range(SESSIONS):
            a = await store.sessions.assign(TENANT, f"u{i}", POOL, [(HOST, 10**6, True)],
                                            now=time.time(), pending_timeout=86400,
                                            keep_seconds=86400)
            out.append(a.session_id)
        return out
    finally:
        await store.close()


async def start_pforte(name: str, state: Path, processes: Processes, desktop_port: int,
                       password: str, workers: int, postgres: Postgres | None,
                       tree: Path | None = None) -> Peer:
    """A broker and a gateway (from ``tree``, a checkout of another version, if given)."""
    keys = state / "keys"
    generate_keys(keys)
    (keys / "desktop.pass").write_text(password + "\n")
    (keys / "desktop.pass").chmod(0o600)
    broker_port, gateway_port = free_port(), free_port()
    config = state / "bench.toml"
    database = ""
    if postgres is not None:
        (keys / "pg.pass").write_text(postgres.password)
        database = (f'database = "{postgres.create_database("relay")}"\n'
                    'database_password_file = "keys/pg.pass"')
    config.write_text(PFORTE_CONFIG.format(
        broker_port=broker_port, gateway_port=gateway_port, state=state, tenant=TENANT,
        pool=POOL, host=HOST, desktop_port=desktop_port, database=database))
    if tree is None:
        pforte = [sys.executable, "-m", "pforte", "--log-level", "WARNING"]
    else:  # that tree's packages before this checkout's
        pforte = [sys.executable, "-c", f"import sys, runpy; sys.path.insert(0, {str(tree)!r}); "
                  "runpy.run_module('pforte', run_name='__main__')", "--log-level", "WARNING"]
    broker = processes.start([*pforte, "broker", "--config", str(config)],
                             log=state / "broker.log")
    wait_for_port("127.0.0.1", broker_port, broker, what=f"{name} broker")
    gateway = processes.start([*pforte, "gateway", "--config", str(config), "--workers",
                               str(workers)], log=state / "gateway.log")
    wait_for_port("127.0.0.1", gateway_port, gateway, what=f"{name} gateway")
    if tree is None:
        sessions = await create_sessions(config)
    else:        # by that version's own store (its schema may be another than this one's)
        made = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import asyncio, json, sys; sys.path.insert(0, sys.argv[1]); "
            "from benchmarks.relay import create_sessions; "
            "print(json.dumps(asyncio.run(create_sessions(sys.argv[2]))))", str(tree),
            str(config), cwd=tree, stdout=asyncio.subprocess.PIPE)
        sessions = json.loads((await made.communicate())[0])
    tickets = Tickets(keys, sessions, desktop_port, password.encode())
    cpu = {"gateway": [gateway.pid], "broker": [broker.pid]}
    if postgres is not None:
        cpu["postgres"] = [postgres.proc.pid]
    return Peer(name, gateway_port, True, cpu, [gateway.pid], path="/ws", mint=tickets)


async def start_peers(state: Path, processes: Processes, only: set[str] | None,
                      workers: int, postgres: Postgres | None,
                      baseline: Path | None = None) -> list[Peer]:
    python = sys.executable
    password = secrets.token_hex(4)            # VNC uses 8 characters
    desktop_port = free_port()
    desk = processes.start([python, "-m", "benchmarks.fake_desktop", str(desktop_port), password],
                           log=state / "desktop.log")
    wait_for_port("127.0.0.1", desktop_port, desk, what="fake desktop")
    peers = []
    if not only or "pforte" in only:
        peers.append(await start_pforte("pforte", state / "pforte", processes, desktop_port,
                                        password, workers, postgres))
    if baseline is not None:
        peers.append(await start_pforte("pforte-baseline", state / "baseline", processes,
                                        desktop_port, password, workers, None, tree=baseline))
    if not only or "websockify" in only:
        port = free_port()
        proc = processes.start([str(Path(python).parent / "websockify"), f"127.0.0.1:{port}",
                                f"127.0.0.1:{desktop_port}"], log=state / "websockify.log")
        wait_for_port("127.0.0.1", port, proc, what="websockify")
        peers.append(Peer("websockify", port, True, {"websockify": [proc.pid]}, [proc.pid],
                          vnc_password=password, max_idle=1000))
    if not only or "socat" in only:
        port = free_port()
        proc = processes.start([require("socat"), f"TCP-LISTEN:{port},bind=127.0.0.1,fork,"
                                "reuseaddr,backlog=4096,nodelay", f"TCP:127.0.0.1:{desktop_port},"
                                "nodelay"], log=state / "socat.log")
        wait_for_port("127.0.0.1", port, proc, what="socat")
        peers.append(Peer("socat", port, False, {"socat": [proc.pid]}, [proc.pid],
                          vnc_password=password, max_idle=1000))
    if not only or "direct" in only:
        peers.append(Peer("direct", desktop_port, False, {}, [], vnc_password=password,
                          max_idle=0))
    return peers


# -- running generators ------------------------------------------------------------------------------

class Generators:
    """Runs jobs on ``benchmarks.loadgen`` processes, one per share."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.count = 0

    async def start(self, job: dict) -> asyncio.subprocess.Process:
        self.count += 1
        path = self.state / f"job-{self.count}.json"
        path.write_text(json.dumps(job))
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.loadgen", str(path), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parent.parent,
            limit=1 << 26)                        # a result line carries every sample

    async def run(self, peer: Peer, jobs: list[dict]) -> tuple[list[dict], dict[str, float]]:
        """Run the jobs at once; their results and the CPU seconds each of the peer's process
        groups spent meanwhile."""
        procs = [await self.start(job) for job in jobs]
        before = {name: cpu_seconds(pids) for name, pids in peer.cpu.items()}
        results = [json.loads((await p.stdout.readline()) or b"{}") for p in procs]
        cpu = {name: cpu_seconds(pids) - before[name] for name, pids in peer.cpu.items()}
        for p in procs:
            await p.wait()
        return results, cpu


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def percentile(samples: list[float], q: float) -> float:
    samples = sorted(samples)
    return samples[min(len(samples) - 1, int(len(samples) * q))]


# -- the measurements ------------------------------------------------------------------------------

async def downstream(gen: Generators, peer: Peer, conns: int, total: int, cores: int) -> dict:
    shares = [n for n in split(conns, min(cores, conns)) if n]
    jobs = [peer.job("down", conns=n, bytes=total // conns,
                     tickets=peer.mint(n) if peer.mint else []) for n in shares]
    results, cpu = await gen.run(peer, jobs)
    moved = sum(r["bytes"] for r in results)
    wall = max(r["wall"] for r in results)
    return {"MBps": round(moved / MiB / wall, 1),
            "relay_cpu_s_per_GB": round(sum(cpu.values()) / (moved / 1e9), 2) if cpu else None,
            **generator_cpu(results, wall)}


async def upstream(gen: Generators, peer: Peer, conns: int, total: int, frame: int,
                   cores: int) -> dict:
    shares = [n for n in split(conns, min(cores, conns)) if n]
    frames = total // conns // frame
    jobs = [peer.job("up", conns=n, frame=frame, frames=frames,
                     tickets=peer.mint(n) if peer.mint else []) for n in shares]
    results, cpu = await gen.run(peer, jobs)
    moved = sum(r["bytes"] for r in results)
    wall = max(r["wall"] for r in results)
    return {"MBps": round(moved / MiB / wall, 1),
            "msgs_per_s": round(sum(r["messages"] for r in results) / wall),
            "relay_cpu_s_per_GB": round(sum(cpu.values()) / (moved / 1e9), 2) if cpu else None,
            **generator_cpu(results, wall)}


async def round_trip(gen: Generators, peer: Peer, conns: int, iterations: int,
                     cores: int) -> dict:
    shares = [n for n in split(conns, min(cores, conns)) if n]
    jobs = [peer.job("rtt", conns=n, iterations=iterations,
                     tickets=peer.mint(n) if peer.mint else []) for n in shares]
    results, _ = await gen.run(peer, jobs)
    samples = [s for r in results for s in r["samples"]]
    wall = max(r["generator_wall_s"] for r in results)
    return {"p50_us": round(percentile(samples, 0.5) * 1e6, 1),
            "p99_us": round(percentile(samples, 0.99) * 1e6, 1), **generator_cpu(results, wall)}


async def setups(gen: Generators, peer: Peer, total: int, concurrency: int,
                 generators: int) -> dict:
    shares = split(total, generators)
    jobs = [peer.job("setups", total=n, concurrency=max(1, concurrency // generators),
                     tickets=peer.mint(n) if peer.mint else []) for n in shares]
    results, cpu = await gen.run(peer, jobs)
    samples = [s for r in results for s in r["samples"]]
    wall = max(r["generator_wall_s"] for r in results)
    done = len(samples)
    out = {"per_s": round(done / wall), "p50_ms": round(percentile(samples, 0.5) * 1e3, 2),
           "p99_ms": round(percentile(samples, 0.99) * 1e3, 2),
           "failures": sum(r["failures"] for r in results)}
    for name, seconds in cpu.items():
        out[f"cpu_ms_{name}"] = round(seconds / done * 1e3, 3)
    out["cpu_ms_generator"] = round(sum(r["generator_cpu_s"] for r in results) / done * 1e3, 3)
    out.update(generator_cpu(results, wall))
    return out


def generator_cpu(results: list[dict], wall: float) -> dict:
    """The generators' CPU: the busiest one's share of a core (100 %: it set the limit)."""
    return {"generator_cpu_pct": round(max(100 * r["generator_cpu_s"] / wall
                                           for r in results), 1)}


async def idle_memory(gen: Generators, peer: Peer, n: int, cores: int) -> dict:
    """Memory per idle session: the relay's memory grows from before the first session to ``n``
    (``*_per_session``), and from a tenth of ``n`` to ``n`` (``marginal``: what one more session
    costs once the process has warmed up)."""
    if n > peer.max_idle:
        return {"skipped": f"{peer.name} is not tried beyond {peer.max_idle} sessions"}
    shares = split(n, cores)
    procs = [await gen.start(peer.job("idle", steps=[k // 10, k - k // 10],
                                      tickets=peer.mint(k) if peer.mint else []))
             for k in shares]
    before = memory_bytes(peer.memory)
    points = []
    for _ in range(2):
        held = 0
        for p in procs:
            held += json.loads(await p.stdout.readline())["held"]
        await asyncio.sleep(2.0)                  # let the sessions settle (no handshake tasks)
        points.append((held, memory_bytes(peer.memory)))
        for p in procs:
            p.stdin.write(b"go\n")
            await p.stdin.drain()
    results = [json.loads(await p.stdout.readline()) for p in procs]
    for p in procs:
        await p.wait()
    (tenth, m1), (held, m2) = points
    per = lambda a, b, k: round((b - a) / max(k, 1) / 1024, 1)  # noqa: E731
    out = {"opened": held,
           "rss_KiB_per_session": per(before[0], m2[0], held),
           "pss_anon_KiB_per_session": per(before[1], m2[1], held),
           "rss_KiB_marginal": per(m1[0], m2[0], held - tenth),
           "pss_anon_KiB_marginal": per(m1[1], m2[1], held - tenth)}
    errors = [r["first_error"] for r in results if r.get("first_error")]
    if errors:
        out["first_error"] = errors[0]
    await asyncio.sleep(2.0)                      # the relay lets go of them before the next test
    return out


def plan(quick: bool, cores: int):
    scale = 4 if quick else 1
    return [
        ("down_1conn_64KiB", lambda g, p: downstream(g, p, 1, 512 * MiB // scale, cores)),
        ("down_8conn_64KiB", lambda g, p: downstream(g, p, 8, 512 * MiB // scale, cores)),
        ("up_1conn_64KiB", lambda g, p: upstream(g, p, 1, 256 * MiB // scale, 64 * 1024, cores)),
        ("up_8conn_64KiB", lambda g, p: upstream(g, p, 8, 256 * MiB // scale, 64 * 1024, cores)),
        ("up_1conn_10B", lambda g, p: upstream(g, p, 1, 2 * MiB // scale, 10, cores)),
        ("rtt_1conn_64B", lambda g, p: round_trip(g, p, 1, 5000 // scale, cores)),
        ("rtt_50conn_64B", lambda g, p: round_trip(g, p, 50, 200 // scale, cores)),
        ("setups", lambda g, p: setups(g, p, 4000 // scale, 32, cores)),
        ("setup_alone", lambda g, p: setups(g, p, 400 // scale, 1, 1)),
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
    cores = os.cpu_count() or 1
    gen = Generators(state)
    postgres = Postgres() if args.database == "postgres" else None
    try:
        if postgres is not None:
            postgres.start(processes)
        peers = await start_peers(state, processes, set(args.peers) if args.peers else None,
                                  args.workers, postgres, args.baseline)
        raw: dict[str, dict[str, list[dict]]] = {}
        for r in range(args.rounds):
            order = peers[r % len(peers):] + peers[:r % len(peers)]
            for name, measure in plan(args.quick, cores):
                if args.tests and name not in args.tests:
                    continue
                for peer in order:
                    result = await measure(gen, peer)
                    raw.setdefault(name, {}).setdefault(peer.name, []).append(result)
                    print(f"round {r + 1} {name:<18} {peer.name:<10} {result}", flush=True)
        results = {name: {p: median_result(v) for p, v in per.items()} for name, per in raw.items()}
        for n in (1000, 10_000) if not args.quick else (1000,):
            if args.tests and f"idle_{n}" not in args.tests:
                continue
            for peer in peers:
                result = await idle_memory(gen, peer, n, cores)
                results.setdefault(f"idle_{n}", {})[peer.name] = result
                print(f"idle {n:<6} {peer.name:<10} {result}", flush=True)
        return {"date": datetime.date.today().isoformat(),
                "command": " ".join([COMMAND, *sys.argv[1:]]), "rounds": args.rounds,
                "quick": args.quick, "cores": cores, "gateway_workers": args.workers,
                "broker_database": args.database,
                "generator_processes": cores, "results": results}
    finally:
        processes.stop()
        if postgres is not None:
            postgres.remove()
        shutil.rmtree(state, ignore_errors=True)


def ratio(results: dict, test: str, key: str, a: str, b: str) -> float | None:
    try:
        return round(results[test][a][key] / results[test][b][key], 2)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def markdown(report: dict) -> str:
    res = report["results"]
    peers = list(next(iter(res.values())))
    lines = [f"Measured {report['date']} with `{report['command']}` ({report['cores']} cores, "
             f"gateway with {report['gateway_workers']} workers, broker on "
             f"{report['broker_database']}, {report['generator_processes']} generator processes, "
             f"median of {report['rounds']} rounds).", "",
             "| measurement | " + " | ".join(peers) + " |", "|---" * (len(peers) + 1) + "|"]

    def row(label: str, test: str, key: str) -> None:
        cells = []
        for p in peers:
            v = res.get(test, {}).get(p, {}).get(key)
            cells.append("–" if v is None else f"{v}")
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
    row("setups/s, 32 at a time (churn)", "setups", "per_s")
    row("setup p50 at that rate (ms)", "setups", "p50_ms")
    row("setup p99 at that rate (ms)", "setups", "p99_ms")
    row("setup failures", "setups", "failures")
    row("setup alone, p50 (ms)", "setup_alone", "p50_ms")
    row("setup alone, p99 (ms)", "setup_alone", "p99_ms")
    for group in ("gateway", "broker", "postgres", "websockify", "socat"):
        row(f"CPU per setup, {group} (ms)", "setups", f"cpu_ms_{group}")
    row("CPU per setup, load generator (ms)", "setups", "cpu_ms_generator")
    row("relay CPU s per GB, downstream 8 conns", "down_8conn_64KiB", "relay_cpu_s_per_GB")
    row("relay CPU s per GB, upstream 8 conns", "up_8conn_64KiB", "relay_cpu_s_per_GB")
    for n in ("1000", "10000"):
        row(f"idle sessions opened of {int(n):,}", f"idle_{n}", "opened")
        row(f"RSS per idle session at {int(n):,} (KiB)", f"idle_{n}", "rss_KiB_per_session")
        row(f"PSS (anon) per idle session at {int(n):,} (KiB)", f"idle_{n}",
            "pss_anon_KiB_per_session")
        row(f"RSS / PSS (anon) of one more session, {int(n) // 10:,} → {int(n):,} (KiB): RSS",
            f"idle_{n}", "rss_KiB_marginal")
        row(f"… PSS (anon) of one more session, {int(n) // 10:,} → {int(n):,} (KiB)",
            f"idle_{n}", "pss_anon_KiB_marginal")
    for label, test in (("downstream 8", "down_8conn_64KiB"), ("upstream 8", "up_8conn_64KiB"),
                        ("setups", "setups"), ("round trip 1", "rtt_1conn_64B")):
        row(f"busiest generator, {label} (% of a core)", test, "generator_cpu_pct")
    ratios = [
        ("downstream 8 conns, pforte / websockify", ratio(res, "down_8conn_64KiB", "MBps",
                                                          "pforte", "websockify")),
        ("upstream 8 conns, pforte / websockify", ratio(res, "up_8conn_64KiB", "MBps", "pforte",
                                                        "websockify")),
        ("setups/s, pforte / websockify", ratio(res, "setups", "per_s", "pforte", "websockify")),
    ]
    if "pforte-baseline" in peers:
        ratios += [(f"{label}, pforte / pforte-baseline", ratio(res, test, key, "pforte",
                                                               "pforte-baseline"))
                   for label, test, key in (("downstream 8 conns", "down_8conn_64KiB", "MBps"),
                                            ("upstream 8 conns", "up_8conn_64KiB", "MBps"),
                                            ("setups/s", "setups", "per_s"))]
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {label} | {'–' if v is None else v} |" for label, v in ratios]
    try:
        t = res["rtt_1conn_64B"]
        added = [round(t["pforte"][k] - t["direct"][k], 1) for k in ("p50_us", "p99_us")]
        lines.append(f"| added round trip over direct, 1 conn (p50 / p99 µs) | "
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
    colours = {"pforte": "#00557f", "pforte-baseline": "#6fa8c7", "websockify": "#c0392b",
               "socat": "#7f8c8d", "direct": "#bdc3c7"}
    for ax, (title, test, key) in zip(axes, panels):
        names = [p for p in res.get(test, {}) if isinstance(res[test][p].get(key), (int, float))]
        values = [res[test][p][key] for p in names]
        ax.bar(names, values, color=[colours.get(n, "#999") for n in names])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"Pforte gateway vs. peers — {report['cores']} cores, loopback, one run "
                 f"({report['date']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description="Relay benchmark: pforte vs websockify, socat, "
                                     "direct.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller volumes, 1,000 idle only")
    parser.add_argument("--peers", nargs="*", help="only these peers")
    parser.add_argument("--tests", nargs="*", help="only these measurements (for profiling; "
                        "the README's figures come from a whole run)")
    parser.add_argument("--workers", type=int, default=2,
                        help="pforte gateway processes (default 2: one per core; each process "
                        "holds two descriptors per session, and this machine allows 20,000)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite",
                        help="the broker's database (postgres: a private PostgreSQL server)")
    parser.add_argument("--baseline", type=Path,
                        help="a checkout of another version (git worktree add DIR COMMIT): its "
                        "broker and gateway run as the peer pforte-baseline, side by side")
    parser.add_argument("--out", type=Path, help="where the results go (see --record)")
    add_record_option(parser)
    args = parser.parse_args()
    import uvloop
    report = uvloop.run(run(args))
    args.out = args.out or results_dir(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "relay" if args.database == "sqlite" else f"relay-{args.database}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / f"{stem}.md").write_text(table)
    plot(report, args.out / f"{stem}.png")
    print(table)


if __name__ == "__main__":
    main()
