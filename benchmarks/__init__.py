"""Benchmarks of Pforte's connection hot path, run side by side with peers (see README).

Each writes its results under ``var/benchmarks/`` (not tracked by git); with ``--record`` into
``benchmarks/results/``, where the figures the README quotes are kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
RECORDED = _CHECKOUT / "benchmarks" / "results"
SCRATCH = _CHECKOUT / "var" / "benchmarks"


def add_record_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--record", action="store_true",
                        help="write the results into benchmarks/results/ (tracked by git) "
                             "instead of var/benchmarks/")


def results_dir(args: argparse.Namespace) -> Path:
    """Where this run's results go (made if missing)."""
    out = RECORDED if args.record else SCRATCH
    out.mkdir(parents=True, exist_ok=True)
    return out
