"""Thin-client enrolment and bootstrap against the real broker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testbed.demo import DesktopEntry

from testbed.demo import TENANT
from broker.store import OPERATOR

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parent.parent / "client_profiles" / "examples"


@pytest.fixture
async def fleet(make_installation):
    inst = await make_installation(broker_options={"profiles_dir": str(EXAMPLES)})
    await inst.broker.store.admin.create_token("op", OPERATOR, "t", now=time.time())
    return inst


async def call(inst, method, path, body=None, token="op"):
    r = await inst.http.request(method, f"{inst.base_url}{path}", json=body,
                                headers={"Authorization": f"Bearer {token}"})
    return r.status, await r.json()


ADMIN = f"/api/v1/admin/tenants/{TENANT}"


async def test_a_thin_client_enrols_once_and_fetches_its_profile_at_every_boot(fleet):
    status, body = await call(fleet, "POST", f"{ADMIN}/enrolment-codes", {
        "site": "rathaus-front-office", "device_class": "thin-client", "valid_hours": 2})
    assert status == 200
    code = body["code"]
    r = await fleet.http.post(f"{fleet.base_url}/api/v1/devices/enrol",
                              json={"code": f" {code.upper()} ", "name": "Counter 3"})
    device = await r.json()
    assert r.status == 200 and device["credential"].startswith("pfd_")
    r = await fleet.http.post(f"{fleet.base_url}/api/v1/devices/enrol",
                              json={"code": code, "name": "Another"})
    assert r.status == 404                            # a code enrols one device only
    for _ in range(2):                                # every boot
        status, body = await call(fleet, "GET", "/api/v1/devices/profile",
                                  token=device["credential"])
        assert status == 200
        assert body["profile"]["viewer"] == "vnc" and body["profile"]["pools"] == ["buero"]
        assert body["profile"]["display"]["monitors"] == 2
    devices = (await call(fleet, "GET", f"{ADMIN}/devices"))[1]["devices"]
    assert [d["name"] for d in devices] == ["Counter 3"] and devices[0]["last_seen"]


async def enrolled(fleet) -> dict:
    _, body = await call(fleet, "POST", f"{ADMIN}/enrolment-codes",
                         {"site": "rathaus-front-office", "device_class": "thin-client"})
    r = await fleet.http.post(f"{fleet.base_url}/api/v1/devices/enrol",
                              json={"code": body["code"], "name": "tc"})
    return await r.json()


async def test_a_device_credential_never_opens_a_desktop(fleet):
    device = await enrolled(fleet)
    status, body = await call(fleet, "POST", "/api/v1/pools/buero/connect",
                              token=device["credential"])
    assert status == 401 and body["error"] == "login_required"


async def test_an_admin_moves_and_revokes_a_device(fleet):
    device = await enrolled(fleet)
    status, _ = await call(fleet, "POST", f"{ADMIN}/devices/{device['device_id']}/move",
                           {"site": "schule-nord", "device_class": "thin-client"})
    assert status == 200
    _, body = await call(fleet, "GET", "/api/v1/devices/profile", token=device["credential"])
    assert body["site"] == "schule-nord" and body["profile"]["pools"] == []   # no site layer
    status, _ = await call(fleet, "POST", f"{ADMIN}/devices/{device['device_id']}/revoke")
    assert status == 200
    status, body = await call(fleet, "GET", "/api/v1/devices/profile",
                              token=device["credential"])
    assert status == 403 and body["error"] == "device_revoked"
    assert "withdrawn" in body["message"]


async def test_unknown_codes_and_credentials_get_clear_answers(fleet):
    r = await fleet.http.post(f"{fleet.base_url}/api/v1/devices/enrol",
                              json={"code": "aaaa-bbbb-cccc", "name": "x"})
    assert r.status == 404
    status, body = await call(fleet, "GET", "/api/v1/devices/profile", token="pfd_forged")
    assert status == 401


async def connection_file(inst, token: str, body: dict, device: str | None = None,
                          pool: str = "buero"):
    r = await inst.http.post(f"{inst.base_url}/api/v1/pools/{pool}/connection-file", json=body,
                             headers={"Authorization": f"Bearer {token}",
                                      **({"X-Pforte-Device": device} if device else {})})
    return r.status, await r.json()


async def test_the_broker_renders_a_viewer_file_for_the_local_tunnel_from_the_profile(fleet):
    device = await enrolled(fleet)
    token = await fleet.login("anna")
    status, body = await connection_file(fleet, token, {"viewer": "vnc", "port": 5917},
                                         device["credential"])
    assert status == 200 and body["file_name"] == "buero.vnc"
    assert body["media_type"] == "application/x-vnc"
    text = body["content"]
    assert "ServerName=127.0.0.1::5917" in text                   # the tunnel, nothing else
    assert "FullScreenMode=All" in text and "DesktopSize=1920x1080" in text  # the device's class
    host = fleet.broker.config.tenant(TENANT).hosts[0]
    assert f"{host.port}" not in text and host.secret.decode(errors="ignore") not in text
    status, body = await connection_file(fleet, token, {"viewer": "vnc", "port": 5917})
    assert status == 200 and "FullScreenMode=Current" in body["content"]  # no device: defaults
    status, body = await connection_file(fleet, token, {"port": 5917})
    assert (status, body["error"]) == (400, "bad_request")  # the defaults name the browser


async def test_a_viewer_file_is_refused_clearly(fleet):
    token = await fleet.login("anna")
    status, body = await connection_file(fleet, token, {"viewer": "rdp", "port": 5917})
    assert (status, body["error"]) == (409, "viewer_mismatch")   # the pool's desktops speak VNC
    status, body = await connection_file(fleet, token, {"viewer": "vnc", "port": 5917},
                                         pool="elsewhere")
    assert (status, body["error"]) == (403, "not_entitled")
    for port in (0, 70000, "5917", None):
        status, body = await connection_file(fleet, token, {"viewer": "vnc", "port": port})
        assert (status, body["error"]) == (400, "bad_request")
    status, body = await connection_file(fleet, "nobody", {"port": 5917})
    assert status == 401


async def test_a_pool_of_rdp_hosts_gets_an_rdp_file(make_installation):
    inst = await make_installation(desktops=[DesktopEntry(
        "win1", 3389, 10, None, "rdp", options={"certificate_sha256": "ab" * 32})])
    token = await inst.login("anna")
    status, body = await connection_file(inst, token, {"viewer": "rdp", "port": 3390})
    assert status == 200 and body["file_name"] == "buero.rdp"
    assert "full address:s:127.0.0.1:3390\r\n" in body["content"]
    status, body = await connection_file(inst, token, {"viewer": "vnc", "port": 3390})
    assert (status, body["error"]) == (409, "viewer_mismatch")


async def test_the_cli_creates_codes_lists_moves_and_revokes_devices(fleet, tmp_path):
    import asyncio
    import subprocess
    import sys
    token_file = tmp_path / "token"
    token_file.write_text("op")

    async def cli(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pforte", "admin", "--url", fleet.base_url, "--token-file",
            str(token_file), "--tenant", TENANT, *args, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out
        return out.decode()
    code = (await cli("enrolment-code", "--site", "rathaus-front-office", "--class",
                      "thin-client")).split()[0]
    r = await fleet.http.post(f"{fleet.base_url}/api/v1/devices/enrol",
                              json={"code": code, "name": "Counter 9"})
    device = await r.json()
    listing = await cli("devices")
    assert device["device_id"] in listing and "Counter 9" in listing
    await cli("move-device", device["device_id"], "--class", "kiosk-browser")
    status, body = await call(fleet, "GET", "/api/v1/devices/profile",
                              token=device["credential"])
    assert body["device_class"] == "kiosk-browser" and body["profile"]["viewer"] == "browser"
    await cli("revoke-device", device["device_id"])
    status, body = await call(fleet, "GET", "/api/v1/devices/profile",
                              token=device["credential"])
    assert (status, body["error"]) == (403, "device_revoked")


async def test_a_thin_client_is_named_in_the_audit_and_refused_once_revoked(fleet):
    device = await enrolled(fleet)
    token = await fleet.login("anna")

    async def connect():
        r = await fleet.http.post(f"{fleet.base_url}/api/v1/pools/buero/connect",
                                  headers={"Authorization": f"Bearer {token}",
                                           "X-Pforte-Device": device["credential"]})
        return r.status, await r.json()
    status, _ = await connect()
    assert status == 200
    audit = await fleet.broker.store.admin.audit_log(TENANT)
    assert any(e["action"] == "connect" and e["result"] == "ok"
               and e["source"].endswith(f"device {device['device_id']}") for e in audit)
    await call(fleet, "POST", f"{ADMIN}/devices/{device['device_id']}/revoke")
    status, body = await connect()
    assert (status, body["error"]) == (403, "device_revoked")
