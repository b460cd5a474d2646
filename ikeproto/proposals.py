"""The SA payload and its nested Proposal and Transform payloads (RFC 2408 §3.4-§3.6, RFC 2407 §4.6.1).

Owns ``SaPayload``, ``Proposal`` and ``Transform`` and their strict codec: the nested chains must
use next-payload 2 (more proposals) / 3 (more transforms) or 0 (last), lengths must nest exactly,
the transform count must match the transforms present, and SPI sizes must fit the protocol.
Which proposal is acceptable is the exchange layer's business.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from ikeproto.attributes import Attribute, fast_factory, pull_attributes, push_attributes
from ikeproto.enums import Doi, IsakmpTransformId, PayloadType, ProtocolId, Situation
from ikeproto.errors import BadProposalSyntaxError, LengthMismatchError, MalformedError, UsageError
from ikeproto.payloads import Payload, check_spi_size

__all__ = ["Proposal", "SaPayload", "Transform"]

_GEN = struct.Struct("!BBH")
_PROP = struct.Struct("!BBHBBBB")  # generic header + number, protocol, SPI size, #transforms
_TRANS = struct.Struct("!BBHBBH")  # generic header + number, transform ID, RESERVED2
_SA = struct.Struct("!II")
_U16 = struct.Struct("!H")


@dataclass(frozen=True, slots=True, kw_only=True)
class Transform:
    """RFC 2408 §3.6 Transform payload: number, transform ID, RESERVED2 and SA attributes."""

    number: int = 1
    transform_id: int = IsakmpTransformId.KEY_IKE
    attributes: tuple[Attribute, ...] = ()
    reserved: int = 0
    reserved2: int = 0

    def attribute(self, type: int) -> int | bytes | None:
        """The value of the first attribute of ``type``, or None."""
        for a in self.attributes:
            if a.type == type:
                return a.value
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """RFC 2408 §3.5 Proposal payload: number, protocol, SPI and its transforms.

    Proposals sharing a number form one logical AND-ed proposal (e.g. AH+ESP, RFC 2408 §4.2)."""

    number: int = 1
    protocol_id: int = ProtocolId.ISAKMP
    spi: bytes = b""
    transforms: tuple[Transform, ...] = ()
    reserved: int = 0

    @classmethod
    def isakmp(cls, transforms: Iterable[Transform], *, number: int = 1) -> Proposal:
        """A phase 1 proposal (PROTO_ISAKMP, empty SPI as RFC 2409 implementations send)."""
        return cls(number=number, protocol_id=ProtocolId.ISAKMP, transforms=tuple(transforms))

    @classmethod
    def ipsec(cls, protocol_id: int, spi: bytes, transforms: Iterable[Transform], *, number: int = 1) -> Proposal:
        """A phase 2 proposal for AH or ESP with its 4-octet inbound SPI."""
        return cls(number=number, protocol_id=protocol_id, spi=bytes(spi), transforms=tuple(transforms))


@dataclass(frozen=True, slots=True, kw_only=True)
class SaPayload(Payload):
    """RFC 2408 §3.4 Security Association: DOI, situation, proposals.

    ``situation_data`` holds the RFC 2407 §4.6.1 labeled-domain fields that follow the situation
    bitmap when SIT_SECRECY or SIT_INTEGRITY is set (kept as octets; nothing here uses them)."""

    payload_type: ClassVar[int] = PayloadType.SA
    doi: int = Doi.IPSEC
    situation: int = Situation.IDENTITY_ONLY
    situation_data: bytes = b""
    proposals: tuple[Proposal, ...] = ()

    @classmethod
    def ipsec(cls, proposals: Iterable[Proposal], *, situation: int = Situation.IDENTITY_ONLY) -> SaPayload:
        """An IPsec DOI SA with SIT_IDENTITY_ONLY (what every IKEv1 peer sends)."""
        return cls(doi=Doi.IPSEC, situation=situation, proposals=tuple(proposals))

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        if end - start < 8:
            raise MalformedError("SA payload shorter than DOI and situation", offset=start, payload_type=ptype)
        doi, situation = _SA.unpack_from(data, start)
        pos = start + 8
        if doi == Doi.IPSEC and situation & (Situation.SECRECY | Situation.INTEGRITY):
            pos = _skip_labeled_domain(data, pos, end, situation, start - 4)
        return cls(
            doi=doi,
            situation=situation,
            situation_data=data[start + 8 : pos],
            proposals=_pull_proposals(data, pos, end),
            reserved=reserved,
        )

    def _push_body(self, out: bytearray) -> None:
        out += _SA.pack(self.doi, self.situation)
        out += self.situation_data
        push_proposals(out, self.proposals)


_make_transform = fast_factory(Transform)
_make_proposal = fast_factory(Proposal)


def _skip_labeled_domain(data: bytes, pos: int, end: int, situation: int, base: int) -> int:
    """End offset of the RFC 2407 §4.6.1 fields after the situation bitmap: the Labeled Domain
    Identifier, then per SIT_SECRECY / SIT_INTEGRITY a level (length in octets) and a category
    bitmap (length in bits), each preceded by a 2-octet length and 2 RESERVED octets and padded
    to a 4-octet boundary of the payload."""

    def need(n: int) -> None:
        if pos + n > end:
            raise LengthMismatchError("labeled-domain situation overruns the SA payload", offset=pos, payload_type=PayloadType.SA)

    need(4)
    pos += 4
    for flag in (Situation.SECRECY, Situation.INTEGRITY):
        if not situation & flag:
            continue
        for unit_bits in (False, True):  # level (octets), then category bitmap (bits)
            need(4)
            n = _U16.unpack_from(data, pos)[0]
            pos += 4 + ((n + 7) // 8 if unit_bits else n)
            pos += -(pos - base) % 4
            need(0)
    return pos


def _pull_proposals(data: bytes, pos: int, end: int) -> tuple[Proposal, ...]:
    out = []
    nxt = PayloadType.PROPOSAL if pos < end else PayloadType.NONE
    while nxt:
        if end - pos < 8:
            raise LengthMismatchError("proposal chain runs past the SA payload", offset=pos, payload_type=PayloadType.PROPOSAL)
        nxt, reserved, length, number, protocol_id, spi_size, count = _PROP.unpack_from(data, pos)
        if length < 8:
            raise MalformedError(f"proposal length {length} < 8", offset=pos + 2, payload_type=PayloadType.PROPOSAL)
        stop = pos + length
        if stop > end:
            raise LengthMismatchError(f"proposal length {length} overruns the SA payload", offset=pos + 2, payload_type=PayloadType.PROPOSAL)
        # RFC 2408 §3.5: next payload inside an SA is 2 (another proposal) or 0 (the last).
        if nxt not in (PayloadType.NONE, PayloadType.PROPOSAL):
            raise BadProposalSyntaxError(f"next payload {nxt} inside an SA payload", offset=pos, payload_type=PayloadType.PROPOSAL)
        check_spi_size(protocol_id, spi_size, context="proposal", offset=pos + 6, payload_type=PayloadType.PROPOSAL)
        spi_end = pos + 8 + spi_size
        if spi_end > stop:
            raise LengthMismatchError(f"SPI of {spi_size} octets overruns the proposal", offset=pos + 6, payload_type=PayloadType.PROPOSAL)
        transforms = _pull_transforms(data, spi_end, stop, count, pos)
        out.append(
            _make_proposal(number=number, protocol_id=protocol_id, spi=data[pos + 8 : spi_end], transforms=transforms, reserved=reserved)
        )
        pos = stop
    if pos != end:
        raise LengthMismatchError(f"{end - pos} octets after the last proposal", offset=pos, payload_type=PayloadType.SA)
    return tuple(out)


def _pull_transforms(data: bytes, pos: int, end: int, count: int, prop_at: int) -> tuple[Transform, ...]:
    out = []
    nxt = PayloadType.TRANSFORM if pos < end else PayloadType.NONE
    while nxt:
        if end - pos < 8:
            raise LengthMismatchError("transform chain runs past the proposal", offset=pos, payload_type=PayloadType.TRANSFORM)
        nxt, reserved, length, number, transform_id, reserved2 = _TRANS.unpack_from(data, pos)
        if length < 8:
            raise MalformedError(f"transform length {length} < 8", offset=pos + 2, payload_type=PayloadType.TRANSFORM)
        stop = pos + length
        if stop > end:
            raise LengthMismatchError(f"transform length {length} overruns the proposal", offset=pos + 2, payload_type=PayloadType.TRANSFORM)
        # RFC 2408 §3.6: next payload inside a proposal is 3 (another transform) or 0 (the last).
        if nxt not in (PayloadType.NONE, PayloadType.TRANSFORM):
            raise BadProposalSyntaxError(f"next payload {nxt} inside a proposal", offset=pos, payload_type=PayloadType.TRANSFORM)
        attrs = pull_attributes(data, pos + 8, stop, payload_type=PayloadType.TRANSFORM)
        out.append(_make_transform(number=number, transform_id=transform_id, attributes=attrs, reserved=reserved, reserved2=reserved2))
        pos = stop
        if len(out) > count:
            break
    # RFC 2408 §3.5: "# of Transforms" must match the transforms that follow (checked before the
    # trailing-bytes check so a lying count is reported as what it is).
    if len(out) != count:
        raise BadProposalSyntaxError(
            f"proposal says {count} transforms but carries {len(out)}{'+' if nxt else ''}",
            offset=prop_at + 7,
            payload_type=PayloadType.PROPOSAL,
        )
    if pos != end:
        raise LengthMismatchError(f"{end - pos} octets after the last transform", offset=pos, payload_type=PayloadType.PROPOSAL)
    return tuple(out)


def push_proposals(out: bytearray, proposals: tuple[Proposal, ...]) -> None:
    """Append the proposal chain (next payload 2 between proposals, 0 after the last)."""
    last_p = len(proposals) - 1
    for i, p in enumerate(proposals):
        start = len(out)
        if len(p.spi) > 0xFF or len(p.transforms) > 0xFF:
            raise UsageError("proposal SPI or transform count out of range")
        out += _PROP.pack(PayloadType.PROPOSAL if i < last_p else 0, p.reserved, 0, p.number, p.protocol_id, len(p.spi), len(p.transforms))
        out += p.spi
        last_t = len(p.transforms) - 1
        for j, t in enumerate(p.transforms):
            t_start = len(out)
            out += _TRANS.pack(PayloadType.TRANSFORM if j < last_t else 0, t.reserved, 0, t.number, t.transform_id, t.reserved2)
            push_attributes(out, t.attributes)
            _set_length(out, t_start)
        _set_length(out, start)


def _set_length(out: bytearray, start: int) -> None:
    n = len(out) - start
    if n > 0xFFFF:
        raise UsageError("payload longer than 65535 octets")
    _U16.pack_into(out, start + 2, n)
