"""Prometheus histograms in the text format, for the broker's and the gateway's ``/metrics``.
Plain numbers, changed only on the event loop."""

from __future__ import annotations

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """One metric, with a label that tells its series apart (or none)."""

    def __init__(self, name: str, label: str = "", buckets: tuple[float, ...] = BUCKETS) -> None:
        self.name, self.label, self.buckets = name, label, buckets
        self._series: dict[str, tuple[list[int], list[float]]] = {}  # value → counts, [sum, n]
        if not label:
            self._series[""] = ([0] * len(buckets), [0.0, 0])      # shown from the start

    def observe(self, seconds: float, value: str = "") -> None:
        counts, total = self._series.setdefault(value, ([0] * len(self.buckets), [0.0, 0]))
        total[0] += seconds
        total[1] += 1
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                counts[i] += 1

    def lines(self) -> list[str]:
        out = [f"# TYPE {self.name} histogram"]
        for value, (counts, (total, n)) in sorted(self._series.items()):
            labels = f'{self.label}="{value}",' if self.label else ""
            out += [f'{self.name}_bucket{{{labels}le="{bound}"}} {c}'
                    for bound, c in zip(self.buckets, counts)]
            out += [f'{self.name}_bucket{{{labels}le="+Inf"}} {n}',
                    f"{self.name}_sum{{{labels.rstrip(',')}}} {total:.6f}" if labels else
                    f"{self.name}_sum {total:.6f}",
                    f"{self.name}_count{{{labels.rstrip(',')}}} {n}" if labels else
                    f"{self.name}_count {n}"]
        return out
