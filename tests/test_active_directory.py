"""Active Directory as municipalities run it, against a real Samba AD domain controller: logins by
sAMAccountName, DOMAIN\\name and userPrincipalName, nested groups through the in-chain rule, and
each account state refused with its own message."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import ldap3
import pytest

from broker import mfa
from broker.config import DirectoryConfig
from broker.directory import Directory
from broker.errors import AccountDisabled, AccountExpired, BadCredentials, MustChangePassword
from testbed import SambaDC

from .conftest import need, sign_in

pytestmark = pytest.mark.integration

PASSWORDS = {"hmaier": "Pass-Hm-1!", "jmueller": "Pass-Jm-1!", "gross": "Grüße (aus) *Jork*\\,=+1a", "dis": "Pass-Dis-1!",
             "mustchange": "Pass-Mc-1!", "expired": "Pass-Ex-1!", "lockme": "Pass-Lk-1!"}


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def samba(processes, tmp_path_factory) -> SambaDC:
    need("samba", "samba-tool")
    if not port_free(SambaDC.PORT):
        pytest.skip("port 389 is taken: an AD domain controller needs the fixed LDAP port")
    dc = SambaDC(tmp_path_factory.mktemp("samba"), "JORK.EXAMPLE", "JORK", "Admin-Pass-1!")
    dc.provision()
    dc.tool("user", "create", "jmueller", PASSWORDS["jmueller"], "--given-name=Jan",
            "--surname=Müller", "--userou=CN=Users")
    dc.tool("user", "create", "gross", PASSWORDS["gross"], "--given-name=Jörg",
            "--surname=Größe")
    dc.tool("user", "create", "dis", PASSWORDS["dis"])
    dc.tool("user", "disable", "dis")
    dc.tool("user", "create", "mustchange", PASSWORDS["mustchange"],
            "--must-change-at-next-login")
    dc.tool("user", "create", "expired", PASSWORDS["expired"])
    dc.tool("user", "setexpiry", "expired", "--days=0")
    dc.tool("user", "create", "pforte-svc", "Svc-Pass-1!")
    dc.tool("user", "create", "lockme", PASSWORDS["lockme"])
    dc.tool("user", "create", "hmaier", PASSWORDS["hmaier"])   # her UPN is set after the start
    dc.tool("domain", "passwordsettings", "set", "--account-lockout-threshold=3",
            "--account-lockout-duration=30", "--reset-account-lockout-after=30")
    dc.tool("group", "add", "desktop-users")
    dc.tool("group", "add", "buergerbuero")
    dc.tool("group", "addmembers", "buergerbuero", "jmueller,gross")
    dc.tool("group", "addmembers", "desktop-users", "buergerbuero")  # nested
    dc.start(processes)
    with ldap3.Connection(ldap3.Server(dc.url, get_info=ldap3.NONE),
                          f"Administrator@{dc.realm.lower()}", dc.admin_password,
                          auto_bind=True, raise_exceptions=True) as admin:
        admin.modify(f"CN=hmaier,CN=Users,{dc.base_dn}", {"userPrincipalName": [
            (ldap3.MODIFY_REPLACE, [f"hanna.maier@{dc.realm.lower()}"])]})
    return dc


def ad_directory(dc: SambaDC) -> Directory:
    return Directory(DirectoryConfig(
        servers=(dc.url,), base_dn=dc.base_dn, bind_dn=f"pforte-svc@{dc.realm.lower()}",
        bind_password="Svc-Pass-1!", login_attribute="sAMAccountName", user_object_class="user",
        timeout=3.0, group_depth=8, kind="ad", domains=(dc.realm.lower(),), security="plain",
        ca_file=None), ThreadPoolExecutor(4))


async def test_a_user_logs_in_by_sam_account_name_and_nested_groups_resolve(samba):
    user = await sign_in(ad_directory(samba), "jmueller", PASSWORDS["jmueller"])
    assert user.display_name in ("Jan Müller", "jmueller")
    assert f"cn=desktop-users,cn=users,{samba.base_dn.lower()}" in user.groups
    assert f"cn=buergerbuero,cn=users,{samba.base_dn.lower()}" in user.groups


async def test_umlauts_and_special_characters_in_passwords_work(samba):
    assert (await sign_in(ad_directory(samba), "gross", PASSWORDS["gross"])).login == "gross"


async def test_a_wrong_password_and_an_unknown_user_get_one_answer(samba):
    for login, password in (("jmueller", "wrong"), ("nobody", "whatever")):
        with pytest.raises(BadCredentials):
            await sign_in(ad_directory(samba), login, password)


@pytest.mark.parametrize("login, error", [("dis", AccountDisabled),
                                          ("mustchange", MustChangePassword),
                                          ("expired", AccountExpired)])
async def test_each_account_state_is_refused_with_its_own_reason(samba, login, error):
    with pytest.raises(error):
        await sign_in(ad_directory(samba), login, PASSWORDS[login])


async def test_a_locked_out_account_gets_the_wrong_password_answer_whatever_the_password(samba):
    """AD says "locked" (data 775) to any password: telling it would confirm the account to a
    guesser, so a locked account gets the same answer as a wrong password."""
    d = ad_directory(samba)
    for _ in range(3):
        with pytest.raises(BadCredentials):
            await sign_in(d, "lockme", "wrong-password")
    for password in ("another-wrong-one", PASSWORDS["lockme"]):
        with pytest.raises(BadCredentials):
            await sign_in(d, "lockme", password)


@pytest.mark.parametrize("typed", ["jmueller", "JMUELLER", "JMueller", " jmueller ",
                                   "jmueller  ", "\tjmueller"])
async def test_every_spelling_ad_accepts_is_one_identity(samba, typed):
    """AD compares names case-insensitively and ignores insignificant spaces: each spelling
    finds the entry, and the identity is the entry's sAMAccountName, not what was typed."""
    user = await sign_in(ad_directory(samba), typed, PASSWORDS["jmueller"])
    assert user.login == "jmueller"


async def test_a_upn_unlike_the_account_name_is_the_same_identity(samba):
    d = ad_directory(samba)
    for typed in ("hanna.maier", "Hanna.Maier", "hmaier", "HMAIER"):  # after "@jork.example"
        assert (await sign_in(d, typed, PASSWORDS["hmaier"])).login == "hmaier"


async def test_the_portal_accepts_upn_and_domain_backslash_name(make_installation, samba,
                                                                desktops, tmp_path):
    from testbed.demo import DesktopEntry
    secret = tmp_path / "svc.pass"
    secret.write_text("Svc-Pass-1!")
    vnc = tmp_path / "vnc.pass"
    vnc.write_text(desktops[0].password)
    jork = f"""
[[tenants]]
id = "jork"
name = "Gemeinde Jork"
domains = ["jork.example"]

[tenants.directory]
kind = "ad"
servers = ["{samba.url}"]
security = "plain"
base_dn = "{samba.base_dn}"
bind_dn = "pforte-svc@jork.example"
bind_password_file = "{secret}"

[[tenants.pools]]
id = "office"
name = "Office"
group = "CN=desktop-users,CN=Users,{samba.base_dn}"
hosts = ["jork-desk"]

[[tenants.hosts]]
id = "jork-desk"
address = "127.0.0.1"
port = {desktops[0].port}
seats = 5
secret_file = "{vnc}"
"""
    inst = await make_installation(
        desktops=[DesktopEntry("desk1", desktops[1].port, 5, desktops[1].password)],
        extra_tenants=jork)
    base = f"{inst.base_url}/api/v1"
    for typed in ("jmueller@jork.example", "JORK\\jmueller"):
        r = await inst.http.post(f"{base}/login", json={"username": typed,
                                                        "password": PASSWORDS["jmueller"]})
        assert r.status == 200, await r.text()
    secret_totp = mfa.new_secret()
    await inst.broker.second_factor.import_enrolment("jork", "jmueller", secret_totp)
    # every spelling AD accepts is asked for jmueller's code, never sent to enrol another
    for typed in ("JMUELLER@JORK.EXAMPLE", "jork\\JMueller", " jmueller @jork.example",
                  "JMueller@Jork.Example"):
        r = await inst.http.post(f"{base}/login", json={"username": typed,
                                                        "password": PASSWORDS["jmueller"]})
        assert r.status == 200 and (await r.json())["next"] == "mfa", typed
    r = await inst.http.post(f"{base}/login", json={"username": "jmueller@jork.example",
                                                    "password": PASSWORDS["jmueller"]})
    token = (await r.json())["token"]
    r = await inst.post("/api/v1/mfa", token, {"code": mfa.current_code(secret_totp, time.time())})
    assert r.status == 204
    r = await inst.http.get(f"{base}/pools", headers={"Authorization": f"Bearer {token}"})
    assert (await r.json())["pools"] == [{"id": "office", "name": "Office"}]
    r = await inst.http.post(f"{base}/login", json={"username": "dis@jork.example",
                                                    "password": PASSWORDS["dis"]},
                             headers={"Accept-Language": "de"})
    body = await r.json()
    assert r.status == 403 and body["error"] == "account_disabled"
    assert body["message"] == "Ihr Konto ist deaktiviert. Bitte rufen Sie Ihren IT-Service an."


def test_pforte_init_checks_an_active_directory_and_writes_its_config(samba, installed,
                                                                      desktops, tmp_path):
    """``pforte init`` from the built wheel against Samba AD: the service account, a test user
    found by sAMAccountName, nested group membership through the in-chain rule."""
    import re
    import subprocess
    group = f"CN=desktop-users,CN=Users,{samba.base_dn}"
    (tmp_path / "svc.pass").write_text("Svc-Pass-1!")
    (tmp_path / "vnc.pass").write_text(desktops[0].password)

    def init(user: str, into: str) -> subprocess.CompletedProcess:
        return subprocess.run([
            installed / "pforte", "init", "--yes", "--dir", str(tmp_path / into),
            "--tenant", "jork", "--tenant-name", "Gemeinde Jork", "--domain", "jork.example",
            "--kind", "ad", "--directory", samba.url, "--base-dn", samba.base_dn,
            "--bind-dn", f"pforte-svc@{samba.realm.lower()}",
            "--bind-password-file", str(tmp_path / "svc.pass"), "--desktop-group", group,
            "--test-user", user, "--portal-url", "https://portal.jork.example",
            "--gateway-url", "wss://gw.jork.example/ws", "--desktop-network", "127.0.0.1/32",
            "--host", f"desk1=127.0.0.1:{desktops[0].port}",
            "--host-secret-file", str(tmp_path / "vnc.pass"),
            "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL)

    outsider = init("hmaier", "refused")
    assert outsider.returncode == 1
    assert re.search(rf"FAIL  group {re.escape(group)}: exists, but hmaier is not a member",
                     outsider.stdout), outsider.stdout
    member = init("jmueller", "etc")                    # a member through buergerbuero
    assert member.returncode == 0, member.stdout + member.stderr
    assert f"ok    group {group}: exists; jmueller is a member" in member.stdout
    assert "cn=buergerbuero,cn=users," in member.stdout.lower()   # its groups, nested shown
    config = tmp_path / "etc" / "pforte.toml"
    assert 'kind = "ad"' in config.read_text() and 'security = "plain"' in config.read_text()
    assert subprocess.run([installed / "pforte", "check-config", str(config)]).returncode == 0
