"""The first day in production, as the README's "Your first day" walks it: the built wheel in a
fresh virtualenv, ``pforte init`` against a real directory over TLS (every mistake said exactly,
nothing written until all is right), the systemd units checked and their ``ExecStart`` lines run,
and a directory user signed in over HTTPS to a real desktop through wss://."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
import stat
import subprocess
import tomllib
from pathlib import Path

import aiohttp
import pyotp
import pytest

from testbed import Processes, free_port, self_signed_certificate, wait_for_port

from .conftest import need

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_alone_and_knows_its_version(installed):
    readme = installed.parent / "share" / "doc" / "pforte" / "README.md"
    assert readme.read_text() == (ROOT / "README.md").read_text()   # the units' Documentation=
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run([installed / "pforte", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"pforte {version}"
    where = subprocess.run([installed / "python", "-c", "import broker.web.app as a; "
                            "print(a.DEFAULT_NOVNC_DIR, (a.DEFAULT_NOVNC_DIR / 'core' / "
                            "'rfb.js').is_file())"], capture_output=True, text=True, cwd="/")
    novnc, present = where.stdout.split()
    assert str(installed.parent) in novnc and present == "True"    # inside the wheel's package


class Init:
    """``pforte init`` from the installed wheel against the TLS slapd and one desktop."""

    def __init__(self, bin_dir: Path, slapd, desktop, base: Path) -> None:
        self.bin, self.base = bin_dir, base
        base.mkdir(parents=True, exist_ok=True)
        (base / "ldap.pass").write_text(slapd.service_password)
        (base / "tina.pass").write_text("Tina-pass-1")
        (base / "vnc.pass").write_text(desktop.password)
        self.cert, self.key = self_signed_certificate(base / "tls")
        self.portal_port, self.gateway_port = free_port(), free_port()
        self.flags = {
            "tenant": "tls", "tenant-name": "Stadt Tlsburg", "domain": "tls.example",
            "kind": "openldap", "directory": slapd.ldaps_url, "base-dn": slapd.suffix,
            "bind-dn": slapd.service_dn, "bind-password-file": str(base / "ldap.pass"),
            "ca-file": str(slapd.tls[0]), "desktop-group": slapd.group_dn("staff"),
            "test-user": "tina", "test-password-file": str(base / "tina.pass"),
            "portal-url": f"https://127.0.0.1:{self.portal_port}",
            "gateway-url": f"wss://127.0.0.1:{self.gateway_port}/ws",
            "desktop-network": "127.0.0.1/32", "host": f"desk1=127.0.0.1:{desktop.port}",
            "host-secret-file": str(base / "vnc.pass"),
            "broker-listen": f"127.0.0.1:{self.portal_port}",
            "gateway-listen": f"127.0.0.1:{self.gateway_port}",
            "state-dir": str(base / "state"), "tls-cert": str(self.cert),
            "tls-key": str(self.key), "tls-ca": str(self.cert),
        }

    def run(self, **changes: str | None) -> subprocess.CompletedProcess:
        """``pforte init`` into BASE/etc with these flags changed (None: left out)."""
        flags = {**self.flags, **{k.replace("_", "-"): v for k, v in changes.items()}}
        argv = [str(self.bin / "pforte"), "init", "--yes", "--dir", str(self.base / "etc")]
        for name, value in flags.items():
            if value is not None:
                argv += [f"--{name}", value]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)


@pytest.fixture
def init(installed, tls_slapd, desktops, tmp_path) -> Init:
    need("slapd", "Xvnc")
    return Init(installed, tls_slapd, desktops[0], tmp_path / "pforte")


@pytest.mark.parametrize("change, says", [
    ({"ca_file": None}, r"FAIL  TLS 127\.0\.0\.1: certificate refused: .*names 127\.0\.0\.1.*"
                        r"give the CA that signed it with --ca-file"),
    ({"directory": "ldaps://no-such-dc.invalid:636"},
     r"FAIL  DNS no-such-dc\.invalid: the name does not resolve"),
    ({"directory": f"ldaps://127.0.0.1:{free_port()}"},
     r"FAIL  TCP 127\.0\.0\.1:\d+: refused: nothing listens there"),
    ({"bind_password_file": "WRONG"}, r"FAIL  service account bind: .*invalidCredentials"),
    ({"base_dn": "dc=elsewhere,dc=example"}, r"FAIL  base DN: dc=elsewhere,dc=example: "
                                             r"noSuchObject"),
    ({"test_user": "tinna"}, r"FAIL  test user: no inetOrgPerson with uid=tinna under"),
    ({"desktop_group": "cn=staf,ou=groups,dc=tls,dc=example"},
     r"FAIL  group cn=staf,ou=groups,dc=tls,dc=example: no such entry"),
    ({"test_password_file": "WRONG"}, r"FAIL  test user's password: refused: bad_credentials"),
    ({"host": f"desk1=127.0.0.1:{free_port()}"},
     r"FAIL  TCP 127\.0\.0\.1:\d+: refused: no desktop listens there"),
    ({"host_secret_file": "WRONG"},
     r"FAIL  VNC: .*check the port and the desktops' password \(--host-secret-file\)"),
])
def test_init_says_exactly_what_is_wrong_and_writes_nothing(init, change, says):
    for key, value in change.items():
        if value == "WRONG":
            wrong = init.base / f"wrong-{key}"
            wrong.write_text("not-the-password")
            change[key] = str(wrong)
    result = init.run(**change)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(says, result.stdout), result.stdout
    assert "nothing written" in result.stderr
    assert not (init.base / "etc").exists()


def test_init_asks_for_what_is_missing_without_a_terminal(init):
    result = init.run(bind_dn=None, test_user=None)
    assert result.returncode == 2
    assert "missing: --bind-dn, --test-user" in result.stderr


def unit_commands(unit: Path, bin_dir: Path, config: Path) -> dict[str, list[str]]:
    """A unit's ExecStartPre and ExecStart lines, for this installation's paths."""
    text = unit.read_text().replace("/opt/pforte/bin/", f"{bin_dir}/").replace(
        "/etc/pforte/pforte.toml", str(config))
    return {k: v.split() for k, v in re.findall(r"^(ExecStart(?:Pre)?)=(.+)$", text, re.M)}


def test_first_day_from_the_wheel_to_a_desktop_over_https(init, tmp_path):
    units = init.bin.parent / "share" / "pforte" / "systemd"       # as the wheel installed them
    assert sorted(u.name for u in units.iterdir()) == ["pforte-broker.service",
                                                       "pforte-gateway.service"]
    result = init.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    config = init.base / "etc" / "pforte.toml"
    assert "# Pforte, written by `pforte init`" in config.read_text()
    for key in (init.base / "etc" / "keys").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    check = subprocess.run([init.bin / "pforte", "check-config", str(config)],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "OK" in check.stdout
    again = init.run()                                        # never over an installation
    assert again.returncode == 2 and "exists" in again.stderr

    if shutil.which("systemd-analyze"):
        for unit in units.glob("*.service"):
            copy = tmp_path / unit.name
            copy.write_text(unit.read_text().replace("/opt/pforte/bin/", f"{init.bin}/"))
            verified = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                                      capture_output=True, text=True)
            assert verified.returncode == 0 and verified.stderr == "", verified.stderr

    processes = Processes()
    try:
        broker = unit_commands(units / "pforte-broker.service", init.bin, config)
        assert subprocess.run(broker["ExecStartPre"], capture_output=True).returncode == 0
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        started = [processes.start(broker["ExecStart"], log=tmp_path / "broker.log", env=env),
                   processes.start(unit_commands(units / "pforte-gateway.service", init.bin,
                                                 config)["ExecStart"],
                                   log=tmp_path / "gateway.log", env=env)]
        for proc, port in zip(started, (init.portal_port, init.gateway_port)):
            wait_for_port("127.0.0.1", port, proc, what="service")
        asyncio.run(sign_in_over_https(init))
    finally:
        processes.stop()


async def sign_in_over_https(init: Init) -> None:
    """Tina signs in at the portal over HTTPS, enrols her authenticator, and her desktop
    answers through the gateway over wss://, both checked against the admin's own CA."""
    trust = ssl.create_default_context(cafile=str(init.cert))
    portal = init.flags["portal-url"]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
        r = await http.post(f"{portal}/api/v1/login",
                            json={"username": "tina@tls.example", "password": "Tina-pass-1"})
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        r = await http.get(f"{portal}/api/v1/mfa/enrolment", headers=bearer)
        secret = (await r.json())["secret"]
        r = await http.post(f"{portal}/api/v1/mfa", json={"code": pyotp.TOTP(secret).now()},
                            headers=bearer)
        assert r.status == 200, await r.text()
        r = await http.post(f"{portal}/api/v1/pools/desktop/connect", headers=bearer)
        assert r.status == 200, await r.text()
        conn = await r.json()
        assert conn["gateway_url"] == init.flags["gateway-url"]
        ws = await http.ws_connect(conn["gateway_url"], headers={"Origin": portal})
        await ws.send_str(conn["ticket"])
        assert (await ws.receive()).data == b"RFB 003.008\n"    # the desktop, through wss://
        await ws.close()


def test_an_ssh_host_key_is_recorded_only_once_the_admin_confirmed_its_fingerprint(
        init, processes, tmp_path):
    need("sshd", "ssh-keygen")
    from testbed import Sshd
    sshd = Sshd(tmp_path / "sshd")
    sshd.start(processes)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(sshd.state / "host_ed25519.pub")],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    unconfirmed = init.run(ssh_user="root", ssh_port=str(sshd.port))
    assert unconfirmed.returncode == 1
    assert re.search(rf"ok    SSH 127\.0\.0\.1:{sshd.port}: host key ssh-ed25519 "
                     rf"{re.escape(fingerprint)}", unconfirmed.stdout), unconfirmed.stdout
    assert f"FAIL  SSH host key: {fingerprint} not confirmed" in unconfirmed.stdout
    wrong = init.run(ssh_user="root", ssh_port=str(sshd.port),
                     ssh_fingerprint="SHA256:" + "A" * 43)
    assert wrong.returncode == 1 and not (init.base / "etc").exists()

    confirmed = init.run(ssh_user="root", ssh_port=str(sshd.port), ssh_fingerprint=fingerprint)
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    keys = init.base / "etc" / "keys"
    host_key = (sshd.state / "host_ed25519.pub").read_text().split()[:2]
    assert (keys / "known_hosts").read_text().split()[1:3] == host_key
    assert stat.S_IMODE((keys / "broker-ssh").stat().st_mode) == 0o600
    assert "broker-ssh.pub" in confirmed.stdout                   # told where it must go
    check = subprocess.run([init.bin / "pforte", "check-config",
                            str(init.base / "etc" / "pforte.toml")], capture_output=True)
    assert check.returncode == 0, check.stderr


def test_ctrl_d_at_a_question_stops_init_with_a_word_and_writes_nothing(tmp_path):
    """``pforte init`` on a terminal (a pseudo-terminal here): the admin presses Ctrl-D at the
    first question. It says it stopped, writes nothing, and shows no traceback."""
    import pty
    import select
    import sys
    import time
    master, slave = pty.openpty()
    target = tmp_path / "etc"
    proc = subprocess.Popen([sys.executable, "-m", "pforte", "init", "--dir", str(target)],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    said = b""

    def read_until(done, timeout: float = 30.0) -> None:
        nonlocal said
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    said += os.read(master, 4096)
                except OSError:          # the process is gone and the terminal with it
                    return
    try:
        read_until(lambda: b"Tenant id" in said)
        assert b"Tenant id" in said, said
        os.write(master, b"\x04")                    # Ctrl-D
        assert proc.wait(30) == 130
        read_until(lambda: b"nothing written" in said, timeout=5)
    finally:
        proc.kill()
        os.close(master)
    assert b"stopped at a question; nothing written" in said, said
    assert b"Traceback" not in said
    assert not (target / "pforte.toml").exists()
