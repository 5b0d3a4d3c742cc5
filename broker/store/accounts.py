"""Accounts: each user's second factor (TOTP enrolment, the last step used, recovery codes) and
their portal logins. Keyed on the canonical identity the directory gave, never on what was typed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from ..engine import Tx
from .base import Fragment, Repository, token_hash


@dataclass(frozen=True)
class UserMfa:
    totp_sealed: str | None
    confirmed: bool
    last_step: int | None


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
    phases: tuple[tuple[str, float], ...] = ()   # seconds each logon phase took so far
    sealed_logon: str | None = None   # the directory password, sealed for RDP desktops' logon
                                      # (broker.logins.seal_logon); only where a tenant has them


def _complete(db: Tx, token: str, phases: dict[str, float] | None = None) -> None:
    """The login's second factor is done (``phases``: what it took, added to the login's)."""
    if phases:
        row = db.execute("SELECT logon FROM logins WHERE token_hash=?",
                         (token_hash(token),)).fetchone()
        known = json.loads(row[0]) if row and row[0] else {}
        db.execute("UPDATE logins SET mfa_done=1, logon=? WHERE token_hash=?",
                   (json.dumps({**known, **phases}), token_hash(token)))
    else:
        db.execute("UPDATE logins SET mfa_done=1 WHERE token_hash=?", (token_hash(token),))


# Parts of a unit of work (run inside a transaction a use case owns; see SecondFactor.check).

def read_mfa(db: Tx, tenant: str, login: str) -> UserMfa:
    row = db.execute("SELECT totp_sealed, totp_confirmed, totp_last_step FROM users "
                     "WHERE tenant=? AND login=?", (tenant, login)).fetchone()
    if row is None:
        return UserMfa(None, False, None)
    return UserMfa(row[0], bool(row[1]), row[2])


def accept_step_in(db: Tx, tenant: str, login: str, step: int, *, confirm: bool,
                   completes: str | None = None,
                   phases: dict[str, float] | None = None) -> bool:
    """Record a used TOTP step; False if that step (or a later one) was used already.

    ``completes``: a login token whose second factor this completes, in the same transaction
    (a broker that dies after the step was used leaves no half-done login).
    """
    cur = db.execute(
        "UPDATE users SET totp_last_step=?, totp_confirmed=CASE WHEN ? THEN 1 "
        "ELSE totp_confirmed END WHERE tenant=? AND login=? "
        "AND (totp_last_step IS NULL OR totp_last_step < ?)",
        (step, confirm, tenant, login, step))
    if cur.rowcount == 1 and completes is not None:
        _complete(db, completes, phases)
    return cur.rowcount == 1


def use_recovery_code_in(db: Tx, tenant: str, login: str, code_hash: str, *, now: float,
                         completes: str | None = None,
                         phases: dict[str, float] | None = None) -> bool:
    """Spend a recovery code; False if unknown or spent. ``completes`` as for
    :func:`accept_step_in`."""
    spent = db.execute("UPDATE recovery_codes SET used_at=? WHERE tenant=? AND login=? "
                       "AND code_hash=? AND used_at IS NULL",
                       (now, tenant, login, code_hash)).rowcount == 1
    if spent and completes is not None:
        _complete(db, completes, phases)
    return spent


def set_recovery_codes_in(db: Tx, tenant: str, login: str, hashes: Sequence[str]) -> None:
    db.execute("DELETE FROM recovery_codes WHERE tenant=? AND login=?", (tenant, login))
    db.executemany("INSERT INTO recovery_codes VALUES (?,?,?,NULL)",
                   [(tenant, login, h) for h in hashes])


class Accounts(Repository):

    # -- the second factor -------------------------------------------------------------------
    async def user_mfa(self, tenant: str, login: str) -> UserMfa:
        return await self._read(lambda db: read_mfa(db, tenant, login))

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

    async def reset_mfa(self, tenant: str, login: str) -> bool:
        """Forget a user's TOTP enrolment and recovery codes; False if there was none."""
        def q(db: Tx) -> bool:
            gone = db.execute("DELETE FROM users WHERE tenant=? AND login=?",
                              (tenant, login)).rowcount
            db.execute("DELETE FROM recovery_codes WHERE tenant=? AND login=?", (tenant, login))
            return gone == 1
        return await self._write(q)

    # -- portal logins -----------------------------------------------------------------------
    @staticmethod
    def new_login(token: str, login: Login) -> Fragment:
        """Store a portal login (as part of a unit of work)."""
        def q(db: Tx) -> None:
            db.execute("INSERT INTO logins (token_hash, tenant, login, display_name, groups, "
                       "mfa_done, csrf, expires, logon, sealed_logon) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?)", (
                           token_hash(token), login.tenant, login.user, login.display_name,
                           json.dumps(sorted(login.groups)), int(login.mfa_done), login.csrf,
                           login.expires, json.dumps(dict(login.phases)), login.sealed_logon))
        return q

    async def get_login(self, token: str, now: float) -> Login | None:
        def q(db: Tx) -> Login | None:
            row = db.execute(
                "SELECT tenant, login, display_name, groups, mfa_done, csrf, expires, logon, "
                "sealed_logon FROM logins WHERE token_hash=? AND expires>?",
                (token_hash(token), now)).fetchone()
            if row is None:
                return None
            phases = tuple(json.loads(row[7]).items()) if row[7] else ()
            return Login(row[0], row[1], row[2], frozenset(json.loads(row[3])), bool(row[4]),
                         row[5], row[6], phases, row[8])
        return await self._read(q)

    async def delete_login(self, token: str) -> None:
        def q(db: Tx) -> None:
            db.execute("DELETE FROM logins WHERE token_hash=?", (token_hash(token),))
        await self._write(q)
