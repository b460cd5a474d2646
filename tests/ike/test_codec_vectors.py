"""Golden vectors: a real strongSwan IKEv1 Main Mode + Quick Mode exchange with NAT-T, parsed field
by field (values as Wireshark's ISAKMP dissector shows them), re-serialized byte-exactly; and the
hostile datagrams derived from it, each refused with its typed error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikeproto import errors, vendor_ids
from ikeproto.attributes import Attribute
from ikeproto.enums import (
    AuthMethod,
    Doi,
    EncryptionAlgorithm,
    ExchangeType,
    GroupDescription,
    HashAlgorithm,
    IkeAttr,
    LifeType,
    PayloadType,
    ProtocolId,
    Situation,
)
from ikeproto.message import parse_message, serialize_message, serialize_payload_body
from ikeproto.payloads import KePayload, NatDPayload, NoncePayload, VendorIdPayload
from ikeproto.proposals import SaPayload

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
ICKY = bytes.fromhex("46e726f424c40a3e")
RCKY = bytes.fromhex("5bfb2e8cd9e3b7fc")


def load(name: str) -> list[list[str]]:
    return [line.split() for line in (VECTORS / name).read_text().splitlines() if line and not line.startswith("#")]


CAPTURE = {int(n): (src, int(port), bytes.fromhex(h)) for n, src, port, h in load("ike_strongswan_mm_qm_natt.hex")}


def test_capture_has_the_whole_exchange():
    """12 ISAKMP datagrams: MM1-MM6 (5/6 on port 4500 after NAT-T floating), two Quick Modes."""
    assert sorted(CAPTURE) == list(range(1, 13))
    assert [CAPTURE[i][1] for i in range(1, 13)] == [500] * 4 + [4500] * 8


@pytest.mark.parametrize("frame", range(1, 13))
def test_capture_round_trips_byte_exactly(frame):
    """Every captured datagram parses and serializes back to the same octets."""
    data = CAPTURE[frame][2]
    assert serialize_message(parse_message(data)) == data


def test_mm1_field_by_field():
    """MM1: header, SA (DOI IPSEC, SIT_IDENTITY_ONLY, one ISAKMP proposal of two transforms
    3DES/SHA/MODP1024/PSK and AES-128/SHA/MODP2048/PSK), five vendor IDs."""
    msg = parse_message(CAPTURE[1][2])
    assert (msg.initiator_cookie, msg.responder_cookie) == (ICKY, bytes(8))
    assert (msg.exchange_type, msg.flags, msg.message_id, msg.major_version, msg.minor_version) == (
        ExchangeType.IDENTITY_PROTECTION, 0, 0, 1, 0)
    assert len(CAPTURE[1][2]) == 212 and msg.first_payload_type == PayloadType.SA
    sa, *vids = msg.payloads
    assert isinstance(sa, SaPayload) and (sa.doi, sa.situation, sa.situation_data) == (Doi.IPSEC, Situation.IDENTITY_ONLY, b"")
    (prop,) = sa.proposals
    assert (prop.number, prop.protocol_id, prop.spi, len(prop.transforms)) == (1, ProtocolId.ISAKMP, b"", 2)
    t1, t2 = prop.transforms
    assert (t1.number, t1.transform_id, t1.reserved2) == (1, 1, 0)
    assert t1.attributes == (
        Attribute.tv(IkeAttr.ENCRYPTION_ALGORITHM, EncryptionAlgorithm.TRIPLE_DES_CBC),
        Attribute.tv(IkeAttr.HASH_ALGORITHM, HashAlgorithm.SHA),
        Attribute.tv(IkeAttr.GROUP_DESCRIPTION, GroupDescription.MODP_1024),
        Attribute.tv(IkeAttr.AUTHENTICATION_METHOD, AuthMethod.PRE_SHARED_KEY),
        Attribute.tv(IkeAttr.LIFE_TYPE, LifeType.SECONDS),
        Attribute.tv(IkeAttr.LIFE_DURATION, 0),
    )
    assert t2.number == 2
    assert t2.attribute(IkeAttr.ENCRYPTION_ALGORITHM) == EncryptionAlgorithm.AES_CBC
    assert t2.attribute(IkeAttr.KEY_LENGTH) == 128
    assert t2.attribute(IkeAttr.GROUP_DESCRIPTION) == GroupDescription.MODP_2048
    assert all(isinstance(v, VendorIdPayload) for v in vids)
    assert [vendor_ids.identify(v.data) for v in vids] == [
        "XAUTH", "RFC 3706 DPD", "IKE fragmentation", "RFC 3947 NAT-T", "draft-ietf-ipsec-nat-t-ike-02\\n"]
    # SAi_b (RFC 2409 §5) is the SA payload without its 4-octet generic header: 84 octets here.
    assert serialize_payload_body(sa) == CAPTURE[1][2][32:116]


def test_mm2_field_by_field():
    """MM2: the responder's cookie, the chosen 3DES/SHA/MODP1024 transform, four vendor IDs."""
    msg = parse_message(CAPTURE[2][2])
    assert (msg.initiator_cookie, msg.responder_cookie, len(CAPTURE[2][2])) == (ICKY, RCKY, 156)
    sa, *vids = msg.payloads
    (t,) = sa.proposals[0].transforms
    assert t.number == 1 and t.attribute(IkeAttr.ENCRYPTION_ALGORITHM) == EncryptionAlgorithm.TRIPLE_DES_CBC
    assert [vendor_ids.identify(v.data) for v in vids] == ["XAUTH", "RFC 3706 DPD", "IKE fragmentation", "RFC 3947 NAT-T"]


@pytest.mark.parametrize("frame", [3, 4])
def test_mm3_mm4_field_by_field(frame):
    """MM3/MM4: KE (128-octet MODP-1024 public value), Nonce (32 octets), two NAT-D (SHA-1, 20)."""
    msg = parse_message(CAPTURE[frame][2])
    assert len(CAPTURE[frame][2]) == 244 and msg.responder_cookie == RCKY
    assert [type(p) for p in msg.payloads] == [KePayload, NoncePayload, NatDPayload, NatDPayload]
    ke, nonce, d1, d2 = msg.payloads
    assert (len(ke.data), len(nonce.data), len(d1.data), len(d2.data)) == (128, 32, 20, 20)
    assert d1.payload_type == d2.payload_type == PayloadType.NAT_D and d1.data != d2.data


@pytest.mark.parametrize(
    "frame, exchange, message_id, first, body_length",
    [
        (5, ExchangeType.IDENTITY_PROTECTION, 0, PayloadType.ID, 72),
        (6, ExchangeType.IDENTITY_PROTECTION, 0, PayloadType.ID, 40),
        (7, ExchangeType.QUICK_MODE, 0x6B7DBAD4, PayloadType.HASH, 152),
        (8, ExchangeType.QUICK_MODE, 0x6B7DBAD4, PayloadType.HASH, 144),
        (9, ExchangeType.QUICK_MODE, 0x6B7DBAD4, PayloadType.HASH, 32),
        (10, ExchangeType.QUICK_MODE, 0x44F6E7FE, PayloadType.HASH, 152),
        (12, ExchangeType.QUICK_MODE, 0x44F6E7FE, PayloadType.HASH, 32),
    ],
)
def test_encrypted_messages_field_by_field(frame, exchange, message_id, first, body_length):
    """MM5/MM6 and Quick Mode: E flag, message ID, first payload type, body kept as octets (a
    multiple of the 3DES block)."""
    msg = parse_message(CAPTURE[frame][2])
    assert msg.is_encrypted and msg.payloads == ()
    assert (msg.exchange_type, msg.message_id, msg.next_payload, len(msg.encrypted_body)) == (
        exchange, message_id, first, body_length)
    assert len(msg.encrypted_body) % 8 == 0


HOSTILE = load("ike_hostile.hex")


@pytest.mark.parametrize("name, expected, hexdata", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_vectors(name, expected, hexdata):
    """Each hostile datagram raises its ParseError subclass (with offset and Notify), or, for the
    well-formed-but-wrong ones (zero KE, missing KE), parses byte-exactly for the exchange layer
    to refuse."""
    data = bytes.fromhex(hexdata)
    if expected == "OK":
        msg = parse_message(data)
        assert serialize_message(msg) == data
        kes = [p for p in msg.payloads if isinstance(p, KePayload)]
        assert kes == ([KePayload(data=b"")] if name == "zero_length_ke" else [])
        return
    cls = getattr(errors, expected)
    with pytest.raises(cls) as info:
        parse_message(data)
    assert isinstance(info.value, errors.ParseError)
    assert info.value.offset is not None and 0 <= info.value.offset <= len(data)
