"""The general per-packet paths of an SA: every mode, IP version, protocol and cipher.

This module owns the packet layouts that ``espcore.sa`` does not handle on its inlined fast path
(ESP with AES-GCM-16 or ChaCha20-Poly1305 on plain IPv4): ESP in transport mode over IPv4 with
options and over IPv6 with extension headers (RFC 4303 §3.1.1: after hop-by-hop, routing and
fragment headers), ESP in tunnel mode with either outer family (RFC 4301 §5.1.2), the AH paths
(through ``espcore.ah``), the inbound order of checks (RFC 4303 §3.4: SPI, the cheap replay
check, ICV, then the window update) and the trailer check (RFC 4303 §2.4: monotonic padding).
The IPv4 header checksum is updated incrementally (RFC 1624 eqn. 3).

``PacketPaths`` is a base class of ``SecurityAssociation``; it keeps no state of its own.
"""

from __future__ import annotations

import struct

from espcore.ah import AhEngine
from espcore.errors import DummyPacket, ParseError, UnknownSpiError, UsageError
from espcore.esp import PADDING, EspEngine
from espcore.ip import (IPPROTO_ESP, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_NONE, check_inner,
                        ipv6_find_header, ipv6_insert_point, ipv6_payload_end)

_V4 = struct.Struct("!BBHHHBBH")  # version/IHL, TOS, total length, ID, flags/offset, TTL, proto, sum
_SPI_SEQ = struct.Struct("!II")

Buffer = bytes | bytearray | memoryview


def fold(s: int) -> int:
    """The one's complement checksum field for a sum of 16-bit words (RFC 1071)."""
    s = (s & 0xFFFF) + (s >> 16)
    return 0xFFFF - ((s & 0xFFFF) + (s >> 16))


class PacketPaths:
    """The general protect/unprotect paths; the attributes are ``SecurityAssociation``'s."""

    __slots__ = ()

    _engine: EspEngine | None
    _ah: AhEngine | None
    _trailers: dict[int, bytes]

    def _protect_general(self, packet: bytes | bytearray, seq: int, iv: bytes | None) -> bytes:
        if self._engine is None:
            if iv is not None:
                raise UsageError("AH has no IV")
            return self._ah.protect(packet, seq, self.tunnel)
        if self.tunnel is not None:
            return self._esp_tunnel(packet, seq, iv)
        if len(packet) >= 20 and packet[0] >> 4 == 4:
            return self._esp_transport_v4(packet, seq, iv)
        return self._esp_transport_v6(packet, seq, iv)

    def _trailer(self, payload_len: int, next_header: int) -> bytes:
        pad = -(payload_len + 2) & self._align
        key = (pad << 8) | next_header
        trailer = self._trailers.get(key)
        if trailer is None:
            trailer = self._trailers[key] = PADDING[pad] + bytes((next_header,))
        return trailer

    def _esp_transport_v4(self, packet: Buffer, seq: int, iv: bytes | None) -> bytes:
        vihl, tos, total, ident, frag, ttl, proto, csum = _V4.unpack_from(packet)
        ihl = (vihl & 0x0F) << 2
        if ihl < 20 or total < ihl or total > len(packet):
            raise ParseError(f"IPv4 lengths inconsistent (header {ihl}, total {total})", offset=0)
        if frag & 0x3FFF:
            raise UsageError("transport mode cannot protect a fragment (RFC 4301 §7)")
        engine = self._engine
        plaintext = packet[ihl:total] + self._trailer(total - ihl, proto)
        length = ihl + len(plaintext) + engine.overhead
        if length > 0xFFFF:
            raise UsageError(f"protected packet would be {length} bytes, over 65535")
        parts = engine.seal(plaintext, seq, iv)
        # RFC 1624 eqn. 3: total length and protocol change; TTL cancels out of the sum.
        csum = fold((0xFFFF - csum) + (0xFFFF - total) + length + (0xFFFF - proto) + IPPROTO_ESP)
        return b"".join((_V4.pack(vihl, tos, length, ident, frag, ttl, IPPROTO_ESP, csum),
                         packet[12:ihl], *parts))

    def _esp_transport_v6(self, packet: Buffer, seq: int, iv: bytes | None) -> bytes:
        if len(packet) < 1 or packet[0] >> 4 != 6:
            raise ParseError("not an IPv4 or IPv6 packet", offset=0)
        end = ipv6_payload_end(packet)
        start, nh_at = ipv6_insert_point(packet, end)
        engine = self._engine
        plaintext = packet[start:end] + self._trailer(end - start, packet[nh_at])
        length = start + len(plaintext) + engine.overhead
        if length - 40 > 0xFFFF:
            raise UsageError(f"protected payload would be {length - 40} bytes, over 65535")
        parts = engine.seal(plaintext, seq, iv)
        header = bytearray(packet[:start])
        header[nh_at] = IPPROTO_ESP
        header[4:6] = (length - 40).to_bytes(2, "big")
        return b"".join((header, *parts))

    def _esp_tunnel(self, packet: Buffer, seq: int, iv: bytes | None) -> bytes:
        n = len(packet)
        version = packet[0] >> 4 if n else 0
        if version == 4 and n >= 20:
            inner_len, next_header = (packet[2] << 8) | packet[3], IPPROTO_IPIP
            ok = (packet[0] & 0x0F) >= 5 and inner_len >= (packet[0] & 0x0F) * 4
        elif version == 6 and n >= 40:
            inner_len, next_header = 40 + ((packet[4] << 8) | packet[5]), IPPROTO_IPV6
            ok = True
        else:
            inner_len, next_header, ok = 0, 0, False
        if not ok or inner_len > n:
            raise ParseError("not a well-formed IPv4 or IPv6 packet to tunnel", offset=0)
        engine, tunnel = self._engine, self.tunnel
        plaintext = (packet if inner_len == n else packet[:inner_len]) + self._trailer(
            inner_len, next_header)
        length = tunnel.length + len(plaintext) + engine.overhead
        if length - (0 if tunnel.version == 4 else 40) > 0xFFFF:
            raise UsageError(f"tunnelled packet of {inner_len} bytes is too large")
        parts = engine.seal(plaintext, seq, iv)
        return b"".join((tunnel.build(packet, IPPROTO_ESP, length, seq), *parts))

    def _unprotect_general(self, packet: Buffer) -> bytes:
        """Every inbound case: AH, IPv6, ESN, every cipher, IPv4 options."""
        n = len(packet)
        if n >= 20 and packet[0] >> 4 == 4:
            vihl, tos, total, ident, frag, ttl, proto, csum = _V4.unpack_from(packet)
            start = (vihl & 0x0F) << 2
            if start < 20 or total < start or total > n:
                raise ParseError(f"IPv4 lengths inconsistent (header {start}, total {total}, "
                                 f"buffer {n})", offset=0)
            if proto != self._proto:
                raise ParseError(f"IPv4 protocol {proto} is not {self._proto}", offset=9)
            if frag & 0x3FFF:
                # RFC 4303 §3.4.1: fragments are reassembled before IPsec processing.
                raise ParseError("IPsec packet is a fragment", offset=6)
            end, nh_at = total, 9
        elif n >= 40 and packet[0] >> 4 == 6:
            end = ipv6_payload_end(packet)
            start, nh_at = ipv6_find_header(packet, end, self._proto)
        else:
            raise ParseError("not an IPv4 or IPv6 packet", offset=0)
        if self._ah is not None:
            out, seq, next_header = self._ah.open(packet, start, end, nh_at, self.replay,
                                                  self.tunnel)
            self._accept(seq, next_header, len(out))
            return out
        next_header, plaintext, payload_len, seq = self._esp_open(packet, start, end)
        if self.tunnel is not None:
            out = plaintext[:payload_len]
            if next_header != IPPROTO_NONE:
                check_inner(out, next_header)
        elif nh_at == 9:
            length = start + payload_len
            csum = fold((0xFFFF - csum) + (0xFFFF - total) + length + (0xFFFF - proto)
                         + next_header)
            out = b"".join((_V4.pack(vihl, tos, length, ident, frag, ttl, next_header, csum),
                            packet[12:start], plaintext[:payload_len]))
        else:
            header = bytearray(packet[:start])
            header[nh_at] = next_header
            header[4:6] = (start - 40 + payload_len).to_bytes(2, "big")
            out = b"".join((header, plaintext[:payload_len]))
        self._accept(seq, next_header, len(out))
        return out

    def _esp_open(self, packet: Buffer, start: int, end: int) -> tuple[int, bytes, int, int]:
        """SPI, replay check, ICV and decryption, trailer: (Next Header, plaintext, payload
        length, sequence number). No state changes."""
        engine = self._engine
        if end - start < engine.min_length:
            raise ParseError(f"ESP packet of {end - start} bytes is too short", offset=start)
        spi, seq = _SPI_SEQ.unpack_from(packet, start)
        if spi != self.spi:
            raise UnknownSpiError(spi)
        replay = self.replay
        if self.esn:
            seq = replay.infer(seq)
        if seq <= replay.top:
            replay.check(seq)  # RFC 4303 §3.4.3: the cheap check before the ICV
        plaintext = engine.open(packet, start, end, seq)
        m = len(plaintext)
        if m < 2:
            raise ParseError("ESP payload too short for its trailer", offset=start)
        pad = plaintext[m - 2]
        payload_len = m - 2 - pad
        if payload_len < 0:
            raise ParseError(f"Pad Length {pad} exceeds the {m}-byte payload",
                             offset=end - engine.icv_size - 2)
        # RFC 4303 §2.4: the default padding is 1, 2, 3...; the receiver checks it.
        if pad and plaintext[payload_len:m - 1] != PADDING[pad]:
            raise ParseError("ESP padding is not the monotonic 1, 2, 3... sequence",
                             offset=end - engine.icv_size - 2 - pad)
        return plaintext[m - 1], plaintext, payload_len, seq

    def _accept(self, seq: int, next_header: int, n: int) -> None:
        # RFC 4303 §3.4.3: the window moves only for a packet whose ICV verified.
        replay = self.replay
        top = replay.top
        if seq - top == 1 and replay.bitmap == replay.mask:
            replay.top = seq  # the next in order, all seen: the bitmap stays full
        elif seq > top and seq - top < replay.size:
            replay.bitmap = ((replay.bitmap << (seq - top)) | 1) & replay.mask
            replay.top = seq
        else:
            replay.accept(seq)
        if next_header == IPPROTO_NONE:
            raise DummyPacket(self.spi, seq)  # RFC 4303 §2.6: authentic, then dropped
        packets = self.packets_unprotected + 1
        self.packets_unprotected = packets
        total = self.bytes_unprotected + n
        self.bytes_unprotected = total
        if total >= self._in_bytes_mark or packets >= self._in_packets_mark:
            self._counted()
