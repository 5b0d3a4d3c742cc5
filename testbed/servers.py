"""Real servers on loopback for the demo and the tests: OpenLDAP ``slapd`` and TigerVNC ``Xvnc``.

Each server runs from a state directory of its own on a free port, and :class:`Processes` stops
exactly the processes it started, by PID (never by name). Nothing here touches the system's own
slapd or X servers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import ldap3

STARTUP_TIMEOUT = 15.0  # seconds a server has to start listening


class TestbedError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def self_signed_certificate(directory: Path, name: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA: (certificate, key) PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float = STARTUP_TIMEOUT,
                  what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TestbedError(f"{what} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TestbedError(f"{what} did not listen on {host}:{port} within {timeout} s")


def write_private(path: Path, text: str) -> None:
    """Write a file that only its owner may read (0600) from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def require(program: str) -> str:
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.path.exists(p)), None)
    if path is None:
        raise TestbedError(f"{program} is not installed (run scripts/setup)")
    return path


def exit_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, ``kill``) end this program like Ctrl-C does, through its
    ``finally`` blocks, so that it stops the servers it started instead of orphaning them."""
    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, leave)


@dataclass
class Processes:
    """The processes we started; :meth:`stop` ends them all, newest first, by PID."""

    started: list[subprocess.Popen] = field(default_factory=list)

    def start(self, args: list[str], *, env: dict[str, str] | None = None,
              log: Path | None = None, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    pass_fds=pass_fds)
        finally:
            if log:
                out.close()
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen | None = None, timeout: float = 5.0) -> None:
        targets = [proc] if proc is not None else list(reversed(self.started))
        for p in targets:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in targets:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                # its own process group (start_new_session): the process and what it forked
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            if p in self.started:
                self.started.remove(p)


# -- OpenLDAP ------------------------------------------------------------------------------------

SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {state}/slapd.pid
{tls}modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 104857600
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
rootpw {root_password}
directory {state}/data
index objectClass eq
index uid,cn eq
index member,uniqueMember eq
access to attrs=userPassword
    by anonymous auth
    by self write
    by * none
access to *
    by dn.exact="{service_dn}" read
    by self read
    by * none
"""


@dataclass
class Slapd:
    """A private slapd with one suffix; ``url`` is ldap://127.0.0.1:PORT."""

    state: Path
    suffix: str
    root_password: str
    service_password: str
    port: int = 0
    tls: tuple[Path, Path] | None = None   # (certificate, key): also serve ldaps:// and StartTLS
    ldaps_port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def root_dn(self) -> str:
        return f"cn=admin,{self.suffix}"

    @property
    def service_dn(self) -> str:
        return f"cn=pforte,ou=services,{self.suffix}"

    def start(self, processes: Processes) -> None:
        slapd = require("slapd")
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state.chmod(0o700)  # the directory's data and its config with the root password
        (self.state / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = self.state / "slapd.conf"
        tls = (f"TLSCertificateFile {self.tls[0]}\nTLSCertificateKeyFile {self.tls[1]}\n"
               if self.tls else "")
        write_private(conf, SLAPD_CONF.format(state=self.state, suffix=self.suffix,
                                              root_password=self.root_password,
                                              service_dn=self.service_dn, tls=tls))
        self.port = self.port or free_port()
        urls = self.url + "/"
        if self.tls:
            self.ldaps_port = self.ldaps_port or free_port()
            urls += f" {self.ldaps_url}/"
        self.proc = processes.start([slapd, "-f", str(conf), "-h", urls, "-d", "0"],
                                    log=self.state / "slapd.log")
        wait_for_port("127.0.0.1", self.port, self.proc, what="slapd")

    def admin(self) -> ldap3.Connection:
        return ldap3.Connection(ldap3.Server(self.url, get_info=ldap3.NONE), self.root_dn,
                                self.root_password, auto_bind=True, raise_exceptions=True)

    def seed(self, org: "Organisation") -> None:
        """Create the suffix, the service account, users and groups (nested groups allowed)."""
        dc = self.suffix.split(",")[0].split("=")[1]
        with self.admin() as c:
            c.add(self.suffix, ["top", "dcObject", "organization"], {"o": org.name, "dc": dc})
            for ou in ("services", "people", "groups"):
                c.add(f"ou={ou},{self.suffix}", ["top", "organizationalUnit"], {"ou": ou})
            c.add(self.service_dn, ["top", "applicationProcess", "simpleSecurityObject"],
                  {"cn": "pforte", "userPassword": self.service_password})
            for u in org.users:
                c.add(self.user_dn(u.login), ["top", "inetOrgPerson"], {
                    "uid": u.login, "cn": u.display_name, "sn": u.display_name.split()[-1],
                    "displayName": u.display_name, "userPassword": u.password})
            for gid, g in enumerate(org.groups, start=10000):
                members = [self.user_dn(m) for m in g.users] + [self.group_dn(m) for m in g.groups]
                if g.kind == "posixGroup":
                    c.add(self.group_dn(g.name), ["top", "posixGroup"],
                          {"cn": g.name, "gidNumber": gid, "memberUid": list(g.users)})
                else:
                    attribute = "uniqueMember" if g.kind == "groupOfUniqueNames" else "member"
                    c.add(self.group_dn(g.name), ["top", g.kind],
                          {"cn": g.name, attribute: members or [self.root_dn]})

    def user_dn(self, login: str) -> str:
        return f"uid={ldap3.utils.dn.escape_rdn(login)},ou=people,{self.suffix}"

    def group_dn(self, name: str) -> str:
        return f"cn={ldap3.utils.dn.escape_rdn(name)},ou=groups,{self.suffix}"


@dataclass(frozen=True)
class DirectoryUserSpec:
    login: str
    display_name: str
    password: str


@dataclass(frozen=True)
class GroupSpec:
    name: str
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    kind: str = "groupOfNames"       # or groupOfUniqueNames, or posixGroup (members by uid)


@dataclass(frozen=True)
class Organisation:
    name: str
    users: tuple[DirectoryUserSpec, ...]
    groups: tuple[GroupSpec, ...]


def directory_of_users(state: Path, processes: Processes, name: str, users: list[str],
                       password: str) -> Slapd:
    """A private slapd (suffix ``dc=NAME,dc=example``) whose users, login = name, share one
    password and are all members of ``desktop-users``: the benchmarks' directory."""
    slapd = Slapd(state, f"dc={name.lower()},dc=example", root_password=secrets.token_hex(8),
                  service_password=secrets.token_hex(8))
    slapd.start(processes)
    slapd.seed(Organisation(name, tuple(DirectoryUserSpec(u, u, password) for u in users),
                            (GroupSpec("desktop-users", users=tuple(users)),)))
    return slapd


# -- TigerVNC ------------------------------------------------------------------------------------

@dataclass
class XvncDesktop:
    """A real X desktop served by Xvnc with VNC password auth, a solid background and a titled xterm."""

    state: Path
    name: str
    colour: str            # an X colour like "#2e7d32"
    password: str
    port: int = 0
    display: int = 0       # learned from Xvnc at start
    geometry: str = "1024x768"

    def start(self, processes: Processes) -> None:
        xvnc = require("Xvnc")
        self.state.mkdir(parents=True, exist_ok=True)
        passwd = self.state / "passwd"
        passwd.write_bytes(subprocess.run([require("vncpasswd"), "-f"],
                                          input=self.password.encode(), capture_output=True,
                                          check=True).stdout)
        passwd.chmod(0o600)
        self.port = self.port or free_port()
        # -displayfd: Xvnc picks a free display itself and tells us which.
        read_fd, write_fd = os.pipe()
        with os.fdopen(read_fd, "rb") as announced:
            try:
                proc = processes.start(
                    [xvnc, "-displayfd", str(write_fd), "-rfbport", str(self.port), "-localhost",
                     "-nolisten", "tcp", "-SecurityTypes", "VncAuth", "-PasswordFile",
                     str(passwd), "-AlwaysShared", "-geometry", self.geometry, "-depth", "24",
                     # only the gateway connects, and it throttles users itself: TigerVNC's
                     # per-address blacklist would lock everyone out at once (FIELD-NOTES)
                     "-UseBlacklist=0", "-desktop", self.name],
                    log=self.state / "xvnc.log", pass_fds=(write_fd,))
            finally:
                os.close(write_fd)
            display = announced.readline().strip()  # EOF (b"") if Xvnc dies first
        if not display.isdigit():
            raise TestbedError(f"Xvnc did not start (see {self.state / 'xvnc.log'})")
        self.display = int(display)
        wait_for_port("127.0.0.1", self.port, proc, what="Xvnc")
        env = {**os.environ, "DISPLAY": f":{self.display}"}
        subprocess.run([require("xsetroot"), "-solid", self.colour], env=env, check=True,
                       timeout=STARTUP_TIMEOUT)
        processes.start([require("xterm"), "-T", self.name, "-geometry", "80x10+40+40", "-e",
                         "sh", "-c",
                         f"echo 'This is {self.name}. Type here: it echoes what you type.'; "
                         "exec cat"], env=env,
                        log=self.state / "xterm.log")



# -- the demo as a user runs it, and Debian's chromium ------------------------------------------

DEMO_START_TIMEOUT = 60.0
CHROMIUM = "/usr/bin/chromium"
# Flags that work as root on a closed network (see FIELD-NOTES): no sandbox, no background traffic.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


class DemoProcess:
    """``python -m pforte demo`` in a subprocess on free ports; :meth:`stop` sends SIGINT (Ctrl-C).
    ``extra`` arguments go to ``pforte demo``."""

    def __init__(self, state: Path, python: str, *extra: str) -> None:
        self.state = state
        self.facts_path = state / "facts.json"
        self.proc = subprocess.Popen(
            [python, "-m", "pforte", "demo", "--state-dir", str(state), "--portal-port",
             str(free_port()), "--gateway-port", str(free_port()), "--facts",
             str(self.facts_path), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> dict:
        """The demo's facts, once it has written them."""
        import json
        deadline = time.monotonic() + DEMO_START_TIMEOUT
        while not self.facts_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                output = self.proc.stdout.read().decode(errors="replace")
                raise TestbedError(f"demo did not start: {output}")
            time.sleep(0.1)
        return json.loads(self.facts_path.read_text())

    def stop(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise TestbedError("demo did not stop on Ctrl-C") from None


# Reads the noVNC canvas: the colour near its bottom-right corner (away from the xterm).
CANVAS_COLOUR_JS = """() => {
    const c = document.querySelector('#screen canvas');
    if (!c || c.width < 100) return null;
    const probe = document.createElement('canvas');
    probe.width = c.width; probe.height = c.height;
    const ctx = probe.getContext('2d');
    ctx.drawImage(c, 0, 0);
    const d = ctx.getImageData(c.width - 20, c.height - 20, 1, 1).data;
    return [d[0], d[1], d[2]];
}"""


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def wait_for_desktop_colour(page, timeout: float = 20.0, poll_ms: int = 10):
    """Poll the noVNC canvas until it shows a non-black pixel; the colour, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        colour = page.evaluate(CANVAS_COLOUR_JS)
        if colour and colour != [0, 0, 0]:
            return tuple(colour)
        page.wait_for_timeout(poll_ms)
    return None


class BreakableProxy:
    """A TCP forwarder on loopback whose connections the test can cut, as a failing network
    would; it runs in its own thread so that synchronous browser tests can use it."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        import asyncio
        import threading
        self.target_port = target_port
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self._transports: list = []
        self._stop = asyncio.Event()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready) -> None:
        import asyncio

        async def pipe(reader, writer) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        async def handle(reader, writer) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1",
                                                                     self.target_port)
            except OSError:
                writer.close()
                return
            self._transports += [writer.transport, up_writer.transport]
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            ready.set()
            await self._stop.wait()
            server.close()
            self._abort_all()
            connections = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            await server.wait_closed()

        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(main())
        finally:
            self.loop.close()

    def _abort_all(self) -> None:
        for t in self._transports:
            t.abort()
        self._transports.clear()

    def cut(self) -> None:
        """Abort every connection through the proxy (both sides see a reset, no close frame)."""
        self.loop.call_soon_threadsafe(self._abort_all)

    def stop(self) -> None:
        """Close the listener and every connection, and end the proxy's thread."""
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(5)


# -- OpenSSH -------------------------------------------------------------------------------------

SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {state}/host_ed25519
PidFile {state}/sshd.pid
AuthorizedKeysFile {state}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
"""


@dataclass
class Sshd:
    """A private OpenSSH server on loopback that accepts one client key (for root).

    ``client_key`` is the private key (OpenSSH format) the broker uses; ``known_hosts`` names
    this server's host key.
    """

    state: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    def start(self, processes: Processes) -> None:
        sshd, keygen = require("sshd"), require("ssh-keygen")
        self.state.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        for name in ("host_ed25519", "client_ed25519"):
            if not (self.state / name).exists():
                subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f",
                                str(self.state / name)], check=True)
        (self.state / "authorized_keys").write_bytes(
            (self.state / "client_ed25519.pub").read_bytes())
        self.port = self.port or free_port()
        conf = self.state / "sshd_config"
        conf.write_text(SSHD_CONFIG.format(port=self.port, state=self.state))
        self.known_hosts.write_text(
            f"[127.0.0.1]:{self.port} {(self.state / 'host_ed25519.pub').read_text()}")
        self.proc = processes.start([sshd, "-D", "-e", "-f", str(conf)],
                                    log=self.state / "sshd.log")
        wait_for_port("127.0.0.1", self.port, self.proc, what="sshd")

    @property
    def client_key(self) -> Path:
        return self.state / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state / "known_hosts"


@dataclass
class Dnsmasq:
    """A private DNS server (dnsmasq) on loopback that answers the SRV records it is given and
    "no such name" to everything else; ``srv`` maps names like ``_pforte._tcp.rathaus.example``
    to (target host, port)."""

    state: Path
    srv: dict[str, tuple[str, int]]
    port: int = 0

    def start(self, processes: Processes) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        records = [f"--srv-host={name},{host},{port},0,0"
                   for name, (host, port) in self.srv.items()]
        proc = processes.start(
            [require("dnsmasq"), "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
             "--no-hosts", "--no-poll", "--local=/#/", "--bind-interfaces",
             "--listen-address=127.0.0.1", f"--port={self.port}", "--user=root",
             f"--pid-file={self.state / 'dnsmasq.pid'}", "--log-facility=-", *records],
            log=self.state / "dnsmasq.log")
        wait_for_port("127.0.0.1", self.port, proc, what="dnsmasq")  # it answers TCP too


# -- Samba Active Directory ------------------------------------------------------------------------

@dataclass
class SambaDC:
    """A Samba Active Directory domain controller provisioned into a state directory, serving
    LDAP on 127.0.0.1:389 (AD's ports are fixed: one per machine). Simple binds over plain LDAP
    are allowed, as is usual for tests on loopback."""

    state: Path
    realm: str                  # "JORK.EXAMPLE"
    domain: str                 # "JORK" (NetBIOS)
    admin_password: str
    proc: subprocess.Popen | None = None

    PORT = 389

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.PORT}"

    @property
    def base_dn(self) -> str:
        return ",".join(f"DC={part}" for part in self.realm.lower().split("."))

    @property
    def conf(self) -> Path:
        return self.state / "etc" / "smb.conf"

    def provision(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [require("samba-tool"), "domain", "provision", f"--realm={self.realm}",
             f"--domain={self.domain}", "--server-role=dc", "--dns-backend=NONE",
             f"--adminpass={self.admin_password}", f"--targetdir={self.state}",
             "--option=interfaces=lo", "--option=bind interfaces only=yes",
             "--option=server services=ldap", f"--option=log file={self.state}/log.%m"],
            check=True, capture_output=True, timeout=120)
        # provision does not keep this option: simple binds over plain LDAP (loopback tests)
        text = self.conf.read_text()
        self.conf.write_text(text.replace("[global]\n",
                                          "[global]\n\tldap server require strong auth = no\n", 1))

    def tool(self, *args: str) -> None:
        """Run ``samba-tool`` against this domain's database."""
        subprocess.run([require("samba-tool"), *args, "-s", str(self.conf)], check=True,
                       capture_output=True, timeout=60)

    def start(self, processes: Processes) -> None:
        self.proc = processes.start([require("samba"), "-i", "-s", str(self.conf)],
                                    log=self.state / "samba.log")
        wait_for_port("127.0.0.1", self.PORT, self.proc, timeout=60, what="samba")
