"""The page's PforteChannel (JavaScript) and wire.resume (Python) speak the same control
messages: the page's module is run in Node.js and its words compared with Python's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from wire.resume import (ACK_EVERY, Ack, Notice, Offer, Ping, Pong, ResumableRdp, Resume, Resumed,
                         ResumeToken, decode, encode, resume_url)

CHANNEL = Path(__file__).resolve().parents[1] / "broker" / "web" / "static" / "pforte-channel.js"
GATEWAY_SAYS = [encode(ResumeToken("tok-1", "gw-2")), encode(Resumed(123)), encode(Ack(65536)),
                '{"ack": -1}', '{"resumed": "3"}', "nope", "[]", '{"resume": "t", "gateway": 7}',
                '{"resume": "tok-0"}', encode(Pong(1234)), '{"pong": -1}',
                encode(Notice("Wartung um 22 Uhr", 1700000000)), '{"notice": "Hallo"}',
                '{"notice": "x", "deadline": -5}', '{"notice": 7}']
URLS = [("wss://gw.example/ws", "gw-2"), ("wss://gw.example/ws?gateway=gw-1&x=1", "gw-2"),
        ("ws://127.0.0.1:8080/ws", ""), ("wss://gw.example/ws", "a b&c")]

SCRIPT = """
const m = await import(process.argv[1]);
const said = JSON.parse(process.argv[2]);
console.log(JSON.stringify({
    ackEvery: m.ACK_EVERY,
    offer: m.messages.offer("T.1"),
    resumableRdp: m.messages.resumableRdp(),
    resume: m.messages.resume("tok-1", 42),
    ack: m.messages.ack(7),
    ping: m.messages.ping(99),
    decoded: said.map((text) => m.decodeControl(text)),
    urls: JSON.parse(process.argv[3]).map(([url, gateway]) => m.resumeUrl(url, gateway)),
}));
"""


@pytest.fixture(scope="module")
def page():
    node = shutil.which("node")
    if node is None:
        pytest.skip("not installed: node (scripts/setup installs it with npm)")
    out = subprocess.run([node, "--input-type=module", "-e", SCRIPT, "--", CHANNEL.as_uri(),
                          json.dumps(GATEWAY_SAYS), json.dumps(URLS)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_both_acknowledge_at_the_same_cadence(page):
    assert page["ackEvery"] == ACK_EVERY


def test_what_the_page_sends_is_what_the_gateway_decodes(page):
    assert decode(page["offer"]) == Offer("T.1", resumable=True)
    assert decode(page["resume"]) == Resume("tok-1", 42)
    assert decode(page["ack"]) == Ack(7)
    assert decode(page["ping"]) == Ping(99) and page["ping"] == encode(Ping(99))
    assert page["offer"] == encode(Offer("T.1", resumable=True))
    assert page["resume"] == encode(Resume("tok-1", 42))
    assert page["resumableRdp"] == encode(ResumableRdp())
    assert decode(page["resumableRdp"]) == ResumableRdp()


@pytest.mark.parametrize("text", ['{"resumable": 1}', '{"resumable": false}',
                                  '{"resumable": true, "ticket": 5}',
                                  '{"resumable": true, "resume": "t", "offset": 0}'])
def test_an_rdp_announcement_is_exactly_one_word(text):
    assert not isinstance(decode(text), ResumableRdp)


def test_the_page_reads_what_the_gateway_sends_and_nothing_else(page):
    expected = [{"kind": "token", "value": "tok-1", "gateway": "gw-2"},
                {"kind": "resumed", "value": 123}, {"kind": "ack", "value": 65536}, None, None,
                None, None, None, {"kind": "token", "value": "tok-0", "gateway": ""},
                {"kind": "pong", "value": 1234}, None,
                {"kind": "notice", "value": "Wartung um 22 Uhr", "deadline": 1700000000},
                {"kind": "notice", "value": "Hallo", "deadline": 0}, None, None]
    assert page["decoded"] == expected
    assert [decode(text) is not None for text in GATEWAY_SAYS] == [x is not None
                                                                   for x in expected]


def test_both_reattach_at_the_url_that_names_the_holding_gateway(page):
    assert page["urls"] == [resume_url(url, gateway) for url, gateway in URLS]
    assert page["urls"][:3] == ["wss://gw.example/ws?gateway=gw-2",
                                "wss://gw.example/ws?x=1&gateway=gw-2", "ws://127.0.0.1:8080/ws"]
