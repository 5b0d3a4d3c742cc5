"""Time from login to the first desktop frame, in Debian chromium against the real demo.

Runs ``pforte demo`` (real slapd, Xvnc, broker, gateway), then in headless chromium:

* **full login**: click "Sign in" → TOTP page → code → desktop list → "Open" → first desktop pixels
  on the noVNC canvas, once for each enrolled and entitled demo user (a TOTP code is good once, so
  a user can log in once per 30-second step);
* **open desktop**: an already logged-in user opens the desktop page again, ``--repeat`` times:
  page load, noVNC's modules, ticket, gateway, VNC handshake, first pixels.

Usage: ``.venv/bin/python -m benchmarks.login_to_desktop [--repeat 20]``; writes ``var/benchmarks/login_to_desktop.json`` (``benchmarks/results/`` with ``--record``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyotp

from testbed import CHROMIUM, CHROMIUM_ARGS, DemoProcess, wait_for_desktop_colour
from benchmarks import add_record_option, results_dir

RESULTS = "login_to_desktop.json"  # under benchmarks.results_dir()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"n": len(ordered), "median_ms": _ms(statistics.median(ordered)),
            "p95_ms": _ms(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]),
            "min_ms": _ms(ordered[0]), "max_ms": _ms(ordered[-1])}


def run(repeat: int) -> dict:
    from playwright.sync_api import sync_playwright

    demo = DemoProcess(Path(tempfile.mkdtemp(prefix="pforte-bench-")), sys.executable)
    try:
        facts = demo.wait_ready()
        users = [u for u in facts["users"] if u["entitled"] and u["totp_secret"]]
        full, reopen = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for user in users:
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.goto(facts["portal_url"])
                page.get_by_label("Username").fill(user["login"])
                page.get_by_label("Password").fill(user["password"])
                start = time.perf_counter()
                page.get_by_role("button", name="Sign in").click()
                page.get_by_label("One-time code").fill(pyotp.TOTP(user["totp_secret"]).now())
                page.get_by_role("button", name="Confirm").click()
                page.get_by_role("link", name="Open").click()
                if wait_for_desktop_colour(page, poll_ms=5) is None:
                    raise RuntimeError("desktop did not appear")
                full.append(time.perf_counter() - start)
                for _ in range(repeat if user is users[0] else 0):
                    page.goto(facts["portal_url"] + "desktops")
                    start = time.perf_counter()
                    page.get_by_role("link", name="Open").click()
                    if wait_for_desktop_colour(page, poll_ms=5) is None:
                        raise RuntimeError("desktop did not appear")
                    reopen.append(time.perf_counter() - start)
                page.context.close()
            browser.close()
    finally:
        demo.stop()
    return {"full_login_to_first_frame": _summary(full),
            "open_desktop_to_first_frame": _summary(reopen),
            "chromium": CHROMIUM, "machine": "see README (2 cores, loopback)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    add_record_option(parser)
    args = parser.parse_args()
    result = run(args.repeat)
    (results_dir(args) / RESULTS).write_text(json.dumps(result, indent=2) + "\n")
    print("| measurement | n | median | p95 | min | max |\n|---|---|---|---|---|---|")
    for name in ("full_login_to_first_frame", "open_desktop_to_first_frame"):
        r = result[name]
        print(f"| {name.replace('_', ' ')} | {r['n']} | {r['median_ms']} ms | {r['p95_ms']} ms | "
              f"{r['min_ms']} ms | {r['max_ms']} ms |")


if __name__ == "__main__":
    main()
