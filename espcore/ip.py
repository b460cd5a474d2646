"""IPv4/IPv6 header handling for ESP and AH: where the IPsec header goes, and the outer header.

This module owns the byte-level IP facts the codec needs: the IPv4 header checksum (RFC 791
§3.1), walking IPv6 extension headers to find where ESP/AH is inserted in transport mode (RFC 4303
§3.1.1, RFC 4302 §3.1.1: after hop-by-hop, routing and fragment headers; destination options that
precede a routing header stay in front, as Linux and scapy do) or found on input, and building the
outer header of tunnel mode (RFC 4301 §5.1.2: TTL/hop limit set locally, DSCP/ECN copied from the
inner header, DF copied from an inner IPv4 header). It does not know about SAs or cryptography.

Every function takes bytes-like input from the network and raises only ``ParseError``.
"""

from __future__ import annotations

import ipaddress
import struct

from espcore.errors import ParseError, UsageError

IPPROTO_HOPOPTS = 0
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60

#: IPv6 extension headers that may precede ESP/AH and use the generic (next, len) layout.
_IPV6_EXT = frozenset((IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS))

_H10 = struct.Struct("!10H")
_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of ``data`` (odd lengths padded with a zero byte)."""
    if len(data) == 20:
        total = sum(_H10.unpack(data))
    else:
        if len(data) % 2:
            data = bytes(data) + b"\0"
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def set_ipv4_checksum(buf: bytearray, offset: int = 0) -> None:
    """Recompute the header checksum of the IPv4 header at ``buf[offset:]`` in place."""
    ihl = (buf[offset] & 0x0F) * 4
    buf[offset + 10] = buf[offset + 11] = 0
    value = checksum(memoryview(buf)[offset:offset + ihl])
    buf[offset + 10] = value >> 8
    buf[offset + 11] = value & 0xFF


def ipv4_header_length(packet: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Validate an IPv4 header; return (header length, total length).

    The total length may be shorter than the buffer (link-layer padding is ignored) but not
    longer.
    """
    if len(packet) < 20:
        raise ParseError("IPv4 packet shorter than its 20-byte header", offset=0)
    if packet[0] >> 4 != 4:
        raise ParseError("not an IPv4 header", offset=0)
    ihl = (packet[0] & 0x0F) * 4
    total = (packet[2] << 8) | packet[3]
    if ihl < 20 or total < ihl or total > len(packet):
        raise ParseError(f"IPv4 lengths inconsistent (header {ihl}, total {total}, "
                         f"buffer {len(packet)})", offset=0)
    return ihl, total


def is_ipv4_fragment(packet: bytes | bytearray | memoryview) -> bool:
    """MF set or a non-zero fragment offset."""
    return bool(((packet[6] << 8) | packet[7]) & 0x3FFF)


def ipv6_payload_end(packet: bytes | bytearray | memoryview) -> int:
    """Validate an IPv6 header; return 40 + payload length (jumbograms are not supported)."""
    if len(packet) < 40:
        raise ParseError("IPv6 packet shorter than its 40-byte header", offset=0)
    if packet[0] >> 4 != 6:
        raise ParseError("not an IPv6 header", offset=0)
    end = 40 + ((packet[4] << 8) | packet[5])
    if end > len(packet):
        raise ParseError(f"IPv6 payload length {end - 40} exceeds the buffer", offset=4)
    if end == 40 and packet[6] == IPPROTO_HOPOPTS:
        raise ParseError("IPv6 jumbograms are not supported", offset=4)
    return end


def ipv6_insert_point(packet: bytes | bytearray | memoryview, end: int) -> tuple[int, int]:
    """Where ESP/AH goes in an outbound IPv6 packet: (offset, offset of the Next Header byte).

    Hop-by-hop, routing and destination options before a routing header stay in front
    (RFC 4303 §3.1.1); destination options after a routing header and everything else go inside.
    A fragment header is refused: transport mode protects whole datagrams (RFC 4301 §7).
    """
    nh_at, offset, nh = 6, 40, packet[6]
    seen_routing = False
    while nh in _IPV6_EXT:
        if nh == IPPROTO_DSTOPTS and seen_routing:
            break
        if offset + 8 > end:
            raise ParseError("IPv6 extension header runs past the payload", offset=offset)
        length = (packet[offset + 1] + 1) * 8
        if offset + length > end:
            raise ParseError("IPv6 extension header runs past the payload", offset=offset)
        seen_routing = seen_routing or nh == IPPROTO_ROUTING
        nh_at, nh = offset, packet[offset]
        offset += length
    if nh == IPPROTO_FRAGMENT:
        raise UsageError("transport mode cannot protect a fragment (RFC 4301 §7)")
    return offset, nh_at


def ipv6_find_header(packet: bytes | bytearray | memoryview, end: int, proto: int
                     ) -> tuple[int, int]:
    """Find the ESP or AH header (``proto``) of an inbound IPv6 packet: (offset, nh byte offset).

    Only hop-by-hop, routing and destination-option headers may precede it; a fragment header
    means the packet was not reassembled (RFC 4303 §3.4.1), which is a ``ParseError``.
    """
    nh_at, offset, nh = 6, 40, packet[6]
    while nh != proto:
        if nh not in _IPV6_EXT:
            raise ParseError(f"IPv6 packet does not carry protocol {proto} (next header {nh})",
                             offset=nh_at)
        if offset + 8 > end:
            raise ParseError("IPv6 extension header runs past the payload", offset=offset)
        length = (packet[offset + 1] + 1) * 8
        if offset + length > end:
            raise ParseError("IPv6 extension header runs past the payload", offset=offset)
        nh_at, nh = offset, packet[offset]
        offset += length
    return offset, nh_at


def find_ipsec_header(packet: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """Locate the ESP or AH header of an inbound IP packet: (protocol, offset, end, nh offset).

    ``end`` is where the IP packet ends (its length field). Raises ``ParseError`` for anything
    else, including fragments (RFC 4303 §3.4.1: reassembly comes first).
    """
    version = packet[0] >> 4 if len(packet) else 0
    if version == 4:
        start, end = ipv4_header_length(packet)
        if is_ipv4_fragment(packet):
            raise ParseError("IPsec packet is a fragment", offset=6)
        proto = packet[9]
        if proto not in (IPPROTO_ESP, IPPROTO_AH):
            raise ParseError(f"IPv4 protocol {proto} is neither ESP nor AH", offset=9)
        return proto, start, end, 9
    if version == 6:
        end = ipv6_payload_end(packet)
        nh_at, offset, nh = 6, 40, packet[6]
        while nh not in (IPPROTO_ESP, IPPROTO_AH):
            if nh not in _IPV6_EXT or offset + 8 > end or offset + (packet[offset + 1] + 1) * 8 > end:
                raise ParseError(f"IPv6 packet carries neither ESP nor AH (next header {nh})",
                                 offset=nh_at)
            nh_at, nh, offset = offset, packet[offset], offset + (packet[offset + 1] + 1) * 8
        return nh, offset, end, nh_at
    raise ParseError("not an IPv4 or IPv6 packet", offset=0)


def inner_packet_length(packet: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Length and tunnel Next Header (4 or 41) of an IP packet to be tunnelled."""
    version = packet[0] >> 4 if len(packet) else 0
    if version == 4:
        return ipv4_header_length(packet)[1], IPPROTO_IPIP
    if version == 6:
        return ipv6_payload_end(packet), IPPROTO_IPV6
    raise ParseError("not an IPv4 or IPv6 packet", offset=0)


def check_inner(inner: bytes | bytearray | memoryview, next_header: int) -> None:
    """A decapsulated tunnel payload must be the IP packet its Next Header announces, with
    consistent lengths (inner selector checks, RFC 4301 §5.2, are the caller's)."""
    try:
        length, expected = inner_packet_length(inner)
    except ParseError as exc:
        raise ParseError(f"tunnelled packet: {exc}") from None
    if expected != next_header or length != len(inner):
        raise ParseError(f"tunnelled packet does not match Next Header {next_header}")


def parse_address(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4/IPv6 address from a string, bytes (4 or 16) or an ``ipaddress`` object."""
    try:
        if isinstance(value, (bytes, bytearray)):
            return ipaddress.ip_address(bytes(value))
        return ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        raise UsageError(f"not an IP address: {value!r}") from None


class TunnelHeader:
    """Builds the outer IPv4 or IPv6 header of a tunnel-mode packet (RFC 4301 §5.1.2.1).

    IPv4: TTL ``ttl``, TOS (DSCP and ECN) copied from the inner header, DF copied from an inner
    IPv4 header (cleared for inner IPv6), Identification = the low 16 bits of the sequence
    number, so it is unique per SA and deterministic. IPv6: hop limit ``ttl``, traffic class
    copied, flow label 0. The constant part of the IPv4 checksum is summed once here.
    """

    __slots__ = ("source", "destination", "version", "length", "ttl", "packed_source",
                 "packed_destination", "base_sum")

    def __init__(self, source: object, destination: object, *, ttl: int = 64) -> None:
        src, dst = parse_address(source), parse_address(destination)
        if src.version != dst.version:
            raise UsageError("tunnel source and destination must be the same IP version")
        if not 1 <= ttl <= 255:
            raise UsageError(f"TTL {ttl} out of range")
        self.source, self.destination = src, dst
        self.version = src.version
        self.length = 20 if self.version == 4 else 40
        self.ttl = ttl
        self.packed_source, self.packed_destination = src.packed, dst.packed
        # The IPv4 header words that never change: version/IHL, TTL, the addresses.
        words = struct.unpack("!4H", src.packed + dst.packed) if self.version == 4 else (0,)
        self.base_sum = sum(words) + 0x4500 + (ttl << 8)

    def build(self, inner: bytes | bytearray | memoryview, proto: int, total: int,
              ident: int) -> bytes:
        """The outer header for a packet of ``total`` bytes carrying ``proto`` around ``inner``."""
        first = inner[0]
        if first >> 4 == 4:
            tos, flags = inner[1], (inner[6] & 0x40) << 8
        else:
            tos, flags = ((first & 0x0F) << 4) | (inner[1] >> 4), 0
        if self.version == 4:
            ident &= 0xFFFF
            s = self.base_sum + tos + total + ident + flags + proto
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            return _IPV4_HEADER.pack(0x45, tos, total, ident, flags, self.ttl, proto,
                                     0xFFFF - s, self.packed_source, self.packed_destination)
        return _IPV6_HEADER.pack((6 << 28) | (tos << 20), total - 40, proto, self.ttl,
                                 self.packed_source, self.packed_destination)
