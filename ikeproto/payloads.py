"""ISAKMP payload records and their body codecs (RFC 2408 §3.2-§3.16, RFC 2407 §4.6, RFC 3947 §3-§5).

Owns one frozen record per payload type except SA/Proposal/Transform (``ikeproto.proposals``),
with each record's ``_pull`` (body bytes -> record, strict) and ``_push_body`` (record -> body
bytes). It does not own the payload chain, the generic header or the message header
(``ikeproto.message``), nor any meaning beyond the wire: which payloads an exchange needs, whether
a KE value is in range or a certificate parses is the exchange layer's business.

Every record keeps what makes serialization byte-exact: the generic header's RESERVED octet
(``reserved``, RFC 2408 §3.2 says send 0; we keep what was received) and reserved fields inside
bodies. Fields a peer controls are plain ``int``/``bytes``; ``ikeproto.enums`` names them.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar

from ikeproto.attributes import fast_factory
from ikeproto.enums import Doi, IdType, PayloadType, ProtocolId
from ikeproto.errors import (
    InvalidIdInformationError,
    InvalidSpiError,
    LengthMismatchError,
    MalformedError,
    UsageError,
)

__all__ = [
    "CertPayload",
    "CrPayload",
    "DeletePayload",
    "GssPayload",
    "HashPayload",
    "IdPayload",
    "KePayload",
    "NatDPayload",
    "NatOaPayload",
    "NoncePayload",
    "NotifyPayload",
    "OpaquePayload",
    "Payload",
    "SigPayload",
    "VendorIdPayload",
    "check_spi_size",
]

_FACTORIES: dict[type, object] = {}
_U32 = struct.Struct("!I")
_ID_FIXED = struct.Struct("!BBH")
_NOTIFY_FIXED = struct.Struct("!IBBH")
_DELETE_FIXED = struct.Struct("!IBBH")

# RFC 2407 §4.6.2.1: the fixed data length of the address identification types.
ID_DATA_LENGTHS: dict[int, int] = {
    IdType.ID_IPV4_ADDR: 4,
    IdType.ID_IPV4_ADDR_SUBNET: 8,
    IdType.ID_IPV4_ADDR_RANGE: 8,
    IdType.ID_IPV6_ADDR: 16,
    IdType.ID_IPV6_ADDR_SUBNET: 32,
    IdType.ID_IPV6_ADDR_RANGE: 32,
}


def check_spi_size(protocol_id: int, spi_size: int, *, context: str, offset: int, payload_type: int) -> None:
    """Refuse an SPI size that disagrees with a known protocol (unknown protocols pass: the
    exchange layer answers INVALID-PROTOCOL-ID).

    ``context`` is "proposal", "notify" or "delete":
    - RFC 2408 §3.5/§3.14: for ISAKMP the cookies are the SPI, so a proposal or notify SPI size
      MAY be anything from 0 to 16 (and its content is ignored); §3.15: a Delete of an ISAKMP SA
      carries the 16-octet cookie pair.
    - RFC 2407 §4.4.1 / RFC 2402/2406: AH and ESP SPIs are 4 octets. A notify about no particular
      SA may omit it (size 0).
    - RFC 3173 §4.1: the IPCOMP CPI travels as a 2-octet or 4-octet SPI.
    """
    if protocol_id == ProtocolId.ISAKMP:
        ok = spi_size == 16 if context == "delete" else spi_size <= 16
    elif protocol_id in (ProtocolId.IPSEC_AH, ProtocolId.IPSEC_ESP):
        ok = spi_size == 4 or (spi_size == 0 and context == "notify")
    elif protocol_id == ProtocolId.IPCOMP:
        ok = spi_size in (2, 4) or (spi_size == 0 and context == "notify")
    else:
        return
    if not ok:
        raise InvalidSpiError(
            f"SPI size {spi_size} is wrong for protocol {protocol_id} in a {context}",
            offset=offset,
            payload_type=payload_type,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload:
    """Base of every top-level payload record. ``reserved`` is the generic header RESERVED octet."""

    payload_type: ClassVar[int]
    reserved: int = 0

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        raise NotImplementedError

    def _push_body(self, out: bytearray) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class _DataPayload(Payload):
    """A payload whose body is one opaque octet string."""

    data: bytes = b""

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        make = _FACTORIES.get(cls) or _FACTORIES.setdefault(cls, fast_factory(cls))
        return make(reserved=reserved, data=data[start:end])  # type: ignore[no-any-return]

    def _push_body(self, out: bytearray) -> None:
        out += self.data


@dataclass(frozen=True, slots=True, kw_only=True)
class KePayload(_DataPayload):
    """RFC 2408 §3.7 Key Exchange: the public value (range checks are the DH module's job)."""

    payload_type: ClassVar[int] = PayloadType.KE


@dataclass(frozen=True, slots=True, kw_only=True)
class HashPayload(_DataPayload):
    """RFC 2408 §3.11 Hash (for Kerberos, RFC draft gss-auth: the gss_wrap'ed hash)."""

    payload_type: ClassVar[int] = PayloadType.HASH


@dataclass(frozen=True, slots=True, kw_only=True)
class SigPayload(_DataPayload):
    """RFC 2408 §3.12 Signature."""

    payload_type: ClassVar[int] = PayloadType.SIG


@dataclass(frozen=True, slots=True, kw_only=True)
class NoncePayload(_DataPayload):
    """RFC 2408 §3.13 Nonce (RFC 2409 §5: 8-256 octets; checked by the exchange layer)."""

    payload_type: ClassVar[int] = PayloadType.NONCE


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorIdPayload(_DataPayload):
    """RFC 2408 §3.16 Vendor ID (``ikeproto.vendor_ids`` names the well-known ones)."""

    payload_type: ClassVar[int] = PayloadType.VID


@dataclass(frozen=True, slots=True, kw_only=True)
class GssPayload(_DataPayload):
    """Payload 129: one GSS-API token (draft-ietf-ipsec-isakmp-gss-auth, Windows 2000 Kerberos)."""

    payload_type: ClassVar[int] = PayloadType.GSS


@dataclass(frozen=True, slots=True, kw_only=True)
class NatDPayload(Payload):
    """RFC 3947 §3.2 NAT-D: ``HASH(CKY-I | CKY-R | IP | Port)``. ``payload_type`` is 20, or 130
    as sent by peers that speak draft-ietf-ipsec-nat-t-ike-02/03."""

    payload_type: int = PayloadType.NAT_D  # type: ignore[misc]
    data: bytes = b""

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        return cls(payload_type=ptype, data=data[start:end], reserved=reserved)

    def _push_body(self, out: bytearray) -> None:
        out += self.data


@dataclass(frozen=True, slots=True, kw_only=True)
class OpaquePayload(Payload):
    """A payload type this codec does not interpret, kept whole so it round-trips. Whether an
    unknown payload is fatal (critical) is the exchange layer's decision."""

    payload_type: int  # type: ignore[misc]
    data: bytes = b""

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        return cls(payload_type=ptype, data=data[start:end], reserved=reserved)

    def _push_body(self, out: bytearray) -> None:
        out += self.data


@dataclass(frozen=True, slots=True, kw_only=True)
class IdPayload(Payload):
    """RFC 2407 §4.6.2 Identification (IPsec DOI): ID type, protocol, port, identification data.

    The address types must have their exact data length (4, 8, 16 or 32 octets); other types
    (FQDN, USER_FQDN, DER_ASN1_DN, KEY_ID, ...) are kept as octets, never decoded here."""

    payload_type: ClassVar[int] = PayloadType.ID
    id_type: int
    protocol: int = 0
    port: int = 0
    data: bytes = b""

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        if end - start < 4:
            raise MalformedError("ID payload shorter than its 4 fixed octets", offset=start, payload_type=ptype)
        id_type, protocol, port = _ID_FIXED.unpack_from(data, start)
        need = ID_DATA_LENGTHS.get(id_type)
        if need is not None and end - start - 4 != need:
            raise InvalidIdInformationError(
                f"ID type {id_type} needs {need} octets of data, got {end - start - 4}",
                offset=start,
                payload_type=ptype,
            )
        return cls(id_type=id_type, protocol=protocol, port=port, data=data[start + 4 : end], reserved=reserved)

    def _push_body(self, out: bytearray) -> None:
        out += _ID_FIXED.pack(self.id_type, self.protocol, self.port)
        out += self.data

    # Convenience constructors for the exchange layer.
    @classmethod
    def address(cls, addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address, *, protocol: int = 0, port: int = 0) -> IdPayload:
        """ID_IPV4_ADDR or ID_IPV6_ADDR for one address."""
        a = ipaddress.ip_address(addr)
        t = IdType.ID_IPV4_ADDR if a.version == 4 else IdType.ID_IPV6_ADDR
        return cls(id_type=t, protocol=protocol, port=port, data=a.packed)

    @classmethod
    def subnet(cls, net: str | ipaddress.IPv4Network | ipaddress.IPv6Network, *, protocol: int = 0, port: int = 0) -> IdPayload:
        """ID_IPV4_ADDR_SUBNET or ID_IPV6_ADDR_SUBNET: address then mask."""
        n = ipaddress.ip_network(net, strict=False)
        t = IdType.ID_IPV4_ADDR_SUBNET if n.version == 4 else IdType.ID_IPV6_ADDR_SUBNET
        return cls(id_type=t, protocol=protocol, port=port, data=n.network_address.packed + n.netmask.packed)

    @classmethod
    def range(cls, first: str, last: str, *, protocol: int = 0, port: int = 0) -> IdPayload:
        """ID_IPV4_ADDR_RANGE or ID_IPV6_ADDR_RANGE: first then last address."""
        a, b = ipaddress.ip_address(first), ipaddress.ip_address(last)
        if a.version != b.version:
            raise UsageError("an address range needs two addresses of one family")
        t = IdType.ID_IPV4_ADDR_RANGE if a.version == 4 else IdType.ID_IPV6_ADDR_RANGE
        return cls(id_type=t, protocol=protocol, port=port, data=a.packed + b.packed)

    @classmethod
    def fqdn(cls, name: str, *, protocol: int = 0, port: int = 0) -> IdPayload:
        """ID_FQDN (RFC 2407 §4.6.2.3: no terminator)."""
        return cls(id_type=IdType.ID_FQDN, protocol=protocol, port=port, data=name.encode("ascii"))

    @classmethod
    def user_fqdn(cls, name: str, *, protocol: int = 0, port: int = 0) -> IdPayload:
        """ID_USER_FQDN ("user@example.com")."""
        return cls(id_type=IdType.ID_USER_FQDN, protocol=protocol, port=port, data=name.encode("ascii"))

    def ip_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The address of an ID_IPV4_ADDR / ID_IPV6_ADDR identity."""
        if self.id_type not in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
            raise UsageError(f"ID type {self.id_type} is not a single address")
        return ipaddress.ip_address(self.data)

    def ip_network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The network of a subnet identity; a mask that is not contiguous is the peer's fault."""
        if self.id_type not in (IdType.ID_IPV4_ADDR_SUBNET, IdType.ID_IPV6_ADDR_SUBNET):
            raise UsageError(f"ID type {self.id_type} is not a subnet")
        half = len(self.data) // 2
        addr, mask = ipaddress.ip_address(self.data[:half]), ipaddress.ip_address(self.data[half:])
        try:
            return ipaddress.ip_network(f"{addr}/{mask}", strict=False)
        except ValueError:
            raise InvalidIdInformationError(f"subnet mask {mask} is not contiguous", payload_type=PayloadType.ID) from None

    def ip_range(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """(first, last) of a range identity."""
        if self.id_type not in (IdType.ID_IPV4_ADDR_RANGE, IdType.ID_IPV6_ADDR_RANGE):
            raise UsageError(f"ID type {self.id_type} is not a range")
        half = len(self.data) // 2
        return ipaddress.ip_address(self.data[:half]), ipaddress.ip_address(self.data[half:])

    def text(self) -> str:
        """The identification data as text for display (undecodable octets escaped, never raises)."""
        return self.data.decode("ascii", errors="backslashreplace")


@dataclass(frozen=True, slots=True, kw_only=True)
class CertPayload(Payload):
    """RFC 2408 §3.9 Certificate: encoding (``CertEncoding``) and certificate data."""

    payload_type: ClassVar[int] = PayloadType.CERT
    encoding: int
    data: bytes = b""

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        if end - start < 1:
            raise MalformedError("CERT payload without its encoding octet", offset=start, payload_type=ptype)
        return cls(encoding=data[start], data=data[start + 1 : end], reserved=reserved)

    def _push_body(self, out: bytearray) -> None:
        out.append(self.encoding)
        out += self.data


@dataclass(frozen=True, slots=True, kw_only=True)
class CrPayload(Payload):
    """RFC 2408 §3.10 Certificate Request: certificate type and an acceptable authority (DER DN)."""

    payload_type: ClassVar[int] = PayloadType.CR
    cert_type: int
    authority: bytes = b""

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        if end - start < 1:
            raise MalformedError("CR payload without its certificate type", offset=start, payload_type=ptype)
        return cls(cert_type=data[start], authority=data[start + 1 : end], reserved=reserved)

    def _push_body(self, out: bytearray) -> None:
        out.append(self.cert_type)
        out += self.authority


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyPayload(Payload):
    """RFC 2408 §3.14 Notification: DOI, protocol, notify type, SPI and notification data."""

    payload_type: ClassVar[int] = PayloadType.N
    notify_type: int
    doi: int = Doi.IPSEC
    protocol_id: int = ProtocolId.ISAKMP
    spi: bytes = b""
    data: bytes = b""

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        if end - start < 8:
            raise MalformedError("Notification shorter than its 8 fixed octets", offset=start, payload_type=ptype)
        doi, protocol_id, spi_size, notify_type = _NOTIFY_FIXED.unpack_from(data, start)
        if doi == Doi.IPSEC:
            check_spi_size(protocol_id, spi_size, context="notify", offset=start + 5, payload_type=ptype)
        spi_end = start + 8 + spi_size
        if spi_end > end:
            raise LengthMismatchError(f"notify SPI of {spi_size} octets overruns the payload", offset=start + 5, payload_type=ptype)
        return cls(
            notify_type=notify_type,
            doi=doi,
            protocol_id=protocol_id,
            spi=data[start + 8 : spi_end],
            data=data[spi_end:end],
            reserved=reserved,
        )

    def _push_body(self, out: bytearray) -> None:
        if len(self.spi) > 0xFF:
            raise UsageError("notify SPI longer than 255 octets")
        out += _NOTIFY_FIXED.pack(self.doi, self.protocol_id, len(self.spi), self.notify_type)
        out += self.spi
        out += self.data


@dataclass(frozen=True, slots=True, kw_only=True)
class DeletePayload(Payload):
    """RFC 2408 §3.15 Delete: one protocol, any number of SPIs of one size.

    ``spi_size`` is kept because with zero SPIs the bytes still carry it; ``DeletePayload.of``
    derives it."""

    payload_type: ClassVar[int] = PayloadType.D
    protocol_id: int
    spi_size: int
    spis: tuple[bytes, ...] = ()
    doi: int = Doi.IPSEC

    @classmethod
    def of(cls, protocol_id: int, spis: list[bytes] | tuple[bytes, ...], *, doi: int = Doi.IPSEC) -> DeletePayload:
        """A Delete of ``spis`` (16-octet cookie pairs for ISAKMP, 4-octet SPIs for AH/ESP)."""
        spis = tuple(bytes(s) for s in spis)
        sizes = {len(s) for s in spis}
        if len(sizes) > 1:
            raise UsageError("the SPIs of one Delete payload must have one size")
        size = sizes.pop() if sizes else (16 if protocol_id == ProtocolId.ISAKMP else 4)
        return cls(protocol_id=protocol_id, spi_size=size, spis=spis, doi=doi)

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        if end - start < 8:
            raise MalformedError("Delete shorter than its 8 fixed octets", offset=start, payload_type=ptype)
        doi, protocol_id, spi_size, count = _DELETE_FIXED.unpack_from(data, start)
        if doi == Doi.IPSEC:
            check_spi_size(protocol_id, spi_size, context="delete", offset=start + 5, payload_type=ptype)
        pos = start + 8
        # RFC 2408 §3.15: the SPIs fill the rest of the payload exactly; checked before building
        # anything so a lying count cannot make us allocate.
        if count * spi_size != end - pos or (spi_size == 0 and count != 0):
            raise LengthMismatchError(
                f"Delete says {count} SPIs of {spi_size} octets but carries {end - pos} octets",
                offset=start + 6,
                payload_type=ptype,
            )
        spis = tuple(data[i : i + spi_size] for i in range(pos, end, spi_size)) if spi_size else ()
        return cls(protocol_id=protocol_id, spi_size=spi_size, spis=spis, doi=doi, reserved=reserved)

    def _push_body(self, out: bytearray) -> None:
        if any(len(s) != self.spi_size for s in self.spis):
            raise UsageError("every SPI of a Delete payload must be spi_size octets")
        if len(self.spis) > 0xFFFF or not 0 <= self.spi_size <= 0xFF:
            raise UsageError("Delete payload SPI count or size out of range")
        out += _DELETE_FIXED.pack(self.doi, self.protocol_id, self.spi_size, len(self.spis))
        for s in self.spis:
            out += s


@dataclass(frozen=True, slots=True, kw_only=True)
class NatOaPayload(Payload):
    """RFC 3947 §5.2 NAT-OA: ID type (1 = IPv4, 5 = IPv6), three RESERVED octets, the address.

    ``payload_type`` is 21, or 131 for the draft-02/03 form (same layout). ``id_reserved`` keeps
    the 24 reserved bits as received."""

    payload_type: int = PayloadType.NAT_OA  # type: ignore[misc]
    id_type: int = IdType.ID_IPV4_ADDR
    address: bytes = b""
    id_reserved: int = 0

    @classmethod
    def of(cls, addr: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> NatOaPayload:
        """A NAT-OA carrying ``addr``."""
        a = ipaddress.ip_address(addr)
        return cls(id_type=IdType.ID_IPV4_ADDR if a.version == 4 else IdType.ID_IPV6_ADDR, address=a.packed)

    @classmethod
    def _pull(cls, data: bytes, start: int, end: int, ptype: int, reserved: int) -> Payload:
        if end - start < 4:
            raise MalformedError("NAT-OA shorter than its 4 fixed octets", offset=start, payload_type=ptype)
        word = _U32.unpack_from(data, start)[0]
        id_type = word >> 24
        need = {IdType.ID_IPV4_ADDR: 4, IdType.ID_IPV6_ADDR: 16}.get(id_type)
        # RFC 3947 §5.2: only IPv4 and IPv6 addresses are defined for NAT-OA.
        if need is None or end - start - 4 != need:
            raise InvalidIdInformationError(
                f"NAT-OA ID type {id_type} with {end - start - 4} octets of address", offset=start, payload_type=ptype
            )
        return cls(
            payload_type=ptype, id_type=id_type, id_reserved=word & 0xFFFFFF, address=data[start + 4 : end], reserved=reserved
        )

    def _push_body(self, out: bytearray) -> None:
        out += _U32.pack((self.id_type & 0xFF) << 24 | (self.id_reserved & 0xFFFFFF))
        out += self.address

    def ip_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The original address."""
        return ipaddress.ip_address(self.address)
