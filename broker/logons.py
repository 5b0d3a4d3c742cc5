"""How long each phase of a logon took — what helpdesk asks when a user says "it took ages this
morning" (Citrix Director's logon duration). The phases, in the order a logon goes through them:

* ``directory_search``, ``directory_bind``, ``directory_groups``: finding the user, checking the
  password, reading the groups (the tenant's directory);
* ``second_factor``: checking the one-time code (the broker's work, not the user's typing);
* ``placement``: choosing a seat; ``desktop_start``: launching the user's desktop over SSH (hosts
  that launch one); ``ticket``: minting the ticket;
* ``gateway_redeem``: the gateway admitting the ticket (verify and redeem at a broker);
  ``desktop_handshake``: reaching the desktop and its VNC authentication.

Each is stored with the session (the console shows them; a logon whose phases add up to more than
:data:`SLOW_LOGON` is marked slow) and counted in histograms on the broker's ``/metrics``.
"""

from __future__ import annotations

from wire.metrics import Histogram

PHASES = ("directory_search", "directory_bind", "directory_groups", "second_factor",
          "placement", "desktop_start", "ticket", "gateway_redeem", "desktop_handshake")
SLOW_LOGON = 10.0   # seconds of Pforte's own work (and the directory's, the desktop's) per logon


class LogonPhases:
    """The broker's histograms of logon phases."""

    def __init__(self) -> None:
        self.histogram = Histogram("pforte_broker_logon_phase_seconds", label="phase")

    def observe_all(self, phases: dict[str, float]) -> None:
        for phase, seconds in phases.items():
            self.histogram.observe(seconds, phase)

    def prometheus(self) -> str:
        return "\n".join(self.histogram.lines()) + "\n"


def summary(phases: dict[str, float]) -> dict:
    """A session's logon as the console shows it: each phase in milliseconds, the total, and
    whether it was slow."""
    total = sum(phases.values())
    return {"phases_ms": {p: round(phases[p] * 1000, 1) for p in PHASES if p in phases},
            "total_ms": round(total * 1000, 1), "slow": total > SLOW_LOGON}
