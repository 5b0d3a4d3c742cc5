"""Every spelling the directory accepts is one person: the same second factor, the same sessions,
the same throttle, the same admin rights. Against real broker and gateway processes and slapd."""

from __future__ import annotations

import ldap3
import pytest

from ..conftest import USERS
from .conftest import DOMAIN, bearer

pytestmark = pytest.mark.integration


def spellings(user: str) -> list[str]:
    """What an attacker types for ``user``: the directory finds the same entry for each."""
    upper = user.upper()
    return [f"{upper}@{DOMAIN}", f"{user.capitalize()}@{DOMAIN.upper()}", f" {user} @{DOMAIN}",
            f"{user}  @{DOMAIN}", f"MUSTERSTADT\\{user}", f"musterstadt\\{upper}",
            f"\t{user}@{DOMAIN} "]


async def test_another_spelling_with_the_password_alone_never_reaches_enrolment(live):
    """The critical fault: ``Anna@…`` was sent to enrolment and could enrol an attacker's
    authenticator. Now every spelling is asked for the one-time code of the real account."""
    async with live.client("10.10.0.1") as http:
        await live.enrol(http, "guard1")
        for typed in spellings("guard1"):
            r = await http.post(f"{live.portal}/api/v1/login",
                                json={"username": typed, "password": USERS["guard1"][1]})
            assert r.status == 200, (typed, await r.text())
            body = await r.json()
            assert body["next"] == "mfa", typed
            r = await http.get(f"{live.portal}/api/v1/mfa/enrolment",
                               headers=bearer(body["token"]))
            assert r.status == 400, typed                       # already enrolled: no secret
            r = await http.get(f"{live.portal}/api/v1/pools", headers=bearer(body["token"]))
            assert r.status == 401, typed                       # nothing without the code
    logins = [e for e in await live.audit() if e["action"] == "login.password"
              and e["result"] == "ok"]
    assert {e["actor"] for e in logins} == {"guard1"}


async def test_every_spelling_reaches_the_same_session(live):
    async with live.client("10.10.0.2") as http:
        recovery = await live.enrol(http, "guard2")
        first = await live.login(http, "guard2")
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(first))
        assert r.status == 200, await r.text()
        session = (await r.json())["session"]
        other = await live.login(http, "guard2", typed=f"GUARD2@{DOMAIN}", code=recovery[0])
        r = await http.post(f"{live.portal}/api/v1/pools/buero/connect", headers=bearer(other))
        assert (await r.json())["session"] == session
    sessions = [e for e in await live.audit() if e["action"] == "connect"
                and e["result"] == "ok" and session in e["detail"]]
    assert {e["actor"] for e in sessions} == {"guard2"} and len(sessions) == 2


async def test_wrong_passwords_in_any_spelling_count_against_one_account(live):
    async with live.client("10.10.0.3") as http:
        for typed in spellings("guard3")[:5]:
            r = await http.post(f"{live.portal}/api/v1/login",
                                json={"username": typed, "password": "wrong"})
            assert r.status == 401, typed
        r = await http.post(f"{live.portal}/api/v1/login",
                            json={"username": f"guard3@{DOMAIN}", "password": USERS["guard3"][1]})
        assert r.status == 429 and (await r.json())["error"] == "too_many_attempts"


async def test_an_unknown_name_in_any_spelling_has_one_counter(live):
    async with live.client("10.10.0.4") as http:
        for typed in ["ghost", "GHOST", " ghost ", "Ghost", "gHoSt"]:
            r = await http.post(f"{live.portal}/api/v1/login",
                                json={"username": f"{typed}@{DOMAIN}", "password": "x"})
            assert r.status == 401
        r = await http.post(f"{live.portal}/api/v1/login",
                            json={"username": f"ghost@{DOMAIN}", "password": "x"})
        assert r.status == 429


async def test_an_admins_password_in_another_spelling_gives_no_admin_right(live):
    """With fault 1 the attacker enrolled under ``AIDA`` and reached the tenant admin API."""
    async with live.client("10.10.0.5") as http:
        await live.enrol(http, "aida")
        r = await http.post(f"{live.portal}/api/v1/login",
                            json={"username": f"AIDA@{DOMAIN}", "password": USERS["aida"][1]})
        body = await r.json()
        assert body["next"] == "mfa"
        r = await http.get(f"{live.portal}/api/v1/admin/tenants/musterstadt/hosts",
                           headers=bearer(body["token"]))
        assert r.status == 401
        token = await live.login(http, "aida", typed=f"Aida@{DOMAIN}")  # with her code: yes
        r = await http.get(f"{live.portal}/api/v1/admin/tenants/musterstadt/hosts",
                           headers=bearer(token))
        assert r.status == 200


async def test_an_admin_resets_the_real_account_whatever_spelling_they_type(live):
    async with live.client("10.10.0.6") as http:
        await live.enrol(http, "guard4")
        r = await http.post(f"{live.portal}/api/v1/admin/tenants/musterstadt/users/"
                            f"GUARD4@{DOMAIN}/mfa-reset", headers=bearer(live.admin_token))
        assert r.status == 200 and (await r.json())["user"] == "guard4"
        r = await http.post(f"{live.portal}/api/v1/login",
                            json={"username": f"guard4@{DOMAIN}", "password": USERS["guard4"][1]})
        assert (await r.json())["next"] == "enrol"
        r = await http.post(f"{live.portal}/api/v1/admin/tenants/musterstadt/users/"
                            "nobody-here/mfa-reset", headers=bearer(live.admin_token))
        assert r.status == 404


async def test_an_entry_with_two_login_names_is_one_identity(live, slapd):
    """uid is multi-valued in OpenLDAP: either value finds the entry, both are one person."""
    with slapd.admin() as c:
        c.modify(slapd.user_dn("guard5"), {"uid": [(ldap3.MODIFY_ADD, ["g5-alias"])]})
    async with live.client("10.10.0.7") as http:
        tokens = [await live.password(http, f"{typed}@{DOMAIN}", USERS["guard5"][1])
                  for typed in ("guard5", "G5-ALIAS")]
        for token in tokens:
            r = await http.get(f"{live.portal}/api/v1/mfa/enrolment", headers=bearer(token))
            assert r.status == 200
        secrets_shown = set()
        for token in tokens:
            r = await http.get(f"{live.portal}/api/v1/mfa/enrolment", headers=bearer(token))
            secrets_shown.add((await r.json())["secret"])
        assert len(secrets_shown) == 1      # one enrolment in progress, not two
