"""Proposal building and selection for Main Mode (phase 1) and Quick Mode (phase 2).

Owns the translation between the config records (``ikeproto.config``) and SA payloads, and the
choice rules:

- Phase 1 (RFC 2409 §5, Appendix A): the initiator sends one ISAKMP proposal with one transform
  per ``Phase1Proposal``, in preference order, each carrying encryption, key length (AES only),
  hash, authentication method, group and the life type/duration pairs. The responder walks *its*
  proposals in order and takes the first one found among the offered transforms (its most
  preferred acceptable offer), answering with exactly that transform as it was offered.
- Phase 2 (RFC 2409 §5.5, RFC 2407 §4.5): one proposal number per ``Phase2Proposal``; an AH+ESP
  bundle is two proposal payloads sharing a number (RFC 2408 §4.2), AH first. Attributes: SA life
  type/duration (seconds and kilobytes), encapsulation mode, authentication algorithm, key length
  and, with PFS, the group description. The responder picks like in phase 1 and echoes the chosen
  transform(s) with its own SPIs; when its lifetime is shorter it says so in a RESPONDER-LIFETIME
  notify (RFC 2407 §4.6.3.1) rather than changing the attributes, and the initiator honours it.

ESP and AH algorithm numbers come from ``espcore.transforms``, the one registry.

Does not own: the exchanges that carry these payloads, NAT-T dialect choice (``natt``), keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from espcore import transforms as registry
from espcore.errors import UsageError as EspUsageError
from ikeproto import crypto, dh
from ikeproto.attributes import Attribute, parse_attributes, serialize_attributes
from ikeproto.config import IpsecTransform, Mode, Phase1Proposal, Phase2Config, Phase2Proposal
from ikeproto.enums import (
    AuthMethod,
    EncryptionAlgorithm,
    Doi,
    IkeAttr,
    IpsecAttr,
    LifeType,
    NotifyType,
    ProtocolId,
    Situation,
)
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.natt import decode_encapsulation
from ikeproto.proposals import Proposal, SaPayload, Transform

__all__ = [
    "ChildChoice",
    "Phase1Choice",
    "Phase2Choice",
    "accept_phase1",
    "accept_phase2",
    "phase1_sa",
    "phase2_sa",
    "parse_responder_lifetime",
    "responder_lifetime_data",
    "select_phase1",
    "select_phase2",
]

NO_PROPOSAL_CHOSEN = NotifyType.NO_PROPOSAL_CHOSEN
ATTRIBUTES_NOT_SUPPORTED = NotifyType.ATTRIBUTES_NOT_SUPPORTED
DEFAULT_LIFETIME_S = 28_800  # RFC 2407 §4.5 and RFC 2409 Appendix A: the default when none is sent

P1_CIPHERS = {"des": EncryptionAlgorithm.DES_CBC, "3des": EncryptionAlgorithm.TRIPLE_DES_CBC,
              "aes-cbc": EncryptionAlgorithm.AES_CBC, "des-cbc": EncryptionAlgorithm.DES_CBC,
              "3des-cbc": EncryptionAlgorithm.TRIPLE_DES_CBC, "aes": EncryptionAlgorithm.AES_CBC}
P1_HASHES = {"md5": 1, "sha1": 2, "sha2-256": 4, "sha2-384": 5, "sha2-512": 6,
             "sha": 2, "sha256": 4, "sha384": 5, "sha512": 6}
P1_AUTH = {"psk": AuthMethod.PRE_SHARED_KEY, "rsa-sig": AuthMethod.RSA_SIGNATURES}
_P1_CIPHER_NAMES = {EncryptionAlgorithm.DES_CBC: "des", EncryptionAlgorithm.TRIPLE_DES_CBC: "3des",
                    EncryptionAlgorithm.AES_CBC: "aes-cbc"}
_P1_HASH_NAMES = {1: "md5", 2: "sha1", 4: "sha2-256", 5: "sha2-384", 6: "sha2-512"}
_P1_AUTH_NAMES = {v: k for k, v in P1_AUTH.items()}


def _life_attributes(type_attr: int, duration_attr: int, seconds: int | None, kb: int | None) -> list[Attribute]:
    out = []
    if seconds is not None:
        out += [Attribute.tv(type_attr, LifeType.SECONDS), Attribute.auto(duration_attr, seconds)]
    if kb is not None:
        out += [Attribute.tv(type_attr, LifeType.KILOBYTES), Attribute.auto(duration_attr, kb)]
    return out


def _lifetimes(attrs: Sequence[Attribute], type_attr: int, duration_attr: int) -> tuple[int | None, int | None]:
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


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


# --- phase 1 -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _P1Key:
    encryption: int
    key_bits: int | None
    hash: int
    auth: int
    group: int


def _p1_key(p: Phase1Proposal) -> _P1Key:
    enc = P1_CIPHERS.get(p.cipher)
    if enc is None:
        raise UsageError(f"unknown phase-1 cipher {p.cipher!r}; known: des, 3des, aes-cbc")
    h = P1_HASHES.get(p.hash)
    if h is None:
        raise UsageError(f"unknown phase-1 hash {p.hash!r}")
    auth = P1_AUTH.get(p.auth)
    if auth is None:
        raise UsageError(f"phase-1 authentication {p.auth!r} is not implemented (psk, rsa-sig)")
    bits = p.key_bits if enc == EncryptionAlgorithm.AES_CBC else None
    if enc == EncryptionAlgorithm.AES_CBC and bits is None:
        bits = 128
    dh.group(p.dh_group)  # raises for an unsupported group: local misconfiguration
    crypto.cipher(enc, bits)
    return _P1Key(encryption=enc, key_bits=bits, hash=h, auth=auth, group=p.dh_group)


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase1Choice:
    """The agreed Main Mode transform and what follows from it."""

    cipher_name: str
    key_bits: int | None
    hash_name: str
    dh_group: int
    auth: str
    lifetime_s: int
    lifetime_kb: int | None
    cipher: crypto.Cipher = field(repr=False)
    hash: crypto.Hash = field(repr=False)
    transform: Transform = field(repr=False)  # as the responder returns it (the offered one)
    proposal_number: int = 1


def is_supported_phase1(p: Phase1Proposal) -> bool:
    """Whether this stack can run ``p`` (GSS-API Kerberos is a later issue)."""
    try:
        _p1_key(p)
    except (UsageError, ProtocolError):
        return False
    return True


def phase1_transform(p: Phase1Proposal, number: int) -> Transform:
    """One Main Mode transform (RFC 2409 Appendix A attributes) for ``p``."""
    k = _p1_key(p)
    attrs = [Attribute.tv(IkeAttr.ENCRYPTION_ALGORITHM, k.encryption)]
    if k.key_bits is not None:
        attrs.append(Attribute.tv(IkeAttr.KEY_LENGTH, k.key_bits))
    attrs += [
        Attribute.tv(IkeAttr.HASH_ALGORITHM, k.hash),
        Attribute.tv(IkeAttr.AUTHENTICATION_METHOD, k.auth),
        Attribute.tv(IkeAttr.GROUP_DESCRIPTION, k.group),
    ]
    attrs += _life_attributes(IkeAttr.LIFE_TYPE, IkeAttr.LIFE_DURATION, p.lifetime_s, p.lifetime_kb)
    return Transform(number=number, transform_id=1, attributes=tuple(attrs))


def phase1_sa(proposals: Iterable[Phase1Proposal]) -> SaPayload:
    """The initiator's Main Mode SA: one ISAKMP proposal, one transform per supported proposal."""
    usable = [p for p in proposals if is_supported_phase1(p)]
    if not usable:
        raise UsageError("no phase-1 proposal this stack implements (psk or rsa-sig with known algorithms)")
    transforms = [phase1_transform(p, i + 1) for i, p in enumerate(usable)]
    return SaPayload.ipsec([Proposal.isakmp(transforms)])


def _parse_p1(t: Transform) -> tuple[_P1Key, int | None, int | None]:
    """The algorithm key and lifetimes of a received phase-1 transform; unknown -> ProtocolError."""
    if t.transform_id != 1:  # RFC 2409 Appendix A / RFC 2407 §4.4.2: KEY_IKE
        raise ProtocolError(f"phase-1 transform ID {t.transform_id}", notify=NotifyType.INVALID_TRANSFORM_ID)
    known = {IkeAttr.ENCRYPTION_ALGORITHM, IkeAttr.HASH_ALGORITHM, IkeAttr.AUTHENTICATION_METHOD,
             IkeAttr.GROUP_DESCRIPTION, IkeAttr.LIFE_TYPE, IkeAttr.LIFE_DURATION, IkeAttr.KEY_LENGTH}
    seen: set[int] = set()
    values: dict[int, int] = {}
    for a in t.attributes:
        if a.type not in known:
            raise ProtocolError(f"phase-1 attribute {a.type} not supported", notify=ATTRIBUTES_NOT_SUPPORTED)
        if a.type not in (IkeAttr.LIFE_TYPE, IkeAttr.LIFE_DURATION):
            if a.type in seen:
                raise ProtocolError(f"phase-1 attribute {a.type} repeated", notify=NotifyType.BAD_PROPOSAL_SYNTAX)
            seen.add(a.type)
            if not a.is_basic and len(a.value) > 4:  # type: ignore[arg-type]
                raise ProtocolError(f"phase-1 attribute {a.type} too long", notify=ATTRIBUTES_NOT_SUPPORTED)
            values[a.type] = a.int_value
    for need in (IkeAttr.ENCRYPTION_ALGORITHM, IkeAttr.HASH_ALGORITHM, IkeAttr.AUTHENTICATION_METHOD,
                 IkeAttr.GROUP_DESCRIPTION):
        if need not in values:
            # RFC 2409 Appendix A: these four are mandatory in a phase-1 transform.
            raise ProtocolError(f"phase-1 transform without attribute {need}", notify=ATTRIBUTES_NOT_SUPPORTED)
    seconds, kb = _lifetimes(t.attributes, IkeAttr.LIFE_TYPE, IkeAttr.LIFE_DURATION)
    key = _P1Key(encryption=values[IkeAttr.ENCRYPTION_ALGORITHM], key_bits=values.get(IkeAttr.KEY_LENGTH),
                 hash=values[IkeAttr.HASH_ALGORITHM], auth=values[IkeAttr.AUTHENTICATION_METHOD],
                 group=values[IkeAttr.GROUP_DESCRIPTION])
    return key, seconds, kb


def _choice(p: Phase1Proposal, k: _P1Key, t: Transform, seconds: int | None, kb: int | None,
            number: int = 1) -> Phase1Choice:
    return Phase1Choice(
        proposal_number=number,
        cipher_name=_P1_CIPHER_NAMES[k.encryption], key_bits=k.key_bits, hash_name=_P1_HASH_NAMES[k.hash],
        dh_group=k.group, auth=_P1_AUTH_NAMES[k.auth], lifetime_s=_min(p.lifetime_s, seconds) or p.lifetime_s,
        lifetime_kb=_min(p.lifetime_kb, kb), cipher=crypto.cipher(k.encryption, k.key_bits),
        hash=crypto.hash_algorithm(k.hash), transform=t,
    )


def _isakmp_proposals(sa: SaPayload) -> list[Proposal]:
    if sa.doi != Doi.IPSEC:
        raise ProtocolError(f"DOI {sa.doi}", notify=NotifyType.DOI_NOT_SUPPORTED)
    if sa.situation != Situation.IDENTITY_ONLY:
        raise ProtocolError(f"situation {sa.situation}", notify=NotifyType.SITUATION_NOT_SUPPORTED)
    props = [p for p in sa.proposals if p.protocol_id == ProtocolId.ISAKMP]
    if not props:
        raise ProtocolError("no ISAKMP proposal", notify=NO_PROPOSAL_CHOSEN)
    return props


def select_phase1(sa: SaPayload, ours: Sequence[Phase1Proposal]) -> Phase1Choice:
    """Responder: our most preferred proposal found among the offered transforms."""
    offered = []
    for prop in _isakmp_proposals(sa):
        for t in prop.transforms:
            try:
                offered.append((_parse_p1(t), t, prop.number))
            except ProtocolError:
                continue  # an odd transform is not chosen; the others still count
    for p in ours:
        if not is_supported_phase1(p):
            continue
        k = _p1_key(p)
        for (their, seconds, kb), t, number in offered:
            if their == k:
                return _choice(p, k, t, seconds, kb, number)
    raise ProtocolError("no offered phase-1 transform is acceptable", notify=NO_PROPOSAL_CHOSEN)


def accept_phase1(reply: SaPayload, offered: Sequence[Phase1Proposal]) -> Phase1Choice:
    """Initiator: the responder's SA must hold one transform we offered."""
    props = _isakmp_proposals(reply)
    if len(props) != 1 or len(props[0].transforms) != 1:
        raise ProtocolError("the responder must choose exactly one transform", notify=NotifyType.BAD_PROPOSAL_SYNTAX)
    t = props[0].transforms[0]
    their, seconds, kb = _parse_p1(t)
    for p in offered:
        if is_supported_phase1(p) and _p1_key(p) == their:
            return _choice(p, their, t, seconds, kb)
    raise ProtocolError("the responder chose a transform we did not offer", notify=NO_PROPOSAL_CHOSEN)


# --- phase 2 -----------------------------------------------------------------------------------

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
    seconds, kb = _lifetimes(t.attributes, IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION)
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
    attrs = _life_attributes(IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION, p.lifetime_s, p.lifetime_kb)
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
    config: Phase2Config, *, spis: dict[str, bytes], encapsulation: int, allow_ah: bool = True
) -> SaPayload:
    """The initiator's Quick Mode SA: proposal numbers 1.. in config order, ``spis`` per protocol.

    ``allow_ah`` False drops proposals containing AH (AH cannot cross a NAT, RFC 3947 §5)."""
    props: list[Proposal] = []
    number = 0
    for p in config.proposals:
        if not p.transforms or len({t.protocol for t in p.transforms}) != len(p.transforms):
            raise UsageError("a phase-2 proposal has one transform per protocol (ESP, AH or both)")
        if not allow_ah and any(t.protocol == "ah" for t in p.transforms):
            continue
        number += 1
        for t in _ordered(p.transforms):
            r = _resolve(t)
            props.append(Proposal.ipsec(_PROTO_IDS[t.protocol], spis[t.protocol],
                                        [_ipsec_transform(r, p, encapsulation=encapsulation, group=config.pfs_group)],
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


def select_phase2(sa: SaPayload, config: Phase2Config, *, mode: Mode, udp: bool, allow_ah: bool) -> Phase2Choice:
    """Responder: our most preferred proposal found among the offered proposal numbers.

    ``mode``/``udp`` are what the offer must say in its Encapsulation Mode (udp: a NAT was seen).
    With ``config.pfs_group`` set the offer must carry that group; without it, any supported
    group the initiator asks for is accepted (and answered with a KE)."""
    groups = _groups(sa)
    for ours in config.proposals:
        if not allow_ah and any(t.protocol == "ah" for t in ours.transforms):
            continue
        for number, theirs in groups:
            found = _match_bundle(ours, theirs, mode=mode, udp=udp, pfs_group=config.pfs_group,
                                  strict_group=config.pfs_group is not None)
            if found is None:
                continue
            children, a = found
            # RFC 2407 §4.5: no life attributes means 28800 seconds.
            their_s = a.life_s if (a.life_s is not None or a.life_kb is not None) else DEFAULT_LIFETIME_S
            life_s, life_kb = _min(their_s, ours.lifetime_s), _min(a.life_kb, ours.lifetime_kb)
            shorter = (life_s is not None and life_s != their_s) or (life_kb is not None and life_kb != a.life_kb)
            return Phase2Choice(number=number, children=tuple(children), mode=mode, udp=udp,
                                encapsulation=a.encapsulation or 0, pfs_group=a.group, lifetime_s=life_s,
                                lifetime_kb=life_kb, notify_lifetime=shorter)
    raise ProtocolError("no offered phase-2 proposal is acceptable", notify=NO_PROPOSAL_CHOSEN)


def responder_sa(choice: Phase2Choice, spis: dict[str, bytes]) -> SaPayload:
    """The responder's SA: the chosen transform(s) as offered, under the offer's proposal number."""
    return SaPayload.ipsec(
        Proposal.ipsec(c.protocol_id, spis[c.protocol], [c.transform], number=choice.number) for c in choice.children
    )


def accept_phase2(reply: SaPayload, config: Phase2Config, *, mode: Mode, udp: bool) -> Phase2Choice:
    """Initiator: the responder's SA must be one of our proposals, one transform per protocol.

    Lifetimes in the reply are honoured when shorter than ours (strongSwan adds them)."""
    groups = _groups(reply)
    if len(groups) != 1 or any(len(p.transforms) != 1 for p in groups[0][1]):
        raise ProtocolError("the responder must choose one proposal and one transform per protocol",
                            notify=NotifyType.BAD_PROPOSAL_SYNTAX)
    number, theirs = groups[0]
    offered = [p for p in config.proposals if p.transforms]
    for ours in offered:
        found = _match_bundle(ours, theirs, mode=mode, udp=udp, pfs_group=config.pfs_group, strict_group=True)
        if found is None:
            continue
        children, a = found
        return Phase2Choice(number=number, children=tuple(children), mode=mode, udp=udp,
                            encapsulation=a.encapsulation or 0, pfs_group=a.group,
                            lifetime_s=_min(ours.lifetime_s, a.life_s), lifetime_kb=_min(ours.lifetime_kb, a.life_kb))
    raise ProtocolError("the responder chose a proposal we did not offer", notify=NO_PROPOSAL_CHOSEN)


def responder_lifetime_data(seconds: int | None, kb: int | None) -> bytes:
    """RFC 2407 §4.6.3.1: the notification data of RESPONDER-LIFETIME, life type/duration pairs."""
    return serialize_attributes(_life_attributes(IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION, seconds, kb))


def parse_responder_lifetime(data: bytes) -> tuple[int | None, int | None]:
    """(seconds, kilobytes) of a RESPONDER-LIFETIME notify; ParseError/ProtocolError if garbled."""
    attrs = parse_attributes(data)
    if any(a.type not in (IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION) for a in attrs):
        raise ProtocolError("RESPONDER-LIFETIME carries other attributes", notify=NotifyType.PAYLOAD_MALFORMED)
    return _lifetimes(attrs, IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION)


def apply_responder_lifetime(choice: Phase2Choice, seconds: int | None, kb: int | None) -> Phase2Choice:
    """The initiator honours a RESPONDER-LIFETIME: the shorter of each limit wins."""
    return replace(choice, lifetime_s=_min(choice.lifetime_s, seconds), lifetime_kb=_min(choice.lifetime_kb, kb))
