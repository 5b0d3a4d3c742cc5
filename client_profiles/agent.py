"""The thin-client boot agent: enrol once, then at every boot fetch the profile, sign the user in
(password and one-time code) and start the viewer the profile names.

``python -m client_profiles.agent --broker https://broker.example --state /var/lib/pforte-agent``

Every step that talks to the broker is retried with exponential backoff and full jitter (never in
lockstep with the neighbours that booted at the same second), bounded by ``give_up_after``, and the
user is told in plain words what is happening. Answers that retrying cannot fix — a revoked device,
a wrong password — are not retried.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import aiohttp

from . import connection_files
from .profiles import profile_from_dict
from .tunnel import Tunnel

T = TypeVar("T")

BASE_DELAY = 0.5        # seconds: first retry waits up to this
MAX_DELAY = 30.0        # seconds: no wait is longer
GIVE_UP_AFTER = 600.0   # seconds of retrying before the agent gives up
VIEWERS = {"vnc": ["vncviewer"], "rdp": ["xfreerdp"], "spice": ["remote-viewer"]}


def backoff(attempt: int, rng: random.Random, *, base: float = BASE_DELAY,
            cap: float = MAX_DELAY) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): full jitter over an exponential cap."""
    return rng.uniform(0, min(cap, base * 2 ** attempt))


class Refused(Exception):
    """The broker said no in a way retrying cannot fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Unavailable(Exception):
    """The broker did not answer, or answered that it is busy: try again later."""


@dataclass
class Agent:
    broker_url: str
    state: Path
    ask: Callable[[str, bool], str]          # (prompt, secret) -> answer
    say: Callable[[str], None]
    device_name: str = "thin client"
    enrolment_code: str | None = None
    rng: random.Random = field(default_factory=random.SystemRandom)
    give_up_after: float = GIVE_UP_AFTER
    http: aiohttp.ClientSession | None = None

    @property
    def credential_file(self) -> Path:
        return self.state / "device-credential"

    async def _call(self, method: str, path: str, *, body: dict | None = None,
                    token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self.http.request(method, f"{self.broker_url}{path}", json=body,
                                         headers=headers) as r:
                data = await r.json(content_type=None) if r.content_length != 0 else {}
                if r.status >= 500 or r.status == 429:
                    raise Unavailable(data.get("message", f"broker answered {r.status}"))
                if r.status >= 400:
                    raise Refused(data.get("error", "refused"), data.get("message", "refused"))
                return data or {}
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise Unavailable(f"the server cannot be reached ({type(exc).__name__})") from None

    async def retrying(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run a step until it succeeds, waiting between attempts; Refused passes through."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after
        attempt = 0
        while True:
            try:
                return await step()
            except Unavailable as exc:
                delay = backoff(attempt, self.rng)
                if loop.time() + delay > deadline:
                    raise
                self.say(f"{what}: {exc}. Next try in {delay:.0f} s.")
                await asyncio.sleep(delay)
                attempt += 1

    async def credential(self) -> str:
        if self.credential_file.exists():
            return self.credential_file.read_text().strip()
        code = self.enrolment_code or self.ask("Enrolment code from your IT service desk", False)
        body = await self.retrying("Enrolling this device", lambda: self._call(
            "POST", "/api/v1/devices/enrol", body={"code": code, "name": self.device_name}))
        self.state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.credential_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(body["credential"])
        return body["credential"]

    async def profile(self, credential: str) -> dict:
        return await self.retrying("Loading this device's settings", lambda: self._call(
            "GET", "/api/v1/devices/profile", token=credential))

    async def sign_in(self) -> str:
        """Password, then one-time code; asks again after a wrong answer."""
        while True:
            user = self.ask("Username", False)
            password = self.ask("Password", True)
            try:
                body = await self.retrying("Signing in", lambda: self._call(
                    "POST", "/api/v1/login", body={"username": user, "password": password}))
            except Refused as exc:
                self.say(str(exc))
                continue
            token = body["token"]
            while True:
                code = self.ask("One-time code", False)
                try:
                    await self.retrying("Checking the code", lambda: self._call(
                        "POST", "/api/v1/mfa", body={"code": code}, token=token))
                    return token
                except Refused as exc:
                    self.say(str(exc))
                    if exc.code not in ("code_rejected", "code_replayed"):
                        break

    async def boot(self) -> list[str]:
        """Everything up to the viewer; the command that starts it.

        For native viewers a local tunnel keeps running in this process (see :attr:`tunnel`).
        """
        self.http = self.http or aiohttp.ClientSession()
        credential = await self.credential()
        device = await self.profile(credential)
        profile = device["profile"]
        token = await self.sign_in()
        if profile["viewer"] == "browser":
            return ["chromium", "--kiosk", f"{self.broker_url}/desktops"]
        pools = profile["pools"] or [p["id"] for p in (await self.retrying(
            "Loading your desktops", lambda: self._call("GET", "/api/v1/pools", token=token)))
            ["pools"]]
        if not pools:
            raise Refused("not_entitled", "No desktop has been assigned to you.")
        self.tunnel = Tunnel(self.broker_url, token, pools[0])
        port = await self.tunnel.start()
        file = self.state / f"desktop{connection_files.EXTENSIONS[profile['viewer']]}"
        file.write_text(connection_files.RENDERERS[profile["viewer"]](
            profile_from_dict(profile), "127.0.0.1", port))
        return [*VIEWERS[profile["viewer"]], str(file)]

    async def close(self) -> None:
        if getattr(self, "tunnel", None) is not None:
            await self.tunnel.close()
        if self.http is not None:
            await self.http.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Pforte thin-client boot agent")
    parser.add_argument("--broker", required=True, help="the broker's URL")
    parser.add_argument("--state", default="/var/lib/pforte-agent", help="where the device "
                        "credential is kept")
    parser.add_argument("--name", default=os.uname().nodename, help="this device's name")
    parser.add_argument("--enrolment-code", help="first boot only")
    parser.add_argument("--dry-run", action="store_true", help="print the viewer command")
    args = parser.parse_args()

    def ask(prompt: str, secret: bool) -> str:
        return getpass.getpass(f"{prompt}: ") if secret else input(f"{prompt}: ")

    async def run() -> int:
        agent = Agent(args.broker.rstrip("/"), Path(args.state), ask,
                      lambda m: print(m, flush=True), args.name, args.enrolment_code)
        try:
            command = await agent.boot()
            if args.dry_run:
                print(json.dumps(command))
                return 0
            proc = await asyncio.create_subprocess_exec(*command)
            return await proc.wait()
        except Refused as exc:
            print(str(exc), file=sys.stderr)
            return 1
        except Unavailable as exc:
            print(f"The server cannot be reached: {exc}. Please call your IT service desk.",
                  file=sys.stderr)
            return 2
        finally:
            await agent.close()
    sys.exit(asyncio.run(run()))


if __name__ == "__main__":
    main()
