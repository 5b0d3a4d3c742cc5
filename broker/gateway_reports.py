"""What gateways report (the mirror of :mod:`broker.gateway_control`, which tells them):
redemptions of tickets, viewers that left, their part of a logon, and the sessions they hold.
A gateway's word counts only for the viewers it proves (see SECURITY.md)."""

from __future__ import annotations

from typing import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wire import reports, ticket
from wire.closes import EndReason
from wire.errors import TicketError

from .admin import Administration
from .audit import AuditLog
from .changes import Changes
from .config import BrokerConfig
from .errors import NotFound
from .logons import LogonPhases
from .store import Redemption, Store


class GatewayReports:
    """The broker's side of the gateways' reports."""

    def __init__(self, config: BrokerConfig, store: Store, audit: AuditLog,
                 admin: Administration, logons: LogonPhases, changes: Changes,
                 ticket_key: Ed25519PublicKey, clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.admin = admin
        self.logons = logons
        self.changes = changes
        self._ticket_key = ticket_key     # checks the outage tickets gateways show as proof
        self.clock = clock

    async def redeem(self, batch: list[reports.Redemption]) -> list[str]:
        """Record tickets' single use, a gateway's batch in one transaction; per ticket
        :data:`~wire.reports.REDEEMED`, or why not (used before, or its session is gone)."""
        decided = await self.store.sessions.redeem_many(
            [(r.ticket_id, r.expires_at, r.tenant, r.user, r.session) for r in batch],
            now=self.clock())
        for r, redemption in zip(batch, decided):
            if redemption is not Redemption.RECORDED:
                await self.audit.record(r.tenant, r.user, "gateway", "ticket.redeem",
                                        redemption.value)
        return [redemption.value for redemption in decided]

    async def disconnected(self, batch: list[reports.Disconnect]) -> None:
        """A gateway's reports (the sessions' states in one transaction); a session the gateway
        ended for idleness is logged off (the pool's ``idle_logoff`` policy, which the ticket
        carried). A report counts only for a viewer the reporting gateway redeemed (it names
        the ticket): another one's is audited and changes nothing."""
        applied = await self.store.sessions.disconnect_many(
            [(r.tenant, r.session, r.ticket) for r in batch], now=self.clock())
        self.changes.bump()
        for report, viewer in zip(batch, applied):
            if viewer:
                await self._after_disconnect(report)
            else:    # not a viewer this gateway redeemed (or one gone already): nothing changes
                await self.audit.record(report.tenant if self.config.tenant(report.tenant)
                                        else "-", report.user or "?", "gateway",
                                        "session.disconnect", "not_a_viewer",
                                        f"session={report.session}")

    async def _after_disconnect(self, report: reports.Disconnect) -> None:
        tenant = self.config.tenant(report.tenant)
        if report.clipboard and tenant is not None:
            counts = " ".join(f"{k}={n}" for k, n in report.clipboard.items())
            blocked = report.clipboard.get("in_blocked", 0) + report.clipboard.get("out_blocked", 0)
            await self.audit.record(tenant.id, report.user or "?", "gateway", "session.clipboard",
                                    "blocked" if blocked else "ok",
                                    f"session={report.session} {counts}")
        if report.reason is EndReason.IDLE and tenant is not None:
            try:
                await self.admin.logoff(tenant, report.session, actor="pforte",
                                        source="gateway", why="idle")
            except NotFound:
                pass

    async def connected(self, connected: list[reports.Connected]) -> None:
        """A gateway's word that sessions' viewers are through: its part of their logons (one
        transaction for the batch)."""
        added = []
        for report in connected:
            phases = {"gateway_redeem": report.redeem_seconds,
                      "desktop_handshake": report.desktop_seconds}
            self.logons.observe_all(phases)
            added.append((report.tenant, report.session, phases))
        await self.store.sessions.add_logons(added)
        self.changes.bump()

    async def alive(self, held: list[reports.Held]) -> list[tuple[str, str]]:
        """A gateway vouches that it holds these sessions: each it proves is connected (see
        :meth:`~broker.store.sessions.Sessions.held`), by the id of a ticket it redeemed for
        that session or by the outage ticket it admitted (signed here, naming the session).
        Returns those ended here, for it to close. One it cannot prove changes nothing and is
        audited: a gateway vouches only for the viewers that came through it."""
        over, unproven = await self.store.sessions.held(
            [(h.tenant, h.session, h.ticket, self._proves_outage_admission(h)) for h in held],
            now=self.clock())
        self.changes.bump()
        for tenant, session_id in unproven:
            await self.audit.record(tenant if self.config.tenant(tenant) else "-", "?",
                                    "gateway", "session.alive", "not_a_viewer",
                                    f"session={session_id}")
        return over

    def _proves_outage_admission(self, held: reports.Held) -> bool:
        """Whether ``held`` shows an outage ticket this broker's key signed for that very
        session and ticket id (at any time: it is evidence, not leave to redeem)."""
        if held.outage_ticket is None:
            return False
        try:
            claims = ticket.signed_claims(self._ticket_key, held.outage_ticket,
                                          audience=self.config.gateway_audience)
        except TicketError:
            return False
        return (claims.outage and claims.tenant == held.tenant
                and claims.session == held.session and claims.ticket_id == held.ticket)
