"""Events as log lines an operator searches and ships: one event per line, ``event=NAME`` and
then ``key=value`` pairs (logfmt, which journald, rsyslog and SIEMs parse). Values with spaces,
quotes or ``=`` are quoted; unprintable characters are escaped, so that a typed name can neither
forge a line nor hide one. Secrets never go in: callers pass names, ids, addresses, results."""

from __future__ import annotations

import logging


def printable(text: str) -> str:
    """Text as it may enter a log or the audit: control and other unprintable characters
    escaped, so that a typed name cannot forge or hide log lines."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _value(value: object) -> str:
    text = printable(str(value))
    if text and not any(c in text for c in ' "=\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(event: str, **fields: object) -> str:
    """``event=EVENT key=value …`` (fields that are None left out)."""
    return " ".join([f"event={_value(event)}"] + [f"{key}={_value(value)}"
                                                    for key, value in fields.items()
                                                    if value is not None])


def log(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object) -> None:
    logger.log(level, "%s", line(event, **fields))
