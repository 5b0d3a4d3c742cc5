"""Which PostgreSQL driver for the store: psycopg 3 (what Pforte uses: the store's own units of
work, run on a pool of threads with a connection each) against asyncpg (the same statements,
natively async), on the two hot paths of a boot storm, in one run against a private PostgreSQL.

* **placement** — a pool's advisory lock, the pool's seat counts, a new session row;
* **redemption** — a ticket row (once), the session's state, the session connected.

Usage: ``.venv/bin/python -m benchmarks.store_drivers [--operations 3000] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import time

from broker.engine import PostgresEngine, lock_key
from broker.store import Store
from testbed import Postgres, Processes

HOSTS = [(f"h{i}", 1000, True) for i in range(4)]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(name: str, n: int, concurrency: int, one) -> dict:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def timed(i: int) -> None:
        async with gate:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)
    cpu, wall = _cpu(), time.perf_counter()
    await asyncio.gather(*(timed(i) for i in range(n)))
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    latencies.sort()
    return {"what": name, "per_s": round(n / wall), "p50_ms": round(latencies[n // 2] * 1e3, 2),
            "p99_ms": round(latencies[int(n * 0.99)] * 1e3, 2),
            "client_cpu_ms_per_op": round(cpu / n * 1e3, 3)}


async def psycopg_run(dsn: str, password: str, n: int, concurrency: int) -> list[dict]:
    store = Store(PostgresEngine(dsn, password, connections=8))
    await store.open()
    now = time.time()
    placed = {}

    async def place(i: int) -> None:
        placed[i] = (await store.sessions.assign("t", f"pg{i}", f"pool{i % 8}", HOSTS, now=now,
                                          pending_timeout=60, keep_seconds=60))

    async def redeem(i: int) -> None:
        a = placed[i]
        await store.sessions.redeem_many([(f"pg-ticket-{i}", int(now) + 30, "t", f"pg{i}",
                                           a.session_id)], now=now)
    results = [await _measure("psycopg 3 (threads), placement", n, concurrency, place),
               await _measure("psycopg 3 (threads), redemption", n, concurrency, redeem)]
    await store.close()
    return results


async def asyncpg_run(dsn: str, password: str, n: int, concurrency: int) -> list[dict]:
    import asyncpg
    pool = await asyncpg.create_pool(dsn, password=password, min_size=8, max_size=8)
    now = time.time()
    sessions: dict[int, str] = {}

    async def place(i: int) -> None:
        pool_id = f"pool{i % 8}"
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(f"pool:t/{pool_id}"))
            await conn.fetch("SELECT host, state, COUNT(*) FROM sessions WHERE tenant=$1 AND "
                             "pool=$2 AND state IN ('pending','connected','disconnected') "
                             "GROUP BY host, state", "t", pool_id)
            session = os.urandom(12).hex()
            await conn.execute("INSERT INTO sessions (id, tenant, login, pool, host, state, "
                               "viewers, keep_seconds, created, updated, deadline) VALUES "
                               "($1,$2,$3,$4,$5,'pending',0,60,$6,$6,$7)", session, "t",
                               f"ap{i}", pool_id, random.choice(HOSTS)[0], now, now + 60)
            sessions[i] = session

    async def redeem(i: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)",
                               lock_key(f"session:{sessions[i]}"))
            await conn.execute("INSERT INTO tickets VALUES ($1,$2) ON CONFLICT (id) DO NOTHING",
                               f"ap-ticket-{i}", int(now) + 30)
            await conn.fetchrow("SELECT state FROM sessions WHERE id=$1 AND tenant=$2 AND "
                                "login=$3", sessions[i], "t", f"ap{i}")
            await conn.execute("UPDATE sessions SET state='connected', viewers=viewers+1, "
                               "deadline=NULL, updated=$1 WHERE id=$2", now, sessions[i])
    results = [await _measure("asyncpg, placement", n, concurrency, place),
               await _measure("asyncpg, redemption", n, concurrency, redeem)]
    await pool.close()
    return results


async def _schema(dsn: str, password: str) -> None:
    store = Store(PostgresEngine(dsn, password, connections=1))
    await store.open()
    await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    processes, server = Processes(), Postgres()
    try:
        server.start(processes)
        results = []
        for round_ in range(2):  # alternate, so that neither always runs on a warmer server
            for runner in (psycopg_run, asyncpg_run):
                dsn = server.create_database(f"bench_{runner.__name__}_{round_}")
                asyncio.run(_schema(dsn, server.password))
                results += asyncio.run(runner(dsn, server.password, args.operations,
                                              args.concurrency))
    finally:
        processes.stop()
        server.remove()
    print("| driver, path | ops/s | p50 | p99 | client CPU per op |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['what']} | {r['per_s']} | {r['p50_ms']} ms | {r['p99_ms']} ms | "
              f"{r['client_cpu_ms_per_op']} ms |")


if __name__ == "__main__":
    main()
