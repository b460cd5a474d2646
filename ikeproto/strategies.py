"""Hypothesis strategies for ISAKMP/IKEv1: valid records, whole messages, wire bytes, mutations.

Public, documented API for fuzzing any IKEv1 implementation (ours in the test-suite, another
vendor's over UDP). Requires ``hypothesis`` (a test dependency). Every record strategy yields
values that serialize and parse back to an equal record (``parse(serialize(x)) == x``).

Records and payloads:
    ``cookies()``, ``attributes()``, ``ike_attributes()``, ``ipsec_attributes()``,
    ``transforms(protocol_id=None)``, ``proposals(protocol_id=None)``, ``sa_payloads()``,
    ``ke_payloads()``, ``id_payloads()``, ``cert_payloads()``, ``cr_payloads()``,
    ``hash_payloads()``, ``sig_payloads()``, ``nonce_payloads()``, ``notify_payloads()``,
    ``delete_payloads()``, ``vendor_id_payloads()``, ``nat_d_payloads()``, ``nat_oa_payloads()``,
    ``gss_payloads()``, ``opaque_payloads()``, ``payloads()`` (any of them).
    ``PAYLOAD_STRATEGIES`` maps each payload class to its strategy.
Messages:
    ``headers()`` (a message with header fields only), ``messages(exchange_type=None)`` (the
    payload sequences of Main Mode, Aggressive Mode, Quick Mode and Informational messages, clear
    or encrypted), ``arbitrary_messages()`` (any payloads in any order).
Wire bytes:
    ``wire_messages()`` (valid datagrams), ``mutated(messages())`` (structured mutations of valid
    messages: bit flips, truncation, lying length and count fields, payload reordering,
    duplication and deletion, attribute form swaps; see ``ikeproto.mutations``),
    ``datagrams()`` (valid, mutated or random octets: for "parses or raises ParseError").

Example, fuzzing a responder on the lab network::

    @given(ikeproto.strategies.mutated(ikeproto.strategies.messages(ExchangeType.IDENTITY_PROTECTION)))
    def test_peer_survives(data):
        sock.sendto(data, ("192.0.2.2", 500))
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from ikeproto import vendor_ids
from ikeproto.attributes import Attribute
from ikeproto.enums import (
    AuthMethod,
    Doi,
    EncapsulationMode,
    EncryptionAlgorithm,
    EspTransformId,
    ExchangeType,
    Flag,
    GroupDescription,
    HashAlgorithm,
    IdType,
    IkeAttr,
    IpsecAttr,
    IpsecAuthAlgorithm,
    LifeType,
    NotifyType,
    PayloadType,
    ProtocolId,
    Situation,
)
from ikeproto.message import PAYLOAD_CLASSES, Message, serialize_message
from ikeproto.mutations import mutate_message
from ikeproto.payloads import (
    ID_DATA_LENGTHS,
    CertPayload,
    CrPayload,
    DeletePayload,
    GssPayload,
    HashPayload,
    IdPayload,
    KePayload,
    NatDPayload,
    NatOaPayload,
    NoncePayload,
    NotifyPayload,
    OpaquePayload,
    SigPayload,
    VendorIdPayload,
)
from ikeproto.proposals import Proposal, SaPayload, Transform

__all__ = [
    "PAYLOAD_STRATEGIES",
    "arbitrary_messages",
    "attributes",
    "cert_payloads",
    "cookies",
    "cr_payloads",
    "datagrams",
    "delete_payloads",
    "gss_payloads",
    "hash_payloads",
    "headers",
    "id_payloads",
    "ike_attributes",
    "ipsec_attributes",
    "ke_payloads",
    "messages",
    "mutated",
    "nat_d_payloads",
    "nat_oa_payloads",
    "nonce_payloads",
    "notify_payloads",
    "opaque_payloads",
    "payloads",
    "proposals",
    "sa_payloads",
    "sig_payloads",
    "transforms",
    "vendor_id_payloads",
    "wire_messages",
]

_u8 = st.integers(0, 0xFF)
_u16 = st.integers(0, 0xFFFF)
_u32 = st.integers(0, 0xFFFFFFFF)
# Mostly the RFC's zero, sometimes anything: reserved fields must round-trip as received.
_reserved8 = st.one_of(st.just(0), _u8)
_reserved16 = st.one_of(st.just(0), _u16)


def _blob(min_size: int = 0, max_size: int = 64) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size)


def cookies() -> st.SearchStrategy[bytes]:
    """8-octet cookies (RFC 2408 §2.5.3), zero now and then (a responder cookie before MM2)."""
    return st.one_of(st.just(bytes(8)), _blob(8, 8))


def attributes(types: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[Attribute]:
    """Any data attribute in either form (TV: 16-bit value; TLV: 0-32 octets)."""
    t = types if types is not None else st.integers(0, 0x7FFF)
    return st.one_of(st.builds(Attribute.tv, t, _u16), st.builds(Attribute.tlv, t, _blob(0, 32)))


def ike_attributes() -> st.SearchStrategy[tuple[Attribute, ...]]:
    """A realistic phase 1 attribute list (RFC 2409 App. A): cipher, [key length], hash, auth,
    group, life type and duration (duration sometimes TLV)."""
    return st.builds(
        lambda enc, keylen, h, auth, group, life: tuple(
            a
            for a in (
                Attribute.tv(IkeAttr.ENCRYPTION_ALGORITHM, enc),
                Attribute.tv(IkeAttr.KEY_LENGTH, keylen) if keylen else None,
                Attribute.tv(IkeAttr.HASH_ALGORITHM, h),
                Attribute.tv(IkeAttr.AUTHENTICATION_METHOD, auth),
                Attribute.tv(IkeAttr.GROUP_DESCRIPTION, group),
                Attribute.tv(IkeAttr.LIFE_TYPE, LifeType.SECONDS),
                life,
            )
            if a is not None
        ),
        st.sampled_from(EncryptionAlgorithm),
        st.sampled_from([None, 128, 192, 256]),
        st.sampled_from(HashAlgorithm),
        st.sampled_from(AuthMethod),
        st.sampled_from(GroupDescription),
        st.one_of(
            st.builds(Attribute.tv, st.just(IkeAttr.LIFE_DURATION), _u16),
            st.builds(lambda v: Attribute.tlv(IkeAttr.LIFE_DURATION, v, length=4), _u32),
        ),
    )


def ipsec_attributes() -> st.SearchStrategy[tuple[Attribute, ...]]:
    """A realistic IPsec DOI attribute list (RFC 2407 §4.5) for an AH/ESP transform."""
    return st.builds(
        lambda life_s, life_kb, mode, auth, keylen, group: tuple(
            a
            for a in (
                Attribute.tv(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS),
                Attribute.auto(IpsecAttr.SA_LIFE_DURATION, life_s),
                Attribute.tv(IpsecAttr.SA_LIFE_TYPE, LifeType.KILOBYTES) if life_kb else None,
                Attribute.auto(IpsecAttr.SA_LIFE_DURATION, life_kb) if life_kb else None,
                Attribute.tv(IpsecAttr.ENCAPSULATION_MODE, mode),
                Attribute.tv(IpsecAttr.AUTHENTICATION_ALGORITHM, auth),
                Attribute.tv(IpsecAttr.KEY_LENGTH, keylen) if keylen else None,
                Attribute.tv(IpsecAttr.GROUP_DESCRIPTION, group) if group else None,
            )
            if a is not None
        ),
        st.integers(1, 1 << 20),
        st.one_of(st.none(), st.integers(1, 1 << 24)),
        st.sampled_from(EncapsulationMode),
        st.sampled_from(IpsecAuthAlgorithm),
        st.sampled_from([None, 128, 256]),
        st.sampled_from([None, GroupDescription.MODP_1024, GroupDescription.MODP_2048]),
    )


def transforms(protocol_id: int | None = None) -> st.SearchStrategy[Transform]:
    """A transform: realistic for PROTO_ISAKMP / AH / ESP, arbitrary attributes otherwise."""
    if protocol_id == ProtocolId.ISAKMP:
        ids, attrs = st.just(1), ike_attributes()
    elif protocol_id in (ProtocolId.IPSEC_ESP, ProtocolId.IPSEC_AH):
        ids = st.sampled_from(EspTransformId) if protocol_id == ProtocolId.IPSEC_ESP else st.integers(2, 13)
        attrs = ipsec_attributes()
    else:
        ids, attrs = _u8, st.lists(attributes(), max_size=6).map(tuple)
    return st.builds(
        lambda n, i, a, r, r2: Transform(number=n, transform_id=i, attributes=a, reserved=r, reserved2=r2),
        _u8, ids, attrs, _reserved8, _reserved16,
    )


def _spi_for(protocol_id: int, context: str) -> st.SearchStrategy[bytes]:
    if protocol_id == ProtocolId.ISAKMP:
        return st.just(b"") if context == "proposal" else _blob(0, 16)
    if protocol_id in (ProtocolId.IPSEC_AH, ProtocolId.IPSEC_ESP):
        return _blob(4, 4) if context == "proposal" else st.one_of(st.just(b""), _blob(4, 4))
    if protocol_id == ProtocolId.IPCOMP:
        return st.one_of(_blob(2, 2), _blob(4, 4))
    return _blob(0, 16)


def proposals(protocol_id: int | None = None) -> st.SearchStrategy[Proposal]:
    """A proposal with 1-4 transforms and an SPI whose size fits the protocol (RFC 2408 §3.5)."""
    protos = st.just(protocol_id) if protocol_id is not None else st.sampled_from([1, 2, 3, 4, 0, 200])
    return protos.flatmap(
        lambda p: st.builds(
            lambda n, spi, ts, r: Proposal(number=n, protocol_id=p, spi=spi, transforms=tuple(ts), reserved=r),
            _u8, _spi_for(p, "proposal"), st.lists(transforms(p), min_size=1, max_size=4), _reserved8,
        )
    )


@st.composite
def _labeled_domain(draw: st.DrawFn, situation: int) -> bytes:
    """RFC 2407 §4.6.1 fields following SIT_SECRECY / SIT_INTEGRITY, padded as the RFC says."""
    out = bytearray(draw(_blob(4, 4)))
    for flag in (Situation.SECRECY, Situation.INTEGRITY):
        if situation & flag:
            for in_bits in (False, True):
                n = draw(st.integers(0, 24))
                out += n.to_bytes(2, "big") + bytes(2)
                out += draw(_blob((n + 7) // 8 if in_bits else n, (n + 7) // 8 if in_bits else n))
                out += bytes(-(len(out) + 12) % 4)
    return bytes(out)


def sa_payloads() -> st.SearchStrategy[SaPayload]:
    """An SA: IPsec DOI with 1-3 proposals of one protocol; now and then a labeled-domain
    situation or another DOI."""
    situations = st.one_of(st.just(int(Situation.IDENTITY_ONLY)), st.integers(0, 7))

    @st.composite
    def build(draw: st.DrawFn) -> SaPayload:
        doi = draw(st.one_of(st.just(int(Doi.IPSEC)), _u32))
        situation = draw(situations)
        extra = b""
        if doi == Doi.IPSEC and situation & (Situation.SECRECY | Situation.INTEGRITY):
            extra = draw(_labeled_domain(situation))
        protocol = draw(st.sampled_from([ProtocolId.ISAKMP, ProtocolId.IPSEC_ESP, ProtocolId.IPSEC_AH, ProtocolId.IPCOMP]))
        props = draw(st.lists(proposals(protocol), min_size=1, max_size=3))
        return SaPayload(doi=doi, situation=situation, situation_data=extra, proposals=tuple(props), reserved=draw(_reserved8))

    return build()


def _data_payload(cls: type, min_size: int = 0, max_size: int = 64) -> st.SearchStrategy:
    return st.builds(lambda d, r: cls(data=d, reserved=r), _blob(min_size, max_size), _reserved8)


def ke_payloads() -> st.SearchStrategy[KePayload]:
    """KE with a public value of 0-256 octets (0 and odd sizes included: the DH layer refuses them)."""
    return _data_payload(KePayload, 0, 256)


def hash_payloads() -> st.SearchStrategy[HashPayload]:
    return _data_payload(HashPayload, 0, 64)


def sig_payloads() -> st.SearchStrategy[SigPayload]:
    return _data_payload(SigPayload, 0, 128)


def nonce_payloads() -> st.SearchStrategy[NoncePayload]:
    return _data_payload(NoncePayload, 0, 64)


def gss_payloads() -> st.SearchStrategy[GssPayload]:
    return _data_payload(GssPayload, 0, 128)


def vendor_id_payloads() -> st.SearchStrategy[VendorIdPayload]:
    """A well-known vendor ID (``ikeproto.vendor_ids``) or random octets."""
    known = st.sampled_from([e.data for e in vendor_ids.KNOWN_VENDOR_IDS] + [vendor_ids.ms_nt5_vendor_id(2)])
    return st.builds(lambda d, r: VendorIdPayload(data=d, reserved=r), st.one_of(known, _blob(0, 32)), _reserved8)


def id_payloads() -> st.SearchStrategy[IdPayload]:
    """Every ID type: address types with their exact lengths, the others with any octets."""

    @st.composite
    def build(draw: st.DrawFn) -> IdPayload:
        id_type = draw(st.one_of(st.sampled_from(IdType), _u8))
        need = ID_DATA_LENGTHS.get(id_type)
        data = draw(_blob(need, need) if need is not None else _blob(0, 48))
        return IdPayload(id_type=id_type, protocol=draw(st.sampled_from([0, 6, 17]) | _u8), port=draw(st.sampled_from([0, 500]) | _u16),
                         data=data, reserved=draw(_reserved8))

    return build()


def cert_payloads() -> st.SearchStrategy[CertPayload]:
    return st.builds(lambda e, d, r: CertPayload(encoding=e, data=d, reserved=r), _u8, _blob(0, 96), _reserved8)


def cr_payloads() -> st.SearchStrategy[CrPayload]:
    return st.builds(lambda e, d, r: CrPayload(cert_type=e, authority=d, reserved=r), _u8, _blob(0, 48), _reserved8)


def notify_payloads() -> st.SearchStrategy[NotifyPayload]:
    """Notifications of every named type (and unknown ones) with SPIs that fit their protocol."""

    @st.composite
    def build(draw: st.DrawFn) -> NotifyPayload:
        doi = draw(st.one_of(st.just(int(Doi.IPSEC)), _u32))
        protocol = draw(st.one_of(st.sampled_from(ProtocolId), _u8))
        spi = draw(_spi_for(protocol, "notify") if doi == Doi.IPSEC else _blob(0, 16))
        return NotifyPayload(notify_type=draw(st.one_of(st.sampled_from(NotifyType), _u16)), doi=doi, protocol_id=protocol,
                             spi=spi, data=draw(_blob(0, 32)), reserved=draw(_reserved8))

    return build()


def delete_payloads() -> st.SearchStrategy[DeletePayload]:
    """Delete payloads with 0-8 SPIs of the size their protocol needs (RFC 2408 §3.15)."""

    @st.composite
    def build(draw: st.DrawFn) -> DeletePayload:
        doi = draw(st.one_of(st.just(int(Doi.IPSEC)), _u32))
        protocol = draw(st.one_of(st.sampled_from([1, 2, 3, 4]), _u8))
        known = {1: 16, 2: 4, 3: 4}.get(protocol)
        if doi == Doi.IPSEC and protocol == ProtocolId.IPCOMP:
            size = draw(st.sampled_from([2, 4]))
        elif doi == Doi.IPSEC and known is not None:
            size = known
        else:
            size = draw(st.integers(1, 16))
        spis = tuple(draw(st.lists(_blob(size, size), max_size=8)))
        return DeletePayload(protocol_id=protocol, spi_size=size, spis=spis, doi=doi, reserved=draw(_reserved8))

    return build()


def nat_d_payloads() -> st.SearchStrategy[NatDPayload]:
    """NAT-D (RFC 3947, type 20, or the draft's 130) with a 16-64 octet hash."""
    return st.builds(lambda t, d, r: NatDPayload(payload_type=t, data=d, reserved=r),
                     st.sampled_from([PayloadType.NAT_D, PayloadType.NAT_D_DRAFT]), _blob(16, 64), _reserved8)


def nat_oa_payloads() -> st.SearchStrategy[NatOaPayload]:
    """NAT-OA (RFC 3947 §5.2, or the draft's 131) with an IPv4 or IPv6 address."""
    return st.builds(
        lambda t, v6, addr16, res, r: NatOaPayload(
            payload_type=t, id_type=IdType.ID_IPV6_ADDR if v6 else IdType.ID_IPV4_ADDR,
            address=addr16 if v6 else addr16[:4], id_reserved=res, reserved=r,
        ),
        st.sampled_from([PayloadType.NAT_OA, PayloadType.NAT_OA_DRAFT]), st.booleans(), _blob(16, 16),
        st.one_of(st.just(0), st.integers(0, 0xFFFFFF)), _reserved8,
    )


def opaque_payloads() -> st.SearchStrategy[OpaquePayload]:
    """Payload types this codec does not interpret (kept as octets)."""
    unknown = st.integers(1, 255).filter(lambda t: t not in PAYLOAD_CLASSES and t not in (2, 3))
    return st.builds(lambda t, d, r: OpaquePayload(payload_type=t, data=d, reserved=r), unknown, _blob(0, 48), _reserved8)


PAYLOAD_STRATEGIES = {
    SaPayload: sa_payloads(),
    KePayload: ke_payloads(),
    IdPayload: id_payloads(),
    CertPayload: cert_payloads(),
    CrPayload: cr_payloads(),
    HashPayload: hash_payloads(),
    SigPayload: sig_payloads(),
    NoncePayload: nonce_payloads(),
    NotifyPayload: notify_payloads(),
    DeletePayload: delete_payloads(),
    VendorIdPayload: vendor_id_payloads(),
    NatDPayload: nat_d_payloads(),
    NatOaPayload: nat_oa_payloads(),
    GssPayload: gss_payloads(),
    OpaquePayload: opaque_payloads(),
}


def payloads() -> st.SearchStrategy:
    """Any payload record."""
    return st.one_of(*PAYLOAD_STRATEGIES.values())


def headers() -> st.SearchStrategy[Message]:
    """A message with valid header fields (major version 1, E flag clear) and no payloads."""
    return st.builds(
        lambda i, r, x, f, m, minor: Message(initiator_cookie=i, responder_cookie=r, exchange_type=x, flags=f,
                                             message_id=m, minor_version=minor),
        cookies(), cookies(), st.one_of(st.sampled_from(ExchangeType), _u8),
        _u8.map(lambda f: f & ~Flag.ENCRYPTION), _u32, st.one_of(st.just(0), st.integers(0, 15)),
    )


def arbitrary_messages(max_payloads: int = 8) -> st.SearchStrategy[Message]:
    """A clear message carrying any payloads in any order."""
    return st.builds(lambda h, ps: Message(**{**_fields(h), "payloads": tuple(ps)}), headers(), st.lists(payloads(), max_size=max_payloads))


def _fields(m: Message) -> dict:
    return {k: getattr(m, k) for k in ("initiator_cookie", "responder_cookie", "exchange_type", "flags", "message_id", "minor_version")}


def _vids() -> st.SearchStrategy[list]:
    return st.lists(vendor_id_payloads(), max_size=5)


def _encrypted(exchange_type: int, first: int, message_id: st.SearchStrategy[int]) -> st.SearchStrategy[Message]:
    return st.builds(
        lambda i, r, m, blocks, bs: Message(initiator_cookie=i, responder_cookie=r, exchange_type=exchange_type,
                                            flags=Flag.ENCRYPTION, message_id=m, next_payload=first,
                                            encrypted_body=blocks[: len(blocks) - len(blocks) % bs]),
        cookies(), cookies(), message_id, _blob(8, 160), st.sampled_from([8, 16]),
    )


def messages(exchange_type: int | None = None) -> st.SearchStrategy[Message]:
    """Messages shaped as the exchange sends them (RFC 2409 §5): Main Mode 1-6 (5/6 encrypted),
    Aggressive Mode 1-2, Quick Mode (clear payload order, or encrypted), Informational (N or D,
    clear or encrypted). ``exchange_type`` picks one exchange (other types get arbitrary payloads);
    None mixes the four."""
    isakmp_sa = st.builds(SaPayload.ipsec, st.lists(proposals(ProtocolId.ISAKMP), min_size=1, max_size=2))
    ipsec_sa = st.builds(SaPayload.ipsec, st.lists(proposals(ProtocolId.IPSEC_ESP) | proposals(ProtocolId.IPSEC_AH), min_size=1, max_size=3))
    nat_d = st.lists(nat_d_payloads(), min_size=0, max_size=2)

    def clear(exch: int, body: st.SearchStrategy[list], message_id: st.SearchStrategy[int] = st.just(0)) -> st.SearchStrategy[Message]:
        return st.builds(lambda i, r, m, ps: Message(initiator_cookie=i, responder_cookie=r, exchange_type=exch,
                                                     message_id=m, payloads=tuple(ps)), cookies(), cookies(), message_id, body)

    cat = lambda *parts: st.tuples(*parts).map(lambda t: [p for part in t for p in (part if isinstance(part, list) else [part])])  # noqa: E731
    mm = ExchangeType.IDENTITY_PROTECTION
    main = st.one_of(
        clear(mm, cat(isakmp_sa, _vids())),  # MM1 / MM2
        clear(mm, cat(ke_payloads(), nonce_payloads(), nat_d)),  # MM3 / MM4
        clear(mm, cat(ke_payloads(), nonce_payloads(), gss_payloads())),  # MM3 / MM4, Kerberos
        _encrypted(mm, PayloadType.ID, st.just(0)),  # MM5 / MM6
    )
    aggressive = st.one_of(
        clear(ExchangeType.AGGRESSIVE, cat(isakmp_sa, ke_payloads(), nonce_payloads(), id_payloads(), _vids())),
        clear(ExchangeType.AGGRESSIVE, cat(isakmp_sa, ke_payloads(), nonce_payloads(), id_payloads(), hash_payloads(), _vids())),
    )
    msgid = st.integers(1, 0xFFFFFFFF)
    ids = st.one_of(st.just([]), st.lists(id_payloads(), min_size=2, max_size=2))
    kes = st.one_of(st.just([]), ke_payloads().map(lambda k: [k]))
    quick = st.one_of(
        clear(ExchangeType.QUICK_MODE, cat(hash_payloads(), ipsec_sa, nonce_payloads(), kes, ids), msgid),
        clear(ExchangeType.QUICK_MODE, cat(hash_payloads()), msgid),  # QM3
        _encrypted(ExchangeType.QUICK_MODE, PayloadType.HASH, msgid),
    )
    info = st.one_of(
        clear(ExchangeType.INFORMATIONAL, cat(notify_payloads())),
        clear(ExchangeType.INFORMATIONAL, cat(hash_payloads(), notify_payloads() | delete_payloads()), msgid),
        _encrypted(ExchangeType.INFORMATIONAL, PayloadType.HASH, msgid),
    )
    table = {mm: main, ExchangeType.AGGRESSIVE: aggressive, ExchangeType.QUICK_MODE: quick, ExchangeType.INFORMATIONAL: info}
    if exchange_type is None:
        return st.one_of(*table.values())
    if exchange_type in table:
        return table[exchange_type]
    # Base, Authentication Only, Transaction, New Group, private: any payloads under that type.
    return arbitrary_messages().map(lambda m: replace(m, exchange_type=exchange_type))


def wire_messages(exchange_type: int | None = None) -> st.SearchStrategy[bytes]:
    """Valid datagrams (serialized ``messages``)."""
    return messages(exchange_type).map(serialize_message)


def mutated(base: st.SearchStrategy[Message] | None = None) -> st.SearchStrategy[bytes]:
    """Structured mutations of valid messages (``ikeproto.mutations.mutate_message``): bit flips,
    truncation, lying length/count/SPI-size fields, payload reordering, duplication, deletion and
    attribute form swaps."""
    base = base if base is not None else st.one_of(messages(), arbitrary_messages(4))

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        msg = draw(base)
        return mutate_message(msg, lambda n: draw(st.integers(0, n - 1)) if n > 1 else 0)

    return build()


def datagrams() -> st.SearchStrategy[bytes]:
    """Wire octets for "parses or raises ParseError": valid, mutated, or random after a valid
    header."""
    random_tail = st.builds(
        lambda h, nxt, tail: serialize_message(h)[:16] + bytes([nxt]) + serialize_message(h)[17:24]
        + (28 + len(tail)).to_bytes(4, "big") + tail,
        headers(), st.one_of(st.sampled_from(PayloadType), _u8), _blob(0, 200),
    )
    return st.one_of(wire_messages(), mutated(), random_tail, _blob(0, 64))
