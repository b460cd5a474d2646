"""The ISAKMP codec on hand-built messages: every payload type round-trips byte-exactly, and each
class of hostile input raises its typed ParseError (with the Notify it maps to)."""

from __future__ import annotations

import struct

import pytest

from ikeproto.attributes import Attribute, parse_attributes, serialize_attributes
from ikeproto.enums import (
    AuthMethod,
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
from ikeproto.errors import (
    BadProposalSyntaxError,
    InvalidIdInformationError,
    InvalidMajorVersionError,
    InvalidPayloadTypeError,
    InvalidSpiError,
    LengthMismatchError,
    MalformedError,
    ParseError,
)
from ikeproto.message import (
    Message,
    parse_message,
    parse_payloads,
    serialize_message,
    serialize_payload_body,
    serialize_payloads,
)
from ikeproto.payloads import (
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

ICKY = bytes.fromhex("0102030405060708")
RCKY = bytes.fromhex("1112131415161718")


def ike_transform(number: int, enc: int, key_length: int | None, hash_: int, group: int) -> Transform:
    attrs = [Attribute.tv(IkeAttr.ENCRYPTION_ALGORITHM, enc)]
    if key_length:
        attrs.append(Attribute.tv(IkeAttr.KEY_LENGTH, key_length))
    attrs += [
        Attribute.tv(IkeAttr.HASH_ALGORITHM, hash_),
        Attribute.tv(IkeAttr.AUTHENTICATION_METHOD, AuthMethod.GSSAPI_KERBEROS),
        Attribute.tv(IkeAttr.GROUP_DESCRIPTION, group),
        Attribute.tv(IkeAttr.LIFE_TYPE, LifeType.SECONDS),
        Attribute.tlv(IkeAttr.LIFE_DURATION, 28800, length=4),
    ]
    return Transform(number=number, attributes=tuple(attrs))


def main_mode_offer() -> Message:
    """A Windows-2000-like MM1: 4 transforms (3DES/SHA, 3DES/MD5, DES/SHA, DES/MD5) and VIDs."""
    transforms = [
        ike_transform(1, EncryptionAlgorithm.TRIPLE_DES_CBC, None, HashAlgorithm.SHA, GroupDescription.MODP_1024),
        ike_transform(2, EncryptionAlgorithm.TRIPLE_DES_CBC, None, HashAlgorithm.MD5, GroupDescription.MODP_1024),
        ike_transform(3, EncryptionAlgorithm.DES_CBC, None, HashAlgorithm.SHA, GroupDescription.MODP_768),
        ike_transform(4, EncryptionAlgorithm.DES_CBC, None, HashAlgorithm.MD5, GroupDescription.MODP_768),
    ]
    return Message(
        initiator_cookie=ICKY,
        exchange_type=ExchangeType.IDENTITY_PROTECTION,
        payloads=(
            SaPayload.ipsec([Proposal.isakmp(transforms)]),
            VendorIdPayload(data=bytes.fromhex("1e2b516905991c7d7c96fcbfb587e46100000002")),
            VendorIdPayload(data=bytes(16)),
        ),
    )


def quick_mode_body() -> tuple:
    esp = Transform(
        number=1,
        transform_id=EspTransformId.ESP_AES,
        attributes=(
            Attribute.tv(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS),
            Attribute.tv(IpsecAttr.SA_LIFE_DURATION, 3600),
            Attribute.tv(IpsecAttr.ENCAPSULATION_MODE, EncapsulationMode.TRANSPORT),
            Attribute.tv(IpsecAttr.AUTHENTICATION_ALGORITHM, IpsecAuthAlgorithm.HMAC_SHA),
            Attribute.tv(IpsecAttr.KEY_LENGTH, 128),
        ),
    )
    return (
        HashPayload(data=bytes(20)),
        SaPayload.ipsec([Proposal.ipsec(ProtocolId.IPSEC_ESP, b"\xc0\x01\x02\x03", [esp])]),
        NoncePayload(data=bytes(range(20))),
        IdPayload.address("192.0.2.1", protocol=17, port=500),
        IdPayload.subnet("192.0.2.0/24"),
    )


EVERY_PAYLOAD = [
    SaPayload.ipsec([Proposal.isakmp([Transform()])]),
    SaPayload(situation=Situation.IDENTITY_ONLY | Situation.SECRECY, situation_data=bytes(4) + b"\x00\x01\x00\x00\xaa\x00\x00\x00" + b"\x00\x08\x00\x00\x55\x00\x00\x00"),
    KePayload(data=bytes(range(128))),
    IdPayload.address("192.0.2.7"),
    IdPayload.address("2001:db8::1", protocol=6, port=80),
    IdPayload.subnet("10.0.0.0/8"),
    IdPayload.subnet("2001:db8::/32"),
    IdPayload.range("10.0.0.1", "10.0.0.9"),
    IdPayload.range("2001:db8::1", "2001:db8::9"),
    IdPayload.fqdn("host.reskit.com"),
    IdPayload.user_fqdn("admin@reskit.com"),
    IdPayload(id_type=IdType.ID_DER_ASN1_DN, data=b"\x30\x00"),
    IdPayload(id_type=IdType.ID_KEY_ID, data=b"key"),
    CertPayload(encoding=4, data=b"\x30\x82\x00\x00"),
    CrPayload(cert_type=4, authority=b"\x30\x00"),
    HashPayload(data=bytes(20)),
    SigPayload(data=bytes(64)),
    NoncePayload(data=bytes(32)),
    NotifyPayload(notify_type=NotifyType.INITIAL_CONTACT, spi=ICKY + RCKY),
    NotifyPayload(notify_type=NotifyType.R_U_THERE, spi=ICKY + RCKY, data=b"\x00\x00\x00\x07"),
    NotifyPayload(
        notify_type=NotifyType.RESPONDER_LIFETIME,
        protocol_id=ProtocolId.IPSEC_ESP,
        spi=b"\x01\x02\x03\x04",
        data=serialize_attributes([Attribute.tv(IpsecAttr.SA_LIFE_TYPE, 2), Attribute.tlv(IpsecAttr.SA_LIFE_DURATION, 100000)]),
    ),
    DeletePayload.of(ProtocolId.IPSEC_ESP, [b"\x01\x02\x03\x04", b"\x05\x06\x07\x08"]),
    DeletePayload.of(ProtocolId.ISAKMP, [ICKY + RCKY]),
    VendorIdPayload(data=b"\xaf\xca\xd7\x13\x68\xa1\xf1\xc9\x6b\x86\x96\xfc\x77\x57\x01\x00"),
    NatDPayload(data=bytes(20)),
    NatDPayload(payload_type=PayloadType.NAT_D_DRAFT, data=bytes(16)),
    NatOaPayload.of("10.1.2.3"),
    NatOaPayload.of("2001:db8::5"),
    NatOaPayload(payload_type=PayloadType.NAT_OA_DRAFT, address=bytes(4), id_reserved=0x010203),
    GssPayload(data=b"\x60\x82\x01\x00kerberos-ap-req"),
    OpaquePayload(payload_type=200, data=b"private"),
    OpaquePayload(payload_type=PayloadType.FRAGMENT, data=b"\x00\x01\x01\x01frag"),
]


@pytest.mark.parametrize("payload", EVERY_PAYLOAD, ids=lambda p: type(p).__name__)
def test_every_payload_round_trips_in_a_message(payload):
    """parse(serialize(m)) == m and serialize(parse(b)) == b for a message carrying the payload."""
    msg = Message(initiator_cookie=ICKY, responder_cookie=RCKY, exchange_type=ExchangeType.INFORMATIONAL,
                  payloads=(payload, NoncePayload(data=b"n" * 8)))
    wire = serialize_message(msg)
    assert parse_message(wire) == msg
    assert serialize_message(parse_message(wire)) == wire


def test_main_mode_offer_wire_layout():
    """The header and the first SA octets are laid out as RFC 2408 §3.1/§3.4 say."""
    msg = main_mode_offer()
    wire = serialize_message(msg)
    icky, rcky, nxt, ver, exch, flags, msgid, length = struct.unpack_from("!8s8sBBBBII", wire)
    assert (icky, rcky, nxt, ver, exch, flags, msgid, length) == (ICKY, bytes(8), 1, 0x10, 2, 0, 0, len(wire))
    # SA generic header: next = VID (13), reserved 0, then DOI 1 and SIT_IDENTITY_ONLY.
    assert wire[28] == 13 and wire[29] == 0
    assert struct.unpack_from("!II", wire, 32) == (1, 1)
    parsed = parse_message(wire)
    assert parsed == msg
    sa = parsed.payloads[0]
    assert len(sa.proposals[0].transforms) == 4
    assert sa.proposals[0].transforms[3].attribute(IkeAttr.ENCRYPTION_ALGORITHM) == EncryptionAlgorithm.DES_CBC
    assert sa.proposals[0].transforms[0].attribute(IkeAttr.LIFE_DURATION) == (28800).to_bytes(4, "big")


def test_decrypted_body_with_padding_parses_in_tolerant_mode_only():
    """A decrypted body (RFC 2409 §5.3: padded to the block size) parses with allow_trailing=True;
    the same bytes are refused in strict mode."""
    payloads = quick_mode_body()
    body = serialize_payloads(payloads)
    padded = body + bytes(15 - len(body) % 16) + bytes([15 - len(body) % 16])
    assert parse_payloads(PayloadType.HASH, padded, allow_trailing=True) == payloads
    with pytest.raises(LengthMismatchError):
        parse_payloads(PayloadType.HASH, padded)
    assert parse_payloads(PayloadType.HASH, body) == payloads


def test_encrypted_message_keeps_body_and_first_payload_type():
    """With the E flag the body stays octets and the header's next payload is kept."""
    clear = Message(initiator_cookie=ICKY, responder_cookie=RCKY, exchange_type=ExchangeType.QUICK_MODE,
                    message_id=0x6B7DBAD4, payloads=quick_mode_body())
    enc = clear.with_encrypted_body(b"\x99" * 48)
    wire = serialize_message(enc)
    assert wire[16] == PayloadType.HASH and wire[19] & Flag.ENCRYPTION
    parsed = parse_message(wire)
    assert parsed.encrypted_body == b"\x99" * 48 and parsed.next_payload == PayloadType.HASH
    assert parsed.is_encrypted and parsed == enc


def test_payload_body_is_sa_b():
    """serialize_payload_body gives the SA payload minus its generic header (RFC 2409 §5: SAi_b)."""
    msg = main_mode_offer()
    wire = serialize_message(msg)
    sa_len = struct.unpack_from("!H", wire, 30)[0]
    assert serialize_payload_body(msg.payloads[0]) == wire[32 : 28 + sa_len]


def test_attribute_forms_are_preserved():
    """A value that fits in 16 bits but arrived as TLV stays TLV (and vice versa)."""
    attrs = (Attribute.tv(1, 5), Attribute.tlv(1, 5), Attribute.tlv(12, b""), Attribute.auto(12, 86400))
    wire = serialize_attributes(attrs)
    assert wire == bytes.fromhex("80010005" "000100010" "5" "000c0000" "000c0003" "015180")
    assert parse_attributes(wire) == attrs
    assert [a.is_basic for a in attrs] == [True, False, False, False]
    assert attrs[3].int_value == 86400


# ---- hostile input: each class of RFC-breaking input has its typed error ----------------------


def header(length: int, *, next_payload: int = 0, version: int = 0x10, flags: int = 0, exch: int = 2) -> bytes:
    return struct.pack("!8s8sBBBBII", ICKY, bytes(8), next_payload, version, exch, flags, 0, length)


def with_body(body: bytes, *, next_payload: int, **kw) -> bytes:
    return header(28 + len(body), next_payload=next_payload, **kw) + body


@pytest.mark.parametrize(
    "data, error, notify",
    [
        (b"", MalformedError, NotifyType.PAYLOAD_MALFORMED),
        (header(28)[:27], MalformedError, NotifyType.PAYLOAD_MALFORMED),
        (header(0), MalformedError, NotifyType.PAYLOAD_MALFORMED),  # zero-length header
        (header(27) + b"\x00", MalformedError, NotifyType.PAYLOAD_MALFORMED),
        (header(29), LengthMismatchError, NotifyType.UNEQUAL_PAYLOAD_LENGTHS),  # larger than datagram
        (header(28) + b"\x00", LengthMismatchError, NotifyType.UNEQUAL_PAYLOAD_LENGTHS),  # shorter
        (header(28, version=0x20), InvalidMajorVersionError, NotifyType.INVALID_MAJOR_VERSION),
        (header(28, version=0x00), InvalidMajorVersionError, NotifyType.INVALID_MAJOR_VERSION),
        (header(28, next_payload=13), LengthMismatchError, NotifyType.UNEQUAL_PAYLOAD_LENGTHS),  # missing
        (with_body(b"\x00\x00\x00\x00", next_payload=13), MalformedError, NotifyType.PAYLOAD_MALFORMED),  # zero-length payload
        (with_body(b"\x00\x00\x00\x03", next_payload=13), MalformedError, NotifyType.PAYLOAD_MALFORMED),
        (with_body(b"\x00\x00\x00\x09abcd", next_payload=13), LengthMismatchError, NotifyType.UNEQUAL_PAYLOAD_LENGTHS),
        (with_body(b"\x0d\x00\x00\x04", next_payload=13), LengthMismatchError, NotifyType.UNEQUAL_PAYLOAD_LENGTHS),  # runs past
        (with_body(b"\x00\x00\x00\x04\x00", next_payload=13), LengthMismatchError, NotifyType.UNEQUAL_PAYLOAD_LENGTHS),  # trailing
        (with_body(b"\x00\x00\x00\x04", next_payload=2), InvalidPayloadTypeError, NotifyType.INVALID_PAYLOAD_TYPE),
        (with_body(b"\x00\x00\x00\x06ab", next_payload=5), MalformedError, NotifyType.PAYLOAD_MALFORMED),
        (with_body(b"\x00\x00\x00\x0b\x01\x00\x00\x00abc", next_payload=5), InvalidIdInformationError, NotifyType.INVALID_ID_INFORMATION),
        (with_body(b"\x00\x00\x00\x0c\x05\x00\x00\x00abcd", next_payload=21), InvalidIdInformationError, NotifyType.INVALID_ID_INFORMATION),
    ],
)
def test_hostile_headers_and_chains(data, error, notify):
    """Each malformed datagram raises its ParseError subclass carrying the Notify to send."""
    with pytest.raises(error) as info:
        parse_message(data)
    assert info.value.notify == notify
    assert isinstance(info.value, ParseError)


def sa_bytes(proposal: bytes, *, doi: int = 1, situation: int = 1) -> bytes:
    body = struct.pack("!II", doi, situation) + proposal
    return struct.pack("!BBH", 0, 0, 4 + len(body)) + body


def proposal_bytes(transforms: bytes, *, count: int, protocol: int = 1, spi: bytes = b"", nxt: int = 0, length: int | None = None) -> bytes:
    n = 8 + len(spi) + len(transforms) if length is None else length
    return struct.pack("!BBHBBBB", nxt, 0, n, 1, protocol, len(spi), count) + spi + transforms


def transform_bytes(attrs: bytes, *, nxt: int = 0, number: int = 1, length: int | None = None) -> bytes:
    n = 8 + len(attrs) if length is None else length
    return struct.pack("!BBHBBH", nxt, 0, n, number, 1, 0) + attrs


GOOD_ATTRS = bytes.fromhex("80010005" "80020002")


@pytest.mark.parametrize(
    "sa, error",
    [
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS), count=2)), BadProposalSyntaxError),  # count > present
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS, nxt=3) + transform_bytes(GOOD_ATTRS), count=1)), BadProposalSyntaxError),
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS), count=0)), BadProposalSyntaxError),
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS, nxt=5), count=1)), BadProposalSyntaxError),
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS), count=1, nxt=3)), BadProposalSyntaxError),
        (sa_bytes(proposal_bytes(transform_bytes(b"\x00\x0c\x00\x08\x00\x00"), count=1)), LengthMismatchError),  # overlong attribute
        (sa_bytes(proposal_bytes(transform_bytes(b"\x80\x01\x00"), count=1)), MalformedError),
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS, length=4), count=1)), MalformedError),
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS, length=40), count=1)), LengthMismatchError),
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS), count=1, length=200)), LengthMismatchError),
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS), count=1, length=0)), MalformedError),
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS), count=1, protocol=3, spi=b"\x00\x01")), InvalidSpiError),
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS), count=1, protocol=1, spi=bytes(17))), InvalidSpiError),
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS), count=1, nxt=2)), LengthMismatchError),  # announced, missing
        (sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS), count=1) + b"\x00"), LengthMismatchError),
        (sa_bytes(b"", situation=3), LengthMismatchError),  # SIT_SECRECY without its labeled domain
        (b"\x00\x00\x00\x08\x00\x00\x00\x01", MalformedError),
    ],
)
def test_hostile_sa_payloads(sa, error):
    """Nested proposal/transform/attribute lengths and counts must agree with the bytes."""
    with pytest.raises(error):
        parse_message(with_body(sa, next_payload=PayloadType.SA))


def test_good_sa_bytes_parse():
    """The builders above produce a valid SA when nothing lies (so the negatives are meaningful)."""
    wire = with_body(sa_bytes(proposal_bytes(transform_bytes(GOOD_ATTRS), count=1)), next_payload=PayloadType.SA)
    msg = parse_message(wire)
    assert msg.payloads[0].proposals[0].transforms[0].attributes == (Attribute.tv(1, 5), Attribute.tv(2, 2))
    assert serialize_message(msg) == wire


@pytest.mark.parametrize(
    "body, error",
    [
        (struct.pack("!IBBH", 1, 3, 4, 2) + bytes(7), LengthMismatchError),  # 2 SPIs announced, 7 octets
        (struct.pack("!IBBH", 1, 3, 4, 0xFFFF) + bytes(8), LengthMismatchError),  # lying count
        (struct.pack("!IBBH", 1, 1, 8, 1) + bytes(8), InvalidSpiError),  # ISAKMP delete needs 16
        (struct.pack("!IBBH", 1, 3, 4, 1), LengthMismatchError),
        (struct.pack("!IBB", 1, 3, 4), MalformedError),
    ],
)
def test_hostile_delete(body, error):
    """Delete: the SPI count times the SPI size must fill the payload exactly."""
    payload = struct.pack("!BBH", 0, 0, 4 + len(body)) + body
    with pytest.raises(error):
        parse_message(with_body(payload, next_payload=PayloadType.D))


@pytest.mark.parametrize(
    "body, error",
    [
        (struct.pack("!IBBH", 1, 1, 17, 24578) + bytes(17), InvalidSpiError),
        (struct.pack("!IBBH", 1, 3, 2, 24576) + bytes(2), InvalidSpiError),
        (struct.pack("!IBBH", 1, 1, 16, 24578) + bytes(8), LengthMismatchError),
        (struct.pack("!IBB", 1, 1, 16), MalformedError),
    ],
)
def test_hostile_notify(body, error):
    """Notify: the SPI must fit the payload and the protocol."""
    payload = struct.pack("!BBH", 0, 0, 4 + len(body)) + body
    with pytest.raises(error):
        parse_message(with_body(payload, next_payload=PayloadType.N))


def test_zero_length_ke_parses_for_the_exchange_layer_to_refuse():
    """A KE with no octets is well-formed ISAKMP; refusing it (CVE-2015-3240 class) is the DH
    layer's job, so the codec hands it over intact."""
    wire = with_body(b"\x00\x00\x00\x04", next_payload=PayloadType.KE)
    assert parse_message(wire).payloads == (KePayload(data=b""),)


def test_reserved_octets_round_trip():
    """Non-zero RESERVED fields are kept as received (byte-exact re-serialization)."""
    t = Transform(attributes=(Attribute.tv(1, 1),), reserved=7, reserved2=0xBEEF)
    sa = SaPayload(proposals=(Proposal(transforms=(t,), reserved=9),), reserved=0x55)
    msg = Message(initiator_cookie=ICKY, exchange_type=2, flags=0xF8, minor_version=3, payloads=(sa,))
    wire = serialize_message(msg)
    assert parse_message(wire) == msg


def test_long_inputs_parse_in_one_linear_pass():
    """The largest datagrams parse without recursion or quadratic copying: 16,376 empty payloads,
    a transform with 16,000 attributes, a Delete with 16,000 SPIs, and a 400 KB decrypted chain."""
    many = b"".join(b"\x0d\x00\x00\x04" for _ in range(16_375)) + b"\x00\x00\x00\x04"
    msg = parse_message(with_body(many, next_payload=PayloadType.VID))
    assert len(msg.payloads) == 16_376 and msg.payloads[-1] == VendorIdPayload(data=b"")

    attrs = b"\x80\x01\x00\x05" * 16_000
    t = struct.pack("!BBHBBH", 0, 0, 8 + len(attrs), 1, 1, 0) + attrs
    p = struct.pack("!BBHBBBB", 0, 0, 8 + len(t), 1, 1, 0, 1) + t
    sa = struct.pack("!BBHII", 0, 0, 12 + len(p), 1, 1) + p
    parsed = parse_message(with_body(sa, next_payload=PayloadType.SA)).payloads[0]
    assert len(parsed.proposals[0].transforms[0].attributes) == 16_000

    spis = bytes(range(256)) * 250
    d = struct.pack("!BBHIBBH", 0, 0, 12 + len(spis), 1, 3, 4, len(spis) // 4) + spis
    assert len(parse_message(with_body(d, next_payload=PayloadType.D)).payloads[0].spis) == 16_000

    chain = b"".join(b"\x0a\x00\x00\x08abcd" for _ in range(50_000)) + b"\x00\x00\x00\x08abcd"
    assert len(parse_payloads(PayloadType.NONCE, chain)) == 50_001


def test_notify_error_ranges():
    """RFC 2408 §3.14.1: 1-16383 are errors; CONNECTED, the DOI status types and DPD are status."""
    from ikeproto.enums import NotifyType, is_error_notify

    assert NotifyType.PAYLOAD_MALFORMED.is_error and is_error_notify(9000)
    assert not any(t.is_error for t in (NotifyType.CONNECTED, NotifyType.RESPONDER_LIFETIME, NotifyType.INITIAL_CONTACT,
                                        NotifyType.R_U_THERE, NotifyType.R_U_THERE_ACK))
    assert not is_error_notify(0)
