"""ISAKMP data attributes (RFC 2408 §3.3): the basic (TV) and variable (TLV) forms.

Owns the ``Attribute`` record and its buffer codec. It does not know what an attribute means:
the phase 1 classes (RFC 2409 Appendix A) and IPsec DOI attributes (RFC 2407 §4.5) are named in
``ikeproto.enums`` and interpreted by the exchange layer.

Wire form: ``AF|Attribute Type`` (1 + 15 bits), then either the 2-octet value (AF = 1, basic, TV)
or a 2-octet length and that many value octets (AF = 0, variable, TLV). The form is part of the
model (``int`` value = TV, ``bytes`` value = TLV) so serialization is byte-exact.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields

from ikeproto.errors import LengthMismatchError, MalformedError, UsageError

__all__ = [
    "Attribute",
    "attributes_dict",
    "parse_attributes",
    "pull_attributes",
    "push_attributes",
    "serialize_attributes",
]

_AF = 0x8000
_U16x2 = struct.Struct("!HH")


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribute:
    """One data attribute. ``value`` is an ``int`` (0..65535) for the basic TV form (AF = 1) and
    ``bytes`` for the variable TLV form (AF = 0); ``type`` is the 15-bit attribute type."""

    type: int
    value: int | bytes

    @classmethod
    def tv(cls, type: int, value: int) -> Attribute:
        """A basic (TV, AF = 1) attribute: a 2-octet value."""
        return cls(type=type, value=int(value))

    @classmethod
    def tlv(cls, type: int, value: bytes | int, *, length: int | None = None) -> Attribute:
        """A variable (TLV, AF = 0) attribute. An ``int`` value is encoded big-endian in
        ``length`` octets (default: the fewest, at least 1)."""
        if isinstance(value, int):
            n = length if length is not None else max(1, (value.bit_length() + 7) // 8)
            value = value.to_bytes(n, "big")
        return cls(type=type, value=bytes(value))

    @classmethod
    def auto(cls, type: int, value: int) -> Attribute:
        """TV when the value fits in 16 bits, else TLV (RFC 2409 App. A: Life Duration may be either)."""
        return cls.tv(type, value) if 0 <= value <= 0xFFFF else cls.tlv(type, value)

    @property
    def is_basic(self) -> bool:
        """True for the TV form (AF bit set)."""
        return isinstance(self.value, int)

    @property
    def int_value(self) -> int:
        """The value as an unsigned big-endian integer, whatever the form."""
        v = self.value
        return v if isinstance(v, int) else int.from_bytes(v, "big")


def fast_factory(cls: type) -> Callable[..., object]:
    """A positional constructor for a frozen slots dataclass that fills its slots directly.

    The parsers build many small records; skipping the generated ``__init__`` (keyword handling
    and ``object.__setattr__`` per field) makes them 2-3 times faster. Only for parsers, which
    pass every field in declaration order with values already checked."""
    names = [f.name for f in fields(cls)]
    env: dict[str, object] = {"new": object.__new__, "cls": cls}
    env.update({f"set_{n}": getattr(cls, n).__set__ for n in names})
    body = "".join(f"    set_{n}(obj, {n})\n" for n in names)
    exec(f"def make({', '.join(names)}):\n    obj = new(cls)\n{body}    return obj\n", env)  # noqa: S102 - as dataclasses does
    return env["make"]  # type: ignore[return-value]


_make_attribute = fast_factory(Attribute)
_FAST_MAX = 32  # attributes per transform handled by the one-unpack fast path
_U16_RUNS = [struct.Struct(f"!{i}H") for i in range(2 * _FAST_MAX + 1)]


def pull_attributes(data: bytes, offset: int, end: int, *, payload_type: int | None = None) -> tuple[Attribute, ...]:
    """Parse attributes filling ``data[offset:end]`` exactly; raise on any overrun."""
    n = end - offset
    if 0 < n <= 4 * _FAST_MAX and not n & 3:
        # Fast path for the usual all-basic list (phase 1 and most phase 2 transforms).
        words = _U16_RUNS[n >> 1].unpack_from(data, offset)
        types = words[0::2]
        if min(types) & 0x8000:
            return tuple(map(_make_attribute, [t & 0x7FFF for t in types], words[1::2]))
    out = []
    append = out.append
    make = _make_attribute
    unpack = _U16x2.unpack_from
    while offset < end:
        if end - offset < 4:
            raise MalformedError("attribute header cut short", offset=offset, payload_type=payload_type)
        word, val = unpack(data, offset)
        if word & 0x8000:
            append(make(word & 0x7FFF, val))
            offset += 4
        else:
            stop = offset + 4 + val
            if stop > end:
                # RFC 2408 §3.3: the length counts the value only; it must stay inside the parent.
                raise LengthMismatchError(
                    f"variable attribute {word} length {val} overruns its transform",
                    offset=offset,
                    payload_type=payload_type,
                )
            append(make(word, data[offset + 4 : stop]))
            offset = stop
    return tuple(out)


def parse_attributes(data: bytes, *, payload_type: int | None = None) -> tuple[Attribute, ...]:
    """Parse a whole buffer of attributes (e.g. the data of a RESPONDER-LIFETIME notify)."""
    data = bytes(data)
    return pull_attributes(data, 0, len(data), payload_type=payload_type)


def push_attributes(out: bytearray, attributes: Iterable[Attribute]) -> None:
    """Append the wire form of ``attributes`` to ``out``."""
    pack = _U16x2.pack
    for a in attributes:
        t, v = a.type, a.value
        if not 0 <= t <= 0x7FFF:
            raise UsageError(f"attribute type {t} does not fit in 15 bits")
        if isinstance(v, int):
            if not 0 <= v <= 0xFFFF:
                raise UsageError(f"basic attribute {t} value {v} does not fit in 16 bits; use Attribute.tlv")
            out += pack(t | _AF, v)
        else:
            if len(v) > 0xFFFF:
                raise UsageError(f"variable attribute {t} longer than 65535 octets")
            out += pack(t, len(v))
            out += v


def serialize_attributes(attributes: Iterable[Attribute]) -> bytes:
    """The wire form of ``attributes``."""
    out = bytearray()
    push_attributes(out, attributes)
    return bytes(out)


def attributes_dict(attributes: Iterable[Attribute]) -> Mapping[int, int | bytes]:
    """``{type: value}`` of the attributes (the last one wins on repeats; callers that must
    refuse repeated attributes check ``len`` against the tuple)."""
    return {a.type: a.value for a in attributes}
