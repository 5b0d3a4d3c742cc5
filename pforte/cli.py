"""The ``pforte`` command: one CLI for every process and tool.

Subcommands import their modules lazily, so ``pforte gateway`` on a DMZ host needs neither ldap3
nor a database driver.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    try:
        from testbed.demo import main
    except ImportError:  # run from the checkout's .venv: the testbed lies beside this package
        checkout = Path(__file__).resolve().parents[1]
        if not (checkout / "testbed" / "demo.py").is_file():
            print("pforte: the demo runs from a clone of the repository (bash scripts/demo)",
                  file=sys.stderr)
            return 2
        sys.path.insert(0, str(checkout))
        from testbed.demo import main
    main(args.state_dir, args.host, args.portal_port, args.gateway_port, args.facts,
         use_uvloop=args.loop == "uvloop", gateway_url=args.gateway_url)
    return 0


def _broker(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from wire import serving

    from broker.config import load_config
    from broker.errors import StoreUnavailable
    from broker.schema import SchemaMismatch
    from broker.service import Broker
    from broker.store import Store
    from broker.web import create_app

    config = load_config(args.config)
    host, port = config.listen

    async def check() -> None:
        store = Store.for_config(config)
        try:
            await store.open()
        finally:
            await store.close()
    try:
        asyncio.run(check())
    except SchemaMismatch as exc:
        print(f"pforte broker: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:   # systemd starts it again (Restart=on-failure)
        print(f"pforte broker: the database cannot be reached ({exc}); not started",
              file=sys.stderr)
        return 1

    async def main() -> None:
        broker = Broker(config, Store.for_config(config))
        tls = serving.tls_context(config.tls_cert, config.tls_key)
        await serving.serve([serving.Site(create_app(broker), host, port, tls,
                                          config.http_idle_timeout)],
                            reuse_port=args.workers > 1,
                            on_started=lambda bound: logging.getLogger("pforte").info(
                                "broker (pid %d) listening on %s://%s:%s", os.getpid(),
                                "https" if tls else "http", *bound[0]))

    def one(_worker: int = 0) -> None:
        serving.run(main, use_uvloop=args.loop == "uvloop")
    if args.workers > 1:
        serving.run_workers(args.workers, one)
    else:
        one()
    return 0


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    from broker import schema
    from broker.config import load_config
    from broker.engine import engine_for

    config = load_config(args.config)
    engine = engine_for(config.database, config.state_dir, config.database_password, 1)

    async def run() -> tuple[int, int]:
        try:
            return await schema.migrate(engine)
        finally:
            await engine.close()
    try:
        before, after = asyncio.run(run())
    except schema.SchemaMismatch as exc:
        print(f"pforte migrate: {exc}", file=sys.stderr)
        return 2
    print(f"schema version {before} → {after}" if before != after
          else f"schema version {after}: nothing to do")
    return 0


def _backup(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from broker import backup
    from broker.config import load_config

    config = load_config(args.config)
    try:
        if args.command == "backup":
            backup.backup(config, Path(args.to))
            print(f"backed up {backup.describe(config)} to {args.to} "
                  f"(the key files are not in it: back them up on their own)")
        else:
            asyncio.run(backup.restore(config, Path(getattr(args, "from"))))
            print(f"restored {getattr(args, 'from')} onto {backup.describe(config)}")
    except backup.BackupError as exc:
        print(f"pforte {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from gateway.server import run
    run(args.config, use_uvloop=args.loop == "uvloop", workers=args.workers)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from client_profiles.profiles import check_directory

    from broker.config import load_config
    config = load_config(args.config)
    pools = sum(len(t.pools) for t in config.tenants)
    hosts = sum(len(t.hosts) for t in config.tenants)
    print(f"{args.config}: OK ({len(config.tenants)} tenants, {pools} pools, {hosts} hosts)")
    if config.profiles_dir is not None:
        checked = check_directory(config.profiles_dir, {t.id for t in config.tenants})
        print(f"{config.profiles_dir}: OK ({checked} client profiles: every class and site "
              f"combination, and every device)")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from pathlib import Path

    from broker.keys import generate_keys
    for path in generate_keys(Path(args.directory)):
        print(f"created {path}")
    return 0


def _admin_token(args: argparse.Namespace) -> int:
    import asyncio
    import secrets

    from broker.config import load_config
    from broker.store import OPERATOR, Store

    config = load_config(args.config)
    if args.tenant and config.tenant(args.tenant) is None:
        print(f"pforte: no tenant {args.tenant!r} in {args.config}", file=sys.stderr)
        return 2
    scope = args.tenant or OPERATOR

    async def revoke() -> int:
        store = Store.for_config(config)
        await store.open()
        try:
            count = await store.admin.revoke_tokens(scope, args.name)
            await store.admin.audit(at=time.time(), tenant=scope, actor="cli", source="local",
                                    action="admin_token.revoke", result="ok",
                                    detail=f"name={args.name} tokens={count}")
            return count
        finally:
            await store.close()
    if args.revoke:
        count = asyncio.run(revoke())
        print(f"revoked {count} token(s) named {args.name!r}: refused from their next request "
              f"on, and their open event streams end")
        return 0 if count else 1
    token = "pfa_" + secrets.token_urlsafe(32)

    async def create() -> None:
        store = Store.for_config(config)
        await store.open()
        try:
            await store.admin.create_token(token, args.tenant or OPERATOR, args.name,
                                           now=time.time())
            await store.admin.audit(at=time.time(), tenant=args.tenant or OPERATOR, actor="cli",
                              source="local", action="admin_token.create", result="ok",
                              detail=f"name={args.name}")
        finally:
            await store.close()
    asyncio.run(create())
    print(token)
    return 0


def _connect(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from client import tunnel
    from client.api import ApiError, BrokerApi

    token = Path(args.token_file).read_text().strip()
    device = Path(args.device_credential_file).read_text().strip() \
        if args.device_credential_file else None

    async def ready(port: int) -> None:
        print(f"tunnel to pool {args.pool} listening on 127.0.0.1:{port}", flush=True)
        if not args.viewer_file:
            return
        api = BrokerApi(args.url, token=token, device=device)
        try:
            body = await api.call("POST", f"/pools/{args.pool}/connection-file",
                                  {"viewer": args.viewer, "port": port})
        except ApiError as exc:
            print(f"no viewer file: {exc.message}", file=sys.stderr, flush=True)
            return
        finally:
            await api.close()
        Path(args.viewer_file).write_text(body["content"])
        print(f"wrote {args.viewer_file} for {args.viewer}", flush=True)

    try:
        asyncio.run(tunnel.run(args.url, token, args.pool, args.port, ready,
                               device_credential=device))
    except KeyboardInterrupt:
        pass
    return 0


def _totp(args: argparse.Namespace) -> int:
    from broker.mfa import current_code
    print(current_code(args.secret, time.time()))
    return 0


def _rdp_certificate(args: argparse.Namespace) -> int:
    """What an RDP host shows: X.224 (asking for TLS or NLA), then TLS, as the gateway does."""
    import hashlib
    import socket
    import ssl

    from cryptography import x509
    from gateway import rdp
    try:
        with socket.create_connection((args.address, args.port), timeout=args.timeout) as sock:
            sock.sendall(rdp.connection_request())
            confirm = sock.recv(64)
            protocol = rdp.selected_protocol(confirm)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            with context.wrap_socket(sock) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, rdp.StreamNotUnderstood) as exc:
        print(f"pforte: {args.address}:{args.port} is no RDP host with TLS: {exc}",
              file=sys.stderr)
        return 1
    cert = x509.load_der_x509_certificate(der)
    security = "NLA (the gateway does it as the user)" if protocol == rdp.PROTOCOL_HYBRID \
        else "TLS"
    print(f"# {args.address}:{args.port}: {cert.subject.rfc4514_string()}, valid until "
          f"{cert.not_valid_after_utc:%Y-%m-%d}; security: {security}")
    print("# Compare with the host's own view before you trust it (a man in the middle on the")
    print("# way here would show you his): certutil, or the Remote Desktop certificate store.")
    print(f'certificate_sha256 = "{hashlib.sha256(der).hexdigest()}"')
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("pforte")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pforte", description="Pforte: session broker and "
                                "connection gateway for virtual desktops.")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--version", action="version", version=f"pforte {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def serving(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="event loop (default uvloop)")
        return sp

    d = serving("demo", "run a complete demo installation on this machine")
    d.add_argument("--state-dir", help="keep state here (default: a temporary directory)")
    d.add_argument("--host", default="127.0.0.1", help="address to listen on")
    d.add_argument("--portal-port", type=int, default=8080, help="portal port (0: any free)")
    d.add_argument("--gateway-port", type=int, default=8081, help="gateway port (0: any free)")
    d.add_argument("--facts", help="write the demo facts JSON here (default STATE/demo.json)")
    d.add_argument("--gateway-url", help="the gateway URL browsers use, when a proxy sits in "
                   "front of the gateway (default ws://HOST:GATEWAY_PORT/ws)")
    d.set_defaults(func=_demo)

    b = serving("broker", "run the broker (portal and API)")
    b.add_argument("--config", required=True, help="pforte.toml")
    b.add_argument("--workers", type=int, default=1,
                   help="broker processes sharing the port (SO_REUSEPORT) and the database")
    b.set_defaults(func=_broker)

    g = serving("gateway", "run a gateway (reads only the [gateway] table)")
    g.add_argument("--config", required=True, help="a TOML file with a [gateway] table")
    g.add_argument("--workers", type=int, default=1,
                   help="processes sharing the port (SO_REUSEPORT); default 1")
    g.set_defaults(func=_gateway)

    m = sub.add_parser("migrate", help="bring the database to the schema this version knows",
                       description="Bring the broker's database (SQLite or PostgreSQL) to the "
                       "schema this version of Pforte knows; safe to run again.")
    m.add_argument("--config", required=True)
    m.set_defaults(func=_migrate)
    bk = sub.add_parser("backup", help="back the database up while brokers run")
    bk.add_argument("--config", required=True)
    bk.add_argument("--to", required=True, help="the backup file to write (mode 0600)")
    bk.set_defaults(func=_backup)
    rs = sub.add_parser("restore", help="restore a backup onto an empty database")
    rs.add_argument("--config", required=True)
    rs.add_argument("--from", required=True, help="the backup file")
    rs.set_defaults(func=_backup)
    c = sub.add_parser("check-config", help="check a config file and exit")
    c.add_argument("config")
    c.set_defaults(func=_check_config)

    k = sub.add_parser("keys", help="create missing key files in a directory")
    k.add_argument("directory")
    k.set_defaults(func=_keys)

    at = sub.add_parser("admin-token", help="create an admin API token (printed once), or "
                        "revoke tokens by name (--revoke)")
    at.add_argument("--config", required=True, help="pforte.toml of the broker")
    scope = at.add_mutually_exclusive_group(required=True)
    scope.add_argument("--tenant", help="the token administers this tenant only")
    scope.add_argument("--operator", action="store_true", help="the token administers all tenants")
    at.add_argument("--name", required=True, help="who or what holds the token (for the audit log)")
    at.add_argument("--revoke", action="store_true",
                    help="revoke the scope's tokens of that name instead of creating one")
    at.set_defaults(func=_admin_token)

    from client.admin import add_parser as add_admin_parser
    add_admin_parser(sub)
    from .init import add_parser as add_init_parser
    add_init_parser(sub)

    cn = sub.add_parser("connect", help="a loopback port that carries a native viewer through "
                        "the gateway")
    cn.add_argument("--url", required=True, help="the broker")
    cn.add_argument("--token-file", required=True, help="file with the user's login token")
    cn.add_argument("--pool", required=True)
    cn.add_argument("--port", type=int, default=0, help="local port (default: any free)")
    cn.add_argument("--viewer-file", help="write the native viewer's connection file here "
                    "(rendered by the broker for this tunnel's port)")
    cn.add_argument("--viewer", choices=["vnc", "rdp", "spice"], default="vnc",
                    help="viewer file kind")
    cn.add_argument("--device-credential-file", help="a thin client's credential: the viewer "
                    "file follows its profile (else the defaults) and the audit names it")
    cn.set_defaults(func=_connect)

    rc = sub.add_parser("rdp-certificate", help="print an RDP host's certificate fingerprint "
                        "for its [[tenants.hosts]] certificate_sha256")
    rc.add_argument("address")
    rc.add_argument("--port", type=int, default=3389)
    rc.add_argument("--timeout", type=float, default=5.0)
    rc.set_defaults(func=_rdp_certificate)

    t = sub.add_parser("totp", help="print the current one-time code for a secret (demo aid)")
    t.add_argument("secret")
    t.set_defaults(func=_totp)
    return p


def main(argv: list[str] | None = None) -> int:
    # asyncssh still names DSA keys, which the cryptography package calls deprecated on import:
    # ten lines of a library's notice before every command's own (Pforte uses Ed25519 keys)
    warnings.filterwarnings("ignore", message="DSA is deprecated", module="asyncssh")
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from wire.errors import ConfigError
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"pforte: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
