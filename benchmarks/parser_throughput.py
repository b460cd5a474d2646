"""ISAKMP parse and serialize throughput (messages/s) for a Main Mode SA offer and a Quick Mode message.

Cases:
- ``MM1 Windows 4-transform offer``: the Windows 2000 default IKE security methods (3DES/SHA1 and
  3DES/MD5 with MODP-1024, DES/SHA1 and DES/MD5 with MODP-768, Kerberos 65001, 480 minutes as a
  4-octet TLV) plus the MS NT5 and GSSAPI vendor IDs: ``parse_message``, ``serialize_message``.
- ``QM1 body (HASH SA NONCE ID ID)``: a decrypted Quick Mode body as the exchange layer parses it
  (``parse_payloads`` with padding allowed) and builds it (``serialize_payloads``).
- ``fuzz case``: one in-process fuzz case (generate, mutate, check), the fuzzer's rate.

Ceiling in the same run: a bare walk over the same octets that only follows the generic payload
headers with ``struct.unpack_from`` and builds nothing, the floor any Python ISAKMP parser pays.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Row, measure, parser, report  # noqa: E402

from ikeproto import fuzz, vendor_ids  # noqa: E402
from ikeproto.attributes import Attribute  # noqa: E402
from ikeproto.enums import (  # noqa: E402
    AuthMethod,
    EncapsulationMode,
    EncryptionAlgorithm,
    EspTransformId,
    ExchangeType,
    GroupDescription,
    HashAlgorithm,
    IkeAttr,
    IpsecAttr,
    IpsecAuthAlgorithm,
    LifeType,
    PayloadType,
    ProtocolId,
)
from ikeproto.message import Message, parse_message, parse_payloads, serialize_message, serialize_payloads  # noqa: E402
from ikeproto.payloads import HashPayload, IdPayload, NoncePayload, VendorIdPayload  # noqa: E402
from ikeproto.proposals import Proposal, SaPayload, Transform  # noqa: E402

_GEN = struct.Struct("!BBH")


def windows_mm1() -> Message:
    methods = [
        (EncryptionAlgorithm.TRIPLE_DES_CBC, HashAlgorithm.SHA, GroupDescription.MODP_1024),
        (EncryptionAlgorithm.TRIPLE_DES_CBC, HashAlgorithm.MD5, GroupDescription.MODP_1024),
        (EncryptionAlgorithm.DES_CBC, HashAlgorithm.SHA, GroupDescription.MODP_768),
        (EncryptionAlgorithm.DES_CBC, HashAlgorithm.MD5, GroupDescription.MODP_768),
    ]
    transforms = [
        Transform(number=i + 1, attributes=(
            Attribute.tv(IkeAttr.ENCRYPTION_ALGORITHM, enc), Attribute.tv(IkeAttr.HASH_ALGORITHM, h),
            Attribute.tv(IkeAttr.AUTHENTICATION_METHOD, AuthMethod.GSSAPI_KERBEROS), Attribute.tv(IkeAttr.GROUP_DESCRIPTION, g),
            Attribute.tv(IkeAttr.LIFE_TYPE, LifeType.SECONDS), Attribute.tlv(IkeAttr.LIFE_DURATION, 28800, length=4)))
        for i, (enc, h, g) in enumerate(methods)
    ]
    return Message(initiator_cookie=bytes.fromhex("0123456789abcdef"), exchange_type=ExchangeType.IDENTITY_PROTECTION,
                   payloads=(SaPayload.ipsec([Proposal.isakmp(transforms)]), VendorIdPayload(data=vendor_ids.ms_nt5_vendor_id(2)),
                             VendorIdPayload(data=vendor_ids.GSSAPI), VendorIdPayload(data=vendor_ids.GSSAPI_LONG)))


def quick_mode_body() -> tuple:
    esp = Transform(number=1, transform_id=EspTransformId.ESP_3DES, attributes=(
        Attribute.tv(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS), Attribute.tlv(IpsecAttr.SA_LIFE_DURATION, 3600, length=4),
        Attribute.tv(IpsecAttr.SA_LIFE_TYPE, LifeType.KILOBYTES), Attribute.tlv(IpsecAttr.SA_LIFE_DURATION, 100000, length=4),
        Attribute.tv(IpsecAttr.ENCAPSULATION_MODE, EncapsulationMode.TRANSPORT),
        Attribute.tv(IpsecAttr.AUTHENTICATION_ALGORITHM, IpsecAuthAlgorithm.HMAC_SHA)))
    return (HashPayload(data=bytes(20)), SaPayload.ipsec([Proposal.ipsec(ProtocolId.IPSEC_ESP, b"\x12\x34\x56\x78", [esp])]),
            NoncePayload(data=bytes(range(20))), IdPayload.address("192.0.2.1", protocol=1), IdPayload.address("192.0.2.2", protocol=1))


def bare_walk(data: bytes, offset: int, nxt: int) -> int:
    """Follow generic payload headers only: the floor of any Python ISAKMP parser."""
    n = 0
    end = len(data)
    while nxt and offset + 4 <= end:
        nxt, _, length = _GEN.unpack_from(data, offset)
        offset += length
        n += 1
    return n


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    seconds = 0.01 if args.smoke else args.seconds
    rows: list[Row] = []

    mm1 = windows_mm1()
    mm1_wire = serialize_message(mm1)
    assert parse_message(mm1_wire) == mm1
    case = "MM1 Windows 4-transform offer"
    for what, fn in (
        ("bare header walk", lambda: bare_walk(mm1_wire, 28, mm1_wire[16])),
        ("parse_message", lambda: parse_message(mm1_wire)),
        ("serialize_message", lambda: serialize_message(mm1)),
        ("parse+serialize", lambda: serialize_message(parse_message(mm1_wire))),
    ):
        ops, t = measure(fn, seconds=seconds)
        rows.append(Row(case, what, ops, t, size=len(mm1_wire), ceiling=None if what.startswith("bare") else "bare header walk"))

    body = quick_mode_body()
    body_wire = serialize_payloads(body)
    padded = body_wire + bytes(7 - len(body_wire) % 8) + bytes([7 - len(body_wire) % 8])
    assert parse_payloads(PayloadType.HASH, padded, allow_trailing=True) == body
    case = "QM1 body (HASH SA NONCE ID ID)"
    for what, fn in (
        ("bare header walk", lambda: bare_walk(padded, 0, PayloadType.HASH)),
        ("parse_payloads", lambda: parse_payloads(PayloadType.HASH, padded, allow_trailing=True)),
        ("serialize_payloads", lambda: serialize_payloads(body)),
        ("parse+serialize", lambda: serialize_payloads(parse_payloads(PayloadType.HASH, padded, allow_trailing=True))),
    ):
        ops, t = measure(fn, seconds=seconds)
        rows.append(Row(case, what, ops, t, size=len(padded), ceiling=None if what.startswith("bare") else "bare header walk"))

    counter = iter(range(1 << 62))
    ops, t = measure(lambda: fuzz.check_case(fuzz.case_datagram(1, next(counter))), seconds=seconds)
    rows.append(Row("fuzz case", "generate+mutate+check", ops, t))
    print(report(rows, as_json=args.json))


if __name__ == "__main__":
    main()
