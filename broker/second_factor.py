"""The second factor: enrolling a TOTP authenticator, checking a one-time or recovery code
(two short transactions, the code checked between them), recovery codes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from . import mfa
from .audit import AuditLog
from .config import BrokerConfig
from .engine import Tx
from .errors import BadRequest, BrokerError, CodeRejected, LoginRequired, TooManyAttempts
from .logins import source_key, user_key
from .logons import LogonPhases
from .store import Login, Store, UserMfa
from .store.accounts import accept_step_in, read_mfa, set_recovery_codes_in, use_recovery_code_in
from .store.throttles import lock_names as throttle_locks
from .store.throttles import reserve_in, settle_in
from .throttle import Key, Outcome


@dataclass(frozen=True)
class TotpStep:
    """A one-time code that was right: the step it spends."""
    step: int


@dataclass(frozen=True)
class RecoveryCode:
    """A recovery code, by its hash: spent if it is one of the user's unspent ones."""
    hash: str


@dataclass(frozen=True)
class CodeRefused:
    error: CodeRejected


Spend = TotpStep | RecoveryCode | CodeRefused   # what a checked code is worth


@dataclass(frozen=True)
class Enrolment:
    secret: str
    uri: str
    qr_svg: str


class SecondFactor:
    """TOTP enrolment and the check of one-time and recovery codes."""

    def __init__(self, config: BrokerConfig, store: Store, audit: AuditLog,
                 logons: LogonPhases, clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.logons = logons
        self.clock = clock

    async def is_enrolled(self, login: Login) -> bool:
        return (await self.store.accounts.user_mfa(login.tenant, login.user)).confirmed

    async def enrolment(self, login: Login) -> Enrolment:
        """The secret to enrol (the same one until it is confirmed).

        Raises:
            BadRequest: the user is enrolled already.
        """
        state = await self.store.accounts.user_mfa(login.tenant, login.user)
        if state.confirmed:
            raise BadRequest("already enrolled")
        context = f"{login.tenant}/{login.user}"
        if state.totp_sealed:  # started before: show the same secret again
            secret = mfa.unseal(self.config.totp_key, state.totp_sealed, context)
        else:
            secret = mfa.new_secret()
            await self.store.accounts.begin_enrolment(login.tenant, login.user,
                                             mfa.seal(self.config.totp_key, secret, context))
        tenant = self.config.tenant(login.tenant)
        account = f"{login.user}@{tenant.domains[0]}"
        uri = mfa.provisioning_uri(secret, account)
        return Enrolment(secret, uri, mfa.qr_svg(uri))

    async def import_enrolment(self, tenant: str, login: str, secret: str) -> None:
        """Enrol a user with a known TOTP secret, confirmed (the demo's users; migrations)."""
        await self.store.accounts.set_enrolment(tenant, login,
                                       mfa.seal(self.config.totp_key, secret, f"{tenant}/{login}"))
        await self.audit.record(tenant, login, "admin", "mfa.import", "ok")

    async def check(self, token: str, login: Login, code: str, *,
                    source: str) -> list[str] | None:
        """Check a one-time code or a recovery code; the first code also confirms an enrolment.

        Returns:
            The new recovery codes when this code completed an enrolment (show them once), else
            None.

        Two short transactions under the throttle keys' locks, the code checked between them
        (no database work while a lock is held but the database's own): the first counts the
        attempt against the user and the address and reads the enrolment; the second spends the
        step (or recovery code) — a conditional statement, so a step is taken once however many
        checks raced — completes the login, settles the throttle and writes the audit. A town
        hall's thin clients share one address: a lock held across the whole check would queue
        them all. A login whose second factor is complete answers any further code with success
        and changes nothing: a request repeated by a load balancer (its first broker died after
        accepting the code) must not turn into "code already used".

        Raises:
            CodeRejected (or its CodeReplayed), TooManyAttempts, LoginRequired.
        """
        if login.mfa_done:
            return None
        tenant, user = login.tenant, login.user
        started = time.perf_counter()
        keys = [user_key(self.config, tenant, user, complete=True), source_key(self.config, source)]
        locks = throttle_locks(keys)
        state = await self.store.unit(
            lambda db: self._begin_code_check(db, login, code, keys, source, self.clock()),
            locks=locks)
        if isinstance(state, BrokerError):
            raise state
        context = f"{tenant}/{user}"
        recovery = state.confirmed and mfa.looks_like_recovery_code(code)
        try:
            if recovery:
                spend: Spend = RecoveryCode(mfa.recovery_hash(self.config.totp_key, context, code))
            else:
                secret = mfa.unseal(self.config.totp_key, state.totp_sealed, context)
                spend = TotpStep(mfa.check_code(secret, code, now=self.clock(),
                                                last_step=state.last_step))
        except CodeRejected as exc:
            spend = CodeRefused(exc)
        phases = {"second_factor": time.perf_counter() - started}   # the logon's record
        new_codes = None if state.confirmed else mfa.new_recovery_codes()
        verdict = await self.store.unit(
            lambda db: self._finish_code_check(db, token, login, state, spend, phases, keys,
                                               source, self.clock(), new_codes), locks=locks)
        if isinstance(verdict, BrokerError):
            raise verdict
        self.logons.observe_all(phases)
        return new_codes

    @staticmethod
    def _action(state: UserMfa, code_is_recovery: bool) -> str:
        return ("login.recovery" if code_is_recovery else "login.totp" if state.confirmed
                else "mfa.enrol")

    def _begin_code_check(self, db: Tx, login: Login, code: str, keys: list[Key], source: str,
                          now: float) -> UserMfa | BrokerError:
        """Count the attempt (or refuse it) and read the enrolment: the first transaction."""
        state = read_mfa(db, login.tenant, login.user)
        if not reserve_in(db, keys, now):
            recovery = state.confirmed and mfa.looks_like_recovery_code(code)
            self.audit.entry(login.tenant, login.user, source,
                             self._action(state, recovery), "locked_out")(db)
            return TooManyAttempts("locked out")
        if not state.totp_sealed:
            settle_in(db, keys, Outcome.VOID, now)
            return LoginRequired("no enrolment started")
        return state

    def _finish_code_check(self, db: Tx, token: str, login: Login, state: UserMfa, spend: Spend,
                           phases: dict[str, float], keys: list[Key], source: str, now: float,
                           new_codes: list[str] | None) -> BrokerError | None:
        """Spend what the code was worth, settle, audit: the second transaction. A refusal is
        returned, not raised, so that what it counted is committed."""
        tenant, user = login.tenant, login.user
        action = self._action(state, isinstance(spend, RecoveryCode))
        refused = spend.error if isinstance(spend, CodeRefused) else None
        if isinstance(spend, RecoveryCode):
            if not use_recovery_code_in(db, tenant, user, spend.hash, now=now,
                                        completes=token, phases=phases):
                refused = CodeRejected("unknown or spent recovery code")
        elif isinstance(spend, TotpStep) and not accept_step_in(
                db, tenant, user, spend.step, confirm=not state.confirmed, completes=token,
                phases=phases):
            refused = mfa.CodeReplayed("step used concurrently")
        if refused is not None:
            settle_in(db, keys, Outcome.FAILED, now)
            self.audit.entry(tenant, user, source, action, refused.code, str(refused))(db)
            return refused
        settle_in(db, keys, Outcome.SUCCEEDED, now)
        self.audit.entry(tenant, user, source, action, "ok")(db)
        if new_codes is not None:
            set_recovery_codes_in(db, tenant, user, [
                mfa.recovery_hash(self.config.totp_key, f"{tenant}/{user}", c)
                for c in new_codes])
        return None
