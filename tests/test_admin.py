"""Administration against real parts: sshd for host control, Xvnc desktops, broker and gateway.

The central story: an admin drains the host a user works on. The user sees the notice on their
desktop, keeps working until the deadline, is logged off at it, gets no new session on that host,
and the next login lands elsewhere. Then the admin brings the host back.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aiohttp
import pytest

from testbed.demo import TENANT, DesktopEntry
from broker.store import OPERATOR
from testbed import Sshd

from .conftest import AiohttpStream, need, rfb_viewer_handshake

pytestmark = pytest.mark.integration

NOTICE_TITLE = "pforte-notice"


@pytest.fixture(scope="session")
def sshd(processes, tmp_path_factory) -> Sshd:
    need("sshd", "ssh-keygen")
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start(processes)
    return server


def ssh_table(sshd: Sshd, display: int, logoff_log) -> dict:
    return {"port": sshd.port, "user": "root",
            "notify_command": f"DISPLAY=:{display} setsid xmessage -title {NOTICE_TITLE} "
                              "{message} >/dev/null 2>&1 </dev/null &",
            "logoff_command": f"echo logoff {{user}} >> {logoff_log}"}


@pytest.fixture
async def admin_install(make_installation, desktops, sshd, tmp_path, slapd):
    logoff_log = tmp_path / "logoffs"
    entries = [DesktopEntry(f"desk{i + 1}", d.port, 2, d.password,
                            ssh=ssh_table(sshd, d.display, logoff_log))
               for i, d in enumerate(desktops)]
    inst = await make_installation(
        desktops=entries, admin_group=slapd.group_dn("bauamt"),
        broker_options={"ssh_key_file": str(sshd.client_key),
                        "ssh_known_hosts_file": str(sshd.known_hosts)})
    token = "test-operator-token"
    await inst.broker.store.admin.create_token(token, OPERATOR, "test", now=time.time())
    return inst, token, logoff_log


def admin_url(inst, path: str) -> str:
    return f"{inst.base_url}/api/v1/admin/tenants/{TENANT}{path}"


async def admin(inst, token: str, method: str, path: str, body: dict | None = None):
    r = await inst.http.request(method, admin_url(inst, path), json=body,
                                headers={"Authorization": f"Bearer {token}"})
    return r.status, await r.json()


def notice_on(display: int) -> bool:
    tree = subprocess.run(["xwininfo", "-root", "-tree", "-display", f":{display}"],
                          capture_output=True, text=True).stdout
    return NOTICE_TITLE in tree


async def test_a_drain_notifies_lets_work_go_on_logs_off_at_the_deadline_and_moves_users(
        admin_install, desktops):
    need("xwininfo", "xmessage")
    inst, token, logoff_log = admin_install
    anna = await inst.login("anna")
    conn = await inst.connect(anna)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(conn["gateway_url"])
        await ws.send_str(conn["ticket"])
        await rfb_viewer_handshake(AiohttpStream(ws))
        sessions = (await admin(inst, token, "GET", "/sessions"))[1]["sessions"]
        host = next(s["host"] for s in sessions if s["user"] == "anna")
        display = desktops[int(host[-1]) - 1].display

        status, body = await admin(inst, token, "POST", f"/hosts/{host}/actions/drain",
                                   {"deadline_seconds": 4, "message": "Patches at 22:00"})
        assert status == 200 and body["host"]["state"] == "draining"

        deadline = time.monotonic() + 3
        while not notice_on(display):  # the user sees the notice on the desktop
            assert time.monotonic() < deadline, "no notice on the desktop"
            await asyncio.sleep(0.1)

        # work goes on before the deadline: a framebuffer update request is answered
        await ws.send_bytes(bytes([3, 0, 0, 0, 0, 0, 0, 16, 0, 16]))
        assert (await ws.receive()).data[0] == 0

        # no new session on the draining host: the next user lands elsewhere
        bernd = await inst.login("bernd")
        assert (await admin(inst, token, "GET", "/hosts"))[1]
        placed = await inst.connect(bernd)
        sessions = (await admin(inst, token, "GET", "/sessions"))[1]["sessions"]
        assert next(s["host"] for s in sessions if s["id"] == placed["session"]) != host

        # at the deadline anna is logged off: the connection closes with a clear reason
        msg = await asyncio.wait_for(ws.receive(), 10)
        while msg.type is aiohttp.WSMsgType.BINARY:
            msg = await asyncio.wait_for(ws.receive(), 10)
        assert ws.close_code == 4003 and msg.extra == "logged off"
    assert "logoff anna" in logoff_log.read_text()

    hosts = {h["id"]: h for h in (await admin(inst, token, "GET", "/hosts"))[1]["hosts"]}
    assert hosts[host]["used"] == 0 and hosts[host]["state"] == "draining"
    # anna's next login lands on the other host too
    again = await inst.connect(anna)
    sessions = (await admin(inst, token, "GET", "/sessions"))[1]["sessions"]
    assert next(s["host"] for s in sessions if s["id"] == again["session"]) != host

    # the drain (a duty of the broker) writes each step after carrying it out; the admin
    # waits for "drained" before bringing the host back (an enable cuts a drain short)
    steps = [("host.drain", "ok"), ("host.notice", "ok"), ("session.logoff", "ok"),
             ("host.drained", "ok")]
    deadline = time.monotonic() + 10
    while True:
        audit = [(e["action"], e["result"]) for e in (await admin(
            inst, token, "GET", "/audit?limit=200"))[1]["audit"]]
        missing = [step for step in steps if step not in audit]
        if not missing:
            break
        assert time.monotonic() < deadline, f"not in the audit log: {missing}"
        await asyncio.sleep(0.2)

    # the admin brings the host back
    status, body = await admin(inst, token, "POST", f"/hosts/{host}/actions/enable")
    assert status == 200 and body["host"]["state"] == "active"
    audit = [(e["action"], e["result"]) for e in (await admin(
        inst, token, "GET", "/audit?limit=200"))[1]["audit"]]
    assert ("host.enable", "ok") in audit


async def test_the_cli_drains_and_waits_until_the_host_is_empty(admin_install, tmp_path):
    inst, token, _ = admin_install
    anna = await inst.login("anna")
    conn = await inst.connect(anna)  # a pending session holds a seat until the deadline
    sessions = (await admin(inst, token, "GET", "/sessions"))[1]["sessions"]
    host = sessions[0]["host"]
    token_file = tmp_path / "token"
    token_file.write_text(token)
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pforte", "admin", "--url", inst.base_url, "--token-file",
        str(token_file), "--tenant", TENANT, "drain", host, "--deadline", "2s", "--message",
        "Wartung", "--wait", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await asyncio.wait_for(cli.communicate(), 30)
    assert cli.returncode == 0, out
    assert f"{host} is empty" in out.decode()
    assert conn["session"] not in [s["id"] for s in (await admin(
        inst, token, "GET", "/sessions"))[1]["sessions"]]


async def test_the_cli_messages_a_session_exports_usage_and_shows_maintenance(admin_install,
                                                                             tmp_path):
    inst, token, _ = admin_install
    conn = await inst.connect(await inst.login("anna"))
    token_file = tmp_path / "token"
    token_file.write_text(token)

    async def cli(*args: str) -> str:
        run = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pforte", "admin", "--url", inst.base_url, "--token-file",
            str(token_file), "--tenant", TENANT, *args, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        out, _ = await asyncio.wait_for(run.communicate(), 30)
        assert run.returncode == 0, out
        return out.decode()

    # nobody is connected to the pending session yet; the host shows it (its notify command)
    assert "shown to the user" in await cli("message", conn["session"], "Bitte speichern")
    csv_text = await cli("usage", "--csv")
    assert csv_text.splitlines()[0] == "tenant,pool,month,sessions,desktop_hours"
    assert f"{TENANT},buero," in csv_text
    german = await cli("usage", "--csv", "--locale", "de")
    assert german.splitlines()[0] == "\ufefftenant;pool;month;sessions;desktop_hours"
    assert "(none)" in await cli("windows")              # no windows, no calendars here
    audit = [e["action"] for e in (await admin(inst, token, "GET", "/audit"))[1]["audit"]]
    assert "session.message" in audit


async def test_a_session_can_be_logged_off_by_an_admin(admin_install):
    inst, token, logoff_log = admin_install
    conn = await inst.connect(await inst.login("bernd"))
    status, body = await admin(inst, token, "POST", f"/sessions/{conn['session']}/logoff")
    assert status == 200 and body["session"]["user"] == "bernd"
    assert "logoff bernd" in logoff_log.read_text()
    status, body = await admin(inst, token, "POST", f"/sessions/{conn['session']}/logoff")
    assert status == 404 and body["error"] == "not_found"


async def test_admins_see_only_their_own_tenant(admin_install):
    inst, operator, _ = admin_install
    await inst.broker.store.admin.create_token("other-town", "elsewhere", "x", now=time.time())
    status, body = await admin(inst, "other-town", "GET", "/hosts")
    assert status == 403 and body["error"] == "not_admin"
    r = await inst.http.get(f"{inst.base_url}/api/v1/admin/tenants",
                            headers={"Authorization": "Bearer other-town"})
    assert (await r.json())["tenants"] == []
    r = await inst.http.get(f"{inst.base_url}/api/v1/admin/tenants",
                            headers={"Authorization": f"Bearer {operator}"})
    assert [t["id"] for t in (await r.json())["tenants"]] == [TENANT]
    status, body = await admin(inst, "not-a-token", "GET", "/hosts")
    assert status == 401


async def test_an_admin_with_no_desktop_still_enrols_a_second_factor(admin_install):
    """The console needs the second factor too: a tenant admin in no desktop group enrols."""
    inst, _, _ = admin_install
    r = await inst.password_login("clara")           # in the admin group, in no desktop group
    token = (await r.json())["token"]
    r = await inst.http.get(f"{inst.base_url}/api/v1/mfa/enrolment",
                            headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200 and (await r.json())["qr_svg"].startswith("<svg")


async def test_directory_admins_log_in_with_totp_and_others_are_refused(admin_install):
    inst, _, _ = admin_install
    clara = await inst.login("clara")   # member of the tenant's admin group
    status, body = await admin(inst, clara, "GET", "/hosts")
    assert status == 200 and len(body["hosts"]) == 2
    anna = await inst.login("anna")     # an ordinary user
    status, body = await admin(inst, anna, "GET", "/hosts")
    assert status == 403


async def test_invalid_actions_get_clear_answers(admin_install):
    inst, token, _ = admin_install
    status, body = await admin(inst, token, "POST", "/hosts/desk1/actions/maintenance")
    assert status == 200
    status, body = await admin(inst, token, "POST", "/hosts/desk1/actions/drain")
    assert status == 409 and body["error"] == "conflict"
    status, body = await admin(inst, token, "POST", "/hosts/nope/actions/enable")
    assert status == 404
    status, body = await admin(inst, token, "POST", "/hosts/desk1/actions/explode")
    assert status == 400


async def test_a_host_whose_ssh_key_changed_is_refused(admin_install, sshd, tmp_path, caplog):
    inst, _, _ = admin_install
    from broker.host_control import HostControl, HostUnreachable
    wrong = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {(tmp_path / 'k.pub').read_text()}")
    control = HostControl(sshd.client_key.read_bytes(), str(wrong))
    host = inst.broker.config.tenant(TENANT).host("desk1")
    with pytest.raises(HostUnreachable, match="host key"):
        await control.run(host, "true")
    assert not await control.probe(host)
    assert "HOST KEY DOES NOT MATCH" in caplog.text
    await control.close()


async def test_the_openapi_document_describes_the_admin_api(installation):
    r = await installation.http.get(f"{installation.base_url}/api/v1/openapi.json")
    doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/admin/tenants/{tenant}/hosts/{host}/actions/{action}" in doc["paths"]


async def test_an_admin_assigns_a_dedicated_desktop_and_a_floating_pool_refuses(admin_install):
    inst, token, _ = admin_install
    status, body = await admin(inst, token, "POST", "/pools/buero/assignments",
                               {"user": "anna", "host": "desk2"})
    assert status == 409 and body["error"] == "conflict"  # the demo pool is floating
    status, body = await admin(inst, token, "POST", "/pools/nope/assignments",
                               {"user": "anna", "host": "desk2"})
    assert status == 404


LAUNCHER = '''\
import os, socket, subprocess, sys, time
user, state = sys.argv[1], sys.argv[2]
password_file = os.path.join(state, user + ".passwd")    # the desktop's own, from the broker
with open(password_file, "wb") as out:
    out.write(subprocess.run(["vncpasswd", "-f"], input=sys.stdin.readline().strip().encode(),
                             capture_output=True, check=True).stdout)
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
proc = subprocess.Popen(["Xvnc", "-displayfd", "1", "-rfbport", str(port), "-localhost",
                         "-nolisten", "tcp", "-SecurityTypes", "VncAuth", "-PasswordFile",
                         password_file, "-desktop", "Desktop of " + user],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                        stdin=subprocess.DEVNULL, start_new_session=True)
proc.stdout.readline()
open(os.path.join(state, user + ".pid"), "w").write(str(proc.pid))
print(port)
'''


@pytest.fixture
async def launch_install(make_installation, sshd, tmp_path, desktops):
    need("Xvnc")
    state = tmp_path / "desktops"
    state.mkdir()
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    entry = DesktopEntry("multi", 1, 5, "host-secret", ssh={
        "port": sshd.port, "user": "root",
        "launch_command": f"{sys.executable} {launcher} {{user}} {state}",
        "logoff_command": f"kill $(cat {state}/{{user}}.pid)"})
    inst = await make_installation(desktops=[entry], broker_options={
        "ssh_key_file": str(sshd.client_key), "ssh_known_hosts_file": str(sshd.known_hosts)})
    yield inst, state
    for pidfile in state.glob("*.pid"):  # stop exactly the desktops the launcher started
        try:
            os.kill(int(pidfile.read_text()), 15)
        except ProcessLookupError:
            pass


async def test_a_multi_session_host_starts_each_users_own_desktop_over_ssh(launch_install):
    from .conftest import open_desktop
    inst, state = launch_install
    anna = await inst.login("anna")
    conn = await inst.connect(anna)
    server_init = await open_desktop(conn)
    assert server_init[24:].decode() == "Desktop of anna"
    again = await inst.connect(anna)             # back to the same desktop, nothing new started
    assert again["session"] == conn["session"]
    assert (await open_desktop(again))[24:].decode() == "Desktop of anna"
    bernd = await inst.connect(await inst.login("bernd"))
    assert (await open_desktop(bernd))[24:].decode() == "Desktop of bernd"
    token = "op"
    await inst.broker.store.admin.create_token(token, OPERATOR, "t", now=time.time())
    pid = int((state / "anna.pid").read_text())
    status, _ = await admin(inst, token, "POST", f"/sessions/{conn['session']}/logoff")
    assert status == 200
    for _ in range(50):  # the logoff command ended anna's desktop
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("anna's desktop still runs after logoff")


async def test_a_port_that_another_users_desktop_took_over_never_leads_to_it(launch_install):
    """Anna's desktop ends; the host gives its port to Bernd's next desktop. Anna's session
    still names that port, but every one of her tickets (an outage ticket from her pass too)
    carries her session's own desktop password: Bernd's desktop refuses the gateway, and she
    gets "desktop unavailable", never his screen."""
    import socket

    import websockets
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from broker.host_control import desktop_secret
    from wire import ticket
    from .conftest import open_desktop
    inst, state = launch_install
    anna = await inst.login("anna")
    conn = await inst.connect(anna)
    assert (await open_desktop(conn))[24:].decode() == "Desktop of anna"
    host = inst.broker.config.tenant(TENANT).host("multi")
    public_key = load_pem_private_key(inst.broker.config.ticket_private_key, None).public_key()
    port = ticket.verify(public_key, conn["ticket"], now=time.time(),
                         audience=inst.broker.config.gateway_audience).target.port
    os.kill(int((state / "anna.pid").read_text()), 15)   # her desktop ends (a crash, a logoff)
    for _ in range(100):                           # until its port is free
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            break
        await asyncio.sleep(0.05)
    bernd_session = "a-session-of-bernd"       # his desktop, with his session's password
    passwd = state / "bernd.passwd"
    passwd.write_bytes(subprocess.run(["vncpasswd", "-f"],
                                      input=desktop_secret(host, bernd_session),
                                      capture_output=True, check=True).stdout)
    bernd = subprocess.Popen(["Xvnc", "-displayfd", "1", "-rfbport", str(port), "-localhost",
                              "-nolisten", "tcp", "-SecurityTypes", "VncAuth", "-PasswordFile",
                              str(passwd), "-desktop", "Desktop of bernd"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        bernd.stdout.readline()                    # up, on the port anna's session names
        again = await inst.connect(anna)
        assert again["session"] == conn["session"]
        with pytest.raises(websockets.exceptions.ConnectionClosed) as refused:
            await open_desktop(again)
        assert refused.value.rcvd.code == 4502
    finally:
        bernd.terminate()
        bernd.wait(10)


async def test_a_pool_logs_idle_sessions_off(make_installation, desktops, sshd, tmp_path):
    logoff_log = tmp_path / "logoffs"
    entries = [DesktopEntry(f"desk{i + 1}", d.port, 2, d.password,
                            ssh=ssh_table(sshd, d.display, logoff_log))
               for i, d in enumerate(desktops)]
    inst = await make_installation(
        desktops=entries, pool_options={"idle_logoff": 2},
        broker_options={"ssh_key_file": str(sshd.client_key),
                        "ssh_known_hosts_file": str(sshd.known_hosts)})
    conn = await inst.connect(await inst.login("anna"))
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(conn["gateway_url"])
        await ws.send_str(conn["ticket"])
        await rfb_viewer_handshake(AiohttpStream(ws))
        msg = await asyncio.wait_for(ws.receive(), 10)  # the viewer now says nothing: idle
        while msg.type is aiohttp.WSMsgType.BINARY:
            msg = await asyncio.wait_for(ws.receive(), 10)
        assert ws.close_code == 4000 and msg.extra == "idle timeout"
    for _ in range(50):  # the broker logs the session off: store first, then the host
        if logoff_log.exists() and not await inst.broker.store.sessions.live(TENANT):
            break
        await asyncio.sleep(0.1)
    assert await inst.broker.store.sessions.live(TENANT) == []
    assert "logoff anna" in logoff_log.read_text()


async def test_an_unhealthy_host_comes_back_by_itself(make_installation):
    import socket
    from testbed import free_port
    port = free_port()
    inst = await make_installation(desktops=[DesktopEntry("rdp1", port, 2, None, "rdp",
                                                    options={"certificate_sha256": "ab" * 32})])
    await inst.broker.admin.probe_all()
    assert (await inst.broker.store.hosts.states_and_health(TENANT))[1] == {"rdp1": False}
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(8)
    try:
        await inst.broker.admin.probe_all()
        assert (await inst.broker.store.hosts.states_and_health(TENANT))[1] == {"rdp1": True}
        audit = [(e["action"], e["result"]) for e in await inst.broker.store.admin.audit_log(TENANT)]
        assert ("host.health", "unhealthy") in audit and ("host.health", "healthy") in audit
    finally:
        listener.close()


async def test_a_drain_that_waits_leaves_users_on_after_the_deadline(admin_install):
    inst, token, logoff_log = admin_install
    conn = await inst.connect(await inst.login("anna"))
    host = (await admin(inst, token, "GET", "/sessions"))[1]["sessions"][0]["host"]
    status, _ = await admin(inst, token, "POST", f"/hosts/{host}/actions/drain",
                            {"deadline_seconds": 1, "logoff": False})
    assert status == 200
    for _ in range(60):
        audit = [e["action"] for e in (await admin(inst, token, "GET", "/audit"))[1]["audit"]]
        if "host.drain_deadline" in audit:
            break
        await asyncio.sleep(0.1)
    assert "host.drain_deadline" in audit           # the deadline passed ...
    sessions = (await admin(inst, token, "GET", "/sessions"))[1]["sessions"]
    assert [s["id"] for s in sessions] == [conn["session"]]   # ... and anna is still there
    assert not logoff_log.exists()
    await inst.broker.store.sessions.end(TENANT, conn["session"], now=time.time())  # she leaves
    for _ in range(60):
        audit = [e["action"] for e in (await admin(inst, token, "GET", "/audit"))[1]["audit"]]
        if "host.drained" in audit:
            break
        await asyncio.sleep(0.1)
    assert "host.drained" in audit


async def test_an_admin_gives_a_user_of_a_dedicated_pool_their_desktop(make_installation,
                                                                       desktops):
    entries = [DesktopEntry(f"desk{i + 1}", d.port, 2, d.password)
               for i, d in enumerate(desktops)]
    inst = await make_installation(desktops=entries, pool_options={"kind": "dedicated"})
    token = "op"
    await inst.broker.store.admin.create_token(token, OPERATOR, "t", now=time.time())
    status, _ = await admin(inst, token, "POST", "/pools/buero/assignments",
                            {"user": "anna", "host": "desk2"})
    assert status == 200
    assert (await admin(inst, token, "GET", "/pools/buero/assignments"))[1] == {
        "assignments": {"anna": "desk2"}}
    for _ in range(3):
        conn = await inst.connect(await inst.login("anna"))
        sessions = (await admin(inst, token, "GET", "/sessions"))[1]["sessions"]
        assert next(s["host"] for s in sessions if s["id"] == conn["session"]) == "desk2"
        await admin(inst, token, "POST", f"/sessions/{conn['session']}/logoff")
