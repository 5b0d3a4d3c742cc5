"""Logins per second: the broker (password + TOTP over HTTP) beside raw ldap3 against the same slapd.

One run, on this machine, against a private slapd seeded with ``--users`` users in a desktop group:

* **raw bind** — ldap3 simple binds as the users (what the directory itself does per login);
* **raw login** — ldap3 as a broker would do it without Pforte: service search, user bind,
  group lookup;
* **pforte** — ``pforte broker`` in its own process: ``POST /api/v1/login`` and
  ``POST /api/v1/mfa`` (a fresh TOTP code) per user, ``--concurrency`` at a time.

Usage: ``.venv/bin/python -m benchmarks.logins [--users 1000] [--concurrency 16]``; writes ``var/benchmarks/logins.json`` (``benchmarks/results/`` with ``--record``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import ldap3

from broker import mfa
from broker.config import load_config
from testbed.demo import TENANT, DOMAIN, DesktopEntry, write_config
from broker.service import Broker
from broker.store import Store
from testbed import (Processes, Slapd, directory_of_users, exit_on_sigterm, free_port,
                            wait_for_port)
from benchmarks import add_record_option, results_dir

RESULTS = "logins.json"  # under benchmarks.results_dir()


def _summary(name: str, n: int, wall: float, latencies: list[float]) -> dict:
    latencies.sort()
    return {"what": name, "n": n, "per_s": round(n / wall, 1),
            "p50_ms": round(statistics.median(latencies) * 1e3, 2),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * .99))] * 1e3,
                            2)}


def raw(slapd: Slapd, users: list[str], password: str, concurrency: int, full: bool) -> dict:
    server = ldap3.Server(slapd.url, get_info=ldap3.NONE)

    def one(user: str) -> float:
        t = time.perf_counter()
        if full:
            svc = ldap3.Connection(server, slapd.service_dn, slapd.service_password,
                                   auto_bind=True)
            svc.search(slapd.suffix, f"(&(objectClass=inetOrgPerson)(uid={user}))",
                       attributes=["displayName"])
            dn = svc.response[0]["dn"]
        else:
            dn = slapd.user_dn(user)
        conn = ldap3.Connection(server, dn, password)
        assert conn.bind()
        conn.unbind()
        if full:
            svc.search(slapd.suffix, f"(&(objectClass=groupOfNames)(member={dn}))",
                       attributes=[])
            svc.unbind()
        return time.perf_counter() - t

    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        latencies = list(pool.map(one, users))
        wall = time.perf_counter() - start
    return _summary("raw ldap3 login (search + bind + groups)" if full else "raw ldap3 bind",
                    len(users), wall, latencies)


async def pforte(base: str, users: list[str], password: str, secrets_by_user: dict[str, str],
                 concurrency: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def one(user: str) -> None:
            async with sem:
                t = time.perf_counter()
                r = await http.post(f"{base}/api/v1/login", json={
                    "username": f"{user}@{DOMAIN}", "password": password})
                token = (await r.json())["token"]
                code = mfa.current_code(secrets_by_user[user], time.time())
                r = await http.post(f"{base}/api/v1/mfa", json={"code": code},
                                    headers={"Authorization": f"Bearer {token}"})
                assert r.status == 204, await r.text()
                latencies.append(time.perf_counter() - t)
        start = time.perf_counter()
        await asyncio.gather(*(one(u) for u in users))
        wall = time.perf_counter() - start
    return _summary("pforte login (password + TOTP, HTTP)", len(users), wall, latencies)


def run(n_users: int, concurrency: int) -> dict:
    state = Path(tempfile.mkdtemp(prefix="pforte-logins-"))
    processes = Processes()
    password = "Bench-pass-1"
    users = [f"user{i:05d}" for i in range(n_users)]
    try:
        slapd = directory_of_users(state / "slapd", processes, "Bench", users, password)
        port = free_port()
        config_path = write_config(state, slapd=slapd, group=slapd.group_dn("desktop-users"),
                                   host="127.0.0.1", portal_port=port, gateway_port=free_port(),
                                   desktops=[DesktopEntry("d", 5900, 10, None, "rdp")],
                                   broker_options={"failures_per_source": 1000000})
        config = load_config(config_path)
        totp = {u: mfa.new_secret() for u in users}

        async def enrol() -> None:
            broker = Broker(config, Store.for_config(config))
            await broker.store.open()
            for u in users:
                await broker.second_factor.import_enrolment(TENANT, u, totp[u])
            await broker.close()
        asyncio.run(enrol())
        proc = processes.start([sys.executable, "-m", "pforte", "--log-level", "WARNING",
                                "broker", "--config", str(config_path)], log=state / "broker.log")
        wait_for_port("127.0.0.1", port, proc, what="broker")
        results = [raw(slapd, users, password, concurrency, full=False),
                   raw(slapd, users, password, concurrency, full=True)]
        import uvloop
        results.append(uvloop.run(pforte(f"http://127.0.0.1:{port}", users, password, totp,
                                         concurrency)))
        return {"users": n_users, "concurrency": concurrency, "results": results}
    finally:
        processes.stop()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    add_record_option(parser)
    args = parser.parse_args()
    report = run(args.users, args.concurrency)
    (results_dir(args) / RESULTS).write_text(json.dumps(report, indent=2) + "\n")
    print("| what | logins/s | p50 | p99 |\n|---|---|---|---|")
    for r in report["results"]:
        print(f"| {r['what']} | {r['per_s']} | {r['p50_ms']} ms | {r['p99_ms']} ms |")


if __name__ == "__main__":
    main()
