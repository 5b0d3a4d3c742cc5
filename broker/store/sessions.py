"""Sessions and seats: placing a user on a host (one transaction per pool, so no host is ever
over its seats), redeeming tickets once, the session timers, and dedicated hosts."""

from __future__ import annotations

import enum
import json
import os
import random
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence, TypeVar

from ..engine import Tx
from ..placement import (Candidate, HostLoad, NewSession, OwnHostDown, PoolBusy, PoolFull,
                         Reconnect, Refusal, place)
from ..session_states import LIVE_STATES, Event, InvalidTransition, State, bulk, next_state
from .base import Repository

T = TypeVar("T")


def _values(states: Sequence[State]) -> tuple[str, ...]:
    return tuple(s.value for s in states)


def _marks(states: Sequence[State]) -> str:
    return ",".join("?" * len(states))


_LIVE = _values(LIVE_STATES)


def _by_session(rows: Sequence[T], session_of: Callable[[T], str]) -> list[int]:
    """The indexes of ``rows`` in the order of their session ids: a batch that writes several
    sessions' rows locks them in the one order every batch uses, so two batches (and a batch
    and a lease renewal) never wait for each other in a circle on PostgreSQL."""
    return sorted(range(len(rows)), key=lambda i: session_of(rows[i]))
_LIVE_SQL = _marks(LIVE_STATES)


@dataclass(frozen=True)
class SessionRow:
    id: str
    tenant: str
    login: str
    pool: str
    host: str
    state: State
    created: float


_ROW_COLUMNS = "id, tenant, login, pool, host, state, created"


def _session_row(row: Sequence[Any]) -> SessionRow:
    """A :class:`SessionRow` from the columns :data:`_ROW_COLUMNS` names."""
    return SessionRow(row[0], row[1], row[2], row[3], row[4], State(row[5]), row[6])


@dataclass(frozen=True)
class Assignment:
    session_id: str
    host_id: str
    reconnect: bool
    port: int | None = None      # the user's own desktop's port, once launched


class Redemption(enum.Enum):
    """How a ticket's redemption was decided (the words are the gateways' answers,
    :mod:`wire.reports`)."""
    RECORDED = "redeemed"
    REPLAYED = "replayed"                  # the ticket was redeemed before, by any gateway
    UNKNOWN_SESSION = "unknown_session"    # no live session of that tenant and user has that id


class Sessions(Repository):

    async def assign(self, tenant: str, login: str, pool: str,
                     hosts: Sequence[Candidate], *, now: float, pending_timeout: int,
                     keep_seconds: int, reconnect_hosts: set[str] | None = None,
                     max_in_flight: int = 0, dedicated: bool = False,
                     rng: random.Random | None = None) -> Assignment | Refusal:
        """Place the user in the pool atomically: a seat, or why not (:data:`Refusal`:
        full; seats free only on hosts at their ``max_in_flight`` cap; a dedicated pool's user
        whose own host takes no sessions now).

        In a dedicated pool the user's own host (assigned at the first placement, or by an admin)
        is the only candidate.

        Args:
            hosts: the pool's hosts (plain ``(host id, seats, accepting)`` tuples will do).
            reconnect_hosts: hosts a user may return to (None: all); a session on any other host
                is ended and the user placed afresh.
        """
        rng = rng or random.Random()
        hosts = [Candidate(*h) for h in hosts]

        def q(db: Tx) -> Assignment | Refusal:
            row = db.execute(
                f"SELECT id, host, state, port FROM sessions WHERE tenant=? AND login=? AND pool=? "
                f"AND state IN ({_LIVE_SQL}) ORDER BY created LIMIT 1",
                (tenant, login, pool, *_LIVE)).fetchone()
            if row and reconnect_hosts is not None and row[1] not in reconnect_hosts:
                db.execute("UPDATE sessions SET state=?, deadline=NULL, updated=? WHERE id=?",
                           (next_state(State(row[2]), Event.END).value, now, row[0]))
                row = None
            existing = Reconnect(row[0], row[1]) if row else None
            own = db.execute("SELECT host FROM dedicated WHERE tenant=? AND pool=? AND login=?",
                             (tenant, pool, login)).fetchone() if dedicated else None
            candidates = [h for h in hosts if h.host_id == own[0]] if own else hosts
            counts, pending = {}, {}
            for host, state, n in db.execute(
                    f"SELECT host, state, COUNT(*) FROM sessions WHERE tenant=? AND pool=? "
                    f"AND state IN ({_LIVE_SQL}) GROUP BY host, state", (tenant, pool, *_LIVE)):
                counts[host] = counts.get(host, 0) + n
                if state == State.PENDING.value:
                    pending[host] = n
            loads = [HostLoad(h.host_id, h.seats, counts.get(h.host_id, 0), h.accepting,
                              pending.get(h.host_id, 0), max_in_flight) for h in candidates]
            decision = place(existing, loads, tie_break=rng.choice)
            if isinstance(decision, PoolFull) and own:
                return OwnHostDown(own[0])
            if isinstance(decision, (PoolFull, PoolBusy)):
                return decision
            if isinstance(decision, Reconnect):
                if row[2] == State.PENDING.value:  # a fresh ticket: hold the seat a while longer
                    db.execute("UPDATE sessions SET deadline=?, updated=? WHERE id=?",
                               (now + pending_timeout, now, decision.session_id))
                return Assignment(decision.session_id, decision.host_id, reconnect=True,
                                  port=row[3])
            assert isinstance(decision, NewSession)
            if dedicated and not own:
                db.execute("INSERT INTO dedicated VALUES (?,?,?,?)",
                           (tenant, pool, login, decision.host_id))
            session_id = os.urandom(12).hex()
            db.execute("INSERT INTO sessions (id, tenant, login, pool, host, state, viewers, "
                       "keep_seconds, created, updated, deadline) VALUES (?,?,?,?,?,?,0,?,?,?,?)",
                       (session_id, tenant, login, pool, decision.host_id, State.PENDING.value,
                        keep_seconds, now, now, now + pending_timeout))
            return Assignment(session_id, decision.host_id, reconnect=False)
        return await self._write(q, locks=[f"pool:{tenant}/{pool}"])

    async def redeem_many(self, tickets: Sequence[tuple[str, int, str, str, str]], *,
                          now: float) -> list[Redemption]:
        """Record tickets (ticket id, expiry, tenant, login, session) as used and their sessions
        as connected, in one transaction — a gateway's redemptions of the same moment: one
        commit for all of them. Each is decided on its own, atomically."""
        def q(db: Tx) -> list[Redemption]:
            results = [Redemption.RECORDED] * len(tickets)
            for i in _by_session(tickets, lambda t: t[4]):
                results[i] = redeem_in(db, *tickets[i], now)
            return results
        return await self._write(q, locks=sorted({f"session:{t[4]}" for t in tickets}))

    async def disconnect_many(self, left: Sequence[tuple[str, str, str]], *,
                              now: float) -> list[bool]:
        """Viewers left, named (tenant, session, the id of the ticket whose redemption made the
        viewer), in one transaction: the session becomes disconnected when it was the last one.
        A viewer that was never redeemed here under that ticket (another gateway's, made up, or
        gone already) changes nothing: per viewer, whether it was one."""
        def q(db: Tx) -> list[bool]:
            applied = [False] * len(left)
            for i in _by_session(left, lambda t: t[1]):
                tenant, session_id, ticket_id = left[i]
                if not ticket_id or db.execute(
                        "DELETE FROM viewers WHERE ticket_id=? AND session_id=? AND tenant=?",
                        (ticket_id, session_id, tenant)).rowcount != 1:
                    continue
                applied[i] = True
                row = db.execute("SELECT state, viewers, keep_seconds FROM sessions "
                                 "WHERE id=? AND tenant=?", (session_id, tenant)).fetchone()
                if row is None or row[0] != State.CONNECTED.value:
                    continue
                viewers = max(row[1] - 1, 0)
                state = (State.CONNECTED if viewers
                         else next_state(State.CONNECTED, Event.DISCONNECT))
                deadline = None if viewers else now + row[2]
                db.execute("UPDATE sessions SET state=?, viewers=?, deadline=?, updated=? "
                           "WHERE id=?", (state.value, viewers, deadline, now, session_id))
            return applied
        return await self._write(q, locks=sorted({f"session:{t[1]}" for t in left}))

    async def held(self, sessions: Sequence[tuple[str, str, str, bool]], *,
                   now: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """A gateway vouches that it holds these: (tenant, session, a viewer's ticket id, whether
        it is an outage ticket whose signature the broker checked). Each live one it proves (a
        viewer under that ticket, or a checked outage ticket, then recorded) is connected from
        now on: lease renewed, a pending or disconnected one's timer off. Returns those ended or
        unknown (no seat: the gateway closes them) and those live but unproven (unchanged)."""
        vouched, connected = bulk(Event.CONNECT)

        live = f"state IN ({_marks(vouched)})"

        def q(db: Tx) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
            over, unproven = [], []
            for i in _by_session(sessions, lambda t: t[1]):
                tenant, session_id, ticket_id, outage_ticket = sessions[i]
                if outage_ticket:           # (rare) its viewer is recorded, if the session lives
                    db.execute(f"INSERT INTO viewers SELECT ?,?,?,? WHERE EXISTS (SELECT 1 FROM "
                               f"sessions WHERE tenant=? AND id=? AND {live}) "
                               f"ON CONFLICT (ticket_id) DO NOTHING",
                               (ticket_id, tenant, session_id, now, tenant, session_id,
                                *_values(vouched)))
                if ticket_id and db.execute(  # the common case: one statement
                        f"UPDATE sessions SET state=?, viewers=CASE WHEN viewers<1 THEN 1 ELSE "
                        f"viewers END, deadline=NULL, updated=? WHERE tenant=? AND id=? AND "
                        f"{live} AND EXISTS (SELECT 1 FROM viewers WHERE ticket_id=? AND "
                        f"session_id=? AND tenant=?)",
                        (connected.value, now, tenant, session_id, *_values(vouched), ticket_id,
                         session_id, tenant)).rowcount == 1:
                    continue
                row = db.execute(f"SELECT 1 FROM sessions WHERE tenant=? AND id=? AND {live}",
                                 (tenant, session_id, *_values(vouched))).fetchone()
                (unproven if row else over).append((tenant, session_id))
            return over, unproven
        return await self._write(q, locks=sorted({f"session:{t[1]}" for t in sessions}))

    async def expire(self, now: float, *, gateway_lease: float = float("inf"),
                     keep_history: float = float("inf")) -> int:
        """Apply the timers: end sessions whose time ran out, count connected sessions no gateway
        vouched for within ``gateway_lease`` seconds as disconnected, forget old tickets."""
        unvouched, left = bulk(Event.DISCONNECT)       # the last viewer is gone with its gateway
        timed_out, over = bulk(Event.EXPIRE)

        def q(db: Tx) -> int:
            db.execute(f"UPDATE sessions SET state=?, viewers=0, deadline=?+keep_seconds, "
                       f"updated=? WHERE state IN ({_marks(unvouched)}) AND updated<?",
                       (left.value, now, now, *_values(unvouched), now - gateway_lease))
            cur = db.execute(
                f"UPDATE sessions SET state=?, deadline=NULL, updated=? WHERE deadline IS NOT "
                f"NULL AND deadline<=? AND state IN ({_marks(timed_out)})",
                (over.value, now, now, *_values(timed_out)))
            ended = cur.rowcount
            db.execute("DELETE FROM tickets WHERE expires_at<?", (now - 60,))
            db.execute("DELETE FROM viewers WHERE since<? AND NOT EXISTS (SELECT 1 FROM "
                       f"sessions WHERE sessions.id=viewers.session_id AND sessions.state IN "
                       f"({_LIVE_SQL}))", (now - 60, *_LIVE))   # gone with their session
            db.execute("DELETE FROM logins WHERE expires<=?", (now,))
            if keep_history != float("inf"):
                db.execute("DELETE FROM sessions WHERE state=? AND updated<?",
                           (State.ENDED.value, now - keep_history))
            return ended
        return await self._write(q)

    async def live(self, tenant: str, *, login: str | None = None) -> list[SessionRow]:
        def q(db: Tx) -> list[SessionRow]:
            sql = (f"SELECT {_ROW_COLUMNS} FROM sessions "
                   f"WHERE tenant=? AND state IN ({_LIVE_SQL})")
            args: list[Any] = [tenant, *_LIVE]
            if login is not None:
                sql += " AND login=?"
                args.append(login)
            return [_session_row(r) for r in db.execute(sql + " ORDER BY created", args)]
        return await self._read(q)

    async def connected_desktop(self, tenant: str, login: str,
                                pool: str) -> Assignment | None:
        """The user's connected session in the pool (its host, and its own desktop's port when
        the host started one for it); None when she has none connected."""
        def q(db: Tx) -> Assignment | None:
            row = db.execute("SELECT id, host, port FROM sessions WHERE tenant=? AND login=? "
                             "AND pool=? AND state=?",
                             (tenant, login, pool, State.CONNECTED.value)).fetchone()
            return Assignment(row[0], row[1], reconnect=True, port=row[2]) if row else None
        return await self._read(q)

    async def history(self, tenant: str, since: float, until: float) -> list[tuple[str, float,
                                                                                  float | None]]:
        """(pool, start, end or None while live) of the tenant's sessions that overlap
        ``[since, until)`` (for usage; ended sessions are kept for ``session_history_days``)."""
        def q(db: Tx) -> list[tuple[str, float, float | None]]:
            rows = db.execute(
                "SELECT pool, created, CASE WHEN state=? THEN updated END FROM sessions "
                "WHERE tenant=? AND created<? AND (state<>? OR updated>=?) ORDER BY created",
                (State.ENDED.value, tenant, until, State.ENDED.value, since)).fetchall()
            return [(r[0], r[1], r[2]) for r in rows]
        return await self._read(q)

    async def add_logons(self, added: Sequence[tuple[str, str, dict[str, float]]]) -> None:
        """Add phases to the logons recorded with sessions (the gateway's part): (tenant,
        session, phases) each, in one transaction."""
        def q(db: Tx) -> None:
            for i in _by_session(added, lambda t: t[1]):
                tenant, session_id, phases = added[i]
                row = db.execute("SELECT logon FROM sessions WHERE id=? AND tenant=?",
                                 (session_id, tenant)).fetchone()
                if row is not None:
                    db.execute("UPDATE sessions SET logon=? WHERE id=?", (json.dumps(
                        {**(json.loads(row[0]) if row[0] else {}), **phases}), session_id))
        await self._write(q, locks=sorted({f"session:{s}" for _, s, _ in added}))

    async def logons(self, tenant: str) -> dict[str, tuple[dict[str, float], str | None]]:
        """session id → its logon's phases and its thin client, for the live sessions."""
        def q(db: Tx) -> dict[str, tuple[dict[str, float], str | None]]:
            rows = db.execute(f"SELECT id, logon, device FROM sessions WHERE tenant=? AND "
                              f"state IN ({_LIVE_SQL}) AND logon IS NOT NULL",
                              (tenant, *_LIVE)).fetchall()
            return {r[0]: (json.loads(r[1]), r[2]) for r in rows}
        return await self._read(q)

    async def set_port(self, session_id: str, port: int) -> None:
        def q(db: Tx) -> None:
            db.execute("UPDATE sessions SET port=? WHERE id=?", (port, session_id))
        await self._write(q)

    async def end(self, tenant: str, session_id: str, *, now: float) -> SessionRow | None:
        """End a live session of the tenant (logoff); None if there is no such live session."""
        def q(db: Tx) -> SessionRow | None:
            row = db.execute(
                f"SELECT {_ROW_COLUMNS} FROM sessions WHERE id=? AND tenant=? AND state IN "
                f"({_LIVE_SQL})", (session_id, tenant, *_LIVE)).fetchone()
            if row is None:
                return None
            ended = _session_row(row)
            state = next_state(ended.state, Event.END)
            db.execute("UPDATE sessions SET state=?, viewers=0, deadline=NULL, updated=? "
                       "WHERE id=?", (state.value, now, session_id))
            return replace(ended, state=state)
        return await self._write(q, locks=[f"session:{session_id}"])

    async def dedicate(self, tenant: str, pool: str, login: str, host: str) -> None:
        """Give a user of a dedicated pool their host (an admin's choice; replaces any earlier)."""
        def q(db: Tx) -> None:
            db.execute("INSERT INTO dedicated VALUES (?,?,?,?) ON CONFLICT (tenant, pool, login) "
                       "DO UPDATE SET host=excluded.host", (tenant, pool, login, host))
        await self._write(q)

    async def dedicated_hosts(self, tenant: str, pool: str) -> dict[str, str]:
        """login → host of a dedicated pool."""
        def q(db: Tx) -> dict[str, str]:
            return dict(db.execute("SELECT login, host FROM dedicated WHERE tenant=? AND "
                                           "pool=? ORDER BY login", (tenant, pool)).fetchall())
        return await self._read(q)


def set_logon_in(db: Tx, session_id: str, phases: dict[str, float],
                 device: str | None = None) -> None:
    """Record what the session's latest logon took, phase by phase, and from which thin client
    (None: a browser) — part of a unit of work."""
    db.execute("UPDATE sessions SET logon=?, device=? WHERE id=?",
               (json.dumps(phases), device, session_id))


def redeem_in(db: Tx, ticket_id: str, expires_at: int, tenant: str, login: str,
              session_id: str, now: float) -> Redemption:
    """Record one ticket as used and its session as connected, or say why not (nothing is
    written then) — part of a unit of work."""
    if db.execute("INSERT INTO tickets VALUES (?,?) ON CONFLICT (id) DO NOTHING",
                  (ticket_id, expires_at)).rowcount != 1:
        return Redemption.REPLAYED
    row = db.execute("SELECT state FROM sessions WHERE id=? AND tenant=? AND login=?",
                     (session_id, tenant, login)).fetchone()
    try:
        state = next_state(State(row[0]), Event.CONNECT) if row else None
    except InvalidTransition:
        state = None
    if state is None:
        db.execute("DELETE FROM tickets WHERE id=?", (ticket_id,))   # as if never presented
        return Redemption.UNKNOWN_SESSION
    db.execute("UPDATE sessions SET state=?, viewers=viewers+1, deadline=NULL, updated=? "
               "WHERE id=?", (state.value, now, session_id))
    db.execute("INSERT INTO viewers VALUES (?,?,?,?)", (ticket_id, tenant, session_id, now))
    return Redemption.RECORDED
