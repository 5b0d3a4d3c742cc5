"""Network servers for tests: OpenSSH ``sshd`` for host control, ``dnsmasq`` for DNS discovery,
and a TCP proxy that a test can cut to simulate a network drop."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path


from .processes import Processes, free_port, require, wait_for_port


class BreakableProxy:
    """A TCP forwarder on loopback whose connections the test can cut, as a failing network
    would; it runs in its own thread so that synchronous browser tests can use it."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self._transports: list = []
        self._stop = asyncio.Event()
        self.down = False        # while True, new connections are cut at once (the network is out)
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready) -> None:

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
            if self.down:
                writer.transport.abort()
                return
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


# -- HAProxy ---------------------------------------------------------------------------------------

SHIPPED_HAPROXY = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "haproxy.cfg"


def haproxy_config(shipped: str, *, portal_port: int, gateway_port: int, brokers: list[int],
                   gateways: list[int]) -> str:
    """The shipped HAProxy configuration on loopback: only the addresses of ``bind`` and
    ``server`` lines (plain HTTP, no certificate, so ``X-Forwarded-Proto`` says http) and the
    log target differ."""
    servers = {
        "backend brokers": [f"    server broker{i} 127.0.0.1:{p}" for i, p in enumerate(brokers, 1)],
        "backend gateways": [  # a resume names the gateway that holds it
            *(f"    use-server gateway{i} if {{ urlp(gateway) -m str gateway{i} }}"
              for i in range(1, len(gateways) + 1)),
            *(f"    server gateway{i} 127.0.0.1:{p}" for i, p in enumerate(gateways, 1))]}
    binds = {"frontend portal": portal_port, "frontend gateways": gateway_port}
    out: list[str] = []
    section = ""
    for line in [*shipped.splitlines(), "end"]:
        words = line.split()
        if line and not line[0].isspace():             # a new section: close the last one
            out.extend(servers.get(section, []))
            section = line.strip()
        if words[:1] == ["log"] and section == "global":
            line = "    log stdout format raw local0"
        elif words[:1] == ["bind"]:
            line = f"    bind 127.0.0.1:{binds[section]}"
        elif words[:3] == ["http-request", "set-header", "X-Forwarded-Proto"]:
            line = "    http-request set-header X-Forwarded-Proto http"
        elif words[:1] in (["server"], ["use-server"]):
            continue
        out.append(line)
    return "\n".join(out[:-1]) + "\n"


@dataclass
class HAProxy:
    """Debian's HAProxy in front of brokers (round robin) and gateways (least connections), run
    with the configuration Pforte ships (``deploy/haproxy/haproxy.cfg``) on loopback."""

    state: Path
    brokers: list[int]
    gateways: list[int]
    portal_port: int = 0
    gateway_port: int = 0

    def start(self, processes: Processes) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.portal_port = self.portal_port or free_port()
        self.gateway_port = self.gateway_port or free_port()

        conf = self.state / "haproxy.cfg"
        rendered = haproxy_config(
            SHIPPED_HAPROXY.read_text(), portal_port=self.portal_port,
            gateway_port=self.gateway_port, brokers=self.brokers, gateways=self.gateways)
        # the tests' own addition: a socket to ask which servers HAProxy counts as up
        conf.write_text(rendered.replace("global\n", f"global\n    stats socket {self.socket}\n",
                                         1))
        proc = processes.start([require("haproxy"), "-db", "-f", str(conf)],
                               log=self.state / "haproxy.log")
        wait_for_port("127.0.0.1", self.portal_port, proc, what="haproxy")

    @property
    def socket(self) -> Path:
        return self.state / "stats.sock"

    def servers_up(self) -> dict[str, bool]:
        """``backend/server`` → whether HAProxy's health checks count it as up now."""
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(self.socket))
            conn.sendall(b"show servers state\n")
            answer = b"".join(iter(lambda: conn.recv(65536), b"")).decode()
        up = {}
        for line in answer.splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[0].isdigit():   # be_id be_name srv_id srv_name addr state
                up[f"{fields[1]}/{fields[3]}"] = fields[5] == "2"
        return up

    async def until_servers(self, up: set[str], timeout: float = 20.0) -> None:
        """Wait until exactly the servers named ``up`` (``backend/server``) are up.

        Raises:
            TimeoutError: HAProxy did not see them so in time.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while {name for name, ok in self.servers_up().items() if ok} != up:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"HAProxy counts as up: {self.servers_up()}")
            await asyncio.sleep(0.1)
