"""Directories on loopback: OpenLDAP ``slapd`` from a generated config in a state directory of
its own, and a Samba Active Directory domain controller."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import ldap3

from .processes import (Processes, TestbedError, free_port, require, wait_for_port,
                        write_private)


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


# -- PostgreSQL ------------------------------------------------------------------------------------

POSTGRES_BIN = Path("/usr/lib/postgresql")


def postgres_program(name: str) -> str:
    """A PostgreSQL server program (Debian keeps them outside PATH, per major version)."""
    found = sorted(POSTGRES_BIN.glob(f"*/bin/{name}"))
    if not found:
        raise TestbedError(f"{name} not found under {POSTGRES_BIN} (apt-get install postgresql)")
    return str(found[-1])


@dataclass
class Postgres:
    """A private PostgreSQL server on a free loopback port: its own data directory (owned by
    the ``postgres`` user, as initdb demands), a superuser ``pforte`` with a password, and
    password authentication over TCP only."""

    password: str = field(default_factory=lambda: secrets.token_hex(12))
    port: int = 0
    data: Path | None = None
    proc: subprocess.Popen | None = None
    settings: tuple[str, ...] = ()    # more name=value for the server, kept for a restart

    def start(self, processes: Processes) -> None:
        import tempfile
        self.data = Path(tempfile.mkdtemp(prefix="pforte-pg-"))
        shutil.chown(self.data, "postgres")
        pwfile = self.data / "pw"
        pwfile.write_text(self.password)
        shutil.chown(pwfile, "postgres")
        cluster = self.data / "cluster"
        subprocess.run(["runuser", "-u", "postgres", "--", postgres_program("initdb"), "-D",
                        str(cluster), "-U", "pforte", f"--pwfile={pwfile}",
                        "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        pwfile.unlink()
        self.port = self.port or free_port()
        self.run(processes)

    def run(self, processes: Processes, *settings: str) -> None:
        """Start the server on its data directory and port (again, after :meth:`halt`);
        ``settings``: more ``name=value`` for the server."""
        self.settings = settings or self.settings
        self.proc = processes.start(
            ["runuser", "-u", "postgres", "--", postgres_program("postgres"), "-D",
             str(self.data / "cluster"), "-p", str(self.port), "-h", "127.0.0.1", "-k",
             str(self.data), "-c", "fsync=off", "-c", "max_connections=300",
             *(arg for setting in self.settings for arg in ("-c", setting))],
            log=self.data / "postgres.log")
        wait_for_port("127.0.0.1", self.port, self.proc, what="postgres")
        self._wait_until_accepting()

    def _wait_until_accepting(self, timeout: float = 30) -> None:
        """PostgreSQL listens before it accepts sessions ("the database system is starting up")."""
        import psycopg
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn(), password=self.password, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise TestbedError(f"postgres on port {self.port} accepts no sessions")
                time.sleep(0.05)

    def halt(self, *, hard: bool = False) -> None:
        """Stop the server at once ("fast" shutdown: clients are disconnected), as an outage;
        ``hard``: as a crash ("immediate": no checkpoint, nothing flushed)."""
        pid = int((self.data / "cluster" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGQUIT if hard else signal.SIGINT)
        self.proc.wait(30)

    def standby(self, processes: Processes, name: str = "standby") -> "Postgres":
        """A streaming standby of this server (``pg_basebackup -R``, application ``name``), on
        its own port, read-only until :meth:`promote`."""
        import tempfile
        standby = Postgres(password=self.password, port=free_port(),
                           data=Path(tempfile.mkdtemp(prefix="pforte-pg-standby-")))
        shutil.chown(standby.data, "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", "env", f"PGPASSWORD={self.password}",
                        f"PGAPPNAME={name}", postgres_program("pg_basebackup"), "-h",
                        "127.0.0.1", "-p", str(self.port), "-U", "pforte", "-D",
                        str(standby.data / "cluster"), "-R", "-X", "stream", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        standby.run(processes, f"cluster_name={name}")
        return standby

    def commit_on(self, standby_name: str) -> None:
        """Commit only once that standby has the transaction (synchronous replication, the
        setting the README recommends for a fleet): a failover then loses nothing committed."""
        import psycopg
        with psycopg.connect(self.dsn(), password=self.password, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{standby_name}'")
            conn.execute("SELECT pg_reload_conf()")

    def promote(self) -> None:
        """Make this standby the primary (``pg_promote``, waiting until it takes writes)."""
        import psycopg
        with psycopg.connect(self.dsn(), password=self.password, autocommit=True) as conn:
            conn.execute("SELECT pg_promote(wait => true)")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://pforte@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its DSN (without the password)."""
        import psycopg
        with psycopg.connect(self.dsn(), password=self.password, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def remove(self) -> None:
        """After :meth:`Processes.stop`: delete the data directory."""
        if self.data is not None:
            shutil.rmtree(self.data, ignore_errors=True)
