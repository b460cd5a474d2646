"""Main Mode proposals (RFC 2409 §5, Appendix A): building the initiator's SA, the responder's
choice and the initiator's check of the answer.

The initiator sends one ISAKMP proposal with one transform per ``Phase1Proposal``, in preference
order, each carrying encryption, key length (AES only), hash, authentication method, group and the
life type/duration pairs. The responder walks *its* proposals in order and takes the first one
found among the offered transforms (its most preferred acceptable offer), answering with exactly
that transform as it was offered; its own shorter lifetime it keeps to itself (and deletes the SA
when it ends).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ikeproto import crypto, dh
from ikeproto.attributes import Attribute
from ikeproto.config import Phase1Proposal
from ikeproto.enums import AuthMethod, Doi, EncryptionAlgorithm, IkeAttr, NotifyType, ProtocolId, Situation
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.negotiation.lifetimes import life_attributes, lifetimes, shorter
from ikeproto.proposals import Proposal, SaPayload, Transform

__all__ = ["Phase1Choice", "accept_phase1", "is_supported_phase1", "phase1_sa", "phase1_transform", "select_phase1"]

NO_PROPOSAL_CHOSEN = NotifyType.NO_PROPOSAL_CHOSEN
ATTRIBUTES_NOT_SUPPORTED = NotifyType.ATTRIBUTES_NOT_SUPPORTED

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
    attrs += life_attributes(IkeAttr.LIFE_TYPE, IkeAttr.LIFE_DURATION, p.lifetime_s, p.lifetime_kb)
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
    seconds, kb = lifetimes(t.attributes, IkeAttr.LIFE_TYPE, IkeAttr.LIFE_DURATION)
    key = _P1Key(encryption=values[IkeAttr.ENCRYPTION_ALGORITHM], key_bits=values.get(IkeAttr.KEY_LENGTH),
                 hash=values[IkeAttr.HASH_ALGORITHM], auth=values[IkeAttr.AUTHENTICATION_METHOD],
                 group=values[IkeAttr.GROUP_DESCRIPTION])
    return key, seconds, kb


def _choice(p: Phase1Proposal, k: _P1Key, t: Transform, seconds: int | None, kb: int | None,
            number: int = 1) -> Phase1Choice:
    return Phase1Choice(
        proposal_number=number,
        cipher_name=_P1_CIPHER_NAMES[k.encryption], key_bits=k.key_bits, hash_name=_P1_HASH_NAMES[k.hash],
        dh_group=k.group, auth=_P1_AUTH_NAMES[k.auth], lifetime_s=shorter(p.lifetime_s, seconds) or p.lifetime_s,
        lifetime_kb=shorter(p.lifetime_kb, kb), cipher=crypto.cipher(k.encryption, k.key_bits),
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


