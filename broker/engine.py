"""The database engines under the store: SQLite (one file, the embedded default) and PostgreSQL
(several brokers), with one way to run work in a transaction.

Theory of operation
-------------------
A unit of work is a plain function ``fn(tx)`` that reads and writes through ``tx.execute(sql,
args)`` (``?`` placeholders, SQL both engines speak) and returns a value; :meth:`Engine.write` runs
it in one transaction on the engine's own threads (database calls never block the event loop),
:meth:`Engine.read` without one. Decisions that must not race happen in one such transaction:

* SQLite: ``BEGIN IMMEDIATE`` serialises every writer of the file (also across processes);
* PostgreSQL: READ COMMITTED, plus ``tx.lock(name)`` — a transaction-scoped advisory lock — on the
  aggregate the decision is about (a pool's seats, a throttle key, a session), taken before
  anything is read; conditional statements (``UPDATE … WHERE state = …``, ``INSERT … ON
  CONFLICT DO NOTHING``) decide the rest in one statement.

A database that cannot be reached raises :class:`StoreUnavailable`; the next call connects anew.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from .errors import BadRequest, StoreUnavailable

logger = logging.getLogger("pforte.store")

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT = 10.0     # seconds a writer waits for another process's transaction
DEFAULT_CONNECTIONS = 8        # PostgreSQL connections (and threads) per broker process
CONNECT_TIMEOUT = 3            # seconds to reach PostgreSQL


def _checked(args: Sequence[Any]) -> Sequence[Any]:
    """Parameters as both engines take them: PostgreSQL refuses text with a NUL character, so
    both refuse it (a NUL never names anything stored)."""
    for arg in args:
        if isinstance(arg, str) and "\x00" in arg:
            raise BadRequest("text with a NUL character")
    return args


class Tx:
    """What a unit of work sees: ``execute`` / ``executemany`` and ``lock``."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def lock(self, *names: str) -> None:
        """Serialise with every other transaction that locks one of ``names``."""


class Engine:
    name = ""
    schema_dialect = ""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads,
                                            thread_name_prefix=f"pforte-{self.name}")
        self._local = threading.local()
        self._closed = False

    async def write(self, fn: Callable[[Tx], T], *, locks: Sequence[str] = ()) -> T:
        """Run ``fn`` in one transaction (after taking ``locks``); its result."""
        return await self._call(self._transaction, fn, locks)

    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` for reading only (each statement sees committed data)."""
        return await self._call(self._read, fn)

    async def _call(self, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, *args)

    def _transaction(self, fn: Callable[[Tx], T], locks: Sequence[str]) -> T:
        raise NotImplementedError

    def _read(self, fn: Callable[[Tx], T]) -> T:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Close every connection; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        threads = self._executor._max_workers
        await asyncio.gather(*(self._call(self._disconnect) for _ in range(threads)))
        self._executor.shutdown(wait=True)


class _SqliteTx(Tx):
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.db.execute(sql, _checked(args))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(sql, [_checked(r) for r in rows])


class SqliteEngine(Engine):
    """One file; one thread and connection per broker process."""

    name = "sqlite"
    schema_dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__(threads=1)
        self.path = path

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if not self.path.exists():  # readable by the broker's user only, from the start
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            os.chmod(self.path, 0o600)  # SQLite gives its -wal and -shm files the same mode
            db = sqlite3.connect(self.path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _transaction(self, fn: Callable[[Tx], T], locks: Sequence[str]) -> T:
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from None
        try:
            result = fn(_SqliteTx(db))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def _read(self, fn: Callable[[Tx], T]) -> T:
        return fn(_SqliteTx(self._db()))

    def _disconnect(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


FEW_LOCKS = 4   # up to this many advisory locks are taken one statement each


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class _PostgresTx(Tx):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self.conn.execute(_pg_sql(sql), tuple(_checked(args)), prepare=True)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(_pg_sql(sql), [tuple(_checked(r)) for r in rows])

    def lock(self, *names: str) -> None:
        keys = sorted({lock_key(n) for n in names})       # one order: no deadlocks
        if len(keys) <= FEW_LOCKS:
            for key in keys:
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        else:  # a batch's locks in one round trip, taken in the sorted order
            self.conn.execute("SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(%s::bigint[]) "
                              "AS k ORDER BY 1) AS sorted", (keys,))


class PostgresEngine(Engine):
    """PostgreSQL through psycopg 3: a connection per thread, ``connections`` threads."""

    name = "postgres"
    schema_dialect = "postgres"

    def __init__(self, dsn: str, password: str | None = None, *,
                 connections: int = DEFAULT_CONNECTIONS) -> None:
        super().__init__(threads=connections)
        self.dsn = dsn
        self.password = password

    def _conn(self) -> tuple[Any, bool]:
        """This thread's connection, and whether it was opened just now (a reused one may have
        died with a database restart since its last use)."""
        import psycopg
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn, False
        try:
            conn = psycopg.connect(self.dsn, password=self.password, autocommit=True,
                                   connect_timeout=CONNECT_TIMEOUT)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(_first_line(exc)) from None
        self._local.conn = conn
        return conn, True

    def _transaction(self, fn: Callable[[Tx], T], locks: Sequence[str]) -> T:
        committing = False

        def attempt(conn: Any) -> T:
            nonlocal committing
            with conn.transaction():
                tx = _PostgresTx(conn)
                if locks:
                    tx.lock(*locks)
                result = fn(tx)
                committing = True
            return result
        return self._on_live_connection(attempt, retry_safe=lambda: not committing)

    def _read(self, fn: Callable[[Tx], T]) -> T:
        return self._on_live_connection(lambda conn: fn(_PostgresTx(conn)),
                                        retry_safe=lambda: True)

    def _on_live_connection(self, attempt: Callable[[Any], T],
                            retry_safe: Callable[[], bool]) -> T:
        """Run ``attempt`` on this thread's connection. A reused connection may have died with a
        database restart since its last use: it is replaced once, if nothing can have been
        committed (the failure came before COMMIT was sent). A fresh one failing is an outage."""
        import psycopg
        conn, fresh = self._conn()
        try:
            return attempt(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._forget(conn)
            if fresh or not retry_safe():
                raise StoreUnavailable(_first_line(exc)) from None
        conn, _ = self._conn()
        try:
            return attempt(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._forget(conn)
            raise StoreUnavailable(_first_line(exc)) from None

    def _forget(self, conn: Any) -> None:
        try:
            conn.close()
        finally:
            self._local.conn = None

    def _disconnect(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._forget(conn)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def engine_for(database: str | None, state_dir: Path, password: str | None = None,
               connections: int = DEFAULT_CONNECTIONS) -> Engine:
    """The engine a config names: ``postgresql://…``, or None for SQLite in the state directory."""
    if database:
        return PostgresEngine(database, password, connections=connections)
    return SqliteEngine(state_dir / "pforte.db")
