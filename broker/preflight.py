"""Live checks of what a new installation depends on, each step saying exactly what failed and
what to do: a tenant's directory (DNS, TCP, TLS with the names in the server's certificate, the
service account's bind, the base DN, a test user, their groups, the entitled groups) and a desktop
host (TCP, the VNC greeting and password, SSH and its host key). ``pforte init`` runs them before
it writes anything; each is a :class:`Check`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import ldap3
from cryptography import x509
from cryptography.x509.oid import NameOID
from ldap3.core import exceptions as ldap_exc

from wire import rfb
from wire.errors import DesktopError

from .config import DirectoryConfig
from .directory import Directory
from .errors import AuthError, DirectoryUnavailable


@dataclass(frozen=True)
class Check:
    step: str
    ok: bool
    detail: str


# -- the directory -----------------------------------------------------------------------------

async def check_directory(config: DirectoryConfig, *, test_user: str,
                          test_password: str | None, groups: list[str]) -> list[Check]:
    """Every step from the name of each server to the test user's groups; stops at the first
    step the following ones depend on."""
    loop = asyncio.get_running_loop()
    checks: list[Check] = []
    for url in config.servers:
        checks += await loop.run_in_executor(None, _reach_server, url, config)
    if not all(c.ok for c in checks):
        return checks
    checks += await loop.run_in_executor(None, _bind_and_base, config)
    if not all(c.ok for c in checks):
        return checks
    with ThreadPoolExecutor(2) as pool:
        checks += await _user_and_groups(Directory(config, pool), config, test_user,
                                         test_password, groups)
    return checks


def _reach_server(url: str, config: DirectoryConfig) -> list[Check]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (636 if parts.scheme == "ldaps" else 389)
    try:
        ipaddress.ip_address(host)
        checks = []
    except ValueError:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            return [Check(f"DNS {host}", False, f"the name does not resolve ({exc.strerror}); "
                          f"check the server's name or this machine's DNS (/etc/resolv.conf)")]
        checks = [Check(f"DNS {host}", True, ", ".join(sorted({a[4][0] for a in found})))]
    try:
        sock = socket.create_connection((host, port), timeout=config.timeout)
    except OSError as exc:
        why = "refused: nothing listens there" if isinstance(exc, ConnectionRefusedError) \
            else "no answer: a firewall, or the wrong address" if isinstance(exc, TimeoutError) \
            else (exc.strerror or type(exc).__name__)
        return checks + [Check(f"TCP {host}:{port}", False, why)]
    checks.append(Check(f"TCP {host}:{port}", True, "connected"))
    try:
        if config.security == "ldaps":
            checks.append(_tls(sock, host, port, config.ca_file))
        elif config.security == "starttls":
            sock.close()
            checks.append(_starttls(url, host, config))
    finally:
        sock.close()
    return checks


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _tls(sock: socket.socket, host: str, port: int, ca_file: Path | None) -> Check:
    try:
        with _tls_context(ca_file).wrap_socket(sock, server_hostname=host) as tls:
            return Check(f"TLS {host}", True, f"{tls.version()}, "
                         f"{_describe(tls.getpeercert(binary_form=True))}")
    except ssl.SSLCertVerificationError as exc:
        return Check(f"TLS {host}", False, _refusal(exc, _certificate(host, port), ca_file))
    except (ssl.SSLError, OSError) as exc:
        return Check(f"TLS {host}", False, f"no TLS handshake ({exc}); is this an ldaps port?")


def _starttls(url: str, host: str, config: DirectoryConfig) -> Check:
    server = ldap3.Server(url, connect_timeout=config.timeout, get_info=ldap3.NONE,
                          tls=ldap3.Tls(validate=ssl.CERT_REQUIRED,
                                        ca_certs_file=str(config.ca_file) if config.ca_file
                                        else None))
    conn = ldap3.Connection(server, raise_exceptions=False)
    try:
        conn.open()
        if not conn.start_tls():
            return Check(f"TLS {host}", False, "the server refused StartTLS: use ldaps://, or "
                         "enable TLS on the server")
        return Check(f"TLS {host}", True, f"StartTLS, "
                     f"{_describe(conn.socket.getpeercert(binary_form=True))}")
    except (ldap_exc.LDAPException, ssl.SSLError, OSError) as exc:
        cause = exc.__context__ if isinstance(exc.__context__, ssl.SSLCertVerificationError) \
            else exc
        if isinstance(cause, ssl.SSLCertVerificationError):
            return Check(f"TLS {host}", False, _refusal(cause, None, config.ca_file))
        return Check(f"TLS {host}", False, f"StartTLS failed: {exc}")
    finally:
        conn.unbind()


def _certificate(host: str, port: int) -> bytes | None:
    """The server's certificate, read without checking it (only to say what it names)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def _refusal(exc: ssl.SSLCertVerificationError, der: bytes | None, ca_file: Path | None) -> str:
    what = exc.verify_message or str(exc)
    names = f"; the server's certificate: {_describe(der)}" if der else ""
    if exc.verify_code in (18, 19, 20, 21):       # self-signed / unknown issuer
        hint = (f"; {ca_file} did not sign it" if ca_file
                else "; give the CA that signed it with --ca-file")
    elif exc.verify_code == 62 or "hostname" in what.lower() or "IP address" in what:
        hint = "; connect by one of the names in the certificate"
    elif exc.verify_code == 10:
        hint = "; the certificate has expired: renew it on the server"
    else:
        hint = ""
    return f"certificate refused: {what}{names}{hint}"


def _describe(der: bytes | None) -> str:
    if not der:
        return "no certificate"
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        listed = [str(n) for n in names.get_values_for_type(x509.DNSName)] + \
            [str(a) for a in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        listed = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    issuer = ", ".join(a.value for a in cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME))
    return (f"names {', '.join(map(str, listed)) or '(none)'}, issued by {issuer or '?'}, "
            f"valid until {cert.not_valid_after_utc:%Y-%m-%d}")


def _service_connection(config: DirectoryConfig) -> ldap3.Connection:
    """A connection to the first server as the service account, opened (and for StartTLS,
    encrypted), not yet bound."""
    tls = None
    if config.security != "plain":
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED,
                        ca_certs_file=str(config.ca_file) if config.ca_file else None)
    server = ldap3.Server(config.servers[0], connect_timeout=config.timeout, get_info=ldap3.NONE,
                          use_ssl=config.security == "ldaps", tls=tls)
    conn = ldap3.Connection(server, user=config.bind_dn, password=config.bind_password,
                            raise_exceptions=False, read_only=True)
    conn.open()
    if config.security == "starttls":
        conn.start_tls()
    return conn


def _bind_and_base(config: DirectoryConfig) -> list[Check]:
    conn = None
    try:
        conn = _service_connection(config)
        if not conn.bind():
            message = conn.result.get("message") or ""
            return [Check("service account bind", False,
                          f"{config.bind_dn}: {conn.result.get('description')}"
                          f"{' (' + message.strip() + ')' if message.strip() else ''}; check "
                          f"bind_dn and the password file")]
        checks = [Check("service account bind", True, config.bind_dn)]
        conn.search(config.base_dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[])
        if conn.result.get("description") != "success":
            checks.append(Check("base DN", False, f"{config.base_dn}: "
                                f"{conn.result.get('description')}; check base_dn"))
        else:
            checks.append(Check("base DN", True, config.base_dn))
        return checks
    except (ldap_exc.LDAPException, OSError) as exc:
        return [Check("service account bind", False, f"{type(exc).__name__}: {exc}")]
    finally:
        if conn is not None:
            conn.unbind()


async def _user_and_groups(directory: Directory, config: DirectoryConfig, test_user: str,
                           test_password: str | None, groups: list[str]) -> list[Check]:
    attribute = "sAMAccountName" if config.kind == "ad" else config.login_attribute
    try:
        entry = await directory.find(test_user)
    except DirectoryUnavailable as exc:
        return [Check("test user", False, str(exc))]
    if entry is None:
        return [Check("test user", False, f"no {config.user_object_class} with "
                      f"{attribute}={test_user} under {config.base_dn} (or more than one)")]
    checks = [Check("test user", True, f"{entry.dn} (signs in as {entry.login})")]
    member_of = await directory.groups(entry)
    checks.append(Check("test user's groups", True,
                        f"{len(member_of)}: " + "; ".join(sorted(member_of)) if member_of
                        else "none"))
    for group in groups:
        exists = await asyncio.get_running_loop().run_in_executor(
            None, _entry_exists, config, group)
        if not exists:
            checks.append(Check(f"group {group}", False, "no such entry: check the DN"))
        elif group.lower() not in member_of:
            checks.append(Check(f"group {group}", False, f"exists, but {entry.login} is not a "
                                "member (also not through nested groups): add the test user"))
        else:
            checks.append(Check(f"group {group}", True, f"exists; {entry.login} is a member"))
    if test_password is not None:
        try:
            await directory.verify(entry, test_password)
            checks.append(Check("test user's password", True, "accepted by the directory"))
        except AuthError as exc:
            checks.append(Check("test user's password", False, f"refused: {exc.code}"))
    return checks


def _entry_exists(config: DirectoryConfig, dn: str) -> bool:
    conn = _service_connection(config)
    try:
        conn.bind()
        conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=[])
        return conn.result.get("description") == "success"
    finally:
        conn.unbind()


# -- a desktop host ----------------------------------------------------------------------------

async def check_vnc(address: str, port: int, secret: bytes | None,
                    timeout: float = 5.0) -> list[Check]:
    """TCP to the desktop, then its VNC greeting and (with ``secret``) its password."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return [Check(f"TCP {address}:{port}", False,
                      "refused: no desktop listens there" if isinstance(exc, ConnectionRefusedError)
                      else "no answer: a firewall, or the wrong address")]
    checks = [Check(f"TCP {address}:{port}", True, "connected")]
    try:
        await asyncio.wait_for(rfb.authenticate_desktop(rfb.StreamLink(reader, writer), secret),
                               timeout)
        checks.append(Check("VNC", True, "greeting and password accepted" if secret
                            else "greeting accepted, no password asked"))
    except DesktopError as exc:
        checks.append(Check("VNC", False, f"{exc}; check the port and the desktops' password "
                            "(--host-secret-file)"))
    except (ConnectionError, asyncio.TimeoutError):
        checks.append(Check("VNC", False, "the desktop closed the connection or said nothing: "
                            "is this a VNC port?"))
    finally:
        writer.close()
    return checks


async def ssh_host_key(address: str, port: int, timeout: float = 5.0) -> tuple[Check, str | None]:
    """The host's SSH key as a known_hosts line (None when it cannot be read) and its
    SHA-256 fingerprint in the check, for the admin to compare with the host's own."""
    import asyncssh
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(address, port), timeout)
    except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
        return Check(f"SSH {address}:{port}", False, f"no SSH server answered ({exc})"), None
    if key is None:
        return Check(f"SSH {address}:{port}", False, "the server offered no host key"), None
    host = address if port == 22 else f"[{address}]:{port}"
    line = f"{host} {key.export_public_key('openssh').decode().strip()}"
    return Check(f"SSH {address}:{port}", True,
                 f"host key {key.get_algorithm()} {key.get_fingerprint('sha256')}"), line
