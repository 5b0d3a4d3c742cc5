"""TOTP policy: pure functions over values (secret, code, time, last used step).

Rules:
* a code is 6 digits (spaces are ignored) for a 30-second step;
* codes of the current step and of one step either side are accepted (clock drift);
* a code is accepted only for a step later than the last accepted one, so a code stays used for
  its whole window (the caller stores the returned step — across restarts);
* enrolment counts only once a first code is confirmed; it then issues one-time recovery codes,
  stored only as keyed hashes.

TOTP secrets are stored sealed with AES-256-GCM (:func:`seal` / :func:`unseal`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pyotp
import segno

from wire import sealing

from .errors import CodeRejected

STEP = 30
DIGITS = 6
DRIFT_STEPS = 1
ISSUER = "Pforte"
RECOVERY_CODES = 10                        # issued at enrolment, each good once
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper


class CodeReplayed(CodeRejected):
    code = "code_replayed"


def new_secret() -> str:
    return pyotp.random_base32()


def current_code(secret: str, now: float) -> str:
    """The code an authenticator app shows at ``now`` (for the demo and tests)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).at(int(now))


def check_code(secret: str, code: str, *, now: float, last_step: int | None) -> int:
    """Accept or refuse a one-time code.

    Returns:
        The time step the code belongs to; store it as the new ``last_step``.

    Raises:
        CodeReplayed: the code (or an older one) was already used.
        CodeRejected: the code is wrong, malformed or outside the drift window.
    """
    code = code.replace(" ", "")
    if len(code) != DIGITS or not (code.isascii() and code.isdigit()):  # not "²" nor "١"
        raise CodeRejected("not a 6-digit code")
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP)
    current = int(now) // STEP
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP), code):
            if last_step is not None and step <= last_step:
                raise CodeReplayed("code already used")
            return step
    raise CodeRejected("wrong or expired code")


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """Codes like ``k7mq-x2pa`` (40 bits each) to sign in once without the authenticator."""
    def one() -> str:
        chars = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(8))
        return f"{chars[:4]}-{chars[4:]}"
    return [one() for _ in range(count)]


def looks_like_recovery_code(text: str) -> bool:
    text = text.strip().lower().replace(" ", "")
    return len(text) == 9 and text[4] == "-"


def recovery_hash(key: bytes, context: str, code: str) -> str:
    """Keyed hash of a recovery code (stored instead of the code; the key stays out of the DB)."""
    normal = code.strip().lower().replace(" ", "")
    return hmac.new(key, f"{context}/{normal}".encode(), hashlib.sha256).hexdigest()


def provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP).provisioning_uri(
        name=account, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """An inline SVG QR code of the provisioning URI."""
    return segno.make(uri, error="m").svg_inline(scale=5, dark="#1b2733")


def seal(key: bytes, secret: str, context: str) -> str:
    """Encrypt a TOTP secret for storage, bound to its owner (``context``)."""
    return sealing.seal(key, secret.encode(), context.encode())


def unseal(key: bytes, sealed: str, context: str) -> str:
    """Raises: wire.sealing.SealBroken (wrong key or owner, tampered)."""
    return sealing.unseal(key, sealed, context.encode()).decode()
