"""The control plane to desktop hosts: health probes, user notices and logoff over SSH (asyncssh).

The broker holds one private key; every host's key must be in the configured known_hosts file. A
host whose key changed is refused loudly (logged as an error, marked unhealthy) — never trusted on
first use. Commands come from per-host templates; the values put into them (user names, messages)
are shell-quoted, so a message can never become a command.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import shlex

import asyncssh

from wire.errors import DesktopError
from wire.rfb import StreamLink, authenticate_desktop

from .config import DEFAULT_SSH_TIMEOUT, HostConfig

_SESSION_SECRET = b"pforte per-session desktop v1\0"


def desktop_secret(host: HostConfig, session_id: str) -> bytes | None:
    """The password a session's desktop takes (VNC): the host's own for a desktop it serves to
    all, but for a desktop a multi-session host starts for each user one of that session's own,
    derived from the host's secret and the session's id. A port that the host gives to another
    session's desktop after this one ended then refuses this session's tickets (its outage
    tickets included): a reused port never leads to another user's desktop."""
    if host.secret is None or host.ssh is None or not host.ssh.launch_command:
        return host.secret
    digest = hmac.new(host.secret, _SESSION_SECRET + session_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest())[:8]      # VNC takes 8 characters

logger = logging.getLogger("pforte.hosts")



class HostUnreachable(Exception):
    """SSH to the host failed, its key did not verify, or the command failed."""


class HostControl:
    def __init__(self, private_key: bytes | None, known_hosts: str | None,
                 timeout: float = DEFAULT_SSH_TIMEOUT) -> None:
        self._key = asyncssh.import_private_key(private_key) if private_key else None
        self._known_hosts = known_hosts
        self.timeout = timeout
        self._connections: dict[tuple[str, int, str], asyncssh.SSHClientConnection] = {}
        self._lock = asyncio.Lock()

    async def _connection(self, host: HostConfig) -> asyncssh.SSHClientConnection:
        ssh = host.ssh
        key = (ssh.address, ssh.port, ssh.user)
        async with self._lock:
            conn = self._connections.get(key)
            if conn is None or conn.is_closed():
                try:
                    conn = await asyncio.wait_for(asyncssh.connect(
                        ssh.address, port=ssh.port, username=ssh.user, client_keys=[self._key],
                        known_hosts=self._known_hosts, agent_path=None), self.timeout)
                except asyncssh.HostKeyNotVerifiable as exc:
                    logger.error("host %s: SSH HOST KEY DOES NOT MATCH known_hosts — refused (%s)",
                                 host.id, exc)
                    raise HostUnreachable("host key not verifiable") from None
                except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
                    raise HostUnreachable(type(exc).__name__) from None
                self._connections[key] = conn
            return conn

    async def run(self, host: HostConfig, command: str, stdin: str | None = None) -> str:
        """Run a command on the host (``stdin``: what it reads); its standard output.

        Raises:
            HostUnreachable: no SSH control configured, connection refused, or non-zero exit.
        """
        if host.ssh is None or self._key is None:
            raise HostUnreachable("no SSH control configured for this host")
        conn = await self._connection(host)
        try:
            result = await asyncio.wait_for(conn.run(command, input=stdin, check=False),
                                            self.timeout)
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
            self._connections.pop((host.ssh.address, host.ssh.port, host.ssh.user), None)
            raise HostUnreachable(type(exc).__name__) from None
        if result.exit_status != 0:
            raise HostUnreachable(f"command exited with {result.exit_status}")
        return str(result.stdout or "")

    async def notify(self, host: HostConfig, user: str, message: str) -> bool:
        """Show a message on the user's desktop; False when the host cannot be told."""
        if host.ssh is None or not host.ssh.notify_command:
            return False
        command = host.ssh.notify_command.format(user=shlex.quote(user),
                                                 message=shlex.quote(message))
        try:
            await self.run(host, command)
        except HostUnreachable as exc:
            logger.warning("host %s: notice to %s failed: %s", host.id, user, exc)
            return False
        return True

    async def logoff(self, host: HostConfig, user: str) -> bool:
        """End the user's desktop session on the host; False when the host cannot be told."""
        if host.ssh is None or not host.ssh.logoff_command:
            return False
        try:
            await self.run(host, host.ssh.logoff_command.format(user=shlex.quote(user)))
        except HostUnreachable as exc:
            logger.warning("host %s: logoff of %s failed: %s", host.id, user, exc)
            return False
        return True

    async def launch(self, host: HostConfig, user: str, secret: bytes | None) -> int:
        """Start the user's own desktop on a multi-session host; the port it listens on. The
        desktop's password (:func:`desktop_secret`) is the first line of the command's standard
        input, never on its command line.

        Raises:
            HostUnreachable: the launch failed or printed no port on its last line.
        """
        output = await self.run(host, host.ssh.launch_command.format(user=shlex.quote(user)),
                                stdin=secret.decode() + "\n" if secret is not None else None)
        lines = output.strip().splitlines()
        if not lines or not lines[-1].strip().isdigit() or not 0 < int(lines[-1]) < 65536:
            raise HostUnreachable("launch command printed no port")
        return int(lines[-1])

    async def probe(self, host: HostConfig) -> bool:
        """Healthy: SSH answers (where configured) and the desktop answers on its port.

        A VNC desktop is probed with a complete RFB authentication: TigerVNC blacklists an address
        after a few connections that close before authenticating, and a bare port check would
        thereby lock the broker's machine out of the desktop.
        """
        if host.ssh is not None and self._key is not None:
            try:
                await self.run(host, "true")
            except HostUnreachable:
                return False
        if host.ssh is not None and host.ssh.launch_command:
            return True  # per-user desktops: no fixed display port to probe
        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(host.address, host.port)
                if host.protocol == "vnc":
                    await authenticate_desktop(StreamLink(reader, writer), host.secret)
        except (OSError, asyncio.TimeoutError, ConnectionError, DesktopError):
            return False
        finally:
            if writer is not None:
                writer.close()
        return True

    async def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()
