"""The gateway's counters, rendered for Prometheus at ``/metrics``. Plain integers and floats,
changed only on the event loop."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    handshake_counts: list[int] = field(default_factory=lambda: [0] * len(HANDSHAKE_BUCKETS))
    handshake_sum: float = 0.0
    handshake_total: int = 0
    # clipboard transfers of guarded sessions (gateway/clipboard.py), counted as they happen
    clipboard: dict[str, int] = field(
        default_factory=lambda: {"in": 0, "in_blocked": 0, "out": 0, "out_blocked": 0})

    def refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def handshake(self, seconds: float) -> None:
        self.handshake_total += 1
        self.handshake_sum += seconds
        for i, bound in enumerate(HANDSHAKE_BUCKETS):
            if seconds <= bound:
                self.handshake_counts[i] += 1

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
        lines.append("# TYPE pforte_gateway_handshake_seconds histogram")
        # each bucket already counts every handshake at or below its bound (cumulative)
        lines += [f'pforte_gateway_handshake_seconds_bucket{{le="{bound}"}} {n}'
                  for bound, n in zip(HANDSHAKE_BUCKETS, self.handshake_counts)]
        lines += [f'pforte_gateway_handshake_seconds_bucket{{le="+Inf"}} {self.handshake_total}',
                  f"pforte_gateway_handshake_seconds_sum {self.handshake_sum:.6f}",
                  f"pforte_gateway_handshake_seconds_count {self.handshake_total}"]
        return "\n".join(lines) + "\n"
