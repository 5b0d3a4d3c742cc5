"""A relayed session from its relay on to its end: the relay attached to a viewer, the session
held for a resume when its viewer's connection broke (resumable sessions), reattached to a new
one, and ended — once, with the desktop's connection closed, the counters added up and the
broker told (a :class:`wire.reports.Disconnect` naming the viewer's ticket). The session's
states are :mod:`gateway.session_table`'; this is what happens around them.
"""

from __future__ import annotations

import logging
from typing import Callable

from wire import events
from wire.closes import Close, EndReason
from wire.resume import CannotResume, Resumed, encode
from wire.ticket import Claims

from .broker_client import BrokerClient
from .config import GatewayConfig
from .metrics import Metrics
from .relay import Counters
from .session_table import RelaySession, SessionTable, State
from .viewer import ViewerLink

logger = logging.getLogger("pforte.gateway")


class Relaying:
    """The relayed sessions' way to their end."""

    def __init__(self, config: GatewayConfig, table: SessionTable, metrics: Metrics,
                 broker: BrokerClient, draining: Callable[[], bool]) -> None:
        self.config = config
        self.table = table
        self.metrics = metrics
        self.broker = broker
        self.draining = draining          # a draining gateway holds no session for a resume

    def relay(self, viewer: ViewerLink, session: RelaySession) -> None:
        """Relay while this websocket lasts (:meth:`_relay_ended` follows)."""
        session.link.attach(viewer, lambda v, reason: self._relay_ended(session, v, reason))

    def _relay_ended(self, session: RelaySession, viewer: ViewerLink, reason: EndReason) -> None:
        """The relay on ``viewer`` ended: end the session, or hold it for a resume."""
        if session.ws is not viewer or session.state is State.ENDED:
            return  # superseded (a resumed connection carries the session on), or ended here
        if (reason is EndReason.CLIENT_LOST and session.token is not None
                and not self.draining()):
            self.table.drop(session, self.config.resume_grace, self._grace_over)
            events.log(logger, "session.dropped", session=session.claims.session,
                       tenant=session.claims.tenant, held_seconds=self.config.resume_grace)
            return
        if reason is EndReason.POLICY:
            logger.warning("session %s: %s (%s)", session.claims.session, Close.POLICY.reason,
                           session.link.violation)
            self.metrics.refused(Close.POLICY.word)
            viewer.close_with(Close.POLICY)
        else:
            viewer.close_with(Close.ENDED)
        self.end(session, reason)

    def reattach(self, viewer: ViewerLink, session: RelaySession, offset: int) -> None:
        """A resume: the viewer takes the held session over from ``offset`` on (what it missed
        is replayed), or, when that is gone from the replay buffer, the session ends (4410)."""
        try:
            replay = session.link.replay.since(offset)
        except CannotResume:
            self.metrics.refused(Close.RESUME.word)
            viewer.close_with(Close.RESUME)
            self.close_and_end(session, EndReason.RESUME_IMPOSSIBLE, Close.RESUME)
            return
        old = self.table.reattach(session, viewer)
        if old is not None:
            # The old connection has not noticed the drop yet (a dead Wi-Fi can take a while):
            # the new one takes over, the old one is closed.
            old.close_with(Close.SUPERSEDED)
        viewer.send_text(encode(Resumed(session.link.counters.up)))
        for chunk in replay:
            viewer.send_binary(chunk)
        if session.notice is not None:
            viewer.send_text(session.notice)
        self.metrics.resumes += 1
        events.log(logger, "session.resumed", session=session.claims.session,
                   tenant=session.claims.tenant)
        self.relay(viewer, session)

    def close_and_end(self, session: RelaySession, reason: EndReason, close: Close) -> None:
        """The gateway ends the session for ``reason`` (the broker hears that one), then closes
        an attached one's websocket with ``close``."""
        viewer = session.ws
        self.end(session, reason)
        if viewer is not None:
            viewer.close_with(close)

    def log_off(self, session_id: str, tenant: str | None = None) -> None:
        """Close a session's connections here (and any held for a resume): it is over."""
        for session in self.table.with_id(session_id):
            if tenant is None or session.claims.tenant == tenant:
                self.close_and_end(session, EndReason.LOGGED_OFF, Close.LOGOFF)

    def _grace_over(self, session: RelaySession) -> None:
        self.end(session, EndReason.NOT_RESUMED)

    def end(self, session: RelaySession, reason: EndReason) -> None:
        """The session is over: close the desktop connection and tell the broker (once)."""
        if not self.table.end(session):
            return
        session.link.close()
        guard = session.link.guard
        self.ended(session.claims, session.link.counters, reason,
                   guard.counts if guard is not None else None)

    def ended(self, claims: Claims, counters: Counters, reason: EndReason,
              clipboard: dict[str, int] | None = None) -> None:
        """Count a session's end and tell the broker: also of one that never began to relay
        (its desktop could not be reached)."""
        self.metrics.sessions_open -= 1
        self.metrics.bytes_up += counters.up
        self.metrics.bytes_down += counters.down
        events.log(logger, "session.end", session=claims.session, tenant=claims.tenant,
                   user=claims.user, reason=reason.value, bytes_up=counters.up,
                   bytes_down=counters.down)
        self.broker.disconnected(claims, counters, reason, clipboard)
