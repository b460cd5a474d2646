"""AH framing and the ICV over the IP packet (RFC 4302 §2, §3.3.3, Appendix A).

This module owns the AH header (Next Header, Payload Length = length in 32-bit words minus 2,
SPI, sequence number, ICV padded to 32 bits for IPv4 and 64 bits for IPv6, RFC 4302 §2.2/§2.6)
and the rules for what the ICV covers: every field of the IP header that is immutable or
predictable, with the mutable ones zeroed (RFC 4302 §3.3.3.1 and Appendix A):

- IPv4: TOS (DSCP/ECN), flags, fragment offset, TTL and header checksum are zeroed; options other
  than End of List, No Operation, Security (130), Extended Security (133), Commercial Security
  (134), Router Alert (148) and Sender Directed Multi-Destination Delivery (149) are zeroed in
  their entirety (type and length included, RFC 4302 §3.3.3.1.1.2); with loose or strict source
  routing (131, 137) still to be performed, the destination address is replaced by the final one,
  its predictable value at the receiver.
- IPv6: traffic class, flow label and hop limit are zeroed; in hop-by-hop and destination-option
  headers, the data of each option whose type has the "may change en route" bit (0x20) is
  zeroed (RFC 8200 §4.2); a type 0 or type 2 routing header with segments left is rearranged as
  it will arrive (final destination in the IPv6 header, the route in arrival order, segments left
  0), the "mutable but predictable" case.
- The AH ICV field is zeroed; its padding and the payload are covered as they are. With ESN the
  high-order 32 bits of the sequence number are appended for the computation (RFC 4302 §2.5.1).

It checks the replay window but does not update it, nor the counters (``espcore.sa``).
"""

from __future__ import annotations

import hmac
import struct

from espcore.errors import IntegrityError, ParseError, UnknownSpiError, UsageError
from espcore.esp import Buffer, Mac
from espcore.ip import (IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_HOPOPTS, IPPROTO_NONE,
                        IPPROTO_ROUTING, TunnelHeader, check_inner, inner_packet_length,
                        ipv4_header_length, ipv6_insert_point, ipv6_payload_end,
                        is_ipv4_fragment, set_ipv4_checksum)
from espcore.replay import ReplayWindow
from espcore.transforms import IntegrityTransform

_AH_HEADER = struct.Struct("!BBHII")
_SPI_SEQ = struct.Struct("!II")
_SEQ_HI = struct.Struct("!I")

#: RFC 4302 Appendix A.1: IPv4 options that are immutable (all others are zeroed).
IMMUTABLE_IPV4_OPTIONS = frozenset((0, 1, 130, 133, 134, 148, 149))
_SOURCE_ROUTE_OPTIONS = frozenset((131, 137))  # LSRR, SSRR


class AhEngine:
    """The per-SA AH processing: ``protect`` builds packets, ``open`` checks and strips AH."""

    def __init__(self, transform: IntegrityTransform, key: bytes, *, spi: int, esn: bool) -> None:
        self.transform = transform
        self.mac = Mac(transform, key)
        self.spi = spi
        self.esn = esn
        self.icv_size = transform.icv_size
        base = 12 + self.icv_size
        # RFC 4302 §2.6: the ICV field is padded to 32 bits (IPv4) or 64 bits (IPv6).
        self.length_v4 = base + (-base & 3)
        self.length_v6 = base + (-base & 7)

    def header_length(self, version: int) -> int:
        return self.length_v4 if version == 4 else self.length_v6

    def icv(self, packet: Buffer, ah_off: int, end: int, seq: int, *, sending: bool) -> bytes:
        """The ICV of ``packet[:end]`` whose AH header starts at ``ah_off`` (ICV bytes ignored)."""
        header = normalized_header(packet, ah_off, sending=sending)
        ah_len = (packet[ah_off + 1] + 2) * 4
        view = memoryview(packet)
        ah = bytearray(view[ah_off:ah_off + ah_len])
        ah[12:12 + self.icv_size] = bytes(self.icv_size)
        tail = _SEQ_HI.pack(seq >> 32) if self.esn else b""
        return self.mac.compute(header, ah, view[ah_off + ah_len:end], tail)

    def protect(self, packet: Buffer, seq: int, tunnel: TunnelHeader | None) -> bytes:
        """``packet`` with an AH header carrying ``seq`` (RFC 4302 §3.3)."""
        view = memoryview(packet)
        if tunnel is not None:
            inner_len, next_header = inner_packet_length(packet)
            version, start = tunnel.version, tunnel.length
            ah_len = self.header_length(version)
            length = start + ah_len + inner_len
            if length - (0 if version == 4 else 40) > 0xFFFF:
                raise UsageError(f"tunnelled packet of {inner_len} bytes is too large")
            buf = bytearray(tunnel.build(packet, IPPROTO_AH, length, seq))
            payload = view[:inner_len]
        else:
            version = packet[0] >> 4 if len(packet) else 0
            if version == 4:
                start, end = ipv4_header_length(packet)
                if is_ipv4_fragment(packet):
                    raise UsageError("transport mode cannot protect a fragment (RFC 4301 §7)")
                nh_at = 9
            elif version == 6:
                end = ipv6_payload_end(packet)
                start, nh_at = ipv6_insert_point(packet, end)
            else:
                raise ParseError("not an IPv4 or IPv6 packet", offset=0)
            ah_len = self.header_length(version)
            length = end + ah_len
            if length - (0 if version == 4 else 40) > 0xFFFF:
                raise UsageError(f"protected packet would be {length} bytes, too large")
            buf = bytearray(view[:start])
            next_header = packet[nh_at]
            buf[nh_at] = IPPROTO_AH
            if version == 4:
                buf[2:4] = length.to_bytes(2, "big")
            else:
                buf[4:6] = (length - 40).to_bytes(2, "big")
            payload = view[start:end]
        buf += _AH_HEADER.pack(next_header, ah_len // 4 - 2, 0, self.spi, seq & 0xFFFFFFFF)
        buf += bytes(ah_len - 12)
        buf += payload
        buf[start + 12:start + 12 + self.icv_size] = self.icv(buf, start, length, seq,
                                                              sending=True)
        if version == 4:
            set_ipv4_checksum(buf)
        return bytes(buf)

    def open(self, packet: Buffer, start: int, end: int, nh_at: int, replay: ReplayWindow,
             tunnel: TunnelHeader | None) -> tuple[bytes, int, int]:
        """Verify the AH packet whose header is at ``packet[start:]``: (the packet without
        AH, or the inner packet in tunnel mode; sequence number; Next Header). The replay
        window is checked, not updated."""
        view = memoryview(packet)
        version = packet[0] >> 4
        ah_len = self.header_length(version)
        if end - start < 12 or (view[start + 1] + 2) * 4 != ah_len or start + ah_len > end:
            raise ParseError(f"AH header length does not match the SA's {ah_len} bytes",
                             offset=start)
        spi, seq_low = _SPI_SEQ.unpack_from(view, start + 4)
        if spi != self.spi:
            raise UnknownSpiError(spi, protocol="ah")
        seq = replay.infer(seq_low)
        replay.check(seq)  # RFC 4302 §3.4.3: before the ICV
        expected = self.icv(view, start, end, seq, sending=False)
        if not hmac.compare_digest(expected, view[start + 12:start + 12 + self.icv_size]):
            raise IntegrityError(self.spi, seq)
        next_header = view[start]
        if tunnel is not None:
            inner = bytes(view[start + ah_len:end])
            if next_header != IPPROTO_NONE:
                check_inner(inner, next_header)
            return inner, seq, next_header
        out = bytearray(view[:start])
        out += view[start + ah_len:end]
        out[nh_at] = next_header
        if version == 4:
            out[2:4] = len(out).to_bytes(2, "big")
            set_ipv4_checksum(out)
        else:
            out[4:6] = (len(out) - 40).to_bytes(2, "big")
        return bytes(out), seq, next_header


def normalized_header(packet: bytes | bytearray | memoryview, end: int, *, sending: bool
                      ) -> bytearray:
    """A copy of the IP header (and IPv6 extension headers) before ``end``, mutable fields zeroed.

    ``sending`` selects the sender's view of predictable fields (routes still to be travelled);
    a receiver sees them already in their final state.
    """
    header = bytearray(packet[:end])
    if header[0] >> 4 == 4:
        _normalize_ipv4(header)
    else:
        _normalize_ipv6(header, sending=sending)
    return header


def _normalize_ipv4(h: bytearray) -> None:
    ihl = (h[0] & 0x0F) * 4
    h[1] = 0  # TOS: DSCP and ECN may be rewritten en route
    h[6] = h[7] = 0  # flags and fragment offset
    h[8] = 0  # TTL
    h[10] = h[11] = 0  # header checksum
    i = 20
    while i < ihl:
        kind = h[i]
        if kind == 0:  # End of Option List: the rest is padding, covered as is
            break
        if kind == 1:  # No Operation
            i += 1
            continue
        if i + 1 >= ihl or h[i + 1] < 2 or i + h[i + 1] > ihl:
            raise ParseError("IPv4 option length runs past the header", offset=i)
        length = h[i + 1]
        if kind not in IMMUTABLE_IPV4_OPTIONS:
            if kind in _SOURCE_ROUTE_OPTIONS:
                if length < 7 or (length - 3) % 4:
                    raise ParseError("malformed source route option", offset=i)
                if h[i + 2] <= length:
                    # Route not yet completed (pointer inside the option, RFC 791): the
                    # receiver will see the last listed address as the destination.
                    h[16:20] = h[i + length - 4:i + length]
            h[i:i + length] = bytes(length)
        i += length


def _normalize_ipv6(h: bytearray, *, sending: bool) -> None:
    h[0] = 0x60  # version kept; traffic class and flow label zeroed
    h[1] = h[2] = h[3] = 0
    h[7] = 0  # hop limit
    nh, off = h[6], 40
    while off < len(h):
        if off + 8 > len(h):
            raise ParseError("IPv6 extension header runs past the AH header", offset=off)
        length = (h[off + 1] + 1) * 8
        if off + length > len(h):
            raise ParseError("IPv6 extension header runs past the AH header", offset=off)
        if nh in (IPPROTO_HOPOPTS, IPPROTO_DSTOPTS):
            _zero_mutable_options(h, off + 2, off + length)
        elif nh == IPPROTO_ROUTING:
            _predict_routing(h, off, length, sending=sending)
        nh = h[off]
        off += length


def _zero_mutable_options(h: bytearray, start: int, end: int) -> None:
    i = start
    while i < end:
        kind = h[i]
        if kind == 0:  # Pad1
            i += 1
            continue
        if i + 2 > end or i + 2 + h[i + 1] > end:
            raise ParseError("IPv6 option runs past its extension header", offset=i)
        length = h[i + 1]
        if kind & 0x20:  # RFC 8200 §4.2: option data may change en route
            h[i + 2:i + 2 + length] = bytes(length)
        i += 2 + length


def _predict_routing(h: bytearray, off: int, length: int, *, sending: bool) -> None:
    routing_type, segments_left = h[off + 2], h[off + 3]
    if segments_left == 0:
        return
    if not sending:
        raise ParseError("AH packet received before its routing header was completed",
                         offset=off + 3)
    if routing_type not in (0, 2):
        raise UsageError(f"cannot predict routing header type {routing_type} for AH")
    count = (length - 8) // 16
    if count == 0:
        raise ParseError("routing header without addresses", offset=off)
    addresses = [bytes(h[off + 8 + 16 * k:off + 24 + 16 * k]) for k in range(count)]
    # At the final destination: destination = last hop, list = [first destination, hops...].
    final = addresses[-1]
    arrived = [bytes(h[24:40])] + addresses[:-1]
    h[24:40] = final
    for k, address in enumerate(arrived):
        h[off + 8 + 16 * k:off + 24 + 16 * k] = address
    h[off + 3] = 0
