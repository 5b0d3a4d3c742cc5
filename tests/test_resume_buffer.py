"""The replay buffer: whatever is sent, acknowledged and asked for again, the bytes match."""

import pytest
from hypothesis import given, strategies as st

from wire.resume import CannotResume, ReplayBuffer, decode


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=30), st.data())
def test_since_returns_exactly_the_bytes_after_an_offset(chunks, data):
    buf = ReplayBuffer()
    stream = b""
    for c in chunks:
        buf.append(c)
        stream += c
    acked = data.draw(st.integers(0, len(stream)))
    buf.ack(acked)
    assert buf.held <= len(stream) - acked + max((len(c) for c in chunks), default=0)
    offset = data.draw(st.integers(0, len(stream)))
    if offset < buf.start:
        with pytest.raises(CannotResume):
            buf.since(offset)
    else:
        assert b"".join(buf.since(offset)) == stream[offset:]


def test_an_offset_beyond_what_was_sent_cannot_resume():
    buf = ReplayBuffer()
    buf.append(b"abc")
    with pytest.raises(CannotResume):
        buf.since(4)


def test_acks_outside_the_stream_are_ignored():
    buf = ReplayBuffer()
    buf.append(b"abc")
    buf.ack(10)
    assert buf.held == 3 and b"".join(buf.since(0)) == b"abc"


@pytest.mark.parametrize("text", ["", "[]", "nope", "1", '"x"', "{}", '{"ack": -1}',
                                  '{"ack": true}', '{"resume": 5}', '{"ticket": 1}',
                                  '{"resumed": "3"}', "[" * 100_000])
def test_what_is_no_control_message_decodes_as_none(text):
    assert decode(text) is None
