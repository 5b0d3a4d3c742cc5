"""The page's dead-key composition (``broker/web/static/dead-keys.js``), pure, run in Node.js:
what a German keyboard types for each accent and the key after it. The real events through
Chromium into a real desktop are in ``test_browser_desktop.py``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[1] / "broker" / "web" / "static" / "dead-keys.js"
CASES = [  # (code, Shift, the key after it, what the keyboard types; None: the accent waits)
    ("Backquote", False, "a", "â"), ("Backquote", False, "E", "Ê"), ("Equal", False, "e", "é"),
    ("Equal", True, "a", "à"), ("Equal", True, "A", "À"), ("Equal", False, "y", "ý"),
    ("Backquote", False, " ", "^"), ("Equal", False, " ", "´"), ("Equal", True, " ", "`"),
    ("Backquote", False, "x", "^x"), ("Equal", False, "1", "´1"),
    ("Backquote", False, "â", "â"), ("Equal", False, "´", "´"),   # composed by the system
    ("Equal", False, "Shift", None), ("Backquote", False, "AltGraph", None),
]
SCRIPT = """
const { accentOf, afterAccent } = await import(process.argv[1]);
const cases = JSON.parse(process.argv[2]);
console.log(JSON.stringify(cases.map(([code, shift, key]) => afterAccent(accentOf(code, shift), key))));
console.log(JSON.stringify([accentOf("KeyQ", false), accentOf("Backquote", true)]));
"""


def test_a_german_keyboards_dead_keys_compose_as_on_the_keyboard():
    node = shutil.which("node")
    if node is None:
        pytest.skip("not installed: node (scripts/setup installs it)")
    out = subprocess.run([node, "--input-type=module", "-e", SCRIPT, "--", MODULE.as_uri(),
                          json.dumps([c[:3] for c in CASES])], capture_output=True, text=True,
                         check=True, timeout=30).stdout.splitlines()
    assert json.loads(out[0]) == [c[3] for c in CASES]
    assert json.loads(out[1]) == [None, None]      # not a dead key of this layout
