"""What a user sees while a gateway is upgraded: in Debian chromium, a user works on a desktop
through HAProxy → two brokers (PostgreSQL) → two gateways; the gateway carrying the desktop gets
SIGTERM (as an upgrade does), drains for ``drain_timeout`` seconds, closes the session with 1001,
and the page opens the desktop again — the same session, through the other gateway, with no new
sign-in. Measured: how long the desktop is not on screen (from the moment its picture goes until it
is back), ``--repeat`` times, alternating which gateway is upgraded (it is started again after).

Usage: ``.venv/bin/python -m benchmarks.rolling_upgrade [--repeat 5]``; writes ``var/benchmarks/rolling_upgrade.json`` (``benchmarks/results/`` with ``--record``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks import boot_storm, fleet_storm
from broker.config import load_config
from testbed import (CANVAS_COLOUR_JS, CHROMIUM, CHROMIUM_ARGS, HAProxy, Postgres, Processes,
                     XvncDesktop, directory_of_users, free_port, wait_for_desktop_colour,
                     wait_for_port)
from wire.serving import raise_file_limit
from benchmarks import add_record_option, results_dir

RESULTS = "rolling_upgrade.json"  # under benchmarks.results_dir()
DRAIN = 3.0   # the gateways' drain_timeout here (30 s by default)


def _open_sessions(port: int) -> int:
    """Sessions a gateway holds, from its metrics (plain urllib: playwright owns the loop)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return int(next(line.split()[1] for line in text.splitlines()
                    if line.startswith("pforte_gateway_sessions_open ")))


def run(repeat: int) -> dict:
    from playwright.sync_api import sync_playwright
    raise_file_limit()
    state = Path(tempfile.mkdtemp(prefix="pforte-rolling-"))
    processes, postgres = Processes(), Postgres()
    gaps: list[float] = []
    try:
        slapd = directory_of_users(state / "slapd", processes, "Rolling", ["anna"],
                                   boot_storm.PASSWORD)
        desktop = XvncDesktop(state / "desk", "Rathaus", "#2e7d32", secrets.token_hex(4))
        desktop.start(processes)
        postgres.start(processes)
        (state / "pg.pass").write_text(postgres.password)
        ports = {k: free_port() for k in ("broker0", "broker1", "gateway0", "gateway1",
                                          "lb_portal", "lb_gateway")}
        portal = f"http://127.0.0.1:{ports['lb_portal']}"
        first, second = fleet_storm.make_configs(
            state, slapd, [desktop], 10, ports,
            {"database": postgres.create_database("rolling"),
             "database_password_file": str(state / "pg.pass")})
        for config in (first, second):  # browsers come through the balancer; quick drains
            config.write_text(config.read_text().replace(
                f'allowed_origins = ["http://127.0.0.1:{ports["broker0"]}"]',
                f'allowed_origins = ["{portal}"]\ndrain_timeout = {DRAIN}'))
        totp, _ = asyncio.run(boot_storm.enrol_clients(load_config(first), ["anna"]))
        fleet = fleet_storm.Fleet(state, processes, first, second, ports)
        fleet.start()
        HAProxy(state / "haproxy", [ports["broker0"], ports["broker1"]],
                [ports["gateway0"], ports["gateway1"]], ports["lb_portal"],
                ports["lb_gateway"]).start(processes)
        time.sleep(1.5)
        import pyotp
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(portal + "/login")
            page.get_by_label("Username").fill("anna@musterstadt.example")
            page.get_by_label("Password").fill(boot_storm.PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_label("One-time code").fill(pyotp.TOTP(totp["anna"]).now())
            page.get_by_role("button", name="Confirm").click()
            page.get_by_role("link", name="Open").click()
            if wait_for_desktop_colour(page) is None:
                raise RuntimeError("the desktop did not appear")
            for _ in range(repeat):
                which = next(i for i in (0, 1) if _open_sessions(ports[f"gateway{i}"]))
                fleet.gateways[which].send_signal(signal.SIGTERM)
                gone = back = None
                deadline = time.monotonic() + DRAIN + 30
                while back is None and time.monotonic() < deadline:
                    colour = page.evaluate(CANVAS_COLOUR_JS)
                    shown = bool(colour) and colour != [0, 0, 0]
                    now = time.monotonic()
                    if gone is None and not shown:
                        gone = now
                    elif gone is not None and shown:
                        back = now
                    page.wait_for_timeout(10)
                if back is None:
                    raise RuntimeError("the desktop did not come back")
                gaps.append(back - gone)
                fleet.gateways[which].wait(30)  # restart the upgraded gateway
                fleet.gateways[which] = processes.start(
                    [sys.executable, "-m", "pforte", "--log-level", "WARNING", "gateway",
                     "--config", str(fleet.configs[which])],
                    log=state / f"gateway{which}-again.log")
                wait_for_port("127.0.0.1", ports[f"gateway{which}"], fleet.gateways[which],
                              what="gateway")
                time.sleep(1.5)  # HAProxy sees it ready again
            browser.close()
    finally:
        processes.stop()
        postgres.remove()
        shutil.rmtree(state, ignore_errors=True)
    ordered = sorted(gaps)
    return {"upgrades": len(gaps), "desktop_not_on_screen_s": {
        "median": round(statistics.median(ordered), 2), "max": round(ordered[-1], 2),
        "all": [round(g, 2) for g in gaps]},
        "drain_timeout_s": DRAIN, "path": "HAProxy, 2 brokers on PostgreSQL, 2 gateways"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    add_record_option(parser)
    args = parser.parse_args()
    result = run(args.repeat)
    (results_dir(args) / RESULTS).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
