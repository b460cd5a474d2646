"""UDP encapsulation of ESP for NAT traversal (RFC 3948), port 4500.

This module owns the wire rules of the UDP-encapsulated flow:

- §2.1: an ESP packet rides directly after the UDP header; the UDP checksum is sent as zero over
  IPv4 (receivers must not depend on it). Over IPv6 a zero checksum is not allowed (RFC 8200
  §8.1), so it is computed when the addresses are given.
- §2.2: IKE on port 4500 is prefixed by the 4-byte non-ESP marker (zeros where the SPI would be;
  SPI 0 is never used by ESP, RFC 4303 §2.1).
- §2.3: the NAT-keepalive is the single byte 0xFF, to be ignored by the receiver.
- §3.1.1/§3.1.2: turning an IP|ESP packet into IP|UDP|ESP and back (lengths, protocol and IPv4
  checksum edited), and, after transport-mode decapsulation through a NAT, recomputing the inner
  TCP/UDP checksum (the "recompute" option of §3.1.2; the incremental NAT-OA option is not used).

It does not own sockets, NAT detection (IKE's NAT-D, RFC 3947) or keep-alive timing (the agent).
Everything here is pure: bytes in, bytes out.
"""

from __future__ import annotations

import enum
import struct

from espcore.errors import ParseError, UsageError
from espcore.ip import (IPPROTO_ESP, IPPROTO_TCP, IPPROTO_UDP, checksum, ipv4_header_length,
                        ipv6_payload_end, parse_address, set_ipv4_checksum)

NAT_T_PORT = 4500
NON_ESP_MARKER = b"\x00\x00\x00\x00"
KEEPALIVE = b"\xff"

_UDP = struct.Struct("!HHHH")


class PayloadKind(enum.Enum):
    """What a datagram received on the NAT-T port carries."""

    ESP = "esp"
    IKE = "ike"
    KEEPALIVE = "keepalive"


def decapsulate(udp_payload: bytes | bytearray | memoryview) -> tuple[PayloadKind, bytes]:
    """Classify a UDP payload from port 4500: (kind, ESP packet | IKE message | b"").

    RFC 3948 §2.2/§2.3: 0xFF alone is a keep-alive; four zero bytes introduce IKE; anything
    else of at least 8 bytes (SPI and sequence number) is ESP.
    """
    data = bytes(udp_payload)
    if data == KEEPALIVE:
        return PayloadKind.KEEPALIVE, b""
    if data[:4] == NON_ESP_MARKER:
        if len(data) == 4:
            raise ParseError("non-ESP marker without an IKE message", offset=4)
        return PayloadKind.IKE, data[4:]
    if len(data) < 8:
        raise ParseError(f"{len(data)}-byte datagram is neither ESP, IKE nor a keep-alive",
                         offset=0)
    return PayloadKind.ESP, data


def encapsulate_ike(message: bytes | bytearray | memoryview) -> bytes:
    """The UDP payload carrying an IKE message on port 4500 (non-ESP marker first)."""
    return NON_ESP_MARKER + bytes(message)


def keepalive() -> bytes:
    """The NAT-keepalive UDP payload (RFC 3948 §2.3)."""
    return KEEPALIVE


def _udp_checksum(source: bytes, destination: bytes, segment: bytearray) -> int:
    pseudo = source + destination + (struct.pack("!BBH", 0, IPPROTO_UDP, len(segment))
                                     if len(source) == 4 else
                                     struct.pack("!IxxxB", len(segment), IPPROTO_UDP))
    value = checksum(pseudo + bytes(segment))
    return value or 0xFFFF


def encapsulate(esp: bytes | bytearray | memoryview, *, sport: int = NAT_T_PORT,
                dport: int = NAT_T_PORT, source: object = None, destination: object = None
                ) -> bytes:
    """UDP header + ESP packet (RFC 3948 §2.1). The checksum is zero unless IPv6 addresses are
    given, in which case it is computed over the IPv6 pseudo-header."""
    if not (0 < sport <= 0xFFFF and 0 < dport <= 0xFFFF):
        raise UsageError("UDP ports must be 1..65535")
    length = 8 + len(esp)
    if length > 0xFFFF:
        raise UsageError("ESP packet too large for UDP")
    segment = bytearray(_UDP.pack(sport, dport, length, 0)) + bytes(esp)
    if source is not None and destination is not None:
        src, dst = parse_address(source), parse_address(destination)
        if src.version == 6:
            value = _udp_checksum(src.packed, dst.packed, segment)
            segment[6:8] = value.to_bytes(2, "big")
    return bytes(segment)


def _ip_payload_start(packet: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(start of the IP payload, end of the packet, offset of the protocol/next-header byte)."""
    version = packet[0] >> 4 if len(packet) else 0
    if version == 4:
        start, end = ipv4_header_length(packet)
        return start, end, 9
    if version == 6:
        return 40, ipv6_payload_end(packet), 6
    raise ParseError("not an IPv4 or IPv6 packet", offset=0)


def _set_length(buf: bytearray) -> None:
    if buf[0] >> 4 == 4:
        buf[2:4] = len(buf).to_bytes(2, "big")
        set_ipv4_checksum(buf)
    else:
        buf[4:6] = (len(buf) - 40).to_bytes(2, "big")


def encapsulate_packet(packet: bytes | bytearray | memoryview, *, sport: int = NAT_T_PORT,
                       dport: int = NAT_T_PORT) -> bytes:
    """IP|ESP -> IP|UDP|ESP (RFC 3948 §3.1.1 steps 2-3). IPv6 ESP must follow the fixed header
    directly."""
    start, end, proto_at = _ip_payload_start(packet)
    if packet[proto_at] != IPPROTO_ESP:
        raise UsageError("encapsulate_packet takes an IP packet that carries ESP")
    buf = bytearray(packet[:start])
    buf[proto_at] = IPPROTO_UDP
    version = buf[0] >> 4
    src, dst = (bytes(buf[12:16]), bytes(buf[16:20])) if version == 4 else (
        bytes(buf[8:24]), bytes(buf[24:40]))
    udp = encapsulate(packet[start:end], sport=sport, dport=dport)
    if version == 6:
        segment = bytearray(udp)
        value = _udp_checksum(src, dst, segment)
        udp = bytes(segment[:6]) + value.to_bytes(2, "big") + bytes(segment[8:])
    buf += udp
    _set_length(buf)
    return bytes(buf)


def decapsulate_packet(packet: bytes | bytearray | memoryview) -> bytes:
    """IP|UDP|ESP -> IP|ESP (RFC 3948 §3.1.2 steps 1-2), ready for ``unprotect``.

    Raises ``ParseError`` when the UDP payload is not ESP (IKE or a keep-alive belong to IKE).
    """
    start, end, proto_at = _ip_payload_start(packet)
    if packet[proto_at] != IPPROTO_UDP:
        raise ParseError("not a UDP packet", offset=proto_at)
    if end - start < 8:
        raise ParseError("UDP header truncated", offset=start)
    udp_len = (packet[start + 4] << 8) | packet[start + 5]
    if udp_len < 8 or start + udp_len > end:
        raise ParseError(f"UDP length {udp_len} inconsistent with the IP packet", offset=start + 4)
    kind, _ = decapsulate(packet[start + 8:start + udp_len])
    if kind is not PayloadKind.ESP:
        raise ParseError(f"UDP payload is {kind.value}, not ESP", offset=start + 8)
    buf = bytearray(packet[:start])
    buf[proto_at] = IPPROTO_ESP
    buf += packet[start + 8:start + udp_len]
    _set_length(buf)
    return bytes(buf)


def esp_packet(esp: bytes | bytearray | memoryview, *, source: object, destination: object
               ) -> bytes:
    """Wrap an ESP packet received on a UDP socket in an IP header (protocol 50), as the
    kernel would see it after RFC 3948 §3.1.2 step 2: the input ``SecurityAssociation.unprotect``
    takes. TTL 64; IPv4 or IPv6 after the addresses."""
    src, dst = parse_address(source), parse_address(destination)
    if src.version != dst.version:
        raise UsageError("source and destination must be the same IP version")
    if src.version == 4:
        buf = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(esp), 0, 0, 64,
                                    IPPROTO_ESP, 0, src.packed, dst.packed))
    else:
        buf = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(esp), IPPROTO_ESP, 64,
                                    src.packed, dst.packed))
    buf += esp
    _set_length(buf)
    return bytes(buf)


def recompute_transport_checksum(packet: bytes | bytearray | memoryview) -> bytes:
    """The packet with its TCP or UDP checksum recomputed over its current addresses.

    RFC 3948 §3.1.2 step 4: after transport-mode decapsulation through a NAT, the checksum was
    computed over the peer's original addresses. An IPv4 UDP checksum of zero (none) stays zero.
    Other protocols and IPv6 packets with extension headers are returned unchanged.
    """
    start, end, proto_at = _ip_payload_start(packet)
    buf = bytearray(packet[:end])
    proto = buf[proto_at]
    version = buf[0] >> 4
    if proto == IPPROTO_TCP:
        field = start + 16
    elif proto == IPPROTO_UDP:
        field = start + 6
        if version == 4 and end - start >= 8 and buf[field:field + 2] == b"\x00\x00":
            return bytes(buf)
    else:
        return bytes(buf)
    if field + 2 > end:
        raise ParseError("transport header truncated", offset=start)
    src, dst = (bytes(buf[12:16]), bytes(buf[16:20])) if version == 4 else (
        bytes(buf[8:24]), bytes(buf[24:40]))
    segment_len = end - start
    pseudo = src + dst + (struct.pack("!BBH", 0, proto, segment_len) if version == 4 else
                          struct.pack("!IxxxB", segment_len, proto))
    buf[field:field + 2] = b"\x00\x00"
    value = checksum(pseudo + bytes(buf[start:end]))
    if proto == IPPROTO_UDP and value == 0:
        value = 0xFFFF
    buf[field:field + 2] = value.to_bytes(2, "big")
    return bytes(buf)
