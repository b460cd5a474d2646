"""Main Mode proposals (RFC 2409 §5, Appendix A): building the initiator's SA, the responder's
choice and the initiator's check of the answer.

The initiator sends one ISAKMP proposal with one transform per ``Phase1Proposal``, in preference
order, each carrying encryption, key length (AES only), hash, authentication method, group and the
life type/duration pairs. The responder walks *its* proposals in order and takes the first one
found among the offered transforms (its most preferred acceptable offer), answering with exactly
that transform as it was offered; its own shorter lifetime it keeps to itself (and deletes the SA
when it ends).

GSS-API Kerberos (``gssapi``, method 65001, see ``ikeproto.gss``): 65001 is also
XAUTHInitPreShared, so gssapi transforms are built and chosen only when the caller says so
(``gssapi=True``: we hold Kerberos credentials, and as responder the peer sent a GSS-API vendor
ID). A 65001 transform may carry the GSS identity attribute (class 16384, or 32001 as Windows 2000
was seen to send); it is decoded into ``Phase1Choice.peer_gss_id`` and never takes part in the
match. ``with_gss_id`` puts ours in its place in the responder's answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ikeproto import crypto, dh
from ikeproto.attributes import Attribute
from ikeproto.config import Phase1Proposal
from ikeproto.enums import AuthMethod, Doi, EncryptionAlgorithm, IkeAttr, NotifyType, ProtocolId, Situation
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.gss import GSS_ID_ATTRIBUTE, GSS_ID_ATTRIBUTE_W2K, decode_gss_id, encode_gss_id, gss_id_attribute
from ikeproto.negotiation.lifetimes import life_attributes, lifetimes, shorter
from ikeproto.proposals import Proposal, SaPayload, Transform

__all__ = ["Phase1Choice", "accept_phase1", "is_supported_phase1", "phase1_sa", "phase1_transform", "select_phase1",
           "with_gss_id"]

NO_PROPOSAL_CHOSEN = NotifyType.NO_PROPOSAL_CHOSEN
ATTRIBUTES_NOT_SUPPORTED = NotifyType.ATTRIBUTES_NOT_SUPPORTED

P1_CIPHERS = {"des": EncryptionAlgorithm.DES_CBC, "3des": EncryptionAlgorithm.TRIPLE_DES_CBC,
              "aes-cbc": EncryptionAlgorithm.AES_CBC, "des-cbc": EncryptionAlgorithm.DES_CBC,
              "3des-cbc": EncryptionAlgorithm.TRIPLE_DES_CBC, "aes": EncryptionAlgorithm.AES_CBC}
P1_HASHES = {"md5": 1, "sha1": 2, "sha2-256": 4, "sha2-384": 5, "sha2-512": 6,
             "sha": 2, "sha256": 4, "sha384": 5, "sha512": 6}
P1_AUTH = {"psk": AuthMethod.PRE_SHARED_KEY, "rsa-sig": AuthMethod.RSA_SIGNATURES,
           "gssapi": AuthMethod.GSSAPI_KERBEROS}
_P1_CIPHER_NAMES = {EncryptionAlgorithm.DES_CBC: "des", EncryptionAlgorithm.TRIPLE_DES_CBC: "3des",
                    EncryptionAlgorithm.AES_CBC: "aes-cbc"}
_P1_HASH_NAMES = {1: "md5", 2: "sha1", 4: "sha2-256", 5: "sha2-384", 6: "sha2-512"}
_P1_AUTH_NAMES = {v: k for k, v in P1_AUTH.items()}
_GSS_IDS = (GSS_ID_ATTRIBUTE, GSS_ID_ATTRIBUTE_W2K)


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
        raise UsageError(f"phase-1 authentication {p.auth!r} is not implemented (psk, rsa-sig, gssapi)")
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
    transform: Transform = field(repr=False)  # as offered (the responder answers with it, see with_gss_id)
    proposal_number: int = 1
    # The GSS identity attribute of the chosen transform (the peer's principal) and its class.
    peer_gss_id: str | None = None
    gss_id_type: int | None = None


def is_supported_phase1(p: Phase1Proposal) -> bool:
    """Whether this stack can run ``p`` (its algorithms and authentication method are known)."""
    try:
        _p1_key(p)
    except (UsageError, ProtocolError):
        return False
    return True


def phase1_transform(p: Phase1Proposal, number: int, *, gss_id: str | None = None) -> Transform:
    """One Main Mode transform (RFC 2409 Appendix A attributes) for ``p``; a gssapi one announces
    ``gss_id`` (our principal) in the GSS identity attribute when given."""
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
    if gss_id is not None and k.auth == AuthMethod.GSSAPI_KERBEROS:
        attrs.append(gss_id_attribute(gss_id))  # racoon puts it after the RFC 2409 attributes
    return Transform(number=number, transform_id=1, attributes=tuple(attrs))


def _usable(p: Phase1Proposal, gssapi: bool) -> bool:
    return is_supported_phase1(p) and (gssapi or p.auth != "gssapi")


def phase1_sa(proposals: Iterable[Phase1Proposal], *, gssapi: bool = False, gss_id: str | None = None) -> SaPayload:
    """The initiator's Main Mode SA: one ISAKMP proposal, one transform per supported proposal
    (gssapi ones only with ``gssapi``, announcing ``gss_id`` when given)."""
    usable = [p for p in proposals if _usable(p, gssapi)]
    if not usable:
        raise UsageError("no phase-1 proposal this stack implements (psk, rsa-sig or gssapi with known algorithms)")
    transforms = [phase1_transform(p, i + 1, gss_id=gss_id) for i, p in enumerate(usable)]
    return SaPayload.ipsec([Proposal.isakmp(transforms)])


def with_gss_id(t: Transform, principal: str, attr_type: int = GSS_ID_ATTRIBUTE) -> Transform:
    """The responder's answer to a transform that carried the initiator's GSS identity: the same
    transform with ``principal`` (ours) in its place (racoon, [MS-AIPS] §4.1)."""
    attrs = tuple(a for a in t.attributes if a.type not in _GSS_IDS)
    return Transform(number=t.number, transform_id=t.transform_id,
                     attributes=(*attrs, Attribute.tlv(attr_type, encode_gss_id(principal))))


class _Parsed(NamedTuple):
    key: _P1Key
    seconds: int | None
    kb: int | None
    gss_id: tuple[int, str] | None  # (attribute class, principal)


def _parse_p1(t: Transform) -> _Parsed:
    """The algorithm key, lifetimes and GSS identity of a received phase-1 transform; unknown ->
    ProtocolError."""
    if t.transform_id != 1:  # RFC 2409 Appendix A / RFC 2407 §4.4.2: KEY_IKE
        raise ProtocolError(f"phase-1 transform ID {t.transform_id}", notify=NotifyType.INVALID_TRANSFORM_ID)
    known = {IkeAttr.ENCRYPTION_ALGORITHM, IkeAttr.HASH_ALGORITHM, IkeAttr.AUTHENTICATION_METHOD,
             IkeAttr.GROUP_DESCRIPTION, IkeAttr.LIFE_TYPE, IkeAttr.LIFE_DURATION, IkeAttr.KEY_LENGTH}
    seen: set[int] = set()
    values: dict[int, int] = {}
    gss_id: tuple[int, str] | None = None
    for a in t.attributes:
        if a.type in _GSS_IDS and not a.is_basic:
            if gss_id is not None:
                raise ProtocolError("GSS identity attribute repeated", notify=NotifyType.BAD_PROPOSAL_SYNTAX)
            gss_id = (a.type, decode_gss_id(a.value))  # type: ignore[arg-type]
            continue
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
    if gss_id is not None and values[IkeAttr.AUTHENTICATION_METHOD] != AuthMethod.GSSAPI_KERBEROS:
        raise ProtocolError("GSS identity in a transform that is not GSS-API", notify=ATTRIBUTES_NOT_SUPPORTED)
    seconds, kb = lifetimes(t.attributes, IkeAttr.LIFE_TYPE, IkeAttr.LIFE_DURATION)
    key = _P1Key(encryption=values[IkeAttr.ENCRYPTION_ALGORITHM], key_bits=values.get(IkeAttr.KEY_LENGTH),
                 hash=values[IkeAttr.HASH_ALGORITHM], auth=values[IkeAttr.AUTHENTICATION_METHOD],
                 group=values[IkeAttr.GROUP_DESCRIPTION])
    return _Parsed(key, seconds, kb, gss_id)


def _choice(p: Phase1Proposal, parsed: _Parsed, t: Transform, number: int = 1) -> Phase1Choice:
    k, seconds, kb, gss_id = parsed
    return Phase1Choice(
        proposal_number=number,
        cipher_name=_P1_CIPHER_NAMES[k.encryption], key_bits=k.key_bits, hash_name=_P1_HASH_NAMES[k.hash],
        dh_group=k.group, auth=_P1_AUTH_NAMES[k.auth], lifetime_s=shorter(p.lifetime_s, seconds) or p.lifetime_s,
        lifetime_kb=shorter(p.lifetime_kb, kb), cipher=crypto.cipher(k.encryption, k.key_bits),
        hash=crypto.hash_algorithm(k.hash), transform=t, peer_gss_id=gss_id[1] if gss_id else None,
        gss_id_type=gss_id[0] if gss_id else None,
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


def select_phase1(sa: SaPayload, ours: Sequence[Phase1Proposal], *, gssapi: bool = False) -> Phase1Choice:
    """Responder: our most preferred proposal found among the offered transforms (our gssapi ones
    only with ``gssapi``: the peer sent a GSS-API vendor ID and we hold credentials)."""
    offered = []
    for prop in _isakmp_proposals(sa):
        for t in prop.transforms:
            try:
                offered.append((_parse_p1(t), t, prop.number))
            except ProtocolError:
                continue  # an odd transform is not chosen; the others still count
    for p in ours:
        if not _usable(p, gssapi):
            continue
        k = _p1_key(p)
        for parsed, t, number in offered:
            if parsed.key == k:
                return _choice(p, parsed, t, number)
    raise ProtocolError("no offered phase-1 transform is acceptable", notify=NO_PROPOSAL_CHOSEN)


def accept_phase1(reply: SaPayload, offered: Sequence[Phase1Proposal]) -> Phase1Choice:
    """Initiator: the responder's SA must hold one transform we offered."""
    props = _isakmp_proposals(reply)
    if len(props) != 1 or len(props[0].transforms) != 1:
        raise ProtocolError("the responder must choose exactly one transform", notify=NotifyType.BAD_PROPOSAL_SYNTAX)
    t = props[0].transforms[0]
    parsed = _parse_p1(t)
    for p in offered:
        if is_supported_phase1(p) and _p1_key(p) == parsed.key:
            return _choice(p, parsed, t)
    raise ProtocolError("the responder chose a transform we did not offer", notify=NO_PROPOSAL_CHOSEN)
