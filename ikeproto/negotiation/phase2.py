"""Quick Mode proposals (RFC 2409 §5.5, RFC 2407 §4.5): the initiator's SA, the responder's choice
and answer, the initiator's check of it.

One proposal number per ``Phase2Proposal``; an AH+ESP bundle is two proposal payloads sharing a
number (RFC 2408 §4.2), AH first. Attributes: SA life type/duration (seconds and kilobytes),
encapsulation mode, authentication algorithm, key length and, with PFS, the group description.
The responder picks its most preferred acceptable offer and echoes the chosen transform(s) with
its own SPIs; when its lifetime is shorter it says so in a RESPONDER-LIFETIME notify (RFC 2407
§4.6.3.1) rather than changing the attributes, and the initiator honours it. ESP and AH algorithm
numbers come from ``espcore.transforms``, the one registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from espcore import transforms as registry
from espcore.errors import UsageError as EspUsageError
from ikeproto import dh
from ikeproto.attributes import Attribute
from ikeproto.config import IpsecTransform, Mode, Phase2Config, Phase2Proposal
from ikeproto.enums import Doi, IpsecAttr, NotifyType, ProtocolId, Situation
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.natt import decode_encapsulation
from ikeproto.negotiation.lifetimes import DEFAULT_LIFETIME_S, life_attributes, lifetimes, shorter
from ikeproto.proposals import Proposal, SaPayload, Transform

__all__ = ["ChildChoice", "Phase2Choice", "accept_phase2", "apply_responder_lifetime", "phase2_sa", "responder_sa",
           "select_phase2"]

NO_PROPOSAL_CHOSEN = NotifyType.NO_PROPOSAL_CHOSEN
ATTRIBUTES_NOT_SUPPORTED = NotifyType.ATTRIBUTES_NOT_SUPPORTED

Protocol = Literal["esp", "ah"]
_PROTO_IDS = {"esp": ProtocolId.IPSEC_ESP, "ah": ProtocolId.IPSEC_AH}
_PROTO_NAMES = {ProtocolId.IPSEC_ESP: "esp", ProtocolId.IPSEC_AH: "ah"}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Resolved:
    protocol: Protocol
    transform_id: int
    cipher: registry.EncryptionTransform | None
    key_bits: int | None  # actual key size (fixed-size ciphers too)
    key_length_attr: int | None  # what the Key Length attribute says (None when not sent)
    integrity: registry.IntegrityTransform | None


def _resolve(t: IpsecTransform) -> _Resolved:
    """Our configured transform in wire terms (local config: unknown names are a UsageError)."""
    try:
        integ = registry.integrity(t.integrity) if t.integrity else None
        if t.protocol == "ah":
            if integ is None or t.cipher is not None:
                raise UsageError("an AH transform takes an integrity algorithm and no cipher")
            return _Resolved(protocol="ah", transform_id=integ.ah_transform_id, cipher=None, key_bits=None,
                             key_length_attr=None, integrity=integ)
        if t.protocol != "esp" or t.cipher is None:
            raise UsageError("an ESP transform needs a cipher ('null' for integrity only)")
        cipher, named = registry.parse_cipher_name(t.cipher)
    except EspUsageError as exc:
        raise UsageError(str(exc)) from None
    if cipher.esp_transform_id is None:
        raise UsageError(f"{cipher.name} has no IKEv1 transform number")
    if cipher.is_aead and integ is not None:
        raise UsageError(f"{cipher.name} is a combined mode: no integrity algorithm with it")
    if not cipher.is_aead and integ is None and cipher.name == "null":
        raise UsageError("ESP with the null cipher needs an integrity algorithm")
    bits = t.key_bits or named or cipher.default_key_bits
    if bits not in cipher.key_bits:
        raise UsageError(f"{cipher.name} takes keys of {cipher.key_bits} bits, not {bits}")
    attr = bits if cipher.has_key_length_attribute else None
    return _Resolved(protocol="esp", transform_id=cipher.esp_transform_id, cipher=cipher,
                     key_bits=bits if bits else None, key_length_attr=attr, integrity=integ)


@dataclass(frozen=True, slots=True, kw_only=True)
class _IpsecAttrs:
    life_s: int | None
    life_kb: int | None
    encapsulation: int | None
    auth: int | None
    key_length: int | None
    group: int | None


_IPSEC_SINGLE = (IpsecAttr.ENCAPSULATION_MODE, IpsecAttr.AUTHENTICATION_ALGORITHM, IpsecAttr.KEY_LENGTH,
                 IpsecAttr.GROUP_DESCRIPTION)


def _parse_ipsec(t: Transform) -> _IpsecAttrs:
    values: dict[int, int] = {}
    for a in t.attributes:
        if a.type in (IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION):
            continue
        if a.type not in _IPSEC_SINGLE:
            # RFC 2407 §4.5: an attribute we do not implement makes the transform unacceptable.
            raise ProtocolError(f"IPsec attribute {a.type} not supported", notify=ATTRIBUTES_NOT_SUPPORTED)
        if a.type in values:
            raise ProtocolError(f"IPsec attribute {a.type} repeated", notify=NotifyType.BAD_PROPOSAL_SYNTAX)
        if not a.is_basic and len(a.value) > 4:  # type: ignore[arg-type]
            raise ProtocolError(f"IPsec attribute {a.type} too long", notify=ATTRIBUTES_NOT_SUPPORTED)
        values[a.type] = a.int_value
    seconds, kb = lifetimes(t.attributes, IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION)
    return _IpsecAttrs(life_s=seconds, life_kb=kb, encapsulation=values.get(IpsecAttr.ENCAPSULATION_MODE),
                       auth=values.get(IpsecAttr.AUTHENTICATION_ALGORITHM),
                       key_length=values.get(IpsecAttr.KEY_LENGTH), group=values.get(IpsecAttr.GROUP_DESCRIPTION))


def _transform_matches(r: _Resolved, protocol_id: int, t: Transform, a: _IpsecAttrs) -> bool:
    """Whether a received transform is our configured one (algorithms and key size only)."""
    if _PROTO_IDS[r.protocol] != protocol_id or t.transform_id != r.transform_id:
        return False
    if r.protocol == "ah":
        # RFC 2407 §4.5: AH names its algorithm twice; when both are there they must agree.
        return a.auth is None or a.auth == r.integrity.auth_algorithm  # type: ignore[union-attr]
    if a.key_length != r.key_length_attr and not (r.key_length_attr is None and a.key_length == r.key_bits):
        return False
    want_auth = r.integrity.auth_algorithm if r.integrity is not None else None
    return a.auth == want_auth


def _ipsec_transform(r: _Resolved, p: Phase2Proposal, *, encapsulation: int, group: int | None) -> Transform:
    attrs = life_attributes(IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION, p.lifetime_s, p.lifetime_kb)
    attrs.append(Attribute.tv(IpsecAttr.ENCAPSULATION_MODE, encapsulation))
    if r.integrity is not None:
        attrs.append(Attribute.tv(IpsecAttr.AUTHENTICATION_ALGORITHM, r.integrity.auth_algorithm))
    if r.key_length_attr is not None:
        attrs.append(Attribute.tv(IpsecAttr.KEY_LENGTH, r.key_length_attr))
    if group is not None:
        attrs.append(Attribute.tv(IpsecAttr.GROUP_DESCRIPTION, group))
    return Transform(number=1, transform_id=r.transform_id, attributes=tuple(attrs))


def _ordered(transforms: Iterable[IpsecTransform]) -> list[IpsecTransform]:
    """AH before ESP (RFC 2408 §4.2 example; the order IPsec applies them outbound is ESP then AH)."""
    return sorted(transforms, key=lambda t: 0 if t.protocol == "ah" else 1)


def phase2_sa(
    config: Phase2Config, *, spis: dict[str, bytes], encapsulation: int, allow_ah: bool = True,
    ah_encapsulation: int | None = None,
) -> SaPayload:
    """The initiator's Quick Mode SA: proposal numbers 1.. in config order, ``spis`` per protocol.

    ``allow_ah`` False drops proposals containing AH (AH cannot cross a NAT, RFC 3947 §5) unless
    ``ah_encapsulation`` gives them their own Encapsulation Mode (a faked NAT, see
    ``Phase1Config.allow_ah_with_nat``)."""
    props: list[Proposal] = []
    number = 0
    for p in config.proposals:
        if not p.transforms or len({t.protocol for t in p.transforms}) != len(p.transforms):
            raise UsageError("a phase-2 proposal has one transform per protocol (ESP, AH or both)")
        has_ah = any(t.protocol == "ah" for t in p.transforms)
        if has_ah and not allow_ah and ah_encapsulation is None:
            continue
        mode_value = ah_encapsulation if has_ah and ah_encapsulation is not None else encapsulation
        number += 1
        for t in _ordered(p.transforms):
            r = _resolve(t)
            props.append(Proposal.ipsec(_PROTO_IDS[t.protocol], spis[t.protocol],
                                        [_ipsec_transform(r, p, encapsulation=mode_value, group=config.pfs_group)],
                                        number=number))
    if not props:
        raise UsageError("no phase-2 proposal can be offered (AH cannot be UDP-encapsulated)")
    return SaPayload.ipsec(props)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildChoice:
    """One protocol of the agreed phase-2 proposal."""

    protocol: Protocol
    peer_spi: bytes
    cipher: registry.EncryptionTransform | None
    key_bits: int | None
    integrity: registry.IntegrityTransform | None
    transform: Transform = field(repr=False)

    @property
    def protocol_id(self) -> int:
        return _PROTO_IDS[self.protocol]

    @property
    def keymat_length(self) -> int:
        """KEYMAT bytes per direction (``espcore.transforms.keymat_length``)."""
        return registry.keymat_length(self.cipher, self.integrity, key_bits=self.key_bits)


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase2Choice:
    """The agreed Quick Mode proposal (AH before ESP) and its lifetimes, mode and PFS group."""

    number: int
    children: tuple[ChildChoice, ...]
    mode: Mode
    udp: bool
    encapsulation: int
    pfs_group: int | None
    lifetime_s: int | None
    lifetime_kb: int | None
    notify_lifetime: bool = False  # responder: send RESPONDER-LIFETIME (ours is shorter)
    add_lifetime: bool = False  # responder: the offer had no lifetime, ours goes in the answer


def _groups(sa: SaPayload) -> list[tuple[int, list[Proposal]]]:
    """Offered proposals grouped by proposal number, in order (RFC 2408 §4.2)."""
    if sa.doi != Doi.IPSEC:
        raise ProtocolError(f"DOI {sa.doi}", notify=NotifyType.DOI_NOT_SUPPORTED)
    if sa.situation != Situation.IDENTITY_ONLY:
        raise ProtocolError(f"situation {sa.situation}", notify=NotifyType.SITUATION_NOT_SUPPORTED)
    out: dict[int, list[Proposal]] = {}
    for p in sa.proposals:
        out.setdefault(p.number, []).append(p)
    return list(out.items())


def _match_bundle(
    ours: Phase2Proposal, theirs: list[Proposal], *, mode: Mode, udp: bool, pfs_group: int | None, strict_group: bool
) -> tuple[list[ChildChoice], _IpsecAttrs] | None:
    wanted = _ordered(ours.transforms)
    by_proto: dict[int, Proposal] = {}
    for p in theirs:
        if p.protocol_id in by_proto or p.protocol_id not in _PROTO_NAMES or len(p.spi) != 4:
            return None
        by_proto[p.protocol_id] = p
    if set(by_proto) != {_PROTO_IDS[t.protocol] for t in wanted}:
        return None
    children: list[ChildChoice] = []
    common: _IpsecAttrs | None = None
    for t in wanted:
        r = _resolve(t)
        prop = by_proto[_PROTO_IDS[t.protocol]]
        for cand in prop.transforms:
            try:
                a = _parse_ipsec(cand)
            except ProtocolError:
                continue
            # RFC 2407 §4.5: an absent Encapsulation Mode is "host-dependent": read it as the plain
            # mode we expect, never as a UDP-encapsulated one.
            decoded = decode_encapsulation(a.encapsulation) if a.encapsulation is not None else (mode, False)
            if decoded != (mode, udp) or not _transform_matches(r, prop.protocol_id, cand, a):
                continue
            if strict_group and a.group != pfs_group:
                continue
            if a.group is not None and a.group not in dh.supported_groups():
                continue
            if common is not None and (a.group, a.encapsulation) != (common.group, common.encapsulation):
                continue
            common = a if common is None else common
            children.append(ChildChoice(protocol=t.protocol, peer_spi=prop.spi, cipher=r.cipher, key_bits=r.key_bits,
                                        integrity=r.integrity, transform=cand))
            break
        else:
            return None
    assert common is not None
    return children, common


def _bundle_udp(ours: Phase2Proposal, udp: bool, ah_plain: bool) -> bool:
    """Whether this proposal is UDP-encapsulated: yes after a NAT, except an AH bundle allowed in
    its plain mode (``ah_plain``, the NAT being faked)."""
    return udp and not (ah_plain and any(t.protocol == "ah" for t in ours.transforms))


def select_phase2(sa: SaPayload, config: Phase2Config, *, mode: Mode, udp: bool, allow_ah: bool,
                  ah_plain: bool = False) -> Phase2Choice:
    """Responder: our most preferred proposal found among the offered proposal numbers.

    ``mode``/``udp`` are what the offer must say in its Encapsulation Mode (udp: a NAT was seen).
    With ``config.pfs_group`` set the offer must carry that group; without it, any supported
    group the initiator asks for is accepted (and answered with a KE)."""
    groups = _groups(sa)
    for ours in config.proposals:
        if not (allow_ah or ah_plain) and any(t.protocol == "ah" for t in ours.transforms):
            continue
        bundle_udp = _bundle_udp(ours, udp, ah_plain)
        for number, theirs in groups:
            found = _match_bundle(ours, theirs, mode=mode, udp=bundle_udp, pfs_group=config.pfs_group,
                                  strict_group=config.pfs_group is not None)
            if found is None:
                continue
            children, a = found
            # RFC 2407 §4.5: no life attributes means 28800 seconds.
            their_s = a.life_s if (a.life_s is not None or a.life_kb is not None) else DEFAULT_LIFETIME_S
            life_s, life_kb = shorter(their_s, ours.lifetime_s), shorter(a.life_kb, ours.lifetime_kb)
            ours_shorter = (life_s is not None and life_s != their_s) or (life_kb is not None and life_kb != a.life_kb)
            return Phase2Choice(number=number, children=tuple(children), mode=mode, udp=bundle_udp,
                                encapsulation=a.encapsulation or 0, pfs_group=a.group, lifetime_s=life_s,
                                lifetime_kb=life_kb, notify_lifetime=ours_shorter,
                                add_lifetime=a.life_s is None and a.life_kb is None)
    raise ProtocolError("no offered phase-2 proposal is acceptable", notify=NO_PROPOSAL_CHOSEN)


def responder_sa(choice: Phase2Choice, spis: dict[str, bytes]) -> SaPayload:
    """The responder's SA: the chosen transform(s) as offered, under the offer's proposal number.

    When the offer named no lifetime (strongSwan's never does) our lifetime attributes are added,
    as strongSwan's responder does: a peer that ignores RESPONDER-LIFETIME (charon 5.9 does) reads
    them there instead of assuming RFC 2407's 28800 seconds."""
    extra = life_attributes(IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION, choice.lifetime_s,
                             choice.lifetime_kb) if choice.add_lifetime else []
    return SaPayload.ipsec(
        Proposal.ipsec(c.protocol_id, spis[c.protocol], [replace(c.transform, attributes=(*extra, *c.transform.attributes))],
                       number=choice.number)
        for c in choice.children
    )


def accept_phase2(reply: SaPayload, config: Phase2Config, *, mode: Mode, udp: bool,
                  ah_plain: bool = False) -> Phase2Choice:
    """Initiator: the responder's SA must be one of our proposals, one transform per protocol.

    Lifetimes in the reply are honoured when shorter than ours (strongSwan adds them)."""
    groups = _groups(reply)
    if len(groups) != 1 or any(len(p.transforms) != 1 for p in groups[0][1]):
        raise ProtocolError("the responder must choose one proposal and one transform per protocol",
                            notify=NotifyType.BAD_PROPOSAL_SYNTAX)
    number, theirs = groups[0]
    offered = [p for p in config.proposals if p.transforms]
    for ours in offered:
        bundle_udp = _bundle_udp(ours, udp, ah_plain)
        found = _match_bundle(ours, theirs, mode=mode, udp=bundle_udp, pfs_group=config.pfs_group, strict_group=True)
        if found is None:
            continue
        children, a = found
        return Phase2Choice(number=number, children=tuple(children), mode=mode, udp=bundle_udp,
                            encapsulation=a.encapsulation or 0, pfs_group=a.group,
                            lifetime_s=shorter(ours.lifetime_s, a.life_s), lifetime_kb=shorter(ours.lifetime_kb, a.life_kb))
    raise ProtocolError("the responder chose a proposal we did not offer", notify=NO_PROPOSAL_CHOSEN)


def apply_responder_lifetime(choice: Phase2Choice, seconds: int | None, kb: int | None) -> Phase2Choice:
    """The initiator honours a RESPONDER-LIFETIME: the shorter of each limit wins."""
    return replace(choice, lifetime_s=shorter(choice.lifetime_s, seconds), lifetime_kb=shorter(choice.lifetime_kb, kb))
