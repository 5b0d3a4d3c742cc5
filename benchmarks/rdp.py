"""RDP through Pforte, side by side with the same clients going direct, in one run.

Real parts on loopback: slapd with one user, an ``xrdp`` host (TLS; an Xvnc desktop behind it
that opens with her password only) and FreeRDP's shadow server requiring Network Level
Authentication, a Pforte broker and gateway as processes, Debian chromium, ``xfreerdp`` under
Xvfb. Measured:

* **to first pixels**: from starting ``xfreerdp`` until the Xvfb screen shows the desktop's
  colour, direct to the host (the viewer does TLS, and NLA, itself, with the password in its
  arguments: a benchmark's throwaway) and through the local tunnel and the gateway (the gateway
  does the host's TLS and NLA, the viewer is given no password); in chromium from opening the
  desktop page (IronRDP: its WebAssembly start, the ticket, RDCleanPath) to the desktop's colour
  on the canvas (a page has no direct way: it needs a proxy);
* **setups per second**: concurrent RDCleanPath requests (ticket, X.224, the host's TLS — and
  CredSSP for the NLA host — the answer, close), with the gateway's CPU per setup;
* **relay throughput**: a host's bulk after the logon (``benchmarks.bulk_rdp_host``: fast-path
  packets in TLS, as fast as they are taken) to a client through the gateway (which decrypts
  the host's TLS and relays in websocket frames) and direct (the client decrypts), with the
  gateway's CPU seconds per GB and the client's.

Usage: ``.venv/bin/python -m benchmarks.rdp [--rounds 5] [--setups 40] [--bulk-mb 1000]``; writes
``var/benchmarks/rdp.json`` (``benchmarks/results/`` with ``--record``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks import add_record_option, results_dir
from benchmarks.bulk_rdp_host import client_sequence
from broker import mfa
from client.tunnel import Tunnel
from testbed import (CANVAS_COLOUR_JS, CHROMIUM, CHROMIUM_ARGS, Processes, ShadowRdpHost,
                     XrdpDesktop, XvfbScreen, XvncDesktop, directory_of_users, free_port, hex_rgb,
                     require, wait_for_port)
from testbed.demo import DOMAIN, DesktopEntry, rdp_pool_toml, write_config
from wire import rdcleanpath

USER, PASSWORD = "anna", f"Anna-{secrets.token_hex(4)}"
XRDP_COLOUR, NLA_COLOUR = "#1565c0", "#2e7d32"
RESULTS = "rdp.json"
# An X.224 Connection Request as the page's client sends it (the gateway reads its form only).
_CR = b"\xe0\x00\x00\x00\x00\x00" + bytes.fromhex("0100080003000000")
CLIENT_X224 = bytes((3, 0, 0, 5 + len(_CR), len(_CR))) + _CR

def _close(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return all(abs(x - y) <= 8 for x, y in zip(a, b))


def _summary(samples: list[float | None]) -> dict:
    ordered = sorted(s for s in samples if s is not None)
    if not ordered:
        return {"n": 0, "failed": len(samples)}
    return {"n": len(ordered), "failed": len(samples) - len(ordered),
            "median_ms": round(statistics.median(ordered) * 1000, 1),
            "min_ms": round(ordered[0] * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1)}


class Setup:
    """The parts, started; :meth:`stop` ends them all."""

    def __init__(self, state: Path, bulk_bytes: int) -> None:
        self.state = state
        self.bulk_bytes = bulk_bytes
        self.processes = Processes()

    def start(self) -> None:
        p = self.processes
        slapd = directory_of_users(self.state / "slapd", p, "Bench", [USER], PASSWORD)
        self.xrdp = XrdpDesktop(self.state / "xrdp", XvncDesktop(
            self.state / "xrdp-desktop", "Bench RDP", XRDP_COLOUR, password=PASSWORD))
        self.xrdp.start(p)
        self.nla = ShadowRdpHost(self.state / "nla", XvncDesktop(
            self.state / "nla-desktop", "Bench NLA", NLA_COLOUR, password=secrets.token_hex(4)),
            user=USER, password=PASSWORD)
        self.nla.start(p)
        self.bulk_port = free_port()
        bulk = p.start([sys.executable, "-m", "benchmarks.bulk_rdp_host", "--port",
                        str(self.bulk_port), "--cert-dir", str(self.state), "--bytes",
                        str(self.bulk_bytes)], log=self.state / "bulk-host.log")
        wait_for_port("127.0.0.1", self.bulk_port, bulk, what="bulk RDP host")
        self.portal_port, self.gateway_port = free_port(), free_port()
        group = slapd.group_dn("desktop-users")
        more_pools = (rdp_pool_toml("nla", "NLA", group, "nla", self.nla.port,
                                    self.nla.certificate_sha256, seats=1000)
                      + rdp_pool_toml("bulk", "Bulk", group, "bulk", self.bulk_port,
                                      (self.state / "sha256").read_text(), seats=1000))
        config = write_config(
            self.state, slapd=slapd, host="127.0.0.1", portal_port=self.portal_port,
            gateway_port=self.gateway_port, group=group,
            desktops=[DesktopEntry("xrdp", self.xrdp.port, 1000, None, "rdp", options={
                "certificate_sha256": self.xrdp.certificate_sha256})],
            broker_options={"requests_in_flight": 256}, tenant_extra=more_pools)
        for what, port in (("broker", self.portal_port), ("gateway", self.gateway_port)):
            proc = p.start([sys.executable, "-m", "pforte", what, "--config", str(config)],
                           log=self.state / f"{what}.log")
            wait_for_port("127.0.0.1", port, proc, what=what)
            if what == "gateway":
                self.gateway_pid = proc.pid
        self.screen = XvfbScreen(self.state / "xvfb")
        self.screen.start(p)
        self.portal = f"http://127.0.0.1:{self.portal_port}"

    def stop(self) -> None:
        self.processes.stop()


async def sign_in(portal: str, secret: str | None = None) -> tuple[str, str]:
    """Anna's bearer token (enrolling her authenticator the first time) and her TOTP secret."""
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{portal}/api/v1/login", json={"username": f"{USER}@{DOMAIN}",
                                                             "password": PASSWORD})
        token = (await r.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        if secret is None:
            r = await http.get(f"{portal}/api/v1/mfa/enrolment", headers=auth)
            secret = (await r.json())["secret"]
        step = int(time.time()) // mfa.STEP
        for offset in range(0, mfa.DRIFT_STEPS + 1):      # a code not used before
            r = await http.post(f"{portal}/api/v1/mfa", headers=auth, json={
                "code": mfa.current_code(secret, (step + offset) * mfa.STEP)})
            if r.status in (200, 204):
                return token, secret
        raise RuntimeError(f"second factor refused: {r.status} {await r.text()}")


async def first_pixels(screen: XvfbScreen, command: list[str], colour: str,
                       processes: Processes) -> float | None:
    """Seconds from starting the viewer to the desktop's colour on the screen; None when it
    did not come within 15 s (xfreerdp 2 against xrdp sometimes loops on reconnecting, also
    direct: counted as a failure of the round)."""
    want = hex_rgb(colour)
    await asyncio.to_thread(screen.pixel, 900, 600)             # Pillow loaded before timing
    started = time.perf_counter()
    viewer = processes.start(command, env=screen.env, log=screen.state / "xfreerdp.log")
    try:
        while time.perf_counter() - started < 15:
            seen = await asyncio.to_thread(screen.pixel, 900, 600)
            if _close(seen, want):
                return time.perf_counter() - started
            await asyncio.sleep(0.01)
        return None
    finally:
        processes.stop(viewer)
        await asyncio.sleep(0.3)


async def viewer_rounds(setup: Setup, token: str, rounds: int) -> dict:
    xfreerdp = require("xfreerdp")
    results = {}
    for name, host, pool, colour in (("xrdp (TLS)", setup.xrdp, "buero", XRDP_COLOUR),
                                     ("shadow (NLA)", setup.nla, "nla", NLA_COLOUR)):
        direct = [xfreerdp, f"/v:127.0.0.1:{host.port}", f"/u:{USER}", f"/p:{PASSWORD}",
                  "/cert:ignore", "/size:1280x800"]
        tunnel = Tunnel(setup.portal, token, pool)
        port = await tunnel.start()
        through = [xfreerdp, f"/v:127.0.0.1:{port}", "/cert:ignore", "/size:1280x800"]
        try:
            samples = {"direct": [], "Pforte": []}
            for _ in range(rounds):
                samples["direct"].append(await first_pixels(setup.screen, direct, colour,
                                                            setup.processes))
                samples["Pforte"].append(await first_pixels(setup.screen, through, colour,
                                                            setup.processes))
        finally:
            await tunnel.close()
        results[name] = {k: _summary(v) for k, v in samples.items()}
    return results


def browser_rounds(setup: Setup, secret: str, rounds: int) -> dict:
    from playwright.sync_api import sync_playwright
    token, _ = asyncio.run(sign_in(setup.portal, secret))
    samples = {"xrdp (TLS)": [], "shadow (NLA)": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      extra_http_headers={"Authorization": f"Bearer {token}"})
        host = "127.0.0.1"
        context.add_cookies([{"name": "pforte_login", "value": token, "domain": host,
                              "path": "/"}])
        for _ in range(rounds):
            for name, pool, colour in (("xrdp (TLS)", "buero", XRDP_COLOUR),
                                       ("shadow (NLA)", "nla", NLA_COLOUR)):
                page = context.new_page()
                started = time.perf_counter()
                page.goto(f"{setup.portal}/desktop/{pool}")
                while time.perf_counter() - started < 30:
                    seen = page.evaluate(CANVAS_COLOUR_JS)
                    if seen and _close(tuple(seen), hex_rgb(colour)):
                        samples[name].append(time.perf_counter() - started)
                        break
                    page.wait_for_timeout(10)
                else:
                    raise RuntimeError(f"no desktop in the page for {name}")
                page.close()
                time.sleep(0.3)
        browser.close()
    return {k: _summary(v) for k, v in samples.items()}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def setups(setup: Setup, token: str, count: int, concurrency: int) -> dict:
    results = {}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for name, pool in (("xrdp (TLS)", "buero"), ("shadow (NLA)", "nla")):
            tickets = []
            for _ in range(count):
                r = await http.post(f"{setup.portal}/api/v1/pools/{pool}/connect")
                tickets.append((await r.json())["ticket"])
            gate = asyncio.Semaphore(concurrency)

            async def one(ticket: str) -> bool:
                async with gate:
                    ws = await http.ws_connect(f"ws://127.0.0.1:{setup.gateway_port}/ws")
                    await ws.send_bytes(rdcleanpath.encode_request(
                        rdcleanpath.Request(ticket, CLIENT_X224)))
                    answer = await ws.receive()
                    await ws.close()
                    return isinstance(rdcleanpath.decode_response(answer.data),
                                      rdcleanpath.Response)
            cpu = _cpu_seconds(setup.gateway_pid)
            started = time.perf_counter()
            ok = await asyncio.gather(*(one(t) for t in tickets))
            elapsed = time.perf_counter() - started
            cpu = _cpu_seconds(setup.gateway_pid) - cpu
            results[name] = {"setups": count, "succeeded": sum(ok), "concurrency": concurrency,
                             "per_second": round(count / elapsed, 1),
                             "gateway_cpu_ms_per_setup": round(cpu / count * 1000, 2)}
            await asyncio.sleep(1)
    return results


async def _through_gateway(setup: Setup, http: aiohttp.ClientSession) -> int:
    r = await http.post(f"{setup.portal}/api/v1/pools/bulk/connect")
    ticket = (await r.json())["ticket"]
    ws = await http.ws_connect(f"ws://127.0.0.1:{setup.gateway_port}/ws", max_msg_size=0)
    await ws.send_bytes(rdcleanpath.encode_request(rdcleanpath.Request(ticket, CLIENT_X224)))
    if not isinstance(rdcleanpath.decode_response((await ws.receive()).data),
                      rdcleanpath.Response):
        raise RuntimeError("the gateway refused the bulk host")
    for packet in client_sequence():
        await ws.send_bytes(packet)
    received = 0
    while (msg := await ws.receive()).type is aiohttp.WSMsgType.BINARY:
        received += len(msg.data)
    return received


async def _direct(setup: Setup) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.bulk_port)
    writer.write(CLIENT_X224)
    await reader.readexactly(19)                             # the confirm, selecting TLS
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    await writer.start_tls(context)
    for packet in client_sequence():
        writer.write(packet)
    received = 0
    while data := await reader.read(256 * 1024):
        received += len(data)
    writer.close()
    return received


async def relay_rounds(setup: Setup, token: str, rounds: int) -> dict:
    """The bulk host's stream through the gateway and direct, taking turns; MB/s (median),
    and CPU seconds per GB of the gateway (through it) and of this client."""
    samples: dict[str, list[dict]] = {"Pforte": [], "direct": []}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(rounds):
            for name in samples:
                gateway_cpu, client_cpu = _cpu_seconds(setup.gateway_pid), time.process_time()
                started = time.perf_counter()
                received = await (_through_gateway(setup, http) if name == "Pforte"
                                  else _direct(setup))
                elapsed = time.perf_counter() - started
                if received < setup.bulk_bytes:          # the client's own count decides
                    raise RuntimeError(f"{name}: {received} of {setup.bulk_bytes} bytes arrived")
                gb = received / 1e9
                sample = {"MB_per_s": received / 1e6 / elapsed,
                          "client_cpu_s_per_GB": (time.process_time() - client_cpu) / gb}
                if name == "Pforte":
                    sample["gateway_cpu_s_per_GB"] = (
                        _cpu_seconds(setup.gateway_pid) - gateway_cpu) / gb
                samples[name].append(sample)
                await asyncio.sleep(0.5)
    return {name: {"bytes": setup.bulk_bytes, "rounds": rounds,
                   **{key: round(statistics.median(s[key] for s in runs), 2)
                      for key in runs[0]}} for name, runs in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--setups", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--bulk-mb", type=int, default=1000,
                        help="MB the bulk host sends per relay round")
    add_record_option(parser)
    args = parser.parse_args()
    setup = Setup(Path(tempfile.mkdtemp(prefix="pforte-bench-rdp-")), args.bulk_mb * 1_000_000)
    try:
        setup.start()
        token, secret = asyncio.run(sign_in(setup.portal))
        results = {"first_pixels_xfreerdp": asyncio.run(viewer_rounds(setup, token, args.rounds)),
                   "first_pixels_chromium": browser_rounds(setup, secret, args.rounds),
                   "setups": asyncio.run(setups(setup, token, args.setups, args.concurrency)),
                   "relay": asyncio.run(relay_rounds(setup, token, args.rounds)),
                   "cpus": os.cpu_count()}
    finally:
        setup.stop()
    out = results_dir(args) / RESULTS
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
