"""State that survives a restart: users' TOTP enrolment, sessions, redeemed tickets, portal logins
and the audit log, in SQLite.

Every method is a short transaction run on the store's own thread (SQLite calls never block the
event loop). Decisions that must not race — seat assignment, ticket redemption, accepting a TOTP
step — happen inside one ``BEGIN IMMEDIATE`` transaction or one conditional ``UPDATE``, so two
broker processes sharing the file cannot over-book a host or accept a code twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from . import schema
from .engine import Engine, SqliteEngine, Tx, engine_for
from .host_states import HostState
from .placement import (HostLoad, NewSession, OwnHostDown, PoolBusy, PoolFull, Reconnect,
                        Refusal, place)
from .sessions import LIVE_STATES, Event, InvalidTransition, State, bulk, next_state
from .throttle import Key, Outcome, Record, reserve, settle

if TYPE_CHECKING:
    from .config import BrokerConfig


OPERATOR = "*"  # the tenant of an operator-level admin token: every tenant

def _values(states: Sequence[State]) -> tuple[str, ...]:
    return tuple(s.value for s in states)


def _marks(states: Sequence[State]) -> str:
    return ",".join("?" * len(states))


_LIVE = _values(LIVE_STATES)
_LIVE_SQL = _marks(LIVE_STATES)


@dataclass(frozen=True)
class UserMfa:
    totp_sealed: str | None
    confirmed: bool
    last_step: int | None


@dataclass(frozen=True)
class SessionRow:
    id: str
    tenant: str
    login: str
    pool: str
    host: str
    state: State
    created: float


@dataclass(frozen=True)
class Assignment:
    session_id: str
    host_id: str
    reconnect: bool
    port: int | None = None      # the user's own desktop's port, once launched


@dataclass(frozen=True)
class Login:
    """A portal login (half, until ``mfa_done``) of a user, who is named by their canonical
    identity as the directory gave it."""
    tenant: str
    user: str
    display_name: str
    groups: frozenset[str]
    mfa_done: bool
    csrf: str
    expires: float


@dataclass(frozen=True)
class HostStateRow:
    state: HostState
    message: str
    deadline: float | None
    logoff: bool                 # log off who is left at the deadline (else wait)
    next_notice: float | None = None  # a drain's next step: a notice, or the deadline's action
    since: float = 0.0           # when the host entered this state


ACTIVE_ROW = HostStateRow(HostState.ACTIVE, "", None, True)
_HOST_ROW = "state, message, deadline, logoff, next_notice, updated"


def _host_row(r: Sequence[Any]) -> HostStateRow:
    return HostStateRow(HostState(r[0]), r[1], r[2], bool(r[3]), r[4], r[5])


@dataclass(frozen=True)
class Device:
    id: str
    tenant: str
    name: str
    site: str
    device_class: str
    created: float
    revoked: float | None
    last_seen: float | None


class TicketAlreadyRedeemed(Exception):
    pass


class UnknownSession(Exception):
    pass


class Throttled(Exception):
    """A throttle key refused the attempt before anything was looked at."""


Fragment = Callable[[Tx], None]   # a part of a unit of work, run inside another's transaction


def _complete(db: Tx, token: str) -> None:
    """The login's second factor is done."""
    db.execute("UPDATE logins SET mfa_done=1 WHERE token_hash=?", (token_hash(token),))


def _names(keys: Sequence[Key]) -> list[str]:
    return [f"throttle:{k.name}" for k in keys]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    """Every table, over one engine (:mod:`broker.engine`). Open with :meth:`open`, close with
    :meth:`close`."""

    def __init__(self, engine: Engine | Path, *, config_path: str = "pforte.toml") -> None:
        self.engine = engine if isinstance(engine, Engine) else SqliteEngine(engine)
        self.config_path = config_path

    @classmethod
    def for_config(cls, config: "BrokerConfig") -> "Store":
        """The store a broker config names: PostgreSQL, or SQLite in the state directory."""
        return cls(engine_for(config.database, config.state_dir, config.database_password,
                              config.database_connections), config_path=config.path)

    async def _write(self, fn: Callable[[Tx], Any], *, locks: Sequence[str] = ()) -> Any:
        return await self.engine.write(fn, locks=locks)

    async def _read(self, fn: Callable[[Tx], Any]) -> Any:
        return await self.engine.read(fn)

    async def open(self) -> None:
        """Open the database at the schema this broker knows (an empty one is created).

        Raises:
            SchemaMismatch: older (run ``pforte migrate``) or newer than this broker.
        """
        await schema.ensure(self.engine, self.config_path)

    async def close(self) -> None:
        """Close the database; calling it again does nothing."""
        await self.engine.close()

    # -- TOTP --------------------------------------------------------------------------------
    async def user_mfa(self, tenant: str, login: str) -> UserMfa:
        def q(db: Tx) -> UserMfa:
            row = db.execute(
                "SELECT totp_sealed, totp_confirmed, totp_last_step FROM users "
                "WHERE tenant=? AND login=?", (tenant, login)).fetchone()
            return UserMfa(None, False, None) if row is None else UserMfa(row[0], bool(row[1]), row[2])
        return await self._read(q)

    async def begin_enrolment(self, tenant: str, login: str, sealed: str) -> None:
        """Store a new, unconfirmed secret (replacing an unconfirmed one; never a confirmed one)."""
        def q(db: Tx) -> None:
            db.execute(
                "INSERT INTO users (tenant, login, totp_sealed, totp_confirmed) VALUES (?,?,?,0) "
                "ON CONFLICT (tenant, login) DO UPDATE SET totp_sealed=excluded.totp_sealed, "
                "totp_last_step=NULL WHERE users.totp_confirmed=0", (tenant, login, sealed))
        await self._write(q)

    async def set_enrolment(self, tenant: str, login: str, sealed: str) -> None:
        """Store a confirmed secret (an admin's import), replacing any earlier one."""
        def q(db: Tx) -> None:
            db.execute(
                "INSERT INTO users (tenant, login, totp_sealed, totp_confirmed) VALUES (?,?,?,1) "
                "ON CONFLICT (tenant, login) DO UPDATE SET totp_sealed=excluded.totp_sealed, "
                "totp_confirmed=1, totp_last_step=NULL", (tenant, login, sealed))
        await self._write(q)

    async def accept_step(self, tenant: str, login: str, step: int, *, confirm: bool,
                          completes: str | None = None) -> bool:
        """Record a used TOTP step; False if that step (or a later one) was used already.

        ``completes``: a login token whose second factor this completes, in the same
        transaction (a broker that dies after the step was used leaves no half-done login).
        """
        def q(db: Tx) -> bool:
            cur = db.execute(
                "UPDATE users SET totp_last_step=?, totp_confirmed=CASE WHEN ? THEN 1 "
                "ELSE totp_confirmed END WHERE tenant=? AND login=? "
                "AND (totp_last_step IS NULL OR totp_last_step < ?)",
                (step, confirm, tenant, login, step))
            if cur.rowcount == 1 and completes is not None:
                _complete(db, completes)
            return cur.rowcount == 1
        return await self._write(q)

    async def set_recovery_codes(self, tenant: str, login: str, hashes: Sequence[str]) -> None:
        def q(db: Tx) -> None:
            db.execute("DELETE FROM recovery_codes WHERE tenant=? AND login=?", (tenant, login))
            db.executemany("INSERT INTO recovery_codes VALUES (?,?,?,NULL)",
                           [(tenant, login, h) for h in hashes])
        await self._write(q)

    async def use_recovery_code(self, tenant: str, login: str, code_hash: str, *,
                                now: float, completes: str | None = None) -> bool:
        """Spend a recovery code; False if unknown or spent. ``completes`` as for
        :meth:`accept_step`."""
        def q(db: Tx) -> bool:
            spent = db.execute("UPDATE recovery_codes SET used_at=? WHERE tenant=? AND login=? "
                               "AND code_hash=? AND used_at IS NULL",
                               (now, tenant, login, code_hash)).rowcount == 1
            if spent and completes is not None:
                _complete(db, completes)
            return spent
        return await self._write(q)

    async def reset_mfa(self, tenant: str, login: str) -> bool:
        """Forget a user's TOTP enrolment and recovery codes; False if there was none."""
        def q(db: Tx) -> bool:
            gone = db.execute("DELETE FROM users WHERE tenant=? AND login=?",
                              (tenant, login)).rowcount
            db.execute("DELETE FROM recovery_codes WHERE tenant=? AND login=?", (tenant, login))
            return gone == 1
        return await self._write(q)

    # -- throttling --------------------------------------------------------------------------
    @staticmethod
    def _throttle_record(db: Tx, key: str) -> Record:
        row = db.execute("SELECT failures, window_start, locked_until FROM throttle WHERE key=?",
                         (key,)).fetchone()
        return Record(*row) if row else Record()

    @staticmethod
    def _throttle_write(db: Tx, key: str, record: Record | None) -> None:
        if record is None:
            db.execute("DELETE FROM throttle WHERE key=?", (key,))
            return
        db.execute("INSERT INTO throttle VALUES (?,?,?,?) ON CONFLICT (key) DO UPDATE SET "
                   "failures=excluded.failures, window_start=excluded.window_start, "
                   "locked_until=excluded.locked_until",
                   (key, record.failures, record.window_start, record.locked_until))

    def _reserve_in(self, db: Tx, keys: Sequence[Key], now: float) -> bool:
        reserved = []
        for key in keys:
            record = reserve(self._throttle_record(db, key.name), now, key.policy)
            if record is None:
                return False
            reserved.append((key.name, record))
        for name, record in reserved:
            self._throttle_write(db, name, record)
        return True

    def _settle_in(self, db: Tx, keys: Sequence[Key], outcome: Outcome,
                   now: float) -> None:
        for key in keys:
            self._throttle_write(db, key.name,
                                 settle(self._throttle_record(db, key.name), outcome, now, key))

    async def throttle_reserve(self, keys: Sequence[Key], *, now: float) -> bool:
        """Count one attempt against every key, in one transaction; False (and nothing counted)
        when any key refuses it. Every reserved attempt must be settled."""
        return await self._write(lambda db: self._reserve_in(db, keys, now), locks=_names(keys))

    async def throttle_settle(self, keys: Sequence[Key], outcome: Outcome, *, now: float,
                              also: Sequence[Fragment] = ()) -> None:
        """Settle a reserved attempt on every key (see :mod:`broker.throttle`), and record what
        the use case adds (``also``: a new login, audit entries) in the same transaction."""
        def q(db: Tx) -> None:
            self._settle_in(db, keys, outcome, now)
            for fragment in also:
                fragment(db)
        await self._write(q, locks=_names(keys))

    # -- portal logins -----------------------------------------------------------------------
    @staticmethod
    def new_login(token: str, login: Login) -> Fragment:
        """Store a portal login (as part of a unit of work)."""
        def q(db: Tx) -> None:
            db.execute("INSERT INTO logins VALUES (?,?,?,?,?,?,?,?)", (
                token_hash(token), login.tenant, login.user, login.display_name,
                json.dumps(sorted(login.groups)), int(login.mfa_done), login.csrf, login.expires))
        return q

    async def get_login(self, token: str, now: float) -> Login | None:
        def q(db: Tx) -> Login | None:
            row = db.execute(
                "SELECT tenant, login, display_name, groups, mfa_done, csrf, expires FROM logins "
                "WHERE token_hash=? AND expires>?", (token_hash(token), now)).fetchone()
            if row is None:
                return None
            return Login(row[0], row[1], row[2], frozenset(json.loads(row[3])), bool(row[4]),
                         row[5], row[6])
        return await self._read(q)

    async def delete_login(self, token: str) -> None:
        def q(db: Tx) -> None:
            db.execute("DELETE FROM logins WHERE token_hash=?", (token_hash(token),))
        await self._write(q)

    # -- sessions ----------------------------------------------------------------------------
    async def assign(self, tenant: str, login: str, pool: str,
                     hosts: Sequence[tuple[str, int, bool]], *, now: float, pending_timeout: int,
                     keep_seconds: int, reconnect_hosts: set[str] | None = None,
                     max_in_flight: int = 0, dedicated: bool = False,
                     rng: random.Random | None = None) -> Assignment | Refusal:
        """Place the user in the pool atomically: a seat, or why not (:data:`Refusal`:
        full; seats free only on hosts at their ``max_in_flight`` cap; a dedicated pool's user
        whose own host takes no sessions now).

        In a dedicated pool the user's own host (assigned at the first placement, or by an admin)
        is the only candidate.

        Args:
            hosts: (host id, seats, takes new sessions) of the pool's hosts.
            reconnect_hosts: hosts a user may return to (None: all); a session on any other host
                is ended and the user placed afresh.
        """
        rng = rng or random.Random()

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
            candidates = [h for h in hosts if h[0] == own[0]] if own else hosts
            counts, pending = {}, {}
            for host, state, n in db.execute(
                    f"SELECT host, state, COUNT(*) FROM sessions WHERE tenant=? AND pool=? "
                    f"AND state IN ({_LIVE_SQL}) GROUP BY host, state", (tenant, pool, *_LIVE)):
                counts[host] = counts.get(host, 0) + n
                if state == State.PENDING.value:
                    pending[host] = n
            loads = [HostLoad(h, seats, counts.get(h, 0), accepting, pending.get(h, 0),
                              max_in_flight) for h, seats, accepting in candidates]
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

    async def redeem(self, ticket_id: str, expires_at: int, tenant: str, login: str,
                     session_id: str, *, now: float) -> None:
        """Record a ticket as used and its session as connected, atomically.

        Raises:
            TicketAlreadyRedeemed: the ticket was redeemed before (by any gateway).
            UnknownSession: no live session of that tenant and user has that id.
        """
        def q(db: Tx) -> None:
            if db.execute("INSERT INTO tickets VALUES (?,?) ON CONFLICT (id) DO NOTHING",
                          (ticket_id, expires_at)).rowcount != 1:
                raise TicketAlreadyRedeemed(ticket_id)
            row = db.execute("SELECT state FROM sessions WHERE id=? AND tenant=? AND login=?",
                             (session_id, tenant, login)).fetchone()
            try:
                state = next_state(State(row[0]), Event.CONNECT) if row else None
            except InvalidTransition:
                state = None
            if state is None:
                raise UnknownSession(session_id)
            db.execute("UPDATE sessions SET state=?, viewers=viewers+1, deadline=NULL, updated=? "
                       "WHERE id=?", (state.value, now, session_id))
        await self._write(q, locks=[f"session:{session_id}"])

    async def disconnect(self, tenant: str, session_id: str, *, now: float) -> None:
        """A viewer left; the session becomes disconnected when it was the last one."""
        def q(db: Tx) -> None:
            row = db.execute("SELECT state, viewers, keep_seconds FROM sessions "
                             "WHERE id=? AND tenant=?", (session_id, tenant)).fetchone()
            if row is None or row[0] != State.CONNECTED.value:
                return
            viewers = max(row[1] - 1, 0)
            state = State.CONNECTED if viewers else next_state(State.CONNECTED, Event.DISCONNECT)
            deadline = None if viewers else now + row[2]
            db.execute("UPDATE sessions SET state=?, viewers=?, deadline=?, updated=? WHERE id=?",
                       (state.value, viewers, deadline, now, session_id))
        await self._write(q, locks=[f"session:{session_id}"])

    async def touch_sessions(self, sessions: Sequence[tuple[str, str]], *, now: float) -> None:
        """A gateway vouches that it holds these (tenant, session): renew their lease."""
        def q(db: Tx) -> None:
            db.executemany("UPDATE sessions SET updated=? WHERE tenant=? AND id=? AND state=?",
                           [(now, t, s, State.CONNECTED.value) for t, s in sessions])
        await self._write(q)

    async def expire(self, now: float, *, gateway_lease: float = float("inf")) -> int:
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
            db.execute("DELETE FROM tickets WHERE expires_at<?", (now - 60,))
            db.execute("DELETE FROM logins WHERE expires<=?", (now,))
            return cur.rowcount
        return await self._write(q)

    async def live_sessions(self, tenant: str, *, login: str | None = None) -> list[SessionRow]:
        def q(db: Tx) -> list[SessionRow]:
            sql = (f"SELECT id, tenant, login, pool, host, state, created FROM sessions "
                   f"WHERE tenant=? AND state IN ({_LIVE_SQL})")
            args: list[Any] = [tenant, *_LIVE]
            if login is not None:
                sql += " AND login=?"
                args.append(login)
            rows = db.execute(sql + " ORDER BY created", args).fetchall()
            return [SessionRow(r[0], r[1], r[2], r[3], r[4], State(r[5]), r[6]) for r in rows]
        return await self._read(q)

    async def set_session_port(self, session_id: str, port: int) -> None:
        def q(db: Tx) -> None:
            db.execute("UPDATE sessions SET port=? WHERE id=?", (port, session_id))
        await self._write(q)

    async def end_session(self, tenant: str, session_id: str, *, now: float) -> SessionRow | None:
        """End a live session of the tenant (logoff); None if there is no such live session."""
        def q(db: Tx) -> SessionRow | None:
            row = db.execute(
                f"SELECT id, tenant, login, pool, host, state, created FROM sessions "
                f"WHERE id=? AND tenant=? AND state IN ({_LIVE_SQL})",
                (session_id, tenant, *_LIVE)).fetchone()
            if row is None:
                return None
            next_state(State(row[5]), Event.END)
            db.execute("UPDATE sessions SET state=?, viewers=0, deadline=NULL, updated=? "
                       "WHERE id=?", (State.ENDED.value, now, session_id))
            return SessionRow(row[0], row[1], row[2], row[3], row[4], State.ENDED, row[6])
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

    # -- host states -------------------------------------------------------------------------
    async def host_states(self, tenant: str) -> dict[str, HostStateRow]:
        """Hosts with a state other than the default (active)."""
        def q(db: Tx) -> dict[str, HostStateRow]:
            rows = db.execute(f"SELECT host, {_HOST_ROW} FROM host_states WHERE tenant=?",
                              (tenant,)).fetchall()
            return {r[0]: _host_row(r[1:]) for r in rows}
        return await self._read(q)

    async def hosts_now(self, tenant: str) -> tuple[dict[str, HostStateRow], dict[str, bool]]:
        """The tenant's host states and health in one read (what placement needs)."""
        def q(db: Tx) -> tuple[dict[str, HostStateRow], dict[str, bool]]:
            states = db.execute(f"SELECT host, {_HOST_ROW} FROM host_states WHERE tenant=?",
                                (tenant,)).fetchall()
            health = db.execute("SELECT host, healthy FROM host_health WHERE tenant=?",
                                (tenant,)).fetchall()
            return ({r[0]: _host_row(r[1:]) for r in states},
                    {r[0]: bool(r[1]) for r in health})
        return await self._read(q)

    async def draining_hosts(self) -> list[tuple[str, str, HostStateRow]]:
        """(tenant, host, state) of every draining host, of every tenant."""
        def q(db: Tx) -> list[tuple[str, str, HostStateRow]]:
            rows = db.execute(f"SELECT tenant, host, {_HOST_ROW} FROM host_states "
                              f"WHERE state=?", (HostState.DRAINING.value,)).fetchall()
            return [(r[0], r[1], _host_row(r[2:])) for r in rows]
        return await self._read(q)

    async def set_host_state(self, tenant: str, host: str, row: HostStateRow, *,
                             now: float) -> None:
        def q(db: Tx) -> None:
            db.execute("INSERT INTO host_states (tenant, host, state, message, deadline, logoff, "
                       "updated, next_notice) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (tenant, host) "
                       "DO UPDATE SET state=excluded.state, message=excluded.message, "
                       "deadline=excluded.deadline, logoff=excluded.logoff, "
                       "updated=excluded.updated, next_notice=excluded.next_notice",
                       (tenant, host, row.state.value, row.message, row.deadline,
                        int(row.logoff), now, row.next_notice))
        await self._write(q)

    async def claim_drain_step(self, tenant: str, host: str, step: float,
                               following: float | None) -> bool:
        """Take a drain's step due at ``step`` (moving the next one to ``following``); False if
        another broker took it, or the drain changed meanwhile: each step happens once."""
        def q(db: Tx) -> bool:
            return db.execute("UPDATE host_states SET next_notice=? WHERE tenant=? AND host=? "
                              "AND state=? AND next_notice=?",
                              (following, tenant, host, HostState.DRAINING.value,
                               step)).rowcount == 1
        return await self._write(q)

    # -- health and leases -------------------------------------------------------------------
    async def set_health(self, tenant: str, host: str, healthy: bool, *, now: float) -> bool:
        """Record a probe's finding; True when it changed (a host never probed counts as
        healthy)."""
        def q(db: Tx) -> bool:
            row = db.execute("SELECT healthy FROM host_health WHERE tenant=? AND host=?",
                             (tenant, host)).fetchone()
            db.execute("INSERT INTO host_health VALUES (?,?,?,?) ON CONFLICT (tenant, host) DO "
                       "UPDATE SET healthy=excluded.healthy, updated=excluded.updated",
                       (tenant, host, int(healthy), now))
            return (bool(row[0]) if row else True) != healthy
        return await self._write(q, locks=[f"health:{tenant}/{host}"])

    async def hold_lease(self, name: str, holder: str, *, now: float, until: float) -> bool:
        """Take or renew a lease: True while ``holder`` holds it (it was free, ran out, or is
        its own), in one conditional statement."""
        def q(db: Tx) -> bool:
            return db.execute("INSERT INTO leases VALUES (?,?,?) ON CONFLICT (name) DO UPDATE "
                              "SET holder=excluded.holder, until=excluded.until "
                              "WHERE leases.holder=excluded.holder OR leases.until<?",
                              (name, holder, until, now)).rowcount == 1
        return await self._write(q)

    async def release_lease(self, name: str, holder: str) -> None:
        def q(db: Tx) -> None:
            db.execute("DELETE FROM leases WHERE name=? AND holder=?", (name, holder))
        await self._write(q)

    # -- devices -----------------------------------------------------------------------------
    async def create_enrolment_code(self, code: str, tenant: str, site: str, device_class: str,
                                    *, expires: float) -> None:
        def q(db: Tx) -> None:
            db.execute("INSERT INTO enrolment_codes VALUES (?,?,?,?,?,0)",
                       (token_hash(code), tenant, site, device_class, expires))
        await self._write(q)

    async def enrol_device(self, code: str, name: str, credential: str, *, now: float,
                           guard: Key | None = None) -> Device | None:
        """Spend an enrolment code on a new device; None if the code is unknown, used or old.

        The guess is counted against ``guard`` (the client's address) in the same transaction;
        None only for trusted callers (setting up a test or benchmark), which nothing throttles.

        Raises:
            Throttled: ``guard`` refuses the attempt; nothing was looked at.
        """
        guards = [guard] if guard is not None else []

        def q(db: Tx) -> Device | None:
            if not self._reserve_in(db, guards, now):
                raise Throttled(guard.name)
            row = db.execute("SELECT tenant, site, device_class FROM enrolment_codes WHERE "
                             "code_hash=? AND used=0 AND expires>?",
                             (token_hash(code), now)).fetchone()
            if row is None:
                self._settle_in(db, guards, Outcome.FAILED, now)
                return None
            self._settle_in(db, guards, Outcome.SUCCEEDED, now)
            db.execute("UPDATE enrolment_codes SET used=1 WHERE code_hash=?", (token_hash(code),))
            device = Device(os.urandom(8).hex(), row[0], name, row[1], row[2], now, None, None)
            db.execute("INSERT INTO devices VALUES (?,?,?,?,?,?,?,NULL,NULL)",
                       (device.id, device.tenant, name, device.site, device.device_class,
                        token_hash(credential), now))
            return device
        return await self._write(q, locks=_names(guards))

    async def device_by_credential(self, credential: str, *, now: float,
                                   guard: Key) -> Device | None:
        """The device holding a credential (revoked ones too: the caller says no clearly); None
        if unknown. The guess is counted against ``guard`` in the same transaction.

        Raises:
            Throttled: ``guard`` refuses the attempt; nothing was looked at.
        """
        def q(db: Tx) -> Device | None:
            if not self._reserve_in(db, [guard], now):
                raise Throttled(guard.name)
            row = db.execute("SELECT id, tenant, name, site, device_class, created, revoked, "
                             "last_seen FROM devices WHERE credential_hash=?",
                             (token_hash(credential),)).fetchone()
            if row is None:
                self._settle_in(db, [guard], Outcome.FAILED, now)
                return None
            self._settle_in(db, [guard], Outcome.SUCCEEDED, now)
            db.execute("UPDATE devices SET last_seen=? WHERE id=?", (now, row[0]))
            return Device(*row)
        return await self._write(q, locks=_names([guard]))

    async def devices(self, tenant: str) -> list[Device]:
        def q(db: Tx) -> list[Device]:
            rows = db.execute("SELECT id, tenant, name, site, device_class, created, "
                                      "revoked, last_seen FROM devices WHERE tenant=? "
                                      "ORDER BY name", (tenant,)).fetchall()
            return [Device(*r) for r in rows]
        return await self._read(q)

    async def update_device(self, tenant: str, device_id: str, *, site: str | None = None,
                            device_class: str | None = None,
                            revoked: float | None = None) -> bool:
        def q(db: Tx) -> bool:
            return db.execute(
                "UPDATE devices SET site=COALESCE(?, site), device_class=COALESCE(?, "
                "device_class), revoked=COALESCE(?, revoked) WHERE id=? AND tenant=?",
                (site, device_class, revoked, device_id, tenant)).rowcount == 1
        return await self._write(q)

    # -- admin tokens ------------------------------------------------------------------------
    async def create_admin_token(self, token: str, tenant: str, name: str, *, now: float) -> None:
        def q(db: Tx) -> None:
            db.execute("INSERT INTO admin_tokens VALUES (?,?,?,?)",
                       (token_hash(token), tenant, name, now))
        await self._write(q)

    async def admin_token(self, token: str) -> tuple[str, str] | None:
        """(tenant or OPERATOR, name) of an admin token; None if unknown."""
        def q(db: Tx) -> tuple[str, str] | None:
            row = db.execute("SELECT tenant, name FROM admin_tokens WHERE token_hash=?",
                                     (token_hash(token),)).fetchone()
            return (row[0], row[1]) if row else None
        return await self._read(q)

    # -- audit -------------------------------------------------------------------------------
    @staticmethod
    def audit_entry(*, at: float, tenant: str, actor: str, source: str, action: str,
                    result: str, detail: str = "") -> Fragment:
        """An audit entry (as part of a unit of work)."""
        def q(db: Tx) -> None:
            db.execute("INSERT INTO audit (at, tenant, actor, source, action, result, detail) "
                       "VALUES (?,?,?,?,?,?,?)", (at, tenant, actor, source, action, result, detail))
        return q

    async def audit(self, *, at: float, tenant: str, actor: str, source: str, action: str,
                    result: str, detail: str = "") -> None:
        await self._write(self.audit_entry(at=at, tenant=tenant, actor=actor, source=source,
                                           action=action, result=result, detail=detail))

    async def audit_log(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        def q(db: Tx) -> list[dict[str, Any]]:
            rows = db.execute(
                "SELECT at, actor, source, action, result, detail FROM audit WHERE tenant=? "
                "ORDER BY id DESC LIMIT ?", (tenant, limit)).fetchall()
            keys = ("at", "actor", "source", "action", "result", "detail")
            return [dict(zip(keys, r)) for r in rows]
        return await self._read(q)
