"""IP packets of the embedded data path: building and parsing IPv4/IPv6, UDP and ICMP echo.

The embedded data path (ARCHITECTURE "Data paths" 1) turns application datagrams into the IP
packets a kernel would have sent, so that the policy agent can match them against filters (source
and destination address, protocol, ports) and protect them with ESP or AH exactly as it would
protect real traffic. This module owns those packets: IPv4 (RFC 791) and IPv6 (RFC 8200, fixed
header only) headers, UDP (RFC 768), ICMP and ICMPv6 echo request/reply (RFC 792, RFC 4443 §4),
their checksums (RFC 1071), and the parse of a received packet into the fields the matcher reads.

It also owns the *carrier* framing used between embedded hosts on their NAT-T socket (the
"link" of the embedded path): a UDP payload there is either ESP (RFC 3948 §2.1: the SPI comes
first), a whole IP packet (clear text, or AH: RFC 3948 defines no UDP encapsulation for AH, which
RFC 3715 §2.1 explains cannot cross a NAT, so AH-protected packets travel with their IP header,
which AH authenticates), an IKE message behind the non-ESP marker, or the NAT-keepalive byte.
``carrier_kind`` tells them apart; ESP is recognised by the caller's SPI table first.

Pure: bytes in, bytes out. A packet that cannot be parsed raises ``PacketError`` (and only that).
Over IPv4 the UDP checksum is sent as zero ("no checksum", RFC 768), as RFC 3948 does for the
outer header: every packet here is either inside ESP/AH (integrity-protected) or in clear on the
embedded link, and skipping the checksum keeps the per-packet cost down. IPv6 requires it (RFC 8200
§8.1), so it is computed there.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from typing import NamedTuple

from espcore.ip import checksum
from policyagent.errors import PolicyError

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129

DEFAULT_TTL = 64

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_PORTS = struct.Struct("!HH")
_ECHO = struct.Struct("!BBHHH")


class PacketError(PolicyError):
    """Bytes that are not a packet the embedded data path can handle; ``offset`` where it broke."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (offset {offset})")
        self.offset = offset


class Parsed(NamedTuple):
    """The fields of a received IP packet that the agent reads.

    ``sport``/``dport`` are ``None`` for protocols without ports; ``start`` is where the
    transport header begins (the IP payload), ``end`` where the packet ends.
    """

    version: int
    src: str
    dst: str
    protocol: int
    sport: int | None
    dport: int | None
    start: int
    end: int
    ttl: int


@functools.lru_cache(maxsize=1024)
def packed(address: str) -> bytes:
    """The 4- or 16-byte form of an address given as text (cached: hosts have few peers)."""
    try:
        return ipaddress.ip_address(address).packed
    except ValueError:
        raise PacketError(f"not an IP address: {address!r}") from None


@functools.lru_cache(maxsize=1024)
def _text(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def ip_version(address: str) -> int:
    return 6 if ":" in address else 4


def ipv4_header(src: bytes, dst: bytes, protocol: int, payload_length: int, *,
                ttl: int = DEFAULT_TTL, ident: int = 0) -> bytes:
    """A 20-byte IPv4 header with its checksum (RFC 791 §3.1). DF is set: we never fragment."""
    total = 20 + payload_length
    if total > 0xFFFF:
        raise PacketError(f"IPv4 packet of {total} bytes is too large")
    header = bytearray(_IPV4.pack(0x45, 0, total, ident & 0xFFFF, 0x4000, ttl, protocol, 0, src, dst))
    value = checksum(header)
    header[10] = value >> 8
    header[11] = value & 0xFF
    return bytes(header)


def ipv6_header(src: bytes, dst: bytes, next_header: int, payload_length: int, *,
                hop_limit: int = DEFAULT_TTL) -> bytes:
    """A 40-byte IPv6 fixed header (RFC 8200 §3)."""
    if payload_length > 0xFFFF:
        raise PacketError(f"IPv6 payload of {payload_length} bytes is too large")
    return _IPV6.pack(6 << 28, payload_length, next_header, hop_limit, src, dst)


def ip_packet(src: str, dst: str, protocol: int, payload: bytes, *, ttl: int = DEFAULT_TTL,
              ident: int = 0) -> bytes:
    """An IP packet (version from the addresses) carrying ``payload`` as ``protocol``."""
    s, d = packed(src), packed(dst)
    if len(s) != len(d):
        raise PacketError("source and destination are different IP versions")
    if len(s) == 4:
        return ipv4_header(s, d, protocol, len(payload), ttl=ttl, ident=ident) + payload
    return ipv6_header(s, d, protocol, len(payload), hop_limit=ttl) + payload


def _pseudo_checksum(src: bytes, dst: bytes, protocol: int, segment: bytes) -> int:
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, protocol, len(segment))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(segment), protocol)
    return checksum(pseudo + segment)


def udp_segment(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    """The UDP header and data (RFC 768); checksum zero over IPv4, computed over IPv6."""
    if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF):
        raise PacketError("UDP ports must be 0..65535")
    length = 8 + len(data)
    if length > 0xFFFF:
        raise PacketError(f"UDP datagram of {length} bytes is too large")
    if ":" not in src:
        return _UDP.pack(sport, dport, length, 0) + data
    segment = _UDP.pack(sport, dport, length, 0) + data
    value = _pseudo_checksum(packed(src), packed(dst), IPPROTO_UDP, segment) or 0xFFFF
    return segment[:6] + value.to_bytes(2, "big") + segment[8:]


def build_udp(src: str, dst: str, sport: int, dport: int, data: bytes, *,
              ttl: int = DEFAULT_TTL, ident: int = 0) -> bytes:
    """An IP/UDP packet from ``src``:``sport`` to ``dst``:``dport`` carrying ``data``."""
    return ip_packet(src, dst, IPPROTO_UDP, udp_segment(src, dst, sport, dport, data),
                     ttl=ttl, ident=ident)


def icmp_echo_message(src: str, dst: str, ident: int, seq: int, data: bytes, *,
                      reply: bool = False) -> bytes:
    """An ICMP (IPv4, RFC 792) or ICMPv6 (RFC 4443 §4.1-4.2) echo request or reply message."""
    if ":" in src:
        kind = ICMPV6_ECHO_REPLY if reply else ICMPV6_ECHO_REQUEST
        message = _ECHO.pack(kind, 0, 0, ident & 0xFFFF, seq & 0xFFFF) + data
        value = _pseudo_checksum(packed(src), packed(dst), IPPROTO_ICMPV6, message)
    else:
        kind = ICMP_ECHO_REPLY if reply else ICMP_ECHO_REQUEST
        message = _ECHO.pack(kind, 0, 0, ident & 0xFFFF, seq & 0xFFFF) + data
        value = checksum(message)
    return message[:2] + value.to_bytes(2, "big") + message[4:]


def build_icmp_echo(src: str, dst: str, ident: int, seq: int, data: bytes, *,
                    reply: bool = False, ttl: int = DEFAULT_TTL) -> bytes:
    """An IP packet carrying an ICMP echo request (or reply)."""
    protocol = IPPROTO_ICMPV6 if ":" in src else IPPROTO_ICMP
    return ip_packet(src, dst, protocol, icmp_echo_message(src, dst, ident, seq, data, reply=reply),
                     ttl=ttl, ident=seq)


class Echo(NamedTuple):
    """An ICMP echo request or reply."""

    is_reply: bool
    ident: int
    seq: int
    data: bytes


def parse_echo(parsed: Parsed, packet: bytes) -> Echo | None:
    """The echo request/reply in ``packet`` (already parsed), ``None`` for other ICMP types.

    Raises ``PacketError`` for a truncated message or a bad checksum.
    """
    return echo_from_message(parsed.protocol, parsed.src, parsed.dst,
                             bytes(packet[parsed.start:parsed.end]))


def echo_from_message(protocol: int, src: str, dst: str, message: bytes) -> Echo | None:
    """The echo request/reply in an ICMP (``protocol`` 1) or ICMPv6 (58) message, else None."""
    if len(message) < 8:
        raise PacketError("ICMP message shorter than 8 bytes", offset=0)
    kind, code, _, ident, seq = _ECHO.unpack_from(message)
    if protocol == IPPROTO_ICMP:
        if checksum(message) != 0:
            raise PacketError("ICMP checksum mismatch", offset=2)
        if kind not in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY) or code != 0:
            return None
        return Echo(kind == ICMP_ECHO_REPLY, ident, seq, bytes(message[8:]))
    if protocol == IPPROTO_ICMPV6:
        if _pseudo_checksum(packed(src), packed(dst), IPPROTO_ICMPV6, bytes(message)) != 0:
            raise PacketError("ICMPv6 checksum mismatch", offset=2)
        if kind not in (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY) or code != 0:
            return None
        return Echo(kind == ICMPV6_ECHO_REPLY, ident, seq, bytes(message[8:]))
    return None


def echo_ident(message: bytes) -> tuple[int, int] | None:
    """(identifier, sequence) of an ICMP echo message, without checking it (for notices)."""
    if len(message) < 8:
        return None
    return (message[4] << 8) | message[5], (message[6] << 8) | message[7]


def parse(packet: bytes | bytearray | memoryview) -> Parsed:
    """The addresses, protocol and ports of an IP packet (IPv6: fixed header only).

    Raises ``PacketError`` when the header is truncated or its lengths are inconsistent, or a
    UDP/TCP header does not fit; an IPv4 fragment other than the first has no ports.
    """
    n = len(packet)
    if n < 1:
        raise PacketError("empty packet", offset=0)
    version = packet[0] >> 4
    if version == 4:
        if n < 20:
            raise PacketError("IPv4 packet shorter than its header", offset=0)
        ihl = (packet[0] & 0x0F) * 4
        total = (packet[2] << 8) | packet[3]
        if ihl < 20 or total < ihl or total > n:
            raise PacketError(f"IPv4 lengths inconsistent (header {ihl}, total {total}, "
                              f"buffer {n})", offset=2)
        if checksum(memoryview(packet)[:ihl]) != 0:
            raise PacketError("IPv4 header checksum mismatch", offset=10)
        protocol, ttl = packet[9], packet[8]
        src, dst = _text(bytes(packet[12:16])), _text(bytes(packet[16:20]))
        start, end = ihl, total
        is_later_fragment = bool(((packet[6] & 0x1F) << 8) | packet[7])
    elif version == 6:
        if n < 40:
            raise PacketError("IPv6 packet shorter than its header", offset=0)
        end = 40 + ((packet[4] << 8) | packet[5])
        if end > n:
            raise PacketError("IPv6 payload length runs past the packet", offset=4)
        protocol, ttl = packet[6], packet[7]
        src, dst = _text(bytes(packet[8:24])), _text(bytes(packet[24:40]))
        start, is_later_fragment = 40, False
    else:
        raise PacketError(f"IP version {version} is neither 4 nor 6", offset=0)
    sport = dport = None
    if protocol in (IPPROTO_UDP, IPPROTO_TCP) and not is_later_fragment:
        need = 8 if protocol == IPPROTO_UDP else 20
        if end - start < need:
            raise PacketError("transport header truncated", offset=start)
        sport, dport = _PORTS.unpack_from(packet, start)
        if protocol == IPPROTO_UDP:
            length = (packet[start + 4] << 8) | packet[start + 5]
            if length < 8 or start + length > end:
                raise PacketError(f"UDP length {length} inconsistent with the IP packet",
                                  offset=start + 4)
            end = start + length
    return Parsed(version, src, dst, protocol, sport, dport, start, end, ttl)


def udp_data(parsed: Parsed, packet: bytes) -> bytes:
    """The data of a parsed UDP packet (after its 8-byte header)."""
    return bytes(packet[parsed.start + 8:parsed.end])


def parse_udp_segment(segment: bytes | memoryview) -> tuple[int, int, bytes]:
    """(source port, destination port, data) of a bare UDP segment (transport-mode ESP payload)."""
    if len(segment) < 8:
        raise PacketError("UDP header truncated", offset=0)
    sport, dport, length, _ = _UDP.unpack_from(segment)
    if length < 8 or length > len(segment):
        raise PacketError(f"UDP length {length} inconsistent with the segment", offset=4)
    return sport, dport, bytes(segment[8:length])


def ports_of(protocol: int, segment: bytes | memoryview) -> tuple[int | None, int | None]:
    """The ports at the start of a transport segment (None for protocols without ports)."""
    if protocol in (IPPROTO_UDP, IPPROTO_TCP):
        if len(segment) < (8 if protocol == IPPROTO_UDP else 20):
            raise PacketError("transport header truncated", offset=0)
        return _PORTS.unpack_from(segment)
    return None, None


# --- the carrier framing on the embedded link --------------------------------------------------

CARRIER_IKE = "ike"
CARRIER_KEEPALIVE = "keepalive"
CARRIER_IP = "ip"
CARRIER_ESP = "esp"


def carrier_kind(data: bytes) -> str:
    """What a UDP payload received on the NAT-T port is, when it is not a known ESP SPI.

    RFC 3948 §2.2-2.3: four zero bytes introduce IKE, a single 0xFF is a keep-alive. A payload
    whose first nibble is 4 or 6 and whose IP lengths match the datagram is an IP packet (clear
    or AH); anything else is ESP (possibly for an SPI we do not know).
    """
    if data[:4] == b"\x00\x00\x00\x00":
        return CARRIER_IKE
    if data == b"\xff":
        return CARRIER_KEEPALIVE
    n = len(data)
    if n >= 20 and data[0] >> 4 == 4 and ((data[2] << 8) | data[3]) == n:
        return CARRIER_IP
    if n >= 40 and data[0] >> 4 == 6 and 40 + ((data[4] << 8) | data[5]) == n:
        return CARRIER_IP
    return CARRIER_ESP
