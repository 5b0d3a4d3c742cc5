"""The reconnect pass: how a signed-in user gets back to the desktop she already has while the
database is down. Pure: no clock, no I/O.

With every ticket the broker hands the client a pass, sealed (AES-256-GCM) with the broker's key
for secrets at rest, that only brokers can open. It names the desktop the ticket led to (tenant,
user, pool, session, host, port) and is bound to the login it was issued to (a hash of the login
token, and the login's CSRF token). When the database cannot be reached, the broker cannot look
up the login or the session; instead it opens the pass the client presents with its login token
and mints a short ticket, marked ``outage``, to that same desktop and nothing else — for an RDP
desktop with the user's Windows logon, which the pass carries as her login keeps it (sealed to
her with the gateways' key; broker.logins.seal_logon) — (a desktop a
multi-session host started for that session takes that session's own password, so a port the
host has since given to another session's desktop refuses it). The gateway
admits such a ticket once without the broker's record (see ``gateway.server``).

What it cannot check while the database is down, and so does not promise: that the session was not
ended since the pass was issued, or that the login was not signed out at *another* broker (each
broker refuses the passes of the sign-outs it saw itself, ``Connections.forget_passes``). That window
is bounded: a pass lives ``reconnect_pass_lifetime`` seconds (five minutes by default, never
longer than its login) and is renewed only while the user's session is connected
(``Connections.renew_pass``), so a pass kept after a sign-out or a logoff dies within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass

from wire import sealing

CONTEXT = b"pforte reconnect pass v1"


@dataclass(frozen=True)
class ReconnectPass:
    login_hash: str    # sha256 of the login token the pass was issued to
    csrf: str          # that login's CSRF token (a page signed in by cookie must present it)
    tenant: str
    user: str
    pool: str
    session: str
    host: str          # the host's id in the tenant's config
    port: int
    expires_at: int    # with the login
    sealed_logon: str | None = None   # an RDP desktop's: the login's sealed password (sealed
                                      # again inside the pass), for the Windows logon


def login_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(key: bytes, reconnect_pass: ReconnectPass) -> str:
    return sealing.seal(key, json.dumps(asdict(reconnect_pass), sort_keys=True).encode(), CONTEXT)


def open_pass(key: bytes, sealed: str, token: str, *, pool: str,
              now: float) -> ReconnectPass | None:
    """The pass, when it opens with ``key``, was issued to the login of ``token`` for ``pool``,
    and has not expired; None otherwise (forged, another login's, another pool's, too old)."""
    if not isinstance(sealed, str) or len(sealed) > 4096:
        return None
    try:
        data = json.loads(sealing.unseal(key, sealed, CONTEXT))
        found = ReconnectPass(**data)
    except (sealing.SealBroken, ValueError, TypeError):
        return None
    if not hmac.compare_digest(found.login_hash, login_hash(token)):
        return None
    if found.pool != pool or now >= found.expires_at:
        return None
    return found
