"""What a pool's clipboard policy costs the gateway: the guard's walk over a desktop's stream.

A guarded session (policy other than ``both``) passes every chunk the desktop sends through
``gateway.clipboard.ClipboardGuard``. This measures the walk alone, in this process, on a stream
shaped like a busy desktop's — framebuffer updates of 16 ZRLE rectangles of 4 KiB each, with a
cursor and a bell now and then, cut into the 64 KiB reads the relay gets under load — beside what
it costs to pass the same chunks untouched (``both``: no guard at all). The relay's own figures
(syscalls, framing) are ``benchmarks.relay``'s.

Usage: ``.venv/bin/python -m benchmarks.clipboard_guard [--megabytes 256]``; writes ``var/benchmarks/clipboard_guard.json`` (``benchmarks/results/`` with ``--record``).
"""

from __future__ import annotations

import argparse
import json
import struct
import time

from gateway.clipboard import ClipboardGuard
from benchmarks import add_record_option, results_dir

RESULTS = "clipboard_guard.json"  # under benchmarks.results_dir()
READ = 64 * 1024


def update(rects: int, payload: int) -> bytes:
    data = bytes(payload)
    body = b"".join(struct.pack("!HHHHiI", 0, 0, 64, 64, 16, payload) + data
                    for _ in range(rects))
    return struct.pack("!BxH", 0, rects) + body


def stream(megabytes: int) -> list[bytes]:
    init = struct.pack("!HHBBBBHHHBBBxxxI", 1920, 1080, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0,
                       4) + b"desk"
    cursor = struct.pack("!BxH", 0, 1) + struct.pack("!HHHHi", 0, 0, 16, 16, -239) + bytes(
        16 * 16 * 4 + 2 * 16)
    piece = update(16, 4096) + cursor + b"\x02"
    whole = init + piece * (megabytes * 1024 * 1024 // len(piece))
    return [whole[i:i + READ] for i in range(0, len(whole), READ)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=256)
    add_record_option(parser)
    args = parser.parse_args()
    chunks = stream(args.megabytes)
    total = sum(map(len, chunks))

    guard = ClipboardGuard("none")
    started = time.process_time()
    for chunk in chunks:
        guard.desktop.feed(chunk)
    guarded = time.process_time() - started

    started = time.process_time()
    for chunk in chunks:
        bytes(chunk)                     # what "both" does with a chunk: nothing but hand it on
    untouched = time.process_time() - started

    result = {
        "stream_megabytes": round(total / 1e6, 1), "read_bytes": READ,
        "guard_cpu_s_per_gb": round(guarded / total * 1e9, 3),
        "guard_us_per_64k_read": round(guarded / len(chunks) * 1e6, 2),
        "untouched_cpu_s_per_gb": round(untouched / total * 1e9, 3),
        "guard_throughput_mb_s": round(total / guarded / 1e6, 1),
    }
    (results_dir(args) / RESULTS).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
