"""ISAKMP messages: the fixed header (RFC 2408 §3.1), the generic payload header and the payload
chain (§3.2), ``parse_message`` / ``serialize_message`` and ``parse_payloads`` for decrypted bodies.

Owns the strict top-level parse: the header length equals the datagram, major version 1, each
payload length at least 4 and inside its parent, the chain ends exactly at the end (or, for a
decrypted body, before the cipher padding). It does not decrypt (an encrypted body stays octets
until the exchange layer decrypts it and calls ``parse_payloads``), nor decide which payloads an
exchange needs, nor what to do with unknown payload types (kept as ``OpaquePayload``).

Only ``ikeproto.errors.ParseError`` subclasses leave the parsers, whatever the input: every read
is bounds-checked before it happens, nothing recurses beyond the fixed SA/Proposal/Transform
nesting, nothing is allocated from a length or count the bytes do not back, and the work is
linear in the input.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ikeproto.enums import Flag, PayloadType
from ikeproto.errors import (
    InvalidMajorVersionError,
    InvalidPayloadTypeError,
    LengthMismatchError,
    MalformedError,
    UsageError,
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
    Payload,
    SigPayload,
    VendorIdPayload,
)
from ikeproto.proposals import SaPayload

__all__ = [
    "HEADER_LENGTH",
    "PAYLOAD_CLASSES",
    "Message",
    "parse_message",
    "parse_payloads",
    "pull_payloads",
    "push_payload",
    "push_payloads",
    "serialize_header",
    "serialize_message",
    "serialize_payload",
    "serialize_payload_body",
    "serialize_payloads",
]

HEADER_LENGTH = 28
_HEADER = struct.Struct("!8s8sBBBBII")
_GEN = struct.Struct("!BBH")

PAYLOAD_CLASSES: dict[int, type[Payload]] = {
    PayloadType.SA: SaPayload,
    PayloadType.KE: KePayload,
    PayloadType.ID: IdPayload,
    PayloadType.CERT: CertPayload,
    PayloadType.CR: CrPayload,
    PayloadType.HASH: HashPayload,
    PayloadType.SIG: SigPayload,
    PayloadType.NONCE: NoncePayload,
    PayloadType.N: NotifyPayload,
    PayloadType.D: DeletePayload,
    PayloadType.VID: VendorIdPayload,
    PayloadType.NAT_D: NatDPayload,
    PayloadType.NAT_OA: NatOaPayload,
    PayloadType.GSS: GssPayload,
    PayloadType.NAT_D_DRAFT: NatDPayload,
    PayloadType.NAT_OA_DRAFT: NatOaPayload,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One ISAKMP message.

    A clear message carries ``payloads``; the header's next payload and length are computed on
    serialize. When the E flag is set, ``encrypted_body`` holds the body octets as received (or
    the ciphertext to send) and ``next_payload`` names the first payload inside it (the header
    field; RFC 2408 §3.1). ``next_payload`` may also be set on a clear message to force a
    header value (fuzzing); parsing a clear message leaves it None.
    """

    initiator_cookie: bytes
    responder_cookie: bytes = bytes(8)
    exchange_type: int
    flags: int = 0
    message_id: int = 0
    major_version: int = 1
    minor_version: int = 0
    payloads: tuple[Payload, ...] = ()
    encrypted_body: bytes | None = None
    next_payload: int | None = None

    @property
    def is_encrypted(self) -> bool:
        """The E flag (RFC 2408 §3.1): the body after the header is encrypted."""
        return bool(self.flags & Flag.ENCRYPTION)

    @property
    def first_payload_type(self) -> int:
        """The header's Next Payload value as it will be (or was) sent."""
        if self.next_payload is not None:
            return self.next_payload
        return self.payloads[0].payload_type if self.payloads else PayloadType.NONE

    def with_encrypted_body(self, ciphertext: bytes) -> Message:
        """This message with its payloads replaced by ``ciphertext`` of their serialized chain:
        sets the E flag and keeps the first payload type for the header."""
        return replace(
            self,
            flags=self.flags | Flag.ENCRYPTION,
            next_payload=self.first_payload_type,
            payloads=(),
            encrypted_body=bytes(ciphertext),
        )

    def find(self, payload_cls: type[Payload]) -> Payload | None:
        """The first payload of this class, or None."""
        for p in self.payloads:
            if type(p) is payload_cls:
                return p
        return None

    def find_all(self, payload_cls: type[Payload]) -> tuple[Payload, ...]:
        """All payloads of this class, in order."""
        return tuple(p for p in self.payloads if type(p) is payload_cls)


def pull_payloads(
    data: bytes, offset: int, end: int, first: int, *, allow_trailing: bool = False
) -> tuple[tuple[Payload, ...], int]:
    """Parse the payload chain in ``data[offset:end]`` starting with type ``first``.

    Returns the payloads and the offset just after the last one. Unless ``allow_trailing``, the
    chain must end exactly at ``end``. Error offsets are offsets into ``data``."""
    out = []
    nxt = first
    pos = offset
    classes = PAYLOAD_CLASSES
    unpack = _GEN.unpack_from
    while nxt:
        if end - pos < 4:
            raise LengthMismatchError(
                f"next payload {nxt} announced but the message ends", offset=pos, payload_type=nxt
            )
        following, reserved, length = unpack(data, pos)
        if length < 4:
            # RFC 2408 §3.2: the length includes the 4-octet generic header.
            raise MalformedError(f"payload length {length} < 4", offset=pos + 2, payload_type=nxt)
        stop = pos + length
        if stop > end:
            raise LengthMismatchError(f"payload length {length} overruns the message", offset=pos + 2, payload_type=nxt)
        cls = classes.get(nxt)
        if cls is None:
            # RFC 2408 §3.5/§3.6: proposals and transforms exist only inside an SA payload.
            if nxt in (PayloadType.PROPOSAL, PayloadType.TRANSFORM):
                raise InvalidPayloadTypeError(f"payload {nxt} outside an SA payload", offset=pos, payload_type=nxt)
            cls = OpaquePayload
        out.append(cls._pull(data, pos + 4, stop, nxt, reserved))
        pos = stop
        nxt = following
    if pos != end and not allow_trailing:
        raise LengthMismatchError(f"{end - pos} octets after the last payload", offset=pos)
    return tuple(out), pos


def parse_payloads(first: int, data: bytes, *, allow_trailing: bool = False) -> tuple[Payload, ...]:
    """Parse a payload chain (e.g. a decrypted body) whose first payload has type ``first``.

    A decrypted IKEv1 body ends with cipher padding (RFC 2409 §5.3), so pass
    ``allow_trailing=True`` there; clear bodies must end exactly with the last payload."""
    data = bytes(data)
    return pull_payloads(data, 0, len(data), first, allow_trailing=allow_trailing)[0]


def parse_message(data: bytes) -> Message:
    """Parse one datagram (without the 4-octet non-ESP marker of port 4500) strictly.

    Raises a ``ParseError`` subclass naming the offset, the payload type and the Notify a
    responder would send; nothing else."""
    data = bytes(data)
    n = len(data)
    if n < HEADER_LENGTH:
        raise MalformedError(f"datagram of {n} octets is shorter than the ISAKMP header", offset=0)
    icky, rcky, nxt, version, exch, flags, msgid, length = _HEADER.unpack_from(data, 0)
    if version >> 4 != 1:
        # RFC 2408 §5.1: a major version the implementation does not support is refused.
        raise InvalidMajorVersionError(f"major version {version >> 4}", offset=17)
    if length < HEADER_LENGTH:
        raise MalformedError(f"header length {length} < {HEADER_LENGTH}", offset=24)
    if length != n:
        raise LengthMismatchError(f"header length {length} but the datagram has {n} octets", offset=24)
    if flags & Flag.ENCRYPTION:
        return Message(
            initiator_cookie=icky,
            responder_cookie=rcky,
            exchange_type=exch,
            flags=flags,
            message_id=msgid,
            major_version=version >> 4,
            minor_version=version & 0x0F,
            encrypted_body=data[HEADER_LENGTH:],
            next_payload=nxt,
        )
    payloads, _ = pull_payloads(data, HEADER_LENGTH, n, nxt)
    return Message(
        initiator_cookie=icky,
        responder_cookie=rcky,
        exchange_type=exch,
        flags=flags,
        message_id=msgid,
        major_version=version >> 4,
        minor_version=version & 0x0F,
        payloads=payloads,
    )


def push_payload(out: bytearray, payload: Payload, next_type: int) -> None:
    """Append one payload: generic header (``next_type``, RESERVED, length) and body."""
    ptype = payload.payload_type
    if not 0 < ptype <= 0xFF:
        raise UsageError(f"payload type {ptype} cannot be sent")
    start = len(out)
    out += _GEN.pack(next_type, payload.reserved, 0)
    payload._push_body(out)
    length = len(out) - start
    if length > 0xFFFF:
        raise UsageError(f"payload {ptype} is {length} octets, more than 65535")
    out[start + 2] = length >> 8
    out[start + 3] = length & 0xFF


def push_payloads(out: bytearray, payloads: Sequence[Payload]) -> None:
    """Append a payload chain: each next-payload field names the following payload, 0 at the end."""
    n = len(payloads)
    for i, p in enumerate(payloads):
        push_payload(out, p, payloads[i + 1].payload_type if i + 1 < n else 0)


def serialize_payloads(payloads: Iterable[Payload]) -> bytes:
    """The wire form of a payload chain (the body to encrypt, or the octets a HASH covers)."""
    out = bytearray()
    push_payloads(out, tuple(payloads))
    return bytes(out)


def serialize_payload(payload: Payload, next_type: int = 0) -> bytes:
    """One payload with its generic header."""
    out = bytearray()
    push_payload(out, payload, next_type)
    return bytes(out)


def serialize_payload_body(payload: Payload) -> bytes:
    """A payload without its generic header: what RFC 2409 §5 calls SAi_b, IDii_b, Ni_b."""
    out = bytearray()
    payload._push_body(out)
    return bytes(out)


def serialize_header(msg: Message, body_length: int) -> bytes:
    """The 28-octet header of ``msg`` for a body of ``body_length`` octets."""
    if len(msg.initiator_cookie) != 8 or len(msg.responder_cookie) != 8:
        raise UsageError("cookies are 8 octets")
    if not (0 <= msg.major_version <= 15 and 0 <= msg.minor_version <= 15):
        raise UsageError("version numbers are 4 bits")
    total = HEADER_LENGTH + body_length
    if total > 0xFFFFFFFF:
        raise UsageError("message too long")
    return _HEADER.pack(
        msg.initiator_cookie,
        msg.responder_cookie,
        msg.first_payload_type,
        msg.major_version << 4 | msg.minor_version,
        msg.exchange_type,
        msg.flags,
        msg.message_id,
        total,
    )


def serialize_message(msg: Message) -> bytes:
    """The datagram for ``msg``: header with computed length, then the payload chain or the
    encrypted body."""
    if msg.encrypted_body is not None:
        if msg.payloads:
            raise UsageError("a message has either payloads or an encrypted body, not both")
        body = msg.encrypted_body
    else:
        out = bytearray()
        push_payloads(out, msg.payloads)
        body = bytes(out)
    return serialize_header(msg, len(body)) + body
