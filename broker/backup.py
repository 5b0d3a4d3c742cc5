"""Backing the database up while brokers run, and restoring it onto an empty database.

SQLite: SQLite's online backup (a consistent copy while brokers write). PostgreSQL: ``pg_dump``
in its custom format, restored with ``pg_restore``. A backup holds users' second factors (sealed:
useless without ``totp.key``), recovery codes and tokens (as keyed hashes), sessions, devices,
used tickets and TOTP steps. The key files are not in it: back them up on their own
(``/etc/pforte/keys``), and keep the two apart.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from .config import BrokerConfig
from .engine import PostgresEngine, SqliteEngine, engine_for
from .schema import version


class BackupError(Exception):
    """The backup or restore could not be done; the text says why."""


def _pg_env(config: BrokerConfig) -> dict[str, str]:
    env = dict(os.environ)
    if config.database_password is not None:
        env["PGPASSWORD"] = config.database_password
    return env


def _pg_tool(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))[::-1]), None)
    if found is None:
        raise BackupError(f"{name} not found (apt-get install postgresql-client)")
    return found


def _private(path: Path) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)


def backup(config: BrokerConfig, to: Path) -> None:
    """Write a consistent backup of the broker's database to ``to`` (mode 0600)."""
    _private(to)
    if config.database is None:
        source = sqlite3.connect(config.state_dir / "pforte.db")
        target = sqlite3.connect(to)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return
    done = subprocess.run([_pg_tool("pg_dump"), "--format=custom", "--no-owner",
                           f"--file={to}", config.database], env=_pg_env(config),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(done.stderr.strip() or "pg_dump failed")


async def restore(config: BrokerConfig, source: Path) -> None:
    """Restore a backup onto the broker's database, which must be empty (a fresh machine, a new
    database): a restore never overwrites what is there."""
    if not source.is_file():
        raise BackupError(f"no backup at {source}")
    engine = engine_for(config.database, config.state_dir, config.database_password, 1)
    try:
        found = await engine.read(lambda tx: version(tx, engine.schema_dialect))
    finally:
        await engine.close()
    if found != 0:
        raise BackupError("the database is not empty: restore onto a new, empty database")
    if isinstance(engine, SqliteEngine):
        target = config.state_dir / "pforte.db"
        backup_db, restored = sqlite3.connect(source), sqlite3.connect(target)
        try:
            backup_db.backup(restored)
        finally:
            restored.close()
            backup_db.close()
        target.chmod(0o600)
        return
    assert isinstance(engine, PostgresEngine)
    done = subprocess.run([_pg_tool("pg_restore"), "--no-owner", "--exit-on-error",
                           f"--dbname={config.database}", str(source)], env=_pg_env(config),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(done.stderr.strip() or "pg_restore failed")


def describe(config: BrokerConfig) -> str:
    """Where the database is, for messages (no password)."""
    if config.database is None:
        return str(config.state_dir / "pforte.db")
    url = urlsplit(config.database)    # hosts as written: one, or a primary and its standbys
    return url.netloc.rpartition("@")[2] + url.path
