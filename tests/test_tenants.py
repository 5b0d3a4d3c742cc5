"""Two municipalities on one broker: each sees, uses and administers only its own."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from broker import mfa
from testbed.demo import TENANT, DesktopEntry
from testbed import DirectoryUserSpec, GroupSpec, Organisation, Slapd

from .conftest import need, open_desktop

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parent.parent / "client_profiles" / "examples"


@pytest.fixture(scope="session")
def jork_directory(processes, tmp_path_factory) -> Slapd:
    need("slapd")
    server = Slapd(tmp_path_factory.mktemp("slapd-jork"), "dc=jork,dc=example",
                   root_password=secrets.token_hex(8), service_password=secrets.token_hex(8))
    server.start(processes)
    server.seed(Organisation("Gemeinde Jork", (
        DirectoryUserSpec("anna", "Anna Jork", "Jork-pass-1"),      # same name, other person
        DirectoryUserSpec("jens", "Jens Peters", "Jens-pass-1")),
        (GroupSpec("arbeitsplatz", users=("anna", "jens")),)))
    return server


@pytest.fixture
async def two_towns(make_installation, jork_directory, desktops, tmp_path):
    secret = tmp_path / "jork-ldap.pass"
    secret.write_text(jork_directory.service_password)
    vnc = tmp_path / "jork-desk.pass"
    vnc.write_text(desktops[1].password)
    jork = f"""
[[tenants]]
id = "jork"
name = "Gemeinde Jork"
domains = ["jork.example"]
portal_hosts = ["jork.portal.test"]

[tenants.directory]
servers = ["{jork_directory.url}"]
security = "plain"
base_dn = "{jork_directory.suffix}"
bind_dn = "{jork_directory.service_dn}"
bind_password_file = "{secret}"

[[tenants.pools]]
id = "buero"
name = "Jork Büro"
group = "{jork_directory.group_dn('arbeitsplatz')}"
hosts = ["jork-desk"]

[[tenants.hosts]]
id = "jork-desk"
address = "127.0.0.1"
port = {desktops[1].port}
seats = 5
secret_file = "{vnc}"
"""
    inst = await make_installation(
        desktops=[DesktopEntry("desk1", desktops[0].port, 5, desktops[0].password)],
        extra_tenants=jork, broker_options={"profiles_dir": str(EXAMPLES)})
    return inst


async def login(inst, username: str, password: str, **headers) -> str:
    r = await inst.http.post(f"{inst.base_url}/api/v1/login",
                             json={"username": username, "password": password}, headers=headers)
    assert r.status == 200, await r.text()
    return (await r.json())["token"]


async def full_login(inst, tenant: str, login_name: str, username: str, password: str) -> str:
    secret = mfa.new_secret()
    await inst.broker.second_factor.import_enrolment(tenant, login_name, secret)
    token = await login(inst, username, password)
    r = await inst.post("/api/v1/mfa", token, {"code": mfa.current_code(secret, time.time())})
    assert r.status == 204
    return token


async def test_the_login_domain_picks_the_directory_and_the_desktops(two_towns, desktops):
    jork_anna = await full_login(two_towns, "jork", "anna", "anna@jork.example", "Jork-pass-1")
    conn = await two_towns.connect(jork_anna)
    assert (await open_desktop(conn))[24:].decode() == desktops[1].name   # Jork's desktop
    town_anna = await two_towns.login("anna")                             # Musterstadt's anna
    conn = await two_towns.connect(town_anna)
    assert (await open_desktop(conn))[24:].decode() == desktops[0].name


async def test_a_password_is_checked_only_in_the_users_own_directory(two_towns):
    r = await two_towns.http.post(f"{two_towns.base_url}/api/v1/login", json={
        "username": "anna@jork.example", "password": "Anna-pass-1"})   # Musterstadt's password
    assert r.status == 401


async def test_plain_names_need_the_tenants_portal_host(two_towns):
    r = await two_towns.http.post(f"{two_towns.base_url}/api/v1/login", json={
        "username": "jens", "password": "Jens-pass-1"})
    assert r.status == 401 and (await r.json())["error"] == "unknown_tenant"
    assert await login(two_towns, "jens", "Jens-pass-1", Host="jork.portal.test")
    assert await login(two_towns, "JORK\\jens", "Jens-pass-1")


async def test_sessions_hosts_and_admin_rights_stay_inside_a_tenant(two_towns):
    jork_anna = await full_login(two_towns, "jork", "anna", "anna@jork.example", "Jork-pass-1")
    await two_towns.connect(jork_anna)
    town = await two_towns.broker.store.sessions.live(TENANT)
    jork = await two_towns.broker.store.sessions.live("jork")
    assert [s.host for s in jork] == ["jork-desk"] and town == []
    await two_towns.broker.store.admin.create_token("jork-admin", "jork", "t", now=time.time())
    headers = {"Authorization": "Bearer jork-admin"}
    base = f"{two_towns.base_url}/api/v1/admin/tenants"
    r = await two_towns.http.get(f"{base}/jork/hosts", headers=headers)
    assert [h["id"] for h in (await r.json())["hosts"]] == ["jork-desk"]
    r = await two_towns.http.get(f"{base}/{TENANT}/sessions", headers=headers)
    assert r.status == 403
    r = await two_towns.http.post(f"{base}/{TENANT}/hosts/desk1/actions/disable", headers=headers)
    assert r.status == 403


async def test_a_thin_client_serves_only_users_of_its_own_tenant(two_towns):
    store = two_towns.broker.store
    await store.devices.create_enrolment_code("town-code-1", TENANT, "rathaus-front-office",
                                      "thin-client", expires=time.time() + 60)
    await store.devices.enrol("town-code-1", "Counter 1", "pfd_town-counter-1", now=time.time())
    jork_anna = await full_login(two_towns, "jork", "anna", "anna@jork.example", "Jork-pass-1")
    r = await two_towns.http.post(
        f"{two_towns.base_url}/api/v1/pools/buero/connection-file",
        json={"viewer": "vnc", "port": 5901},
        headers={"Authorization": f"Bearer {jork_anna}", "X-Pforte-Device": "pfd_town-counter-1"})
    assert (r.status, (await r.json())["error"]) == (403, "not_entitled")
