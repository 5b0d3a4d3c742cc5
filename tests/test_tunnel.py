"""Native viewers: connection files (pure) and the local tunnel carrying a real VNC client
(vncdotool) through the gateway to a real Xvnc desktop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client_profiles.connection_files import rdp_file, vnc_file, vv_file
from client_profiles.profiles import load_layers, resolve
from client.tunnel import Tunnel
from testbed import hex_rgb

EXAMPLES = Path(__file__).resolve().parent.parent / "client_profiles" / "examples"
THIN = resolve(load_layers(EXAMPLES, device="tc-0042", device_class="thin-client",
                           site="rathaus-front-office"))


def test_the_vnc_file_points_at_the_tunnel_and_carries_the_profile():
    text = vnc_file(THIN, "127.0.0.1", 5999)
    assert "ServerName=127.0.0.1::5999" in text
    assert "FullScreenMode=All" in text and "DesktopSize=1920x1080" in text
    assert "AcceptClipboard=1" in text


def test_the_rdp_file_says_what_may_be_redirected():
    text = rdp_file(THIN, "127.0.0.1", 5999)
    assert "full address:s:127.0.0.1:5999\r\n" in text
    assert "redirectprinters:i:1" in text and "usbdevicestoredirect:s:\r\n" in text
    assert "use multimon:i:1" in text


def test_the_vv_file_is_for_remote_viewer():
    text = vv_file(THIN, "127.0.0.1", 5999)
    assert text.startswith("[virt-viewer]\ntype=spice\nhost=127.0.0.1\nport=5999\n")
    assert "enable-usbredir=0" in text


def test_no_file_names_a_desktop_or_a_secret():
    for render in (vnc_file, rdp_file, vv_file):
        text = render(THIN, "127.0.0.1", 5999).lower()
        assert "password" not in text and "ticket" not in text


@pytest.mark.integration
async def test_a_real_vnc_client_sees_the_desktop_through_the_tunnel(installation, desktops,
                                                                      tmp_path):
    from vncdotool import api
    token = await installation.login("anna")
    tunnel = Tunnel(installation.base_url, token, "buero")
    port = await tunnel.start()
    shot = tmp_path / "screen.png"
    try:
        def capture() -> None:
            client = api.connect(f"127.0.0.1::{port}", password=None, timeout=20)
            try:
                client.captureScreen(str(shot))
            finally:
                client.disconnect()
        await asyncio.to_thread(capture)
    finally:
        await tunnel.close()
    from PIL import Image
    image = Image.open(shot).convert("RGB")
    corner = image.getpixel((image.width - 20, image.height - 20))
    assert corner in {hex_rgb(d.colour) for d in desktops}
    audit = [e["action"] for e in await installation.broker.store.admin.audit_log("musterstadt")]
    assert "connect" in audit          # the native client went through broker and gateway


def teardown_module():
    try:
        from vncdotool import api
        api.shutdown()
    except Exception:  # noqa: BLE001 - only the reactor thread, if it ever started
        pass


@pytest.mark.integration
async def test_pforte_connect_writes_the_viewer_file_for_its_port(installation, tmp_path):
    import sys
    token_file = tmp_path / "token"
    token_file.write_text(await installation.login("anna"))
    viewer_file = tmp_path / "desk.vnc"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pforte", "connect", "--url", installation.base_url,
        "--token-file", str(token_file), "--pool", "buero", "--viewer-file", str(viewer_file),
        stdout=asyncio.subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        port = int(line.strip().rsplit(":", 1)[1])
        await asyncio.wait_for(proc.stdout.readline(), 5)
        assert f"ServerName=127.0.0.1::{port}" in viewer_file.read_text()
    finally:
        proc.terminate()
        await proc.wait()
