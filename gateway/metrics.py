"""The gateway's counters, rendered for Prometheus at ``/metrics``. Plain integers and floats,
changed only on the event loop."""

from __future__ import annotations

from dataclasses import dataclass, field

from wire.metrics import Histogram

HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Metrics:
    sessions_open: int = 0
    sessions_total: int = 0
    sessions_detached: int = 0
    resumes: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    handshakes: Histogram = field(default_factory=lambda: Histogram(
        "pforte_gateway_handshake_seconds", buckets=HANDSHAKE_BUCKETS))
    # clipboard transfers of guarded sessions (gateway/clipboard.py), counted as they happen
    clipboard: dict[str, int] = field(
        default_factory=lambda: {"in": 0, "in_blocked": 0, "out": 0, "out_blocked": 0})

    def refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def handshake(self, seconds: float) -> None:
        self.handshakes.observe(seconds)

    def prometheus(self) -> str:
        lines = [
            "# TYPE pforte_gateway_sessions_open gauge",
            f"pforte_gateway_sessions_open {self.sessions_open}",
            "# TYPE pforte_gateway_sessions_total counter",
            f"pforte_gateway_sessions_total {self.sessions_total}",
            "# TYPE pforte_gateway_sessions_detached gauge",
            f"pforte_gateway_sessions_detached {self.sessions_detached}",
            "# TYPE pforte_gateway_resumes_total counter",
            f"pforte_gateway_resumes_total {self.resumes}",
            "# TYPE pforte_gateway_bytes_total counter",
            f'pforte_gateway_bytes_total{{direction="up"}} {self.bytes_up}',
            f'pforte_gateway_bytes_total{{direction="down"}} {self.bytes_down}',
            "# TYPE pforte_gateway_refusals_total counter",
        ]
        lines += [f'pforte_gateway_refusals_total{{reason="{r}"}} {n}'
                  for r, n in sorted(self.refusals.items())]
        lines.append("# TYPE pforte_gateway_clipboard_total counter")
        for what, n in self.clipboard.items():
            direction, _, blocked = what.partition("_")
            lines.append(f'pforte_gateway_clipboard_total{{direction="{direction}",'
                         f'result="{blocked or "allowed"}"}} {n}')
        lines += self.handshakes.lines()
        return "\n".join(lines) + "\n"
