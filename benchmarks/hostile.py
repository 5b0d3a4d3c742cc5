"""Hostile viewers beside ordinary ones: what they cost the relay, and its other users.

200 ordinary sessions do round trips through the relay to the fake desktop (echo), first on a
quiet relay, then beside hostile viewers, each kind in its own generator process for the whole
measurement: ping floods and slow readers inside sessions (they never read), messages of endless
empty fragments before any ticket, and slowloris request heads (a byte a second). Reported per
peer (Pforte's gateway and websockify, in one run): the bystanders' round trip p50/p99 quiet and
under attack, the relay's memory (RSS of its processes) before and at its peak during the
attack, and what the attackers got through. Target (issue 20): memory bounded by the named
limits, the bystanders' p99 within 2x of the quiet run.

Usage: ``.venv/bin/python -m benchmarks.hostile [--attackers 20] [--seconds 15]``; writes
``var/benchmarks/hostile.json`` (``benchmarks/results/`` with ``--record``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks import add_record_option, results_dir
from benchmarks.relay import Generators, Peer, memory_bytes, percentile, start_peers
from testbed import Processes, exit_on_sigterm
from wire.serving import raise_file_limit

BYSTANDERS = 200
ATTACKS = ("pings", "slow_reader", "fragments", "slowloris")
RESULTS = "hostile.json"  # under benchmarks.results_dir()
COMMAND = ".venv/bin/python -m benchmarks.hostile"


async def bystanders(gen: Generators, peer: Peer, iterations: int) -> dict:
    job = peer.job("rtt", conns=BYSTANDERS, iterations=iterations)
    if peer.mint:
        job["tickets"] = peer.mint(BYSTANDERS)
    [result], _ = await gen.run(peer, [job])
    samples = result.get("samples") or [float("nan")]
    return {"p50_ms": round(statistics.median(samples) * 1000, 2),
            "p99_ms": round(percentile(samples, 0.99) * 1000, 2)}


async def measure(gen: Generators, peer: Peer, attackers: int, seconds: float,
                  iterations: int) -> dict:
    quiet = await bystanders(gen, peer, iterations)
    rss_before = memory_bytes(peer.memory)[0]
    jobs = []
    for attack in ATTACKS:
        job = peer.job("hostile", attack=attack, conns=attackers, seconds=seconds)
        if peer.mint and attack in ("pings", "slow_reader"):
            job["tickets"] = peer.mint(attackers * 4)       # for reconnects too
        jobs.append(job)
    procs = [await gen.start(job) for job in jobs]
    await asyncio.sleep(min(3.0, seconds / 4))               # the attack under way
    peak = [rss_before]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], memory_bytes(peer.memory)[0])
            await asyncio.sleep(0.25)
    sampler = asyncio.ensure_future(sample())
    attacked = await bystanders(gen, peer, iterations)
    results = [json.loads((await p.stdout.readline()) or b"{}") for p in procs]
    sampler.cancel()
    for p in procs:
        await p.wait()
    return {"quiet": quiet, "under_attack": attacked,
            "p99_ratio": round(attacked["p99_ms"] / quiet["p99_ms"], 2),
            "rss_before_mib": round(rss_before / 2**20, 1),
            "rss_peak_mib": round(peak[0] / 2**20, 1),
            "attackers": {r.get("attack", "?"): {"connections": r.get("connections"),
                                                 "mib_written": round(r.get("bytes_sent", 0)
                                                                   / 2**20, 1)}
                          for r in results}}


async def run(args: argparse.Namespace) -> dict:
    raise_file_limit()
    state = Path(tempfile.mkdtemp(prefix="pforte-hostile-"))
    processes = Processes()
    try:
        peers = await start_peers(state, processes, {"pforte", "websockify"}, 1, None)
        gen = Generators(state)
        report = {"command": " ".join([COMMAND, *sys.argv[1:]]),
                  "date": datetime.date.today().isoformat(),
                  "bystanders": BYSTANDERS, "attackers_per_kind": args.attackers,
                  "attack_seconds": args.seconds, "peers": {}}
        for peer in peers:
            report["peers"][peer.name] = await measure(gen, peer, args.attackers, args.seconds,
                                                       args.iterations)
            print(peer.name, json.dumps(report["peers"][peer.name]), flush=True)
        return report
    finally:
        processes.stop()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=20, help="connections of each kind")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long they attack")
    parser.add_argument("--iterations", type=int, default=100,
                        help="round trips of each bystander, quiet and under attack")
    add_record_option(parser)
    args = parser.parse_args()
    import uvloop
    report = uvloop.run(run(args))
    (results_dir(args) / RESULTS).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
