"""The connection path through the real broker, gateway, slapd and Xvnc, and every refusal on it."""

import asyncio
import base64
import json
import time

import aiohttp
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from broker import mfa
from testbed.demo import TENANT, DesktopEntry
from broker.mfa import CodeReplayed
from broker.service import Broker
from broker.store import Store
from testbed import free_port
from wire import reports, ticket
from gateway.config import DEFAULT_CONNECT_ATTEMPTS, DEFAULT_HANDSHAKE_TIMEOUT

from .conftest import SEATS, USERS, open_desktop

pytestmark = pytest.mark.integration


async def close_code(conn: dict, ticket_text: str | None = None) -> tuple[int, str]:
    """Send a ticket and return how the gateway closed the connection."""
    async with websockets.connect(conn["gateway_url"]) as ws:
        await ws.send(ticket_text if ticket_text is not None else conn["ticket"])
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await ws.recv()
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_a_user_reaches_the_desktop_named_in_the_ticket(installation, desktops):
    token = await installation.login("anna")
    conn = await installation.connect(token)
    server_init = await open_desktop(conn)
    width, height = int.from_bytes(server_init[:2], "big"), int.from_bytes(server_init[2:4], "big")
    name = server_init[24:].decode()
    assert (width, height) == (1024, 768)
    assert name in {d.name for d in desktops}


async def test_the_desktop_password_never_reaches_the_user(installation, desktops):
    token = await installation.login("anna")
    conn = await installation.connect(token)
    payload = base64.urlsafe_b64decode(conn["ticket"].split(".")[0] + "==")
    for d in desktops:
        assert d.password.encode() not in payload
        assert d.password not in json.dumps(conn)


async def test_a_returning_user_gets_the_same_session_and_host(installation):
    token = await installation.login("bernd")
    first = await installation.connect(token)
    await open_desktop(first)
    second = await installation.connect(token)
    assert second["session"] == first["session"]
    await open_desktop(second)


async def test_wrong_password_and_unknown_user_get_the_same_clear_answer(installation):
    wrong = await installation.password_login("anna", "not-her-password")
    unknown = await installation.http.post(f"{installation.base_url}/api/v1/login", json={
        "username": "nobody@musterstadt.example", "password": "x"})
    assert wrong.status == unknown.status == 401
    assert (await wrong.json()) == (await unknown.json())
    assert (await wrong.json())["error"] == "bad_credentials"


async def test_an_unknown_login_domain_is_refused(installation):
    r = await installation.http.post(f"{installation.base_url}/api/v1/login", json={
        "username": "anna@elsewhere.example", "password": USERS["anna"][1]})
    assert r.status == 401 and (await r.json())["error"] == "unknown_tenant"


async def test_a_user_who_is_not_entitled_sees_no_pool_and_cannot_connect(installation):
    token = await installation.login("clara")
    r = await installation.http.get(f"{installation.base_url}/api/v1/pools",
                                    headers={"Authorization": f"Bearer {token}"})
    assert (await r.json())["pools"] == []
    r = await installation.post("/api/v1/pools/buero/connect", token)
    assert r.status == 403 and (await r.json())["error"] == "not_entitled"


async def test_a_user_with_no_desktop_learns_it_before_enrolling_a_second_factor(
        installation):
    """Clara is in no desktop group and has no second factor yet: the API refuses her an
    enrolment (403 no_desktops), the portal tells her so where it would show the QR code, and
    nothing is stored for her."""
    r = await installation.password_login("clara")
    body = await r.json()
    token = body["token"]
    r = await installation.http.get(f"{installation.base_url}/api/v1/mfa/enrolment",
                                    headers={"Authorization": f"Bearer {token}"})
    assert r.status == 403 and (await r.json())["error"] == "no_desktops"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        r = await browser.post(f"{installation.base_url}/login", data={
            "username": "clara@musterstadt.example", "password": USERS["clara"][1]})
        page = await r.text()
    assert r.url.path == "/mfa" and r.status == 200
    assert "No desktop has been assigned to you" in page
    assert "<svg" not in page and "enrol-key" not in page
    login = await installation.broker.logins.login_for(token, need_mfa=False)
    assert not await installation.broker.second_factor.is_enrolled(login)


async def test_pools_need_the_second_factor(installation):
    r = await installation.password_login("anna")
    token = (await r.json())["token"]
    r = await installation.post("/api/v1/pools/buero/connect", token)
    assert r.status == 401 and (await r.json())["error"] == "login_required"


async def secret_and_token(installation, login="anna"):
    secret = mfa.new_secret()
    await installation.broker.second_factor.import_enrolment(TENANT, login, secret)
    r = await installation.password_login(login)
    return secret, (await r.json())["token"]


async def test_a_wrong_code_is_refused(installation):
    secret, token = await secret_and_token(installation)
    right = mfa.current_code(secret, time.time())
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    r = await installation.post("/api/v1/mfa", token, {"code": wrong})
    assert r.status == 401 and (await r.json())["error"] == "code_rejected"


async def test_an_expired_code_is_refused(installation):
    secret, token = await secret_and_token(installation)
    old = mfa.current_code(secret, time.time() - 5 * mfa.STEP)
    r = await installation.post("/api/v1/mfa", token, {"code": old})
    assert r.status == 401 and (await r.json())["error"] == "code_rejected"


async def test_a_replayed_code_is_refused_even_after_a_broker_restart(installation,
                                                                      make_installation):
    secret, token = await secret_and_token(installation)
    code = mfa.current_code(secret, time.time())
    assert (await installation.post("/api/v1/mfa", token, {"code": code})).status == 204
    r = await installation.password_login("anna")
    token2 = (await r.json())["token"]
    r = await installation.post("/api/v1/mfa", token2, {"code": code})
    assert r.status == 401 and (await r.json())["error"] == "code_replayed"
    # a broker started afresh on the same state file remembers the used step
    restarted = Broker(installation.broker.config,
                       Store.for_config(installation.broker.config))
    await restarted.store.open()
    try:
        login = await restarted.store.accounts.get_login(token2, time.time())
        with pytest.raises(CodeReplayed):
            await restarted.second_factor.check(token2, login, code, source="test")
    finally:
        await restarted.close()


async def test_enrolment_counts_only_after_a_confirmed_code(installation):
    r = await installation.password_login("bernd")
    body = await r.json()
    assert body["next"] == "enrol"
    token = body["token"]
    r = await installation.http.get(f"{installation.base_url}/api/v1/mfa/enrolment",
                                    headers={"Authorization": f"Bearer {token}"})
    enrolment = await r.json()
    assert enrolment["qr_svg"].startswith("<svg")
    assert not await installation.broker.second_factor.is_enrolled(
        await installation.broker.logins.login_for(token, need_mfa=False))
    # asking again shows the same secret until it is confirmed
    r = await installation.http.get(f"{installation.base_url}/api/v1/mfa/enrolment",
                                    headers={"Authorization": f"Bearer {token}"})
    assert (await r.json())["secret"] == enrolment["secret"]
    code = mfa.current_code(enrolment["secret"], time.time())
    r = await installation.post("/api/v1/mfa", token, {"code": code})
    assert r.status == 200 and len((await r.json())["recovery_codes"]) == 10  # shown once
    r = await installation.password_login("bernd")
    assert (await r.json())["next"] == "mfa"


async def test_a_replayed_ticket_is_refused(installation):
    conn = await installation.connect(await installation.login("anna"))
    await open_desktop(conn)
    assert await close_code(conn) == (4409, "ticket already used")


async def test_a_ticket_redeemed_at_another_gateway_is_refused_here(installation):
    """Redemption is recorded by the broker, so it holds across a fleet of gateways."""
    conn = await installation.connect(await installation.login("anna"))
    claims = ticket.verify(installation_public_key(installation), conn["ticket"],
                           now=time.time(), audience="demo-gateway")
    assert await installation.broker.reports.redeem([reports.Redemption.of(claims)]) == [
        reports.REDEEMED]
    assert await close_code(conn) == (4409, "ticket already used")


async def test_disconnect_reports_come_in_batches_or_alone(installation):
    conn = await installation.connect(await installation.login("anna"))
    await open_desktop(conn)                      # connected, then the viewer left
    url = f"{installation.base_url}{reports.DISCONNECT}"
    auth = {"Authorization": f"Bearer {installation.broker.config.report_token.decode()}"}
    one = {"tenant": TENANT, "session": conn["session"], "bytes_up": 1, "bytes_down": 2,
           "reason": "client closed"}
    for body, status in (({"disconnects": [one, {**one, "session": "gone"}]}, 204),
                         (one, 204), ({"disconnects": []}, 400),
                         ({"disconnects": [one] * (reports.MAX_DISCONNECTS + 1)}, 400),
                         ({"disconnects": [{"tenant": TENANT}]}, 400)):
        r = await installation.http.post(url, json=body, headers=auth)
        assert r.status == status, body


async def test_a_gateway_of_the_last_version_still_redeems_one_ticket_at_a_time(installation):
    """During a rolling upgrade the brokers may be newer than a gateway: its single redemption
    is answered as it expects (204, then 409 for the same ticket)."""
    conn = await installation.connect(await installation.login("anna"))
    claims = ticket.verify(installation_public_key(installation), conn["ticket"],
                           now=time.time(), audience="demo-gateway")
    url = f"{installation.base_url}{reports.REDEEM}"
    token = installation.broker.config.report_token.decode()
    body = reports.Redemption.of(claims).to_json()
    for expected in (204, 409):
        r = await installation.http.post(url, json=body,
                                         headers={"Authorization": f"Bearer {token}"})
        assert r.status == expected


def installation_public_key(installation):
    return load_pem_private_key(installation.broker.config.ticket_private_key, None).public_key()


def forge(installation, conn, *, key=None, **changes) -> str:
    """Re-mint a real ticket with changed claims (signed with the real key unless ``key``)."""
    real = load_pem_private_key(installation.broker.config.ticket_private_key, None)
    claims = ticket.verify(real.public_key(), conn["ticket"], now=time.time(),
                           audience="demo-gateway")
    fields = {**claims.__dict__, **changes}
    return ticket.mint(key or real, ticket.Claims(**fields))


async def test_a_forged_ticket_is_refused(installation):
    conn = await installation.connect(await installation.login("anna"))
    assert await close_code(conn, forge(installation, conn, key=Ed25519PrivateKey.generate())) \
        == (4401, "ticket invalid")


async def test_a_tampered_ticket_is_refused(installation):
    conn = await installation.connect(await installation.login("anna"))
    payload, sig = conn["ticket"].split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body["tgt"][1] = 22
    tampered = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    assert await close_code(conn, f"{tampered}.{sig}") == (4401, "ticket invalid")


async def test_an_expired_ticket_is_refused(installation):
    conn = await installation.connect(await installation.login("anna"))
    now = int(time.time())
    old = forge(installation, conn, issued_at=now - 60, expires_at=now - 30)
    assert await close_code(conn, old) == (4401, "ticket expired")


async def test_a_ticket_for_a_target_outside_the_allowed_networks_is_refused(installation):
    conn = await installation.connect(await installation.login("anna"))
    elsewhere = forge(installation, conn, target=ticket.Target("192.0.2.10", 22, "vnc"))
    assert await close_code(conn, elsewhere) == (4403, "target not allowed")


async def test_a_ticket_for_another_session_is_refused(installation):
    conn = await installation.connect(await installation.login("anna"))
    other = forge(installation, conn, session="not-a-session")
    assert await close_code(conn, other) == (4409, "ticket already used")


async def test_garbage_instead_of_a_ticket_is_refused(installation):
    conn = await installation.connect(await installation.login("anna"))
    assert await close_code(conn, "hello") == (4400, "ticket malformed")


async def test_a_client_that_sends_no_ticket_is_closed(installation):
    conn = await installation.connect(await installation.login("anna"))
    async with websockets.connect(conn["gateway_url"]) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), DEFAULT_HANDSHAKE_TIMEOUT + 5)
    assert closed.value.rcvd.code == 4408


async def test_a_desktop_that_refuses_the_connection_gets_a_clear_close(installation):
    conn = await installation.connect(await installation.login("anna"))
    dead = forge(installation, conn, target=ticket.Target("127.0.0.1", free_port(), "vnc"))
    assert await close_code(conn, dead) == (4502, "desktop unavailable")


async def silent_first(target_port: int, silent: int):
    """A listener that leaves its first ``silent`` connections open without a word (as a desktop
    whose listen queue overflowed does) and forwards the later ones to ``target_port``."""
    held, seen = [], []

    async def pipe(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    async def handle(reader, writer):
        seen.append(writer)
        if len(seen) <= silent:
            held.append(writer)
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, seen


async def test_a_desktop_that_does_not_greet_is_tried_again_on_a_new_connection(
        make_installation):
    installation = await make_installation(gateway_options={"connect_timeout": 0.5})
    conn = await installation.connect(await installation.login("anna"))
    real = ticket.verify(load_pem_private_key(installation.broker.config.ticket_private_key,
                                              None).public_key(),
                         conn["ticket"], now=time.time(), audience="demo-gateway").target
    server, seen = await silent_first(real.port, silent=1)
    async with server:
        target = ticket.Target("127.0.0.1", server.sockets[0].getsockname()[1], "vnc")
        server_init = await open_desktop({**conn, "ticket": forge(installation, conn,
                                                                   target=target)})
    assert len(seen) == 2 and server_init[24:]  # the desktop's name, over the second connection


async def test_a_desktop_that_never_greets_gets_a_clear_close_after_its_attempts(
        make_installation):
    installation = await make_installation(gateway_options={"connect_timeout": 0.5})
    conn = await installation.connect(await installation.login("anna"))
    server, seen = await silent_first(0, silent=10)
    async with server:
        target = ticket.Target("127.0.0.1", server.sockets[0].getsockname()[1], "vnc")
        assert await close_code(conn, forge(installation, conn, target=target)) \
            == (4502, "desktop unavailable")
    assert len(seen) == DEFAULT_CONNECT_ATTEMPTS


async def test_a_dead_desktop_host_gets_no_sessions_and_users_a_clear_answer(make_installation):
    dead = DesktopEntry("dead", free_port(), 1, "password")
    inst = await make_installation(desktops=[dead])
    await inst.broker.admin.probe_all()
    assert ((await inst.broker.store.hosts.states_and_health(TENANT))[1])["dead"] is False
    r = await inst.post("/api/v1/pools/buero/connect", await inst.login("anna"))
    assert r.status == 503 and (await r.json())["error"] == "no_free_desktop"


async def test_a_directory_that_is_down_gets_a_clear_answer(make_installation):
    inst = await make_installation(directory_servers=[f"ldap://127.0.0.1:{free_port()}"])
    start = time.monotonic()
    r = await inst.password_login("anna")
    assert r.status == 503
    body = await r.json()
    assert body["error"] == "directory_unavailable" and "not reachable" in body["message"]
    assert time.monotonic() - start < 10


async def test_a_login_storm_never_overbooks_a_host(installation):
    users = [f"user{i}" for i in range(1, 7)]
    tokens = await asyncio.gather(*(installation.login(u) for u in users))
    answers = await asyncio.gather(*(installation.post("/api/v1/pools/buero/connect", t)
                                     for t in tokens))
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] * (2 * SEATS) + [503] * (len(users) - 2 * SEATS)
    full = [await a.json() for a in answers if a.status == 503]
    assert all(f["error"] == "no_free_desktop" for f in full)
    sessions = await installation.broker.store.sessions.live(TENANT)
    per_host = {}
    for s in sessions:
        per_host[s.host] = per_host.get(s.host, 0) + 1
    assert max(per_host.values()) <= SEATS


async def test_secrets_never_appear_in_the_log(installation, caplog):
    caplog.set_level("DEBUG")
    token = await installation.login("anna")
    await installation.password_login("anna", "a-wrong-password-xyz")
    conn = await installation.connect(token)
    await open_desktop(conn)
    text = caplog.text
    for secret in (USERS["anna"][1], "a-wrong-password-xyz", token, conn["ticket"]):
        assert secret not in text


async def test_audit_records_logins_without_secrets(installation):
    await installation.login("anna")
    await installation.password_login("anna", "a-wrong-password-xyz")
    log = await installation.broker.store.admin.audit_log(TENANT)
    results = [(e["action"], e["result"]) for e in log]
    assert ("login.password", "bad_credentials") in results
    assert ("login.totp", "ok") in results
    assert "a-wrong-password-xyz" not in json.dumps(log)


async def test_gateway_reports_need_the_gateway_token_and_a_well_formed_body(installation):
    url = f"{installation.base_url}/api/v1/gateway/alive"
    token = installation.broker.config.report_token.decode()
    r = await installation.http.post(url, json={"sessions": []})
    assert r.status == 401
    r = await installation.http.post(url, json={"sessions": "x"},
                                     headers={"Authorization": f"Bearer {token}"})
    assert r.status == 400 and (await r.json())["error"] == "bad_request"
    r = await installation.http.post(url, json={"sessions": []},
                                     headers={"Authorization": f"Bearer {token}"})
    assert r.status == 204
    # each session comes with the ticket that proves its viewer came through this gateway
    r = await installation.http.post(url, json={"sessions": [{"tenant": TENANT, "session": "s"}]},
                                     headers={"Authorization": f"Bearer {token}"})
    assert r.status == 400 and (await r.json())["error"] == "bad_request"
    # a session the broker does not hold is named back: the gateway closes it
    r = await installation.http.post(url, json={"sessions": [
        {"tenant": TENANT, "session": "s", "ticket": "t"}]},
        headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200 and await r.json() == {"ended": [{"tenant": TENANT, "session": "s"}]}


@pytest.mark.parametrize("body", [
    {"logons": "x"}, {"logons": [{"tenant": TENANT}]},
    {"logons": [{"tenant": TENANT, "session": "s", "redeem_seconds": -1, "desktop_seconds": 0}]},
    {"logons": [{"tenant": TENANT, "session": "s", "redeem_seconds": "1",
                 "desktop_seconds": 0}]},
    {"logons": [{"tenant": TENANT, "session": "s", "redeem_seconds": 0,
                 "desktop_seconds": 0}] * (reports.MAX_BATCH + 1)},
])
async def test_the_gateways_logon_reports_are_checked(installation, body):
    url = f"{installation.base_url}{reports.CONNECTED}"
    token = installation.broker.config.report_token.decode()
    r = await installation.http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status == 400 and (await r.json())["error"] == "bad_request"
    fine = {"logons": [{"tenant": TENANT, "session": "unknown", "redeem_seconds": 0.01,
                        "desktop_seconds": 0.02}]}
    r = await installation.http.post(url, json=fine, headers={"Authorization": f"Bearer {token}"})
    assert r.status == 204
    assert (await installation.http.post(url, json=fine)).status == 401


async def test_repeated_wrong_passwords_lock_the_user_out_for_a_while(installation):
    for _ in range(5):
        r = await installation.password_login("anna", "wrong")
        assert r.status == 401
    r = await installation.password_login("anna")          # even the right password waits
    assert r.status == 429 and (await r.json())["error"] == "too_many_attempts"
    assert (await installation.password_login("bernd")).status == 200   # others are not affected
    audit = [(e["actor"], e["result"]) for e in await installation.broker.store.admin.audit_log(TENANT)]
    assert ("anna", "locked_out") in audit
    # the lockout ends by itself
    installation.broker.clock = lambda: time.time() + 901
    assert (await installation.password_login("anna")).status == 200


async def test_guessing_one_time_codes_locks_out(installation):
    secret, token = await secret_and_token(installation)
    right = mfa.current_code(secret, time.time())
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert (await installation.post("/api/v1/mfa", token, {"code": wrong})).status == 401
    r = await installation.post("/api/v1/mfa", token, {"code": right})
    assert r.status == 429


async def test_enrolment_issues_recovery_codes_that_each_work_once(installation):
    r = await installation.password_login("bernd")
    token = (await r.json())["token"]
    r = await installation.http.get(f"{installation.base_url}/api/v1/mfa/enrolment",
                                    headers={"Authorization": f"Bearer {token}"})
    secret = (await r.json())["secret"]
    r = await installation.post("/api/v1/mfa", token,
                                {"code": mfa.current_code(secret, time.time())})
    codes = (await r.json())["recovery_codes"]
    assert r.status == 200 and len(codes) == 10 and len(set(codes)) == 10
    # a lost phone: a recovery code signs in, once
    for expected in (204, 401):
        r = await installation.password_login("bernd")
        token = (await r.json())["token"]
        r = await installation.post("/api/v1/mfa", token, {"code": codes[0].upper()})
        assert r.status == expected
    # the codes are stored only as keyed hashes (read straight from the database)
    rows = await installation.broker.store.engine.read(
        lambda tx: tx.execute("SELECT * FROM recovery_codes").fetchall())
    stored = " ".join(str(row) for row in rows)
    assert rows and not any(c in stored for c in codes)


async def test_an_admin_resets_a_lost_authenticator(installation):
    token = await installation.login("anna")
    await installation.broker.store.admin.create_token("op", "*", "t", now=time.time())
    r = await installation.http.post(
        f"{installation.base_url}/api/v1/admin/tenants/{TENANT}/users/anna/mfa-reset",
        headers={"Authorization": "Bearer op"})
    assert r.status == 200
    r = await installation.password_login("anna")
    assert (await r.json())["next"] == "enrol"
    audit = [(e["action"], e["detail"]) for e in await installation.broker.store.admin.audit_log(TENANT)]
    assert ("mfa.reset", "user=anna") in audit
    assert token


async def test_a_code_sent_again_on_a_completed_login_changes_nothing(installation):
    """A load balancer repeats a request whose broker died after it had accepted the code: the
    same login gets success again, and the code is not checked (or counted) a second time."""
    secret = mfa.new_secret()
    await installation.broker.second_factor.import_enrolment(TENANT, "bernd", secret)
    r = await installation.password_login("bernd")
    token = (await r.json())["token"]
    code = mfa.current_code(secret, time.time())
    for _ in range(2):
        r = await installation.post("/api/v1/mfa", token, {"code": code})
        assert r.status == 204
    r = await installation.password_login("bernd")          # another login: the code is spent
    r = await installation.post("/api/v1/mfa", (await r.json())["token"], {"code": code})
    assert r.status == 401 and (await r.json())["error"] == "code_replayed"
    totp = [e for e in await installation.broker.store.admin.audit_log(TENANT)
            if e["action"] == "login.totp" and e["actor"] == "bernd"]
    assert [e["result"] for e in totp] == ["code_replayed", "ok"]
