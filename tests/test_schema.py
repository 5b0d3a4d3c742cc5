"""Versioned schema: a broker opens only a database at its own version and says which command
fixes any other; ``pforte migrate`` brings an older one up. On the engine the suite runs on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from broker import schema
from broker.config import load_config
from broker.engine import engine_for
from testbed import free_port
from testbed.demo import DesktopEntry, write_config

pytestmark = pytest.mark.integration


@pytest.fixture
def config(tmp_path, slapd, database):
    path = write_config(tmp_path, slapd=slapd, group=slapd.group_dn("desktop-users"),
                        host="127.0.0.1", portal_port=free_port(), gateway_port=free_port(),
                        desktops=[DesktopEntry("d", 5999, 1, "pw")], broker_options=database())
    return load_config(path)


async def set_version(config, target: int | None = None, *, force: int | None = None) -> None:
    engine = engine_for(config.database, config.state_dir, config.database_password, 1)
    try:
        if target is not None:
            await schema.migrate(engine, target)
        if force is not None:
            await engine.write(lambda tx: tx.execute("UPDATE schema_version SET version=?",
                                                     (force,)))
    finally:
        await engine.close()


def pforte(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pforte", *args], capture_output=True,
                          text=True, timeout=60)


async def test_an_older_database_is_refused_until_pforte_migrate_ran(config):
    await set_version(config, 1)
    started = pforte("broker", "--config", config.path)
    assert started.returncode == 2
    assert f"run `pforte migrate --config {config.path}`" in started.stderr
    migrated = pforte("migrate", "--config", config.path)
    assert migrated.returncode == 0 and f"1 → {schema.LATEST}" in migrated.stdout
    again = pforte("migrate", "--config", config.path)
    assert again.returncode == 0 and "nothing to do" in again.stdout


async def test_a_newer_database_is_refused_with_advice_to_upgrade(config):
    await set_version(config, schema.LATEST, force=schema.LATEST + 1)
    started = pforte("broker", "--config", config.path)
    assert started.returncode == 2 and "upgrade the broker" in started.stderr
    assert pforte("migrate", "--config", config.path).returncode == 2


async def test_an_empty_database_is_created_at_the_latest_version(config):
    token = pforte("admin-token", "--config", config.path, "--operator", "--name", "x")
    assert token.returncode == 0, token.stderr
    engine = engine_for(config.database, config.state_dir, config.database_password, 1)
    try:
        assert await engine.read(lambda tx: schema.version(tx, engine.schema_dialect)) \
            == schema.LATEST
    finally:
        await engine.close()


def test_both_engines_get_the_same_tables_and_columns():
    for version, sql in schema.MIGRATIONS.items():
        lite, pg = schema.for_engine(sql, "sqlite"), schema.for_engine(sql, "postgres")
        assert len(lite) == len(pg)
        for a, b in zip(lite, pg):   # the same statements, on the same names
            assert a.split()[:4] == b.split()[:4], version
