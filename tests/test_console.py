"""The operator's console in Debian Chromium, on real broker and gateway processes, a real
directory and real Xvnc desktops: a directory admin signs in with password and one-time code,
watches hosts and sessions live, drains the host a user works on (and reads what will happen
before it happens), the user sees the notice over her desktop, gets a message, is logged off; an
operator signs in with a token; a user who is no admin sees nothing; axe-core finds no serious
or critical violation in either language."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pyotp
import pytest

from testbed import wait_for_desktop_colour

from .conftest import USERS
from .security.conftest import DOMAIN, TENANT, make_live
from .test_accessibility import violations

pytestmark = pytest.mark.e2e

SIGN_IN = {"de": ("Benutzername", "Passwort", "Anmelden", "Einmalcode", "Bestätigen"),
           "en": ("Username", "Password", "Sign in", "One-time code", "Confirm")}


WINDOW = """
[[tenants.calendars]]
id = "ni"
state = "NI"

[[tenants.maintenance_windows]]
id = "nachtwartung"
hosts = ["desk2"]
weekday = "sunday"
start = "03:00"
minutes = 30
notice_minutes = 0
calendar = "ni"
"""


def neighbour(slapd, desktop, state) -> str:
    """A second municipality (on the same directory server, for brevity)."""
    state.mkdir(parents=True, exist_ok=True)
    (state / "jork-ldap.pass").write_text(slapd.service_password)
    (state / "jork-desk.pass").write_text(desktop.password)
    return f"""
[[tenants]]
id = "jork"
name = "Gemeinde Jork"
domains = ["jork.example"]

[tenants.directory]
servers = ["{slapd.url}"]
security = "plain"
base_dn = "{slapd.suffix}"
bind_dn = "{slapd.service_dn}"
bind_password_file = "{state / 'jork-ldap.pass'}"
login_attribute = "uid"

[[tenants.pools]]
id = "buero"
name = "Jork Büro"
group = "{slapd.group_dn('desktop-users')}"
hosts = ["jork-desk"]

[[tenants.hosts]]
id = "jork-desk"
address = "127.0.0.1"
port = {desktop.port}
seats = 5
secret_file = "{state / 'jork-desk.pass'}"
"""


@pytest.fixture
def live(slapd, desktops, database, tmp_path):
    installation = make_live(tmp_path / "live", slapd, desktops, database(),
                             tenant_extra=WINDOW,
                             extra_tenants=neighbour(slapd, desktops[1], tmp_path / "jork"))

    async def enrol() -> None:
        async with installation.client("10.94.0.1") as http:
            for user in ("aida", "user1", "user2"):
                await installation.enrol(http, user)
    with ThreadPoolExecutor(1) as thread:          # playwright runs its own loop in this one
        thread.submit(asyncio.run, enrol()).result()
    yield installation
    installation.processes.stop()


def page_of(chromium, lang: str = "de"):
    context = chromium.new_context(locale="de-DE" if lang == "de" else "en-GB", bypass_csp=True,
                                   viewport={"width": 1280, "height": 900})
    return context.new_page()     # bypass_csp: axe is injected into the page


def sign_in(page, live, user: str, lang: str = "de") -> None:
    username, password, sign_in_button, code, confirm = SIGN_IN[lang]
    page.goto(f"{live.portal}/login")
    page.get_by_label(username).fill(f"{user}@{DOMAIN}")
    page.get_by_label(password).fill(USERS[user][1])
    page.get_by_role("button", name=sign_in_button).click()
    # the next step: enrolment used this one, and each step counts once
    page.get_by_label(code).fill(pyotp.TOTP(live.secrets[user]).at(time.time() + 30))
    page.get_by_role("button", name=confirm).click()


def test_an_admin_drains_messages_and_logs_off_live_while_the_user_sees_it(live, chromium):
    user = page_of(chromium)
    sign_in(user, live, "user1")
    user.get_by_role("link", name="Büro").click()
    assert wait_for_desktop_colour(user) is not None

    console = page_of(chromium)
    sign_in(console, live, "aida")
    console.get_by_role("link", name="Betriebskonsole").click()
    console.wait_for_url("**/admin")
    sessions = console.get_by_role("table", name="Sitzungen")
    row = sessions.get_by_role("row").filter(has_text="user1")
    row.wait_for()
    host = row.get_by_role("cell").nth(1).text_content()
    assert re.fullmatch(r"desk[12]", host)
    assert row.get_by_role("cell").nth(4).text_content() == "verbunden"
    pool = row.get_by_role("cell").nth(2)                 # the name users know, the id on hover
    assert pool.text_content() == "Büro-Desktop" and pool.get_attribute("title") == "buero"
    # a tenant's admin sees her municipality only, and is refused the neighbour's
    assert console.get_by_label("Kommune").locator("option").all_text_contents() == [
        "Stadt Musterstadt"]
    assert console.evaluate("fetch('/api/v1/admin/tenants/jork/hosts').then(r => r.status)") \
        == 403
    # the logon, phase by phase: the gateway's part arrives a moment after the broker's
    assert row.get_by_role("cell").nth(5).text_content() == "Browser"     # no thin client
    logon = row.get_by_role("cell").nth(6)
    assert re.fullmatch(r"\d+(,\d{1,2})? s", logon.locator("summary").text_content())
    logon.locator("summary").click()
    logon.get_by_text("Verbindung zum Arbeitsplatz:", exact=False).wait_for()
    phases = logon.locator("li").all_text_contents()
    for phase in ("Verzeichnis: Suche", "Verzeichnis: Passwort", "Verzeichnis: Gruppen",
                  "Zweiter Faktor", "Platzvergabe", "Ticket", "Gateway",
                  "Verbindung zum Arbeitsplatz"):
        assert any(re.fullmatch(rf"{phase}: [\d.]+ ms", p) for p in phases), (phase, phases)
    assert violations(console) == []

    # the drain: what will happen is said before it happens
    hosts = console.get_by_role("table", name="Hosts")
    hosts.get_by_role("button", name=f"Leeren … {host}").click()
    dialog = console.get_by_role("dialog", name=f"{host} leeren")
    dialog.get_by_label("Frist in Minuten (0: keine)").fill("10")
    dialog.get_by_label("Nachricht an die Benutzer (freiwillig)").fill("Patches heute Abend.")
    consequence = dialog.locator("#drain-consequence").text_content()
    assert re.fullmatch(rf"1 Benutzer auf {host} wird um \d\d:\d\d Uhr abgemeldet\.",
                        consequence), consequence
    assert violations(console) == []                     # with the dialog open
    dialog.get_by_role("button", name="Leeren").click()

    # the console shows it at once (its event stream), and the user sees the notice
    draining = hosts.get_by_role("row").filter(has_text=host)
    draining.get_by_role("cell", name="wird geleert").wait_for()
    assert "Patches heute Abend." in draining.text_content()
    # a draining host is not offered to be drained again, but its notice and deadline to change
    draining.get_by_role("button", name=f"Hinweis oder Frist ändern … {host}").wait_for()
    assert draining.get_by_role("button", name=f"Leeren … {host}").count() == 0
    notice = user.get_by_role("region", name="Hinweis Ihres IT-Services")
    notice.wait_for()
    assert user.locator("#notice-text").text_content() == "Patches heute Abend."
    assert re.match(r"Sie werden in (10:00|9:[0-5]\d) abgemeldet",
                    user.locator("#notice-countdown").text_content())

    # a message to the session
    row.get_by_role("button", name="Nachricht … user1").click()
    message = console.get_by_role("dialog", name="Nachricht an user1")
    message.get_by_label("Nachricht").fill("Bitte rufen Sie das Bürgerbüro an.")
    message.get_by_role("button", name="Senden").click()
    console.get_by_role("status").filter(
        has_text="Die Nachricht wurde user1 angezeigt.").wait_for()
    user.get_by_text("Bitte rufen Sie das Bürgerbüro an.").wait_for()

    # logoff, confirmed; the user's page says why it ended; the console's table empties
    row.get_by_role("button", name="Abmelden user1").click()
    confirm = console.get_by_role("dialog", name="Bitte bestätigen")
    assert confirm.locator("#confirm-text").text_content() == (
        f"user1 auf {host} wird jetzt abgemeldet. Nicht gespeicherte Arbeit geht verloren.")
    confirm.get_by_role("button", name="Bestätigen").click()
    user.get_by_text("abgemeldet", exact=False).first.wait_for()
    sessions.get_by_role("cell", name="Keine.").wait_for()

    # every action is in the audit log, and the log is searchable
    console.get_by_label("Im Protokoll suchen").fill("session.logoff")
    audit = console.get_by_role("table", name="Protokoll")
    audit.get_by_role("cell", name="session.logoff").first.wait_for()
    actions = {c.text_content() for c in audit.locator("tbody td:nth-child(3)").all()}
    assert actions == {"session.logoff"}

    # the maintenance windows ahead, on one timeline with the holidays
    timeline = console.get_by_role("region", name="Wartungsfenster und Feiertage")
    timeline.get_by_text("Wartungsfenster nachtwartung (desk2)", exact=False).first.wait_for()
    assert len(timeline.get_by_role("listitem").all()) >= 8   # a Sunday each week, 60 days

    # usage this month, and the same as CSV for the billing
    usage = console.get_by_role("table", name="Nutzung")
    usage.get_by_role("cell", name="Büro-Desktop", exact=True).wait_for()
    assert usage.locator("tbody td").nth(1).text_content() == "1"
    month = console.get_by_label("Monat").input_value()
    assert re.fullmatch(r"\d{4}-\d\d", month)
    with console.expect_download() as download:
        console.get_by_role("button", name="Als CSV herunterladen").click()
    with open(download.value.path(), "rb") as exported:    # as a German spreadsheet opens it:
        raw = exported.read()
    assert raw.startswith(b"\xef\xbb\xbf")                  # UTF-8 said by its byte order mark,
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))   # semicolons,
    assert rows[0] == ["tenant", "pool", "month", "sessions", "desktop_hours"]
    assert rows[1][:4] == [TENANT, "buero", month, "1"]
    assert re.fullmatch(r"\d+,\d\d", rows[1][4])         # decimal commas (seconds of it here)


def test_an_operator_signs_in_with_a_token_and_a_user_who_is_no_admin_sees_nothing(
        live, chromium):
    operator = subprocess.run(
        [sys.executable, "-m", "pforte", "admin-token", "--config", str(live.config),
         "--operator", "--name", "operator"], check=True, capture_output=True,
        text=True).stdout.strip()
    page = page_of(chromium, "en")
    page.goto(f"{live.portal}/admin")
    page.get_by_label("Operator token").fill("not-a-token")
    page.get_by_role("button", name="Sign in with the token").click()
    page.get_by_role("alert").filter(has_text="This token is not valid").wait_for()
    page.get_by_label("Operator token").fill(operator)
    page.get_by_role("button", name="Sign in with the token").click()
    page.get_by_role("table", name="Hosts").get_by_role("cell", name="desk1", exact=True).wait_for()
    assert page.get_by_label("Municipality").input_value() == TENANT
    # thin clients: an enrolment code, a device that enrols with it, moved, then revoked
    region = page.get_by_role("region", name="Thin clients")
    region.get_by_label("Site").fill("front-office")
    region.get_by_label("Device class").fill("thin-client")
    region.get_by_role("button", name="Create enrolment code").click()
    shown = region.get_by_role("status").filter(has_text="Enrolment code")
    code = re.search(r"Enrolment code: (\S+) \(valid until", shown.text_content())
    request = urllib.request.Request(
        f"{live.portal}/api/v1/devices/enrol", method="POST",
        data=json.dumps({"code": code[1], "name": "Counter 3"}).encode(),
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()
    page.reload()
    devices = page.get_by_role("table", name="Thin clients")
    devices.get_by_role("button", name="Move… Counter 3").click()
    move = page.get_by_role("dialog", name="Move Counter 3")
    move.get_by_label("Site").fill("back-office")
    move.get_by_role("button", name="Move").click()
    devices.get_by_role("cell", name="back-office").wait_for()
    devices.get_by_role("button", name="Revoke Counter 3").click()
    page.get_by_role("dialog", name="Please confirm").get_by_role("button",
                                                                  name="Confirm").click()
    devices.get_by_role("cell", name="revoked").wait_for()
    # a floating pool has no dedicated desktops: the answer says so
    page.get_by_label("Desktop pool").fill("buero")
    page.get_by_label("User", exact=True).fill("user1")
    page.get_by_label("Host", exact=True).fill("desk1")
    page.get_by_role("button", name="Assign", exact=True).click()
    page.get_by_role("status").filter(has_text="Not done:").wait_for()

    # an operator sees every municipality, and switches between them
    assert page.get_by_label("Municipality").locator("option").all_text_contents() == [
        "Stadt Musterstadt", "Gemeinde Jork"]
    page.get_by_label("Municipality").select_option("jork")
    page.get_by_role("table", name="Hosts").get_by_role("cell", name="jork-desk",
                                                        exact=True).wait_for()
    assert violations(page) == []
    # Jork has no maintenance window and no calendar: a sentence, not a numbered "1. None."
    timeline = page.get_by_role("region", name="Maintenance windows and holidays")
    timeline.get_by_text("None.", exact=True).wait_for()
    assert timeline.get_by_role("listitem").count() == 0
    # signed in with a token, the operator signs out here, and stays out after a reload
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Operator token").wait_for()
    page.reload()
    page.get_by_label("Operator token").wait_for()
    assert not page.locator("#console").is_visible()

    clerk = page_of(chromium)
    sign_in(clerk, live, "user2")
    assert clerk.get_by_role("link", name="Betriebskonsole").count() == 0
    clerk.goto(f"{live.portal}/admin")
    clerk.get_by_role("heading", name="An der Konsole anmelden").wait_for()
    assert not clerk.locator("#console").is_visible()
    assert violations(clerk) == []


def test_the_event_stream_answers_only_admins_of_the_tenant(live):
    def refusal(tenant: str, headers: dict) -> int:
        request = urllib.request.Request(
            f"{live.portal}/api/v1/admin/tenants/{tenant}/events", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        return refused.value.code

    assert refusal(TENANT, {}) == 401
    assert refusal(TENANT, {"Authorization": "Bearer nonsense"}) == 401
    assert refusal("elsewhere", {"Authorization": f"Bearer {live.admin_token}"}) == 403
    request = urllib.request.Request(
        f"{live.portal}/api/v1/admin/tenants/{TENANT}/events",
        headers={"Authorization": f"Bearer {live.admin_token}"})
    with urllib.request.urlopen(request, timeout=5) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.readline() == b"event: overview\n"
        assert b'"hosts":[{"id":"desk1"' in stream.readline()


def test_the_broker_counts_logon_phases_for_its_scrapers_only(live):
    async def log_in() -> None:
        async with live.client("10.94.0.2") as http:
            await live.login(http, "user2")
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, log_in()).result()
    with urllib.request.urlopen(f"{live.portal}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for phase in ("directory_search", "directory_bind", "directory_groups", "second_factor"):
        found = re.search(rf'pforte_broker_logon_phase_seconds_count{{phase="{phase}"}} (\d+)',
                          text)
        assert found and int(found[1]) >= 1, phase
    # through the proxy, from the internet: not for them
    request = urllib.request.Request(f"{live.portal}/metrics",
                                     headers={"X-Forwarded-For": "203.0.113.9"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 403


def test_the_portal_cookie_changes_nothing_without_the_logins_csrf_token(live, chromium):
    """Another site cannot make an admin's browser act: the console's cookie is SameSite=Strict,
    and a state-changing call on it needs the login's CSRF token besides."""
    console = page_of(chromium)
    sign_in(console, live, "aida")
    console.goto(f"{live.portal}/admin")
    console.get_by_role("table", name="Hosts").get_by_role("cell", name="desk1",
                                                           exact=True).wait_for()
    drain = f"/api/v1/admin/tenants/{TENANT}/hosts/desk1/actions/disable"
    status = console.evaluate("""(url) => fetch(url, {method: "POST"}).then(r => r.status)""",
                              drain)
    assert status == 400                                  # the cookie alone: refused
    status = console.evaluate("""([url, csrf]) => fetch(url, {method: "POST",
        headers: {"X-CSRF-Token": csrf + "x"}}).then(r => r.status)""",
                              [drain, console.locator("body").get_attribute("data-csrf")])
    assert status == 400                                  # a wrong token: refused
    hosts = console.evaluate(f"""fetch("/api/v1/admin/tenants/{TENANT}/hosts")
        .then(r => r.json())""")["hosts"]
    assert {h["id"]: h["state"] for h in hosts}["desk1"] == "active"     # nothing changed
