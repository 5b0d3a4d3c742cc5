"""Errors of the broker package.

Hierarchy::

    BrokerError                      ``code`` is stable (API clients switch on it); ``status`` is HTTP
    ├── AuthError                    a login is refused (401)
    │   ├── BadCredentials           wrong password or unknown user: deliberately one answer
    │   ├── UnknownTenant            no tenant for what the user typed
    │   ├── CodeRejected             wrong, expired or already used one-time code
    │   ├── TooManyAttempts          locked out for a while after repeated failures (429)
    │   └── AccountState             the password is right, but the account may not log in now:
    │       AccountDisabled, AccountExpired, PasswordExpired,
    │       MustChangePassword, LogonRestricted (each with its own message)
    │   └── LoginRequired            no (or an expired) portal login
    ├── NotEntitled                  the user may not use this pool (403)
    ├── NotAdmin                     no admin right for this tenant (403)
    ├── DeviceRevoked                the device's credential was revoked (403)
    ├── NotFound                     no such host or session in this tenant (404)
    ├── Conflict                     the action does not apply in the current state (409)
    │   ├── ViewerMismatch           the pool's desktops do not speak the viewer's protocol
    │   └── NotConnected             no connected desktop in the pool (a reconnect pass's renewal)
    ├── DirectoryUnavailable         no directory server answered in time (503)
    ├── StoreUnavailable             the database did not answer (503, try again shortly)
    ├── NoFreeDesktop                every seat of the pool is taken (503)
    ├── PoolBusy                     too many logons in flight right now (503, retry in seconds)
    ├── Overloaded                   this broker works on as much as it may (503, before the work)
    ├── OwnDesktopUnavailable        a dedicated pool's user: their desktop takes no sessions (503)
    ├── DesktopStartFailed           the user's desktop could not be started on its host (503)
    └── BadRequest                   malformed input (400)

``retry_after`` (seconds) of a 503 is sent as ``Retry-After``: when asking again makes sense.
``broker.web`` turns each into one clear answer, in the user's language for the portal and as
``{"error": code, "message": ...}`` for the API; exception text is never sent to a client.
"""

from __future__ import annotations


class BrokerError(Exception):
    code = "error"
    status = 500
    retry_after: int | None = None


class AuthError(BrokerError):
    code = "auth_failed"
    status = 401


class BadCredentials(AuthError):
    code = "bad_credentials"


class UnknownTenant(AuthError):
    code = "unknown_tenant"


class CodeRejected(AuthError):
    code = "code_rejected"


class TooManyAttempts(AuthError):
    code = "too_many_attempts"
    status = 429


class AccountState(AuthError):
    code = "account_state"
    status = 403


class AccountDisabled(AccountState):
    code = "account_disabled"


class AccountExpired(AccountState):
    code = "account_expired"


class PasswordExpired(AccountState):
    code = "password_expired"


class MustChangePassword(AccountState):
    code = "must_change_password"


class LogonRestricted(AccountState):
    code = "logon_restricted"


class LoginRequired(AuthError):
    code = "login_required"


class NotEntitled(BrokerError):
    code = "not_entitled"
    status = 403


class NoDesktop(BrokerError):
    """The user has no desktop (and no console): there is nothing to enrol a second factor for."""
    code = "no_desktops"
    status = 403


class NotAdmin(BrokerError):
    code = "not_admin"
    status = 403


class DeviceRevoked(BrokerError):
    code = "device_revoked"
    status = 403


class NotFound(BrokerError):
    code = "not_found"
    status = 404


class Conflict(BrokerError):
    code = "conflict"
    status = 409


class ViewerMismatch(Conflict):
    code = "viewer_mismatch"


class NotConnected(Conflict):
    code = "not_connected"


class DirectoryUnavailable(BrokerError):
    code = "directory_unavailable"
    status = 503
    retry_after = 5


class NoFreeDesktop(BrokerError):
    code = "no_free_desktop"
    status = 503


class PoolBusy(BrokerError):
    code = "pool_busy"
    status = 503
    retry_after = 2


class Overloaded(BrokerError):
    code = "busy"
    status = 503
    retry_after = 2


class OwnDesktopUnavailable(BrokerError):
    code = "own_desktop_unavailable"
    status = 503


class DesktopStartFailed(BrokerError):
    code = "desktop_start_failed"
    status = 503


class BadRequest(BrokerError):
    code = "bad_request"
    status = 400


class StoreUnavailable(BrokerError):
    code = "store_unavailable"
    status = 503
    retry_after = 2
