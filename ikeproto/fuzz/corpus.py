"""Fuzz cases: exchange-shaped random messages and their mutations, reproducible per case.

Owns ``random_message`` (the payload sequences of RFC 2409 §5 messages with random contents),
``case_datagram(seed, index)`` (one case, mutated 7 times out of 8 with ``ikeproto.mutations``)
and the endless ``cases(seed)`` sequence. Every case has its own ``random.Random`` seeded with
``"seed:index"``, so ``python -m ikeproto.fuzz --seed S --case I`` regenerates it exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ikeproto import vendor_ids
from ikeproto.attributes import Attribute
from ikeproto.enums import (
    AuthMethod,
    EncryptionAlgorithm,
    EspTransformId,
    ExchangeType,
    Flag,
    GroupDescription,
    HashAlgorithm,
    IdType,
    IkeAttr,
    IpsecAttr,
    LifeType,
    NotifyType,
    PayloadType,
    ProtocolId,
)
from ikeproto.message import Message, serialize_message
from ikeproto.mutations import mutate_message
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
    Payload,
    SigPayload,
    VendorIdPayload,
)
from ikeproto.proposals import Proposal, SaPayload, Transform

__all__ = ["FuzzCase", "case_datagram", "cases", "random_message"]


def _ike_transform(rng: random.Random, number: int) -> Transform:
    attrs = [Attribute.tv(IkeAttr.ENCRYPTION_ALGORITHM, rng.choice(list(EncryptionAlgorithm)))]
    if rng.random() < 0.4:
        attrs.append(Attribute.tv(IkeAttr.KEY_LENGTH, rng.choice((128, 192, 256))))
    attrs += [
        Attribute.tv(IkeAttr.HASH_ALGORITHM, rng.choice(list(HashAlgorithm))),
        Attribute.tv(IkeAttr.AUTHENTICATION_METHOD, rng.choice(list(AuthMethod))),
        Attribute.tv(IkeAttr.GROUP_DESCRIPTION, rng.choice(list(GroupDescription))),
        Attribute.tv(IkeAttr.LIFE_TYPE, LifeType.SECONDS),
        Attribute.auto(IkeAttr.LIFE_DURATION, rng.choice((28800, 86400, 3600, 0, 1 << 31))),
    ]
    return Transform(number=number, attributes=tuple(attrs))


def _esp_transform(rng: random.Random, number: int) -> Transform:
    return Transform(
        number=number,
        transform_id=rng.choice(list(EspTransformId)),
        attributes=(
            Attribute.tv(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS),
            Attribute.auto(IpsecAttr.SA_LIFE_DURATION, rng.choice((3600, 100000))),
            Attribute.tv(IpsecAttr.ENCAPSULATION_MODE, rng.choice((1, 2, 3, 4, 61443, 61444))),
            Attribute.tv(IpsecAttr.AUTHENTICATION_ALGORITHM, rng.randint(1, 7)),
            Attribute.tv(IpsecAttr.KEY_LENGTH, rng.choice((128, 256))),
        ),
    )


def _id(rng: random.Random) -> IdPayload:
    kind = rng.randrange(6)
    if kind == 0:
        return IdPayload.address(f"192.0.2.{rng.randrange(256)}", protocol=rng.choice((0, 17)), port=rng.choice((0, 500)))
    if kind == 1:
        return IdPayload.subnet(f"10.{rng.randrange(256)}.0.0/16")
    if kind == 2:
        return IdPayload.range("2001:db8::1", "2001:db8::ff")
    if kind == 3:
        return IdPayload.fqdn("host.reskit.com")
    if kind == 4:
        return IdPayload(id_type=IdType.ID_DER_ASN1_DN, data=rng.randbytes(rng.randrange(40)))
    return IdPayload(id_type=IdType.ID_KEY_ID, data=rng.randbytes(rng.randrange(20)))


def _extra_payload(rng: random.Random) -> Payload:
    return rng.choice(
        (
            lambda: CertPayload(encoding=4, data=rng.randbytes(rng.randrange(64))),
            lambda: CrPayload(cert_type=4, authority=rng.randbytes(rng.randrange(32))),
            lambda: SigPayload(data=rng.randbytes(rng.randrange(64))),
            lambda: NatOaPayload.of(f"10.0.0.{rng.randrange(256)}"),
            lambda: OpaquePayload(payload_type=rng.randrange(133, 256), data=rng.randbytes(rng.randrange(16))),
            lambda: GssPayload(data=rng.randbytes(rng.randrange(64))),
            lambda: DeletePayload.of(ProtocolId.IPSEC_ESP, [rng.randbytes(4) for _ in range(rng.randrange(4))]),
        )
    )()


def random_message(rng: random.Random) -> Message:
    """A message shaped as an IKEv1 exchange sends it (RFC 2409 §5), with random contents."""
    icky, rcky = rng.randbytes(8), rng.choice((bytes(8), rng.randbytes(8)))
    kind = rng.randrange(8)
    vids = [VendorIdPayload(data=rng.choice(vendor_ids.KNOWN_VENDOR_IDS).data) for _ in range(rng.randrange(4))]
    mm, qm, info = ExchangeType.IDENTITY_PROTECTION, ExchangeType.QUICK_MODE, ExchangeType.INFORMATIONAL
    msgid = rng.randrange(1, 1 << 32)
    if kind == 0:  # MM1 / MM2
        sa = SaPayload.ipsec([Proposal.isakmp([_ike_transform(rng, i + 1) for i in range(rng.randint(1, 4))])])
        return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=mm, payloads=(sa, *vids))
    if kind == 1:  # MM3 / MM4, PSK/certificates with NAT-D, or Kerberos with a GSS token
        tail = [NatDPayload(data=rng.randbytes(20)), NatDPayload(data=rng.randbytes(20))] if rng.random() < 0.5 else [GssPayload(data=rng.randbytes(80))]
        ke = KePayload(data=rng.randbytes(rng.choice((0, 1, 96, 128, 256, 300))))
        return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=mm,
                       payloads=(ke, NoncePayload(data=rng.randbytes(rng.choice((8, 16, 32)))), *tail))
    if kind == 2:  # QM1 / QM2 as decrypted
        props = [Proposal.ipsec(ProtocolId.IPSEC_ESP, rng.randbytes(4), [_esp_transform(rng, i + 1) for i in range(rng.randint(1, 3))])]
        body = [HashPayload(data=rng.randbytes(20)), SaPayload.ipsec(props), NoncePayload(data=rng.randbytes(16))]
        if rng.random() < 0.3:
            body.append(KePayload(data=rng.randbytes(128)))
        if rng.random() < 0.6:
            body += [_id(rng), _id(rng)]
        return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=qm, message_id=msgid, payloads=tuple(body))
    if kind == 3:  # Informational
        n = NotifyPayload(notify_type=rng.choice(list(NotifyType)), spi=icky + rcky, data=rng.randbytes(rng.choice((0, 4))))
        return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=info, payloads=(n,))
    if kind == 4:  # Aggressive Mode 1
        sa = SaPayload.ipsec([Proposal.isakmp([_ike_transform(rng, 1)])])
        return Message(initiator_cookie=icky, exchange_type=ExchangeType.AGGRESSIVE,
                       payloads=(sa, KePayload(data=rng.randbytes(128)), NoncePayload(data=rng.randbytes(16)), _id(rng), *vids))
    if kind == 5:  # encrypted MM5 / QM / Informational
        return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=rng.choice((mm, qm, info)), flags=Flag.ENCRYPTION,
                       message_id=msgid, next_payload=rng.choice((PayloadType.ID, PayloadType.HASH)),
                       encrypted_body=rng.randbytes(16 * rng.randint(1, 10)))
    extra = [_extra_payload(rng) for _ in range(rng.randint(1, 5))]
    return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=rng.choice((mm, qm, info, 6, 33, 200)),
                   payloads=tuple(extra))


@dataclass(frozen=True, slots=True)
class FuzzCase:
    """Case ``index`` of run ``seed``: regenerate it with ``case_datagram(seed, index)``."""

    seed: int
    index: int
    data: bytes


def case_datagram(seed: int, index: int) -> bytes:
    """The datagram of one case: a random exchange-shaped message, mutated 7 times out of 8."""
    rng = random.Random(f"{seed}:{index}")
    msg = random_message(rng)
    if rng.randrange(8) == 0:
        return serialize_message(msg)
    return mutate_message(msg, rng.randrange)


def cases(seed: int, start: int = 0) -> Iterator[FuzzCase]:
    """The endless case sequence of ``seed``."""
    i = start
    while True:
        yield FuzzCase(seed, i, case_datagram(seed, i))
        i += 1

