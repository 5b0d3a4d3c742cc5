"""``pforte init``: from a fresh server to a checked configuration.

It asks for what it needs (or takes it from flags, for scripts and tests), checks each thing live —
the directory step by step (DNS, TCP, TLS with the certificate's names, the service account, the
base DN, a test user and their groups, the entitled group), each desktop host (TCP, VNC and its
password; SSH and its host key, recorded only after the admin confirmed the fingerprint) — and
only when everything answered writes ``DIR/pforte.toml`` (commented) and ``DIR/keys/`` (0600). It
never overwrites a config; it creates only keys that are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when init runs: other commands (a DMZ gateway) need none of them
    from broker.config import DirectoryConfig
    from broker.preflight import Check

FIELDS = [  # flag, question, required
    ("tenant", "Tenant id (lower case, e.g. the municipality: jork)", True),
    ("tenant_name", "Its name, as users see it (e.g. Gemeinde Jork)", True),
    ("domain", "The users' login domain (e.g. jork.example)", True),
    ("kind", "Directory kind: ad or openldap", True),
    ("directory", "Directory server URL (ldaps://dc1.jork.example)", True),
    ("base_dn", "Base DN (dc=jork,dc=example)", True),
    ("bind_dn", "Service account DN", True),
    ("ca_file", "CA certificate file of the directory (empty: the system's CAs)", False),
    ("desktop_group", "DN of the group whose members may use the desktops", True),
    ("admin_group", "DN of the tenant's admin group (empty: none)", False),
    ("test_user", "A test user's login name (a member of the desktop group)", True),
    ("portal_url", "The portal's URL (https://portal.jork.example)", True),
    ("gateway_url", "The gateway's URL (wss://gw.jork.example/ws)", True),
    ("desktop_network", "The desktops' network (CIDR, e.g. 10.20.0.0/16)", True),
]


@dataclass(frozen=True)
class Host:
    id: str
    address: str
    port: int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="check the directory and desktops live, then write a "
                       "commented config and the keys", description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/etc/pforte", help="where pforte.toml and keys/ go "
                   "(default /etc/pforte)")
    p.add_argument("--state-dir", default="/var/lib/pforte",
                   help="the broker's state directory (default /var/lib/pforte)")
    for flag, question, _ in FIELDS:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, help=question)
    p.add_argument("--bind-password-file", help="file with the service account's password "
                   "(else asked for)")
    p.add_argument("--test-password-file", help="file with the test user's password: also "
                   "checks a sign-in (else only search and groups)")
    p.add_argument("--host", action="append", default=[], metavar="ID=ADDRESS:PORT",
                   help="a desktop host (repeat for more)")
    p.add_argument("--host-secret-file", help="the desktops' VNC password (one for all given)")
    p.add_argument("--seats", type=int, default=1, help="sessions per host (default 1)")
    p.add_argument("--ssh-user", help="host control over SSH as this user (notices, logoff)")
    p.add_argument("--ssh-port", type=int, default=22)
    p.add_argument("--ssh-fingerprint", action="append", default=[], metavar="SHA256:…",
                   help="a host's SSH key fingerprint you confirmed on the host itself "
                   "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); else asked")
    p.add_argument("--broker-listen", default="0.0.0.0:443", help="default 0.0.0.0:443")
    p.add_argument("--gateway-listen", default="0.0.0.0:8443", help="default 0.0.0.0:8443")
    p.add_argument("--tls-cert", help="certificate chain (PEM) for portal and gateway")
    p.add_argument("--tls-key", help="its private key (PEM)")
    p.add_argument("--tls-ca", help="the CA that signed the certificate (PEM), if not one the "
                   "system trusts: the gateway checks the broker with it")
    p.add_argument("--owner", default="pforte", help="the user the services run as: gets the "
                   "key files (default pforte, if that user exists)")
    p.add_argument("--yes", action="store_true", help="ask nothing: every answer comes from "
                   "the flags (fails on what is missing)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    interactive = not args.yes and sys.stdin.isatty()
    try:
        return _init(args, interactive)
    except (EOFError, KeyboardInterrupt):       # Ctrl-D or Ctrl-C at a question
        print("\npforte init: stopped at a question; nothing written", file=sys.stderr)
        return 130


def _init(args: argparse.Namespace, interactive: bool) -> int:
    from broker.preflight import check_directory, check_vnc, ssh_host_key
    missing = _complete(args, interactive)
    if missing:
        print("pforte init: missing: " + ", ".join("--" + m.replace("_", "-") for m in missing),
              file=sys.stderr)
        return 2
    config_path = Path(args.dir) / "pforte.toml"
    if config_path.exists():
        print(f"pforte init: {config_path} exists; init writes a new installation only "
              f"(check an existing one with: pforte check-config {config_path})", file=sys.stderr)
        return 2
    try:
        hosts = [_host(h) for h in args.host]
        bind_password = _secret(args.bind_password_file, "Service account password", interactive)
        test_password = (_secret(args.test_password_file, "", False)
                         if args.test_password_file else None)
        host_secret = Path(args.host_secret_file).read_bytes().strip() \
            if args.host_secret_file else (getpass.getpass(
                "The desktops' VNC password (empty: they ask none): ").encode() or None
                if interactive else None)
    except (ValueError, OSError) as exc:
        print(f"pforte init: {exc}", file=sys.stderr)
        return 2

    started = time.monotonic()
    directory = _directory_config(args, bind_password)
    checks = asyncio.run(check_directory(directory, test_user=args.test_user,
                                         test_password=test_password,
                                         groups=[g for g in (args.desktop_group,
                                                             args.admin_group) if g]))
    known_hosts: list[str] = []
    for host in hosts:
        checks += asyncio.run(check_vnc(host.address, host.port, host_secret))
        if args.ssh_user:
            check, line = asyncio.run(ssh_host_key(host.address, args.ssh_port))
            checks.append(check)
            if line is not None:
                confirmed = _confirm_host_key(check, args.ssh_fingerprint, interactive)
                checks.append(confirmed)
                if confirmed.ok:
                    known_hosts.append(line)
    _report(checks)
    if not all(c.ok for c in checks):
        print(f"\nnothing written: fix what failed above and run pforte init again "
              f"({time.monotonic() - started:.1f} s)", file=sys.stderr)
        return 1
    written = _write(args, Path(args.dir), hosts, bind_password, host_secret, known_hosts)
    from broker.config import load_config
    load_config(str(config_path))                     # what the broker will read, checked
    for path in written:
        print(f"wrote {path}")
    print(f"\nchecked and written in {time.monotonic() - started:.1f} s. Next: "
          f"pforte check-config {config_path}; then start pforte-broker and pforte-gateway "
          f"(README, \"Your first day\").")
    if args.ssh_user:
        print(f"Put {Path(args.dir) / 'keys' / 'broker-ssh.pub'} into "
              f"~{args.ssh_user}/.ssh/authorized_keys on each host.")
    return 0


def _complete(args: argparse.Namespace, interactive: bool) -> list[str]:
    """Ask for what the flags left out; the required ones still missing."""
    missing = []
    for flag, question, required in FIELDS:
        if getattr(args, flag) is None and interactive:
            setattr(args, flag, input(f"{question}: ").strip() or None)
        if getattr(args, flag) is None and required:
            missing.append(flag)
    if args.kind not in (None, "ad", "openldap"):
        missing.append("kind (ad or openldap)")
    if not args.host and interactive:
        while answer := input("A desktop host as ID=ADDRESS:PORT (empty: done): ").strip():
            args.host.append(answer)
    if not args.host:
        missing.append("host")
    if args.tls_cert is None and interactive:
        args.tls_cert = input("Certificate chain (PEM) for portal and gateway (empty: none, "
                              "TLS ends at your reverse proxy): ").strip() or None
        if args.tls_cert and args.tls_key is None:
            args.tls_key = input("Its private key (PEM): ").strip() or None
    if args.tls_cert and not args.tls_key:
        missing.append("tls_key")
    return missing


def _host(text: str) -> Host:
    host_id, _, where = text.partition("=")
    address, _, port = where.rpartition(":")
    try:
        ipaddress.ip_address(address)
        return Host(host_id, address, int(port))
    except ValueError:
        raise ValueError(f"--host {text!r}: expected ID=ADDRESS:PORT with an IP address") from None


def _secret(path: str | None, question: str, interactive: bool) -> str:
    if path:
        return Path(path).read_text().strip()
    if interactive:
        return getpass.getpass(f"{question}: ")
    raise ValueError("--bind-password-file is needed without a terminal")


def _security(url: str) -> str:
    return "ldaps" if url.startswith("ldaps://") else "starttls" if url.startswith(
        "ldap://") and not _loopback(url) else "plain"


def _loopback(url: str) -> bool:
    try:
        return ipaddress.ip_address(urlsplit(url).hostname or "").is_loopback
    except ValueError:
        return False


def _directory_config(args: argparse.Namespace, bind_password: str) -> DirectoryConfig:
    from broker.config import DirectoryConfig
    ad = args.kind == "ad"
    return DirectoryConfig(
        servers=(args.directory,), base_dn=args.base_dn, bind_dn=args.bind_dn,
        bind_password=bind_password, login_attribute="sAMAccountName" if ad else "uid",
        user_object_class="user" if ad else "inetOrgPerson", timeout=3.0, group_depth=8,
        kind=args.kind, domains=(args.domain,), security=_security(args.directory),
        ca_file=Path(args.ca_file) if args.ca_file else None)


def _confirm_host_key(check: Check, confirmed: list[str], interactive: bool) -> Check:
    from broker.preflight import Check
    fingerprint = check.detail.split()[-1]
    if fingerprint in confirmed:
        return Check("SSH host key", True, f"{fingerprint} confirmed (--ssh-fingerprint)")
    if interactive and input(f"{check.step}: is {fingerprint} the host's key? "
                             "Compare on the host: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub "
                             "[yes/no] ").strip().lower() == "yes":
        return Check("SSH host key", True, f"{fingerprint} confirmed")
    return Check("SSH host key", False, f"{fingerprint} not confirmed: compare it on the host "
                 "and pass --ssh-fingerprint")


def _report(checks: list[Check]) -> None:
    for c in checks:
        print(f"  {'ok  ' if c.ok else 'FAIL'}  {c.step}: {c.detail}")


def _write(args: argparse.Namespace, directory: Path, hosts: list[Host], bind_password: str,
           host_secret: bytes | None, known_hosts: list[str]) -> list[Path]:
    from broker.keys import generate_keys
    keys = directory / "keys"
    directory.mkdir(parents=True, exist_ok=True)
    written = generate_keys(keys)
    tenant = args.tenant

    def private(name: str, data: bytes) -> str:
        path = keys / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        written.append(path)
        return f"keys/{name}"

    ldap_pass = private(f"{tenant}-ldap.pass", bind_password.encode() + b"\n")
    ca = private(f"{tenant}-ca.pem", Path(args.ca_file).read_bytes()) if args.ca_file else None
    vnc = private("desktops.vncpass", host_secret) if host_secret else None
    tls = ""
    if args.tls_cert and args.tls_key:
        (directory / "tls").mkdir(exist_ok=True)
        for src, name in ((args.tls_cert, "server.crt"), (args.tls_key, "server.key")):
            shutil.copyfile(src, directory / "tls" / name)
            os.chmod(directory / "tls" / name, 0o600 if name.endswith(".key") else 0o644)
            written.append(directory / "tls" / name)
        tls = ('# HTTPS (and wss:) with your CA\'s certificate\n'
               'tls_cert_file = "tls/server.crt"\ntls_key_file = "tls/server.key"\n')
    ssh = ""
    if args.ssh_user:
        written += _ssh_key(keys)
        (keys / "known_hosts").write_text("\n".join(known_hosts) + "\n")
        written.append(keys / "known_hosts")
        ssh = ('# host control over SSH (notices, logoff); the host keys you confirmed\n'
               'ssh_key_file = "keys/broker-ssh"\nssh_known_hosts_file = "keys/known_hosts"\n')
    portal = urlsplit(args.portal_url)
    # the gateway redeems at the broker: over HTTPS by the name in its certificate, else loopback
    broker_url = (f"{portal.scheme}://{portal.netloc}" if tls
                  else f"http://127.0.0.1:{args.broker_listen.rpartition(':')[2]}")
    if tls and args.tls_ca:
        shutil.copyfile(args.tls_ca, directory / "tls" / "ca.pem")
        written.append(directory / "tls" / "ca.pem")
    gateway_tls = tls + ('# the CA of the broker\'s certificate\nbroker_ca_file = "tls/ca.pem"\n'
                         if tls and args.tls_ca else "")
    text = TEMPLATE.format(
        date=time.strftime("%Y-%m-%d"), state_dir=args.state_dir, broker_listen=args.broker_listen,
        gateway_listen=args.gateway_listen, gateway_url=args.gateway_url, tls=tls, ssh=ssh,
        gateway_tls=gateway_tls, broker_url=broker_url, targets=args.desktop_network,
        origin=f"{portal.scheme}://{portal.netloc}", tenant=tenant, name=_quote(args.tenant_name),
        domain=args.domain, portal_host=portal.hostname, kind=args.kind,
        server=args.directory, security=_security(args.directory),
        ca=f'ca_file = "{ca}"\n' if ca else "", base_dn=_quote(args.base_dn),
        bind_dn=_quote(args.bind_dn), ldap_pass=ldap_pass,
        admin_group=f'admin_group = "{_quote(args.admin_group)}"\n' if args.admin_group else "",
        group=_quote(args.desktop_group), host_ids=", ".join(f'"{h.id}"' for h in hosts),
        hosts="".join(HOST.format(id=h.id, address=h.address, port=h.port, seats=args.seats,
                                  secret=f'secret_file = "{vnc}"\n' if vnc else "",
                                  ssh=f'[tenants.hosts.ssh]\nuser = "{args.ssh_user}"\nport = '
                                      f'{args.ssh_port}\n' if args.ssh_user else "")
                      for h in hosts))
    config = directory / "pforte.toml"
    config.write_text(text)
    written.append(config)
    _hand_over(written + [keys] + ([directory / "tls"] if tls else []), args.owner)
    return written


def _hand_over(paths: list[Path], owner: str) -> None:
    """The service user reads the keys (0600, its own); root keeps the config."""
    import pwd
    try:
        account = pwd.getpwnam(owner)
    except KeyError:
        print(f"(no user {owner!r} here: the files stay root's; chown them to the user the "
              f"services run as)")
        return
    for path in paths:
        if path.name != "pforte.toml":
            os.chown(path, account.pw_uid, account.pw_gid)


def _ssh_key(keys: Path) -> list[Path]:
    import asyncssh
    private, public = keys / "broker-ssh", keys / "broker-ssh.pub"
    if private.exists():
        return []
    key = asyncssh.generate_private_key("ssh-ed25519", comment="pforte-broker")
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key())
    public.write_bytes(key.export_public_key())
    return [private, public]


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


TEMPLATE = """\
# Pforte, written by `pforte init` on {date}. Every key: README, "Configuration reference".
# After each change: pforte check-config /etc/pforte/pforte.toml (it says file, key and what is
# expected). Relative paths are relative to this file.

[broker]
# the portal and API
listen = "{broker_listen}"
# the SQLite database (the unit's StateDirectory)
state_dir = "{state_dir}"
ticket_private_key_file = "keys/ticket-signing.pem"   # brokers only
credential_key_file = "keys/credential.key"           # brokers and gateways
totp_key_file = "keys/totp.key"                       # brokers only: back it up
report_token_file = "keys/report.token"               # brokers and gateways
# what browsers and thin clients connect to
gateway_url = "{gateway_url}"
gateway_audience = "gw"
{tls}{ssh}
[gateway]
listen = "{gateway_listen}"
audience = "gw"
ticket_public_key_file = "keys/ticket-verify.pem"
credential_key_file = "keys/credential.key"
report_token_file = "keys/report.token"
# where tickets are redeemed
broker_url = "{broker_url}"
# the desktops' network: the gateway connects nowhere else, whatever a ticket says
allowed_targets = ["{targets}"]
# the portal's origin: pages from elsewhere are refused
allowed_origins = ["{origin}"]
{gateway_tls}
[[tenants]]
id = "{tenant}"
name = "{name}"
# users sign in as name@{domain}; on the portal's own host name the plain name is enough
domains = ["{domain}"]
portal_hosts = ["{portal_host}"]
{admin_group}
[tenants.directory]
kind = "{kind}"
# more servers: tried in order
servers = ["{server}"]
security = "{security}"
{ca}base_dn = "{base_dn}"
bind_dn = "{bind_dn}"
bind_password_file = "{ldap_pass}"

[[tenants.pools]]
id = "desktop"
name = "Arbeitsplatz"
# its members, also through nested groups, are entitled
group = "{group}"
hosts = [{host_ids}]
{hosts}"""

HOST = """
[[tenants.hosts]]
id = "{id}"
address = "{address}"
port = {port}
seats = {seats}
{secret}{ssh}"""
