"""PostgreSQL goes down under a running fleet installation (a server of this test's own, so the
outage touches nothing else): open desktops keep running, a dropped network is resumed, new
sign-ins get a clear "temporarily unavailable" in the user's language, and once the database is
back everything works again without restarting any process."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import Postgres, Processes

from ..conftest import USERS, need
from .conftest import DOMAIN, bearer
from .test_processes import desktop_answers, open_session

pytestmark = pytest.mark.integration


@pytest.fixture
def own_postgres():
    """(a PostgreSQL server, the Processes that runs it)."""
    need("runuser")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.skip("not installed: postgresql (scripts/setup installs it)")
    processes, server = Processes(), Postgres()
    server.start(processes)
    yield server, processes
    processes.stop()
    server.remove()


async def test_a_database_outage_keeps_desktops_running_and_ends_by_itself(
        own_live, own_postgres, tmp_path):
    database, processes = own_postgres
    password_file = tmp_path / "pg.pass"
    password_file.write_text(database.password)
    live = own_live(broker_options={"database": database.create_database("outage"),
                                    "database_password_file": str(password_file)})
    async with live.client("10.90.0.1") as http:
        token, _, ws = await open_session(live, http, "user3")

        database.halt()                                   # the database is gone
        assert await desktop_answers(ws)                      # the open desktop is not
        r = await http.post(f"{live.portal}/api/v1/login", headers={"Accept-Language": "de"},
                            json={"username": f"bernd@{DOMAIN}",
                                  "password": USERS["bernd"][1]})
        body = await r.json()
        assert r.status == 503 and body["error"] == "store_unavailable"
        assert body["message"].startswith("Die Anmeldung ist vorübergehend nicht möglich")
        r = await http.get(f"{live.gateway_http}/healthz")
        assert r.status == 200                                # the gateway does not care
        assert await desktop_answers(ws)

        database.run(processes)                      # back, same data
        r = await http.post(f"{live.portal}/api/v1/login",
                            json={"username": f"bernd@{DOMAIN}",
                                  "password": USERS["bernd"][1]})
        assert r.status == 200                                # no process was restarted
        r = await http.get(f"{live.portal}/api/v1/pools", headers=bearer(token))
        assert r.status == 200                                # logins survived the outage
        await ws.close()


async def test_every_connection_that_predates_a_database_restart_is_replaced_unnoticed(
        own_postgres):
    """Each of the broker's connections was opened before PostgreSQL restarted: the first
    unit of work on each finds it dead and runs on a new one instead of answering 503."""
    import asyncio

    from broker.engine import DEFAULT_CONNECTIONS, PostgresEngine

    database, processes = own_postgres
    engine = PostgresEngine(database.dsn(), database.password)

    def slow_read(tx):                       # holds its thread, so that each gets a connection
        return tx.execute("SELECT pg_sleep(0.2), 1").fetchone()[1]

    def write(tx):
        tx.execute("INSERT INTO t VALUES (1)")
        return tx.execute("SELECT pg_sleep(0.2), 1").fetchone()[1]

    try:
        await engine.write(lambda tx: tx.execute("CREATE TABLE t (n integer)"))
        assert await asyncio.gather(*(engine.read(slow_read) for _ in range(
            DEFAULT_CONNECTIONS))) == [1] * DEFAULT_CONNECTIONS
        database.halt()
        database.run(processes)
        answers = await asyncio.gather(*(engine.read(slow_read)
                                         for _ in range(DEFAULT_CONNECTIONS // 2)),
                                       *(engine.write(write)
                                         for _ in range(DEFAULT_CONNECTIONS // 2)))
        assert answers == [1] * DEFAULT_CONNECTIONS
        assert await engine.read(lambda tx: tx.execute("SELECT count(*) FROM t").fetchone()[0]) \
            == DEFAULT_CONNECTIONS // 2                   # each write once, none twice
    finally:
        await engine.close()
