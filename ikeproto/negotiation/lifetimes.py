"""Life type/duration attribute pairs, shared by both phases (RFC 2409 Appendix A classes 11/12,
RFC 2407 §4.5 SA Life Type/Duration), and the RESPONDER-LIFETIME notify data (RFC 2407 §4.6.3.1).

Owns reading and writing the pairs and the rule "a duration belongs to the type before it"; the
choice of a lifetime is the phase modules'.
"""

from __future__ import annotations

from collections.abc import Sequence

from ikeproto.attributes import Attribute, parse_attributes, serialize_attributes
from ikeproto.enums import IpsecAttr, LifeType, NotifyType
from ikeproto.errors import ProtocolError

__all__ = ["DEFAULT_LIFETIME_S", "life_attributes", "lifetimes", "parse_responder_lifetime",
           "responder_lifetime_data", "shorter"]

ATTRIBUTES_NOT_SUPPORTED = NotifyType.ATTRIBUTES_NOT_SUPPORTED
DEFAULT_LIFETIME_S = 28_800  # RFC 2407 §4.5 and RFC 2409 Appendix A: the default when none is sent


def life_attributes(type_attr: int, duration_attr: int, seconds: int | None, kb: int | None) -> list[Attribute]:
    out = []
    if seconds is not None:
        out += [Attribute.tv(type_attr, LifeType.SECONDS), Attribute.auto(duration_attr, seconds)]
    if kb is not None:
        out += [Attribute.tv(type_attr, LifeType.KILOBYTES), Attribute.auto(duration_attr, kb)]
    return out


def lifetimes(attrs: Sequence[Attribute], type_attr: int, duration_attr: int) -> tuple[int | None, int | None]:
    """(seconds, kilobytes) from life type/duration pairs (RFC 2409 App. A: a duration follows
    its type). A duration of 0 is read as "none said" (strongSwan sends 0 for "no limit")."""
    seconds = kb = None
    current = None
    for a in attrs:
        if a.type == type_attr:
            if a.int_value not in (LifeType.SECONDS, LifeType.KILOBYTES):
                raise ProtocolError(f"life type {a.int_value} is unknown", notify=ATTRIBUTES_NOT_SUPPORTED)
            current = a.int_value
        elif a.type == duration_attr:
            if current is None:
                raise ProtocolError("life duration without a life type", notify=NotifyType.BAD_PROPOSAL_SYNTAX)
            value = a.int_value or None
            if current == LifeType.SECONDS:
                seconds = value
            else:
                kb = value
            current = None
    return seconds, kb


def shorter(a: int | None, b: int | None) -> int | None:
    """The smaller of two optional limits (None: no limit)."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def responder_lifetime_data(seconds: int | None, kb: int | None) -> bytes:
    """RFC 2407 §4.6.3.1: the notification data of RESPONDER-LIFETIME, life type/duration pairs."""
    return serialize_attributes(life_attributes(IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION, seconds, kb))


def parse_responder_lifetime(data: bytes) -> tuple[int | None, int | None]:
    """(seconds, kilobytes) of a RESPONDER-LIFETIME notify; ParseError/ProtocolError if garbled."""
    attrs = parse_attributes(data)
    if any(a.type not in (IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION) for a in attrs):
        raise ProtocolError("RESPONDER-LIFETIME carries other attributes", notify=NotifyType.PAYLOAD_MALFORMED)
    return lifetimes(attrs, IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION)
