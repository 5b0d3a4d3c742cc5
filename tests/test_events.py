"""Event lines (wire/events.py): one event per line, whatever a hostile user typed."""

from __future__ import annotations

from wire.events import line


def test_an_event_is_key_value_pairs_with_quotes_where_needed():
    assert line("login.password", tenant="jork", user="anna", source="10.0.0.1",
                result="ok", detail=None) == \
        "event=login.password tenant=jork user=anna source=10.0.0.1 result=ok"
    assert line("session.end", reason="client closed", bytes_up=14) == \
        'event=session.end reason="client closed" bytes_up=14'
    assert line("x", detail="") == 'event=x detail=""'


def test_a_typed_name_can_neither_forge_a_line_nor_a_field():
    forged = line("login.password", user='anna\nevent=login.password user=admin result=ok',
                  result="bad_credentials")
    assert "\n" not in forged and forged.count("event=") == 2      # the second inside quotes
    assert forged.endswith("result=bad_credentials")
    assert 'user="anna\\\\u000aevent=login.password user=admin result=ok"' in forged
    quoted = line("x", user='a" result=ok')
    assert quoted == 'event=x user="a\\" result=ok"'
    assert "\u202e" not in line("x", user="abc\u202edef")           # bidi controls escaped
