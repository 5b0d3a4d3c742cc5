"""The DER that RDP's neighbours speak (RDCleanPath, CredSSP's TSRequest): definite lengths,
single-byte tags, explicitly tagged fields. Pure functions; anything else is :class:`Malformed`.
"""

from __future__ import annotations

SEQUENCE, INTEGER, OCTETS, UTF8 = 0x30, 0x02, 0x04, 0x0C


class Malformed(ValueError):
    """Not the DER this reader takes."""


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _length(len(value)) + value


def integer(n: int) -> bytes:
    return tlv(INTEGER, n.to_bytes(n.bit_length() // 8 + 1, "big"))   # a leading 0: positive


def explicit(number: int, inner_tlv: bytes) -> bytes:
    """A context-specific field [number] around a TLV."""
    return tlv(0xA0 | number, inner_tlv)


def header_length(start: bytes) -> int | None:
    """How many bytes a TLV's tag and length take, from its first bytes; None: not yet known.

    Raises:
        Malformed: an indefinite or oversized length.
    """
    if len(start) < 2:
        return None
    if start[1] < 0x80:
        return 2
    count = start[1] & 0x7F
    if count == 0 or count > 3:
        raise Malformed("length")
    return 2 + count


def read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """The tag, value and end of the TLV at ``pos``.

    Raises:
        Malformed: truncated, an indefinite or oversized length, a multi-byte tag.
    """
    size = header_length(data[pos:pos + 2])
    if size is None or pos + size > len(data):
        raise Malformed("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise Malformed("multi-byte tag")
    length = data[pos + 1] if size == 2 else int.from_bytes(data[pos + 2:pos + size], "big")
    end = pos + size + length
    if end > len(data):
        raise Malformed("truncated")
    return tag, data[pos + size:end], end


def fields(body: bytes) -> dict[int, bytes]:
    """The explicitly tagged fields of a SEQUENCE's body: number → the inner TLV."""
    found: dict[int, bytes] = {}
    pos = 0
    while pos < len(body):
        tag, value, pos = read_tlv(body, pos)
        if tag & 0xE0 != 0xA0 or tag & 0x1F in found:
            raise Malformed("field")
        found[tag & 0x1F] = value
    return found


def inner(field: bytes, tag: int) -> bytes:
    """The value of the one TLV a field holds, which must be of type ``tag``."""
    got, value, end = read_tlv(field, 0)
    if got != tag or end != len(field):
        raise Malformed("field type")
    return value


def number(field: bytes) -> int:
    return int.from_bytes(inner(field, INTEGER), "big")


def utf8(field: bytes) -> str:
    try:
        return inner(field, UTF8).decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("not UTF-8") from None


def sequence_of(body: bytes) -> list[tuple[int, bytes]]:
    """The (tag, value) of each TLV in a SEQUENCE OF's body."""
    items, pos = [], 0
    while pos < len(body):
        tag, value, pos = read_tlv(body, pos)
        items.append((tag, value))
    return items
