"""Structured mutations of ISAKMP messages, for fuzzing any IKEv1 implementation.

Owns pure, deterministic mutation functions. Each takes the input and a ``choose(n) -> int``
callable that returns an integer in ``range(n)``; all randomness comes from ``choose``. The
hypothesis strategies (``ikeproto.strategies``) pass a ``choose`` that draws from hypothesis (so
failures shrink), the fuzz harness (``ikeproto.fuzz``) one backed by ``random.Random(seed)`` (so a
case is reproducible from its seed). Nothing here sends anything.

Byte-level mutations locate the header, payload, proposal, transform and attribute fields with a
lenient walker (``locate_fields``) so that length fields can be made to lie; message-level
mutations reorder, duplicate or delete payloads and swap attribute forms (TV <-> TLV), then
serialize, so the result is well-formed ISAKMP carrying a semantic fault.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

from ikeproto.attributes import Attribute
from ikeproto.enums import PayloadType
from ikeproto.message import HEADER_LENGTH, Message, serialize_message
from ikeproto.proposals import SaPayload

__all__ = [
    "BYTE_MUTATIONS",
    "Choose",
    "Field",
    "MESSAGE_MUTATIONS",
    "delete_payload",
    "duplicate_payload",
    "extend",
    "fix_header_length",
    "flip_bits",
    "lie_count",
    "lie_length",
    "locate_fields",
    "mutate_bytes",
    "mutate_message",
    "reorder_payloads",
    "set_field",
    "swap_attribute_forms",
    "truncate",
]

Choose = Callable[[int], int]


@dataclass(frozen=True, slots=True)
class Field:
    """A numeric field in a datagram: where it is, how wide (octets) and what it means."""

    offset: int
    size: int
    kind: str  # "length", "count", "spi_size", "next", "type", "version", "flags"


def locate_fields(data: bytes) -> list[Field]:
    """The numeric fields of ``data`` found by a lenient walk (stops where the bytes stop making
    sense; never raises). Encrypted bodies are not entered."""
    out: list[Field] = []
    n = len(data)
    if n < HEADER_LENGTH:
        return out
    out += [Field(16, 1, "next"), Field(17, 1, "version"), Field(18, 1, "type"), Field(19, 1, "flags"), Field(24, 4, "length")]
    if data[19] & 1:
        return out
    nxt, pos = data[16], HEADER_LENGTH
    while nxt and pos + 4 <= n and len(out) < 4096:
        length = struct.unpack_from("!H", data, pos + 2)[0]
        out += [Field(pos, 1, "next"), Field(pos + 2, 2, "length")]
        end = min(pos + max(length, 4), n)
        if nxt == PayloadType.SA:
            _locate_sa(data, pos + 12, end, out)
        elif nxt in (PayloadType.N, PayloadType.D) and pos + 12 <= end:
            out += [Field(pos + 9, 1, "spi_size")]
            if nxt == PayloadType.D:
                out += [Field(pos + 10, 2, "count")]
        elif nxt == PayloadType.ID and pos + 5 <= end:
            out += [Field(pos + 4, 1, "type")]
        nxt, pos = data[pos], pos + max(length, 4)
    return out


def _locate_sa(data: bytes, pos: int, end: int, out: list[Field]) -> None:
    while pos + 8 <= end and len(out) < 4096:
        plen = struct.unpack_from("!H", data, pos + 2)[0]
        out += [Field(pos, 1, "next"), Field(pos + 2, 2, "length"), Field(pos + 6, 1, "spi_size"), Field(pos + 7, 1, "count")]
        pend = min(pos + max(plen, 8), end)
        t = pos + 8 + data[pos + 6]
        while t + 8 <= pend and len(out) < 4096:
            tlen = struct.unpack_from("!H", data, t + 2)[0]
            out += [Field(t, 1, "next"), Field(t + 2, 2, "length")]
            tend = min(t + max(tlen, 8), pend)
            a = t + 8
            while a + 4 <= tend and len(out) < 4096:
                word, val = struct.unpack_from("!HH", data, a)
                out += [Field(a, 2, "type")]
                if word & 0x8000:
                    a += 4
                else:
                    out += [Field(a + 2, 2, "length")]
                    a += 4 + val
            t += max(tlen, 8)
        pos += max(plen, 8)


def set_field(data: bytes, field: Field, value: int) -> bytes:
    """``data`` with ``field`` set to ``value`` (masked to the field width)."""
    b = bytearray(data)
    b[field.offset : field.offset + field.size] = (value & ((1 << (8 * field.size)) - 1)).to_bytes(field.size, "big")
    return bytes(b)


def _lies(current: int, size: int, choose: Choose) -> int:
    top = (1 << (8 * size)) - 1
    options = (0, 1, 3, 4, 7, 8, 27, 28, current - 1, current + 1, current * 2, top, top - 1, top // 2 + 1)
    i = choose(len(options) + 1)
    return options[i] if i < len(options) else choose(top + 1 if size < 4 else 1 << 16)


def flip_bits(data: bytes, choose: Choose) -> bytes:
    """Flip 1-4 random bits."""
    if not data:
        return data
    b = bytearray(data)
    for _ in range(1 + choose(4)):
        bit = choose(len(b) * 8)
        b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def truncate(data: bytes, choose: Choose) -> bytes:
    """Cut the datagram short (keeping the header length field as it was: it now lies)."""
    return data[: choose(len(data))] if data else data


def extend(data: bytes, choose: Choose) -> bytes:
    """Append 1-64 octets (zeros, 0xFF or a repeat of the datagram's own tail)."""
    n = 1 + choose(64)
    kind = choose(3)
    tail = bytes(n) if kind == 0 else b"\xff" * n if kind == 1 else (data[-n:] or b"\x00")
    return data + tail


def lie_length(data: bytes, choose: Choose) -> bytes:
    """Make one header, payload, proposal, transform or attribute length field lie."""
    fields = [f for f in locate_fields(data) if f.kind == "length"]
    if not fields:
        return flip_bits(data, choose)
    f = fields[choose(len(fields))]
    current = int.from_bytes(data[f.offset : f.offset + f.size], "big")
    return set_field(data, f, _lies(current, f.size, choose))


def lie_count(data: bytes, choose: Choose) -> bytes:
    """Make a transform count, SPI count, SPI size, next-payload or type field lie."""
    fields = [f for f in locate_fields(data) if f.kind != "length"]
    if not fields:
        return flip_bits(data, choose)
    f = fields[choose(len(fields))]
    current = int.from_bytes(data[f.offset : f.offset + f.size], "big")
    return set_field(data, f, _lies(current, f.size, choose))


def reorder_payloads(msg: Message, choose: Choose) -> Message:
    """Swap two payloads (clear messages only)."""
    p = list(msg.payloads)
    if len(p) >= 2:
        i, j = choose(len(p)), choose(len(p))
        p[i], p[j] = p[j], p[i]
    return replace(msg, payloads=tuple(p))


def duplicate_payload(msg: Message, choose: Choose) -> Message:
    """Repeat one payload (1-3 extra copies) at a random position."""
    p = list(msg.payloads)
    if p:
        item = p[choose(len(p))]
        for _ in range(1 + choose(3)):
            p.insert(choose(len(p) + 1), item)
    return replace(msg, payloads=tuple(p))


def delete_payload(msg: Message, choose: Choose) -> Message:
    """Drop one payload (the "missing mandatory payload" class: CVE-2013-6467, CVE-2005-3732)."""
    p = list(msg.payloads)
    if p:
        del p[choose(len(p))]
    return replace(msg, payloads=tuple(p))


def swap_attribute_forms(msg: Message, choose: Choose) -> Message:
    """Turn TV attributes into TLV (2-octet value) and short TLV ones into TV, in SA payloads."""

    def swap(a: Attribute) -> Attribute:
        if choose(2):
            return a
        if isinstance(a.value, int):
            return Attribute(type=a.type, value=a.value.to_bytes(2, "big") if choose(2) else a.value.to_bytes(4, "big"))
        if len(a.value) <= 2:
            return Attribute(type=a.type, value=int.from_bytes(a.value, "big"))
        return a

    payloads = []
    for p in msg.payloads:
        if isinstance(p, SaPayload):
            props = tuple(
                replace(pr, transforms=tuple(replace(t, attributes=tuple(swap(a) for a in t.attributes)) for t in pr.transforms))
                for pr in p.proposals
            )
            p = replace(p, proposals=props)
        payloads.append(p)
    return replace(msg, payloads=tuple(payloads))


BYTE_MUTATIONS: tuple[Callable[[bytes, Choose], bytes], ...] = (flip_bits, truncate, extend, lie_length, lie_count)
MESSAGE_MUTATIONS: tuple[Callable[[Message, Choose], Message], ...] = (
    reorder_payloads,
    duplicate_payload,
    delete_payload,
    swap_attribute_forms,
)


def fix_header_length(data: bytes) -> bytes:
    """Make the header length tell the truth again, so the fault reaches the payload parser
    instead of being caught by the first check (RFC 2408 §3.1 length vs datagram)."""
    if len(data) < HEADER_LENGTH:
        return data
    return data[:24] + len(data).to_bytes(4, "big") + data[28:]


def mutate_bytes(data: bytes, choose: Choose, *, rounds: int = 1) -> bytes:
    """Apply ``rounds`` byte-level mutations chosen by ``choose``; then, half of the time, make
    the header length match the new size so the deeper parsers see the fault."""
    for _ in range(rounds):
        data = BYTE_MUTATIONS[choose(len(BYTE_MUTATIONS))](data, choose)
    return fix_header_length(data) if choose(2) else data


def mutate_message(msg: Message, choose: Choose) -> bytes:
    """One structured mutation of ``msg`` then, half of the time, a byte-level one; returns the
    datagram. Structured mutations re-serialize, so their output is well-formed ISAKMP."""
    if msg.payloads and choose(2):
        msg = MESSAGE_MUTATIONS[choose(len(MESSAGE_MUTATIONS))](msg, choose)
        data = serialize_message(msg)
        return mutate_bytes(data, choose) if choose(2) else data
    return mutate_bytes(serialize_message(msg), choose, rounds=1 + choose(3))
