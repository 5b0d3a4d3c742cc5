"""The boot storm against a fleet, with faults: N thin clients (default 2,200) boot within a window
against HAProxy → two brokers → PostgreSQL, and two gateways behind the same HAProxy, with a real
slapd and real TigerVNC Xvnc hosts (as ``benchmarks.boot_storm``, whose clients this reuses).

Runs, each on a fresh database:

* **a** no faults;
* **b** ``kill -9`` of one broker 5 s into the storm;
* **c** ``kill -9`` of one gateway once every session is connected: every client whose desktop
  dropped asks for its desktop again (the same session, a new ticket) and is counted back;
* **d** PostgreSQL stopped for 20 s in the middle of the storm;
* **f** the database's machine burns: PostgreSQL has a synchronous streaming standby and the
  brokers a URL naming both; 4 s into the storm the primary stops hard (immediate shutdown, as
  a crash) and 2 s later the standby is promoted;
* **e** for comparison: the same storm on SQLite with one broker (``benchmarks.boot_storm``).

At the end of each, while the clients hold their desktops, the broker's records are checked
against the clients' own (``boot_storm.check_sessions``): no host over its seats, every desktop a
client holds one connected session, no connected session without a client; retries counted.
``--contend`` runs a busy loop on every core beside the storm (the 8 a.m. with a busy machine):
overload must cost time, not boots.

Usage: ``.venv/bin/python -m benchmarks.fleet_storm [--clients 2200] [--window 10] [--hosts 44]
[--runs abcdef] [--contend]``; writes ``var/benchmarks/fleet_storm.json`` (``benchmarks/results/`` with ``--record``).
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
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import uvloop

from benchmarks import boot_storm
from benchmarks.boot_storm import EXAMPLES, PASSWORD, cpu_by_part
from broker import mfa
from broker.config import load_config
from testbed import (HAProxy, Postgres, Processes, XvncDesktop, directory_of_users,
                     exit_on_sigterm, free_port, wait_for_port)
from testbed.demo import DesktopEntry, write_config
from wire.serving import raise_file_limit
from benchmarks import add_record_option, results_dir

RESULTS = "fleet_storm.json"  # under benchmarks.results_dir()
BROKER_KILL_AT = 5.0      # seconds into the storm (run b)
FAILOVER = (4.0, 2.0)     # the primary dies (seconds into the storm), promotion after (run f)
DB_OUTAGE = (4.0, 20.0)   # start (seconds into the storm) and length of the outage (run d)
COME_BACK_WITHIN = 30.0   # seconds a client of run c may take to get its desktop again
LATE = 10                 # users who come once every seat is held (all must be refused)


class Fleet:
    """Two brokers, two gateways, HAProxy, one database; the parts a run may break."""

    def __init__(self, state: Path, processes: Processes, config_path: Path,
                 second_config: Path, ports: dict[str, int]) -> None:
        self.state, self.processes = state, processes
        self.configs = [config_path, second_config]
        self.ports = ports
        self.brokers: list = []
        self.gateways: list = []

    def start(self) -> None:
        python = [sys.executable, "-m", "pforte", "--log-level", "WARNING"]
        for i, config in enumerate(self.configs):
            broker = self.processes.start([*python, "broker", "--config", str(config)],
                                          log=self.state / f"broker{i}.log")
            wait_for_port("127.0.0.1", self.ports[f"broker{i}"], broker, what="broker")
            self.brokers.append(broker)
            gateway = self.processes.start([*python, "gateway", "--config", str(config)],
                                           log=self.state / f"gateway{i}.log")
            wait_for_port("127.0.0.1", self.ports[f"gateway{i}"], gateway, what="gateway")
            self.gateways.append(gateway)

    def stop(self) -> None:
        for proc in self.brokers + self.gateways:
            if proc.poll() is None:
                self.processes.stop(proc)
        self.brokers, self.gateways = [], []


def make_configs(state: Path, slapd, desktops, seats: int, ports: dict[str, int],
                 database: dict) -> tuple[Path, Path]:
    lb_gateway = f"ws://127.0.0.1:{ports['lb_gateway']}/ws"
    first = write_config(
        state, slapd=slapd, group=slapd.group_dn("desktop-users"), host="127.0.0.1",
        portal_port=ports["broker0"], gateway_port=ports["gateway0"], gateway_url=lb_gateway,
        desktops=[DesktopEntry(f"d{i}", d.port, seats, d.password)
                  for i, d in enumerate(desktops)],
        broker_options={"failures_per_source": 10**6, "profiles_dir": str(EXAMPLES),
                        "trusted_proxies": ["127.0.0.1/32"], **database},
        gateway_options={"max_sessions_per_source": 10**6, "max_sessions": 10**6})
    text = first.read_text().replace(
        f'broker_url = "http://127.0.0.1:{ports["broker0"]}"',
        f'broker_urls = ["http://127.0.0.1:{ports["broker0"]}", '
        f'"http://127.0.0.1:{ports["broker1"]}"]')
    first.write_text(text.replace("[gateway]\n", '[gateway]\nname = "gateway1"\n'))
    second = state / "second.toml"                # names as HAProxy's: a resume finds its holder
    second.write_text(text.replace(f'"127.0.0.1:{ports["broker0"]}"',
                                   f'"127.0.0.1:{ports["broker1"]}"', 1).replace(
        f'listen = "127.0.0.1:{ports["gateway0"]}"', f'listen = "127.0.0.1:{ports["gateway1"]}"')
        .replace("[gateway]\n", '[gateway]\nname = "gateway2"\n'))
    return first, second


async def storm_with(fault, base: str, users, totp, credentials, window: float,
                     check) -> dict:
    """The storm, with ``fault`` (a coroutine function of the storm's start) run beside it."""
    start = time.monotonic()
    side = asyncio.ensure_future(fault(start)) if fault else None
    report = await boot_storm.storm(base, users, totp, credentials, window, check)
    if side is not None:
        report["fault"] = await side
    return report


async def come_back(base: str, users: list[str], totp: dict[str, str], credentials: list[str],
                    fleet: Fleet, window: float) -> dict:
    """Run c: the storm; then, with every session connected, one gateway is killed. A client
    whose desktop drops asks for it again at once with its login (no new sign-in): the same
    session, a new ticket, the other gateway. Counted: who dropped, who is back, and when."""
    rng = random.Random(11)
    retried: collections.Counter = collections.Counter()
    start = time.monotonic() + 0.5
    clients: list[tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]] = []
    watchers: list[asyncio.Future] = []
    killed = [0.0]
    back: list[float] = []
    closes: collections.Counter = collections.Counter()

    async def watch(i: int, http, token, ws) -> bool:
        """Read the desktop's stream as a viewer does (answering the gateway's pings) until it
        drops; then ask for the desktop again. True if it dropped and came back."""
        try:
            while (msg := await ws.receive()).type is aiohttp.WSMsgType.BINARY:
                pass
            closes[f"{msg.type.name} {ws.close_code}"] += 1
        except aiohttp.ClientError as exc:    # the drop met this client writing (a ping's pong)
            closes[type(exc).__name__] += 1
        if not killed[0]:
            raise boot_storm.Failed("dropped before the fault")
        for attempt in range(MOVE_ATTEMPTS):       # as the page does: ask again, a few times
            try:
                again, _, _ = await boot_storm.open_desktop(http, base, token, random.Random(i),
                                                         retried)
                break
            except (aiohttp.ClientError, boot_storm.Failed):
                if attempt == MOVE_ATTEMPTS - 1:
                    raise
                retried["desktop again"] += 1
                await asyncio.sleep(MOVE_DELAY)
        back.append(time.monotonic() - killed[0])
        await again.close()
        return True

    async def boot(i: int, user: str) -> None:
        await asyncio.sleep(max(0.0, start + rng.uniform(0, window) - time.monotonic()))
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=boot_storm.GIVE_UP))
        own = random.Random(i)
        login = await boot_storm.request(http, "POST", f"{base}/api/v1/login", own, retried,
                                         body={"username": f"{user}@musterstadt.example",
                                               "password": PASSWORD})
        await boot_storm.request(http, "POST", f"{base}/api/v1/mfa", own, retried,
                                 token=login["token"],
                                 body={"code": mfa.current_code(totp[user], time.time())})
        ws, _, _ = await boot_storm.open_desktop(http, base, login["token"], own, retried)
        clients.append((http, ws))
        watchers.append(asyncio.ensure_future(watch(i, http, login["token"], ws)))
    booted = await asyncio.gather(*(boot(i, u) for i, u in enumerate(users)),
                                  return_exceptions=True)
    failed_boots = sum(1 for b in booted if isinstance(b, BaseException))
    await asyncio.sleep(0.5)
    killed[0] = time.monotonic()
    fleet.gateways[1].send_signal(signal.SIGKILL)
    done, pending = await asyncio.wait(watchers, timeout=COME_BACK_WITHIN + 10)
    for task in pending:
        task.cancel()
    lost_why = collections.Counter(f"{type(t.exception()).__name__}: {t.exception()}"[:80]
                                   for t in done if t.exception() is not None)
    lost = sum(lost_why.values())                               # dropped, and not back
    dropped = lost + sum(1 for t in done if t.exception() is None and t.result())
    for http, ws in clients:
        await ws.close()
        await http.close()
    back.sort()
    return {"booted": len(clients), "failed_boots": failed_boots,
            "untouched": len(pending), "dropped": dropped,
            "back": len(back), "not_back": lost,
            "back_p50_s": round(back[len(back) // 2], 2) if back else None,
            "all_back_after_s": round(back[-1], 2) if back else None,
            "closes": dict(closes), "not_back_why": dict(lost_why), "retried": dict(retried)}


MOVE_ATTEMPTS, MOVE_DELAY = 5, 0.1    # the page's own (broker/web/static/desktop.js)


def busy_loops(processes: Processes) -> list:
    """One process spinning on each core: another load on the machine."""
    return [processes.start([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 1)]


def run(which: str, n: int, window: float, n_hosts: int, contend: bool = False) -> dict:
    raise_file_limit()
    state = Path(tempfile.mkdtemp(prefix="pforte-fleet-"))
    processes = Processes()
    users = [f"u{i:05d}" for i in range(n)]
    late = [f"late{i}" for i in range(LATE)]
    seats = -(-n // n_hosts)
    postgres = Postgres()
    servers = [postgres]           # the database, and a standby promoted in run f
    try:
        slapd = directory_of_users(state / "slapd", processes, "Storm", users + late, PASSWORD)
        desktops = [XvncDesktop(state / f"desk{i}", f"Storm {i}", "#2e7d32",
                                password=secrets.token_hex(4)) for i in range(n_hosts)]
        with concurrent.futures.ThreadPoolExecutor(8) as starting:
            list(starting.map(lambda d: d.start(processes), desktops))
        postgres.start(processes)
        (state / "pg.pass").write_text(postgres.password)
        ports = {k: free_port() for k in ("broker0", "broker1", "gateway0", "gateway1",
                                          "lb_portal", "lb_gateway")}
        HAProxy(state / "haproxy", [ports["broker0"], ports["broker1"]],
                [ports["gateway0"], ports["gateway1"]], ports["lb_portal"],
                ports["lb_gateway"]).start(processes)
        base = f"http://127.0.0.1:{ports['lb_portal']}"
        results = {}
        for run_name in which:
            if run_name == "e":
                results["e"] = boot_storm.run(n, window, n_hosts)
                continue
            run_state = state / f"run-{run_name}"
            run_state.mkdir()
            database = {"database": postgres.create_database(f"storm_{run_name}"),
                        "database_password_file": str(state / "pg.pass")}
            standby = None
            if run_name == "f":            # a synchronous standby, and a URL naming both
                standby = postgres.standby(processes)
                servers.append(standby)
                postgres.commit_on("standby")
                database["database"] = database["database"].replace(
                    f"127.0.0.1:{postgres.port}/",
                    f"127.0.0.1:{postgres.port},127.0.0.1:{standby.port}/") + \
                    "?target_session_attrs=read-write"
            first, second = make_configs(run_state, slapd, desktops, seats, ports, database)
            config = load_config(first)
            totp, credentials = asyncio.run(boot_storm.enrol_clients(config, users + late))
            fleet = Fleet(run_state, processes, first, second, ports)
            fleet.start()
            time.sleep(1.5)  # HAProxy has checked every part
            contenders = busy_loops(processes) if contend else []
            parts = {"brokers": [p.pid for p in fleet.brokers],
                     "gateways": [p.pid for p in fleet.gateways],
                     "postgres": [postgres.proc.pid]}
            cpu_before = cpu_by_part(parts)

            async def kill_broker(start: float) -> dict:
                await asyncio.sleep(max(0.0, start + BROKER_KILL_AT - time.monotonic()))
                fleet.brokers[1].send_signal(signal.SIGKILL)
                return {"killed": "broker 2 (kill -9)", "at_s": BROKER_KILL_AT}

            async def stop_database(start: float) -> dict:
                await asyncio.sleep(max(0.0, start + DB_OUTAGE[0] - time.monotonic()))
                postgres.halt()
                await asyncio.sleep(DB_OUTAGE[1])
                postgres.run(processes)
                return {"database_stopped_at_s": DB_OUTAGE[0], "for_s": DB_OUTAGE[1]}
            async def fail_over(start: float) -> dict:
                await asyncio.sleep(max(0.0, start + FAILOVER[0] - time.monotonic()))
                await asyncio.to_thread(postgres.halt, hard=True)
                await asyncio.sleep(FAILOVER[1])
                promoted = time.monotonic()
                await asyncio.to_thread(standby.promote)
                return {"primary_stopped_hard_at_s": FAILOVER[0],
                        "standby_promoted_after_s": FAILOVER[1],
                        "promotion_took_s": round(time.monotonic() - promoted, 2)}
            if run_name == "c":
                report = uvloop.run(come_back(base, users, totp, credentials, fleet, window))
                report["check"] = asyncio.run(boot_storm.check_sessions(config, seats, None))
            else:
                fault = {"a": None, "b": kill_broker, "d": stop_database,
                         "f": fail_over}[run_name]
                async def check(held, config=config) -> dict:
                    checked = await boot_storm.check_sessions(config, seats, held)
                    if len(held) == seats * n_hosts:       # every seat is held
                        checked["late_clients"] = await boot_storm.late_clients(base, late, totp)
                    return checked
                report = uvloop.run(storm_with(fault, base, users, totp, credentials, window,
                                               check))
            cpu_after = cpu_by_part(parts)
            report["cpu_seconds"] = {k: round(cpu_after[k] - cpu_before[k], 1) for k in parts}
            for busy in contenders:
                processes.stop(busy)
            report["contended"] = contend
            results[run_name] = report
            fleet.stop()
            if standby is not None:     # the promoted standby is the database from now on
                postgres, standby = standby, None
            print(f"run {run_name}: {json.dumps(report)}", flush=True)
        return results
    finally:
        processes.stop()
        for server in servers:
            server.remove()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description="Boot storm against a fleet, with faults.")
    parser.add_argument("--clients", type=int, default=2200)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--hosts", type=int, default=44)
    parser.add_argument("--runs", default="abcdef", help="which runs (letters a to f)")
    parser.add_argument("--contend", action="store_true",
                        help="a busy loop on every core beside the storm")
    add_record_option(parser)
    args = parser.parse_args()
    results = run(args.runs, args.clients, args.window, args.hosts, args.contend)
    (results_dir(args) / RESULTS).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
