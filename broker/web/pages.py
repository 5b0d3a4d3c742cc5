"""The portal's HTML pages: Jinja2 templates (``templates/``), every value escaped by the
engine (autoescaping; only the QR code's SVG, which Pforte makes itself, and the pages' texts as
JSON, ``<`` escaped, are marked safe). A page names every value it takes: a missing one is an
error, never an empty spot."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ..config import PoolConfig
from ..logons import PHASES
from .i18n import Text

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(default=True), undefined=StrictUndefined,
                        keep_trailing_newline=True)

_DESKTOP_TEXT_KEYS = (
    "connecting", "connected", "reconnecting", "reconnecting_countdown", "disconnected",
    "gateway_4000", "gateway_4001", "gateway_4003", "gateway_4401", "gateway_4403",
    "gateway_4406", "gateway_4408", "gateway_4409", "gateway_4429", "gateway_4502",
    "gateway_4503", "gateway_other", "no_free_desktop", "not_entitled", "login_required",
    "quality", "clipboard_sent", "clipboard_copied", "clipboard_copy_failed", "notice_default",
    "notice_countdown", "notice_now")

_CONSOLE_TEXT_KEYS = (
    "c_live", "c_offline", "c_state_active", "c_state_draining", "c_state_disabled",
    "c_state_maintenance", "c_yes", "c_no", "c_action_enable", "c_action_drain",
    "c_action_drain_change",
    "c_action_disable", "c_action_maintenance", "c_drain_until", "c_drain_wait",
    "c_session_pending", "c_session_connected", "c_session_disconnected", "c_action_message",
    "c_action_logoff", "c_none", "c_code_made", "c_revoked", "c_action_revoke",
    "c_drain_heading", "c_drain_logoff_at", "c_drain_asked", "c_drain_nobody",
    "c_confirm_logoff", "c_confirm_disable", "c_confirm_maintenance", "c_confirm_mfa",
    "c_confirm_revoke", "c_message_heading", "c_message_reached", "c_message_not_reached",
    "c_done", "c_failed", "c_token_wrong", "c_logon_total", "c_logon_slow", "c_window_item",
    "c_browser", "c_action_move", "c_move_heading", "c_day_item",
    *(f"c_phase_{phase}" for phase in PHASES))


def _texts_json(t: dict[str, Text], keys: tuple[str, ...]) -> str:
    """The texts a page's script shows, as JSON inside ``<script>``: ``<`` is escaped, so no
    text can close the element."""
    return json.dumps({k: t[k] for k in keys}).replace("<", "\\u003c")


def _render(template: str, lang: str, t: dict[str, Text], **values: object) -> str:
    return TEMPLATES.get_template(template).render(lang=lang, t=t, **values)


def login_page(lang: str, t: dict[str, Text], *, error: str | None = None,
               username: str = "") -> str:
    return _render("login.html", lang, t, error=error, username=username)


def mfa_page(lang: str, t: dict[str, Text], csrf: str, *, error: str | None = None,
             enrol_key: str | None = None, qr_svg: str | None = None) -> str:
    grouped = (" ".join(enrol_key[i:i + 4] for i in range(0, len(enrol_key), 4))  # to type in
               if enrol_key is not None else None)
    return _render("mfa.html", lang, t, csrf=csrf, error=error, enrol_key=enrol_key,
                   grouped_key=grouped, qr_svg=qr_svg)


def recovery_codes_page(lang: str, t: dict[str, Text], codes: list[str]) -> str:
    return _render("recovery_codes.html", lang, t, codes=codes)


def desktops_page(lang: str, t: dict[str, Text], csrf: str, display_name: str,
                  pools: list[PoolConfig], *, error: str | None = None,
                  console: bool = False) -> str:
    return _render("desktops.html", lang, t, csrf=csrf, display_name=display_name, pools=pools,
                   error=error, console=console)


def desktop_page(lang: str, t: dict[str, Text], csrf: str, pool: PoolConfig, *,
                 protocol: str = "vnc", kiosk: bool = False) -> str:
    """The desktop in the page: noVNC for VNC pools, IronRDP for RDP pools."""
    return _render("desktop.html", lang, t, csrf=csrf, pool=pool, kiosk=kiosk,
                   protocol=protocol, texts_json=_texts_json(t, _DESKTOP_TEXT_KEYS))


def console_page(lang: str, t: dict[str, Text], csrf: str, time_zone: str) -> str:
    return _render("console.html", lang, t, csrf=csrf, time_zone=time_zone,
                   texts_json=_texts_json(t, _CONSOLE_TEXT_KEYS))
