"""Starting and stopping real servers: free ports, waiting for a port, private files, and
:class:`Processes`, which stops exactly the processes it started, by PID (never by name)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path



STARTUP_TIMEOUT = 15.0  # seconds a server has to start listening


class TestbedError(RuntimeError):
    pass


LISTEN_PORTS = (15000, 32767)   # below Linux's ephemeral range (32768-60999) that outgoing
                                # connections take their local ports from


_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port to listen on that nothing holds now, and that this process has not handed out
    before (two ports chosen before either server binds must differ). Chosen below the ephemeral
    range: a port the kernel hands out for port 0 may be taken by an outgoing connection before a
    server binds it."""
    for _ in range(1000):
        port = random.randint(*LISTEN_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise TestbedError("no free port below the ephemeral range")


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
