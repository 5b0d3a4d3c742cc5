"""The fire drill: back up a running installation, destroy it, restore onto a fresh, empty
database, and start again — everybody keeps their second factor and recovery codes, devices and
admin tokens keep working, and what was used stays used (a TOTP step, a recovery code)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from broker.config import load_config

from ..conftest import USERS
from .conftest import DOMAIN, bearer

pytestmark = pytest.mark.integration


def pforte(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pforte", *args], capture_output=True,
                          text=True, timeout=120)


async def test_a_backup_restored_onto_a_fresh_database_loses_nothing(own_live, database,
                                                                     tmp_path):
    live = own_live()
    async with live.client("10.95.0.1") as http:
        codes = await live.enrol(http, "user4")
        used_code = await live.code("user4")
        token = await live.password(http, f"user4@{DOMAIN}", USERS["user4"][1])
        r = await http.post(f"{live.portal}/api/v1/mfa", json={"code": used_code},
                            headers=bearer(token))
        assert r.status == 204
        r = await http.post(f"{live.portal}/api/v1/mfa", headers=bearer(
            await live.password(http, f"user4@{DOMAIN}", USERS["user4"][1])),
            json={"code": codes[0]})
        assert r.status == 204                                # a recovery code, spent
        r = await http.post(f"{live.portal}/api/v1/admin/tenants/musterstadt/enrolment-codes",
                            json={"site": "rathaus-front-office", "device_class": "thin-client"},
                            headers=bearer(live.admin_token))
        r = await http.post(f"{live.portal}/api/v1/devices/enrol",
                            json={"code": (await r.json())["code"], "name": "counter 1"})
        device = (await r.json())["credential"]

    backup = tmp_path / "pforte.backup"
    done = pforte("backup", "--config", str(live.config), "--to", str(backup))
    assert done.returncode == 0, done.stderr
    assert (backup.stat().st_mode & 0o777) == 0o600

    # the fire: every process and the whole state are gone; a new, empty database waits
    live.processes.stop()
    old = load_config(live.config)
    if old.database is None:
        shutil.rmtree(old.state_dir)
        text = live.config.read_text()
    else:
        fresh = database()
        text = live.config.read_text().replace(f'database = "{old.database}"',
                                               f'database = "{fresh["database"]}"')
    live.config.write_text(text)
    assert pforte("restore", "--config", str(live.config), "--from",
                  str(backup)).returncode == 0
    again = pforte("restore", "--config", str(live.config), "--from", str(backup))
    assert again.returncode == 2 and "not empty" in again.stderr   # never over a database
    live.start_broker()

    async with live.client("10.95.0.2") as http:
        r = await http.post(f"{live.portal}/api/v1/login",
                            json={"username": f"user4@{DOMAIN}", "password": USERS["user4"][1]})
        body = await r.json()
        assert body["next"] == "mfa"                          # still enrolled: no new secret
        for code, status in ((used_code, 401), (codes[0], 401), (codes[1], 204)):
            r = await http.post(f"{live.portal}/api/v1/mfa", json={"code": code},
                                headers=bearer(body["token"]))
            assert r.status == status, code               # used stays used, unused works
            if status == 204:
                break
        r = await http.get(f"{live.portal}/api/v1/admin/tenants/musterstadt/hosts",
                           headers=bearer(live.admin_token))
        assert r.status == 200                                # the admin token
        r = await http.get(f"{live.portal}/api/v1/devices/profile", headers=bearer(device))
        # the device is known (an unknown credential is 401); this installation serves no
        # profiles, hence "not found"
        assert r.status == 404 and (await r.json())["error"] == "not_found"
