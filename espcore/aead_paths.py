"""Specialised per-packet paths for ESP with AES-GCM-16 or ChaCha20-Poly1305 on IPv4.

This module owns the data path most SAs take, written once per combination so that a packet
pays for no dispatch: AES-GCM with a 16-byte ICV (RFC 4106) or ChaCha20-Poly1305 (RFC 7634),
32-bit sequence numbers, IPv4 transport mode (RFC 4303 §3.1.1: ESP right after a 20-byte
header), IPv4 tunnel mode around an IPv4 packet (RFC 4301 §5.1.2.1) and the payload-level
methods of UDP encapsulation (RFC 3948). ``espcore.sa`` picks the subclass once, when the SA is
built. The wire bytes, the checks and their order (RFC 4303 §3.4: SPI, the cheap replay check,
ICV, trailer, then the window update) and every state change are those of the general paths
(``espcore.modes``, ``espcore.esp``); any packet these paths do not cover (IP options, IPv6,
fragments, a length over 65535, an explicit IV, a bad trailer) goes to the general path, which
handles it or raises the precise error.

Per packet the cost is the number of Python operations, so each step is as short as it can be
(protocol numbers are literals in the hot paths: a module constant costs a lookup each time):

- one ``struct`` call reads the IPv4 header (and SPI and sequence number) and one writes the
  new header with the ESP header and IV (IV = the sequence number, unique per key as
  RFC 4106 §3.1 and RFC 7634 §2 require);
- the trailer is a table entry per (Next Header, length mod 4): padding 1, 2, 3... to the
  4-byte alignment of RFC 4303 §2.4, Pad Length, Next Header;
- the AEAD is an ``espcore.aead.Aead``: ``seal_esp`` takes the nonce salt || IV (RFC 4106 §4)
  and the AAD SPI || sequence number (RFC 4106 §5) from the ESP header it is given and encrypts
  the payload where it lies in the packet, followed by the trailer, into one object that starts
  with the new headers; ``open_esp`` reads them from the packet and decrypts the range after the
  IV. No payload is copied on the way in, nor on the way out before the trailer is cut off;
- the IPv4 checksum is updated incrementally (RFC 1624 eqn. 3) with the constant words summed
  ahead, and the end-around-carry fold of a positive sum s written as (s - 1) % 0xFFFF + 1;
- the outbound counters are compared with the marks ``espcore.sa`` sets (one comparison per
  limit); an authentic inbound packet is accounted by the general paths' ``_accept`` (window
  update, dummy packets, counters), the one place for that in every path.

It does not own the general paths, the AEAD implementations (``espcore.aead``), the replay
window's rules (``espcore.replay``; the cheap check's common case is inlined) or lifetimes
(``espcore.lifetime``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from espcore.errors import IntegrityError, UnknownSpiError
from espcore.esp import PADDING
from espcore.ip import IPPROTO_ESP, IPPROTO_IPIP, check_inner
from espcore.replay import ReplayWindow

Buffer = bytes | bytearray | memoryview

# The ``struct`` methods are bound once: looking ``pack`` up on a ``Struct`` per call costs as
# much as packing a field or four.
# Version/IHL, TOS, total length, identification and flags/offset (one 32-bit word), TTL,
# protocol, checksum, source and destination addresses (one 8-byte string).
_V4 = struct.Struct("!BBHIBBH8s")
_unpack_v4, _pack_v4 = _V4.unpack_from, _V4.pack
#: The same followed by SPI and sequence number: the first 28 bytes of an inbound IPv4 ESP packet.
_unpack_v4_esp = struct.Struct("!BBHIBBH8sII").unpack_from
#: An outbound transport-mode packet's first 36 bytes: IPv4 header, SPI, sequence number, IV.
_pack_v4_esp = struct.Struct("!BBHIBBH8sIIQ").pack
#: The outer header of tunnel mode (identification and flags separate), SPI, sequence, IV.
_pack_outer_esp = struct.Struct("!BBHHHBBH8sIIQ").pack
#: The first word of an inner IPv4 packet and its identification and flags.
_unpack_inner_v4 = struct.Struct("!BBHI").unpack_from
_pack_esp = struct.Struct("!IIQ").pack
_unpack_esp = struct.Struct("!II").unpack_from

#: Pad length for a payload of length L, indexed by L mod 4 (payload + 2 trailer bytes aligned).
_PAD = tuple((2 - r) & 3 for r in range(4))
#: ``TRAILERS_4[(next_header << 2) | (L & 3)]``: padding, Pad Length and Next Header after L bytes.
TRAILERS_4 = tuple(PADDING[_PAD[i & 3]] + bytes((i >> 2,)) for i in range(256 << 2))
_TUNNEL_TRAILERS = TRAILERS_4[IPPROTO_IPIP << 2:(IPPROTO_IPIP + 1) << 2]
#: Growth of a packet of total length L: ESP header, IV, padding, trailer, ICV (+ outer header).
_GROW_TRANSPORT = tuple(8 + 8 + pad + 2 + 16 for pad in _PAD)
_GROW_TUNNEL = tuple(20 + g for g in _GROW_TRANSPORT)
# RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), with the changed words: total length L -> L + grow,
# protocol p -> 50 (TTL, in the same word, cancels out). ~x = 0xFFFF - x; the sum minus 1:
#: outbound, indexed by L mod 4: 3 * 0xFFFF + grow + 50 - 1 (then minus HC and p)
_SUM_OUT = tuple(3 * 0xFFFF + g + IPPROTO_ESP - 1 for g in _GROW_TRANSPORT)
#: inbound: length L -> 20 + n and protocol 50 -> Next Header: 3 * 0xFFFF - 50 + 20 - 1
_SUM_IN = 3 * 0xFFFF - IPPROTO_ESP + 20 - 1
#: Shortest AEAD ESP packet: SPI, sequence, IV, 4 aligned bytes (Pad Length, Next Header), ICV.
_MIN_ESP = 8 + 8 + 4 + 16


class AeadPayloadPaths:
    """``protect_payload``/``unprotect_payload`` of an AEAD SA (either outer IP version)."""

    __slots__ = ()

    spi: int
    replay: ReplayWindow
    bytes_protected: int
    bytes_unprotected: int
    packets_unprotected: int
    _hard: bool
    _next_seq: int
    _salt: bytes
    _seal_esp: Callable[[bytes, Buffer, Buffer, int, int, bytes], bytes]
    _open_esp: Callable[[bytes, Buffer, int, int], bytes]
    _out_bytes_mark: int
    _out_seq_mark: int
    _in_bytes_mark: int
    _in_packets_mark: int
    _counted: Callable[[], None]
    _accept: Callable[[int, int, int], None]  # window, dummy packets, counters (espcore.modes)
    _expired: Callable[[], Exception]

    def protect_payload(self, payload: Buffer, next_header: int, *,
                        iv: bytes | None = None) -> bytes:
        """ESP only: the bytes SPI..ICV carrying ``payload``, without an IP header."""
        if self._hard:
            raise self._expired()
        if iv is None and type(payload) is bytes and 0 <= next_header <= 255:
            seq = self._next_seq
            n = len(payload)
            head = _pack_esp(self.spi, seq, seq)
            out = self._seal_esp(self._salt, head, payload, 0, n,
                                 TRAILERS_4[(next_header << 2) | (n & 3)])
            self._next_seq = seq + 1
            total = self.bytes_protected + n
            self.bytes_protected = total
            if total >= self._out_bytes_mark or seq >= self._out_seq_mark:
                self._counted()
            return out
        return super().protect_payload(payload, next_header, iv=iv)  # type: ignore[misc]

    def unprotect_payload(self, esp: Buffer) -> tuple[int, bytes]:
        """ESP only: (Next Header, payload) from the bytes SPI..ICV (UDP-encapsulated input)."""
        if self._hard:
            raise self._expired()
        end = len(esp)
        if end >= _MIN_ESP:
            spi, seq = _unpack_esp(esp)
            if spi != self.spi:
                raise UnknownSpiError(spi)
            replay = self.replay
            top = replay.top
            if seq <= top:
                replay.check(seq)  # RFC 4303 §3.4.3: the cheap check before the ICV
            try:
                plaintext = self._open_esp(self._salt, esp, 0, end)
            except InvalidTag:
                raise IntegrityError(spi, seq) from None
            pad = plaintext[-2]
            n = end - 34 - pad  # less header, IV, ICV, Pad Length, Next Header and padding
            # RFC 4303 §2.4: the padding is 1, 2, 3...; the general path raises the precise error.
            # (With n < 0, Pad Length too big, the slice cannot be pad + 1 bytes long.)
            if not pad or plaintext[n:-1] == PADDING[pad]:
                next_header = plaintext[-1]
                payload = plaintext[:n]
                # RFC 4303 §3.4.3: the window moves only now that the ICV verified.
                self._accept(seq, next_header, n)
                return next_header, payload
        return super().unprotect_payload(esp)  # type: ignore[misc]


class AeadTransportPaths(AeadPayloadPaths):
    """``protect``/``unprotect`` of an AEAD SA in transport mode, for plain IPv4 packets."""

    __slots__ = ()

    def protect(self, packet: Buffer, *, iv: bytes | None = None) -> bytes:
        """The IP packet protected by this SA (``iv`` fixes the IV, for tests and vectors)."""
        if self._hard:
            raise self._expired()
        if iv is None and type(packet) is bytes:
            try:
                vihl, tos, total, ident_frag, ttl, proto, csum, addresses = _unpack_v4(packet)
            except struct.error:
                vihl = 0
            # RFC 4301 §7: transport mode protects whole datagrams, never fragments.
            if vihl == 0x45 and 20 <= total <= len(packet) and not ident_frag & 0x3FFF:
                seq = self._next_seq
                r = total & 3
                try:
                    head = _pack_v4_esp(0x45, tos, total + _GROW_TRANSPORT[r], ident_frag, ttl,
                                        50, 0xFFFE - (_SUM_OUT[r] - csum - proto) % 0xFFFF,
                                        addresses, self.spi, seq, seq)
                except struct.error:  # over 65535 bytes: the general path's UsageError
                    return super().protect(packet, iv=iv)  # type: ignore[misc]
                out = self._seal_esp(self._salt, head, packet, 20, total,
                                     TRAILERS_4[(proto << 2) | r])
                self._next_seq = seq + 1
                n = self.bytes_protected + total
                self.bytes_protected = n
                if n >= self._out_bytes_mark or seq >= self._out_seq_mark:
                    self._counted()
                return out
        return super().protect(packet, iv=iv)  # type: ignore[misc]

    def unprotect(self, packet: Buffer) -> bytes:
        """The original IP packet.

        Raises ``ParseError``, ``UnknownSpiError``, ``ReplayError``, ``IntegrityError``,
        ``LifetimeExpired`` or ``DummyPacket``; only ``DummyPacket`` follows a state change.
        """
        if self._hard:
            raise self._expired()
        try:
            vihl, tos, total, ident_frag, ttl, proto, csum, addresses, spi, seq = \
                _unpack_v4_esp(packet)
        except struct.error:
            vihl = 0
        # RFC 4303 §3.4.1: fragments are reassembled before IPsec (the general path refuses).
        if (vihl == 0x45 and proto == 50 and 56 <= total <= len(packet)
                and not ident_frag & 0x3FFF):
            if spi != self.spi:
                raise UnknownSpiError(spi)
            replay = self.replay
            top = replay.top
            if seq <= top:
                replay.check(seq)
            try:
                plaintext = self._open_esp(self._salt, packet, 20, total)
            except InvalidTag:
                raise IntegrityError(spi, seq) from None
            pad = plaintext[-2]
            n = total - 54 - pad
            if not pad or plaintext[n:-1] == PADDING[pad]:
                next_header = plaintext[-1]
                out = _pack_v4(0x45, tos, 20 + n, ident_frag, ttl, next_header,
                               0xFFFE - (_SUM_IN - csum - total + n + next_header) % 0xFFFF,
                               addresses) + plaintext[:n]
                # RFC 4303 §3.4.3: the window moves only now that the ICV verified.
                self._accept(seq, next_header, n + 20)
                return out
        return super().unprotect(packet)  # type: ignore[misc]


class AeadTunnelPaths(AeadPayloadPaths):
    """``protect``/``unprotect`` of an AEAD SA in tunnel mode with an IPv4 outer header."""

    __slots__ = ()

    _outer: bytes
    _outer_ttl: int
    _outer_sum: int

    def protect(self, packet: Buffer, *, iv: bytes | None = None) -> bytes:
        """The packet in a new IPv4 header (RFC 4301 §5.1.2.1: TOS and DF copied, TTL set,
        Identification = the low 16 bits of the sequence number)."""
        if self._hard:
            raise self._expired()
        if iv is None and type(packet) is bytes:
            try:
                first, tos, total, ident_frag = _unpack_inner_v4(packet)
            except struct.error:
                first = 0
            n = len(packet)
            if first == 0x45 and 20 <= total <= n:
                seq = self._next_seq
                r = total & 3
                length = total + _GROW_TUNNEL[r]
                ident, df = seq & 0xFFFF, ident_frag & 0x4000
                try:
                    head = _pack_outer_esp(
                        0x45, tos, length, ident, df, self._outer_ttl, 50,
                        0xFFFE - (self._outer_sum + tos + length + ident + df) % 0xFFFF,
                        self._outer, self.spi, seq, seq)
                except struct.error:  # over 65535 bytes: the general path's UsageError
                    return super().protect(packet, iv=iv)  # type: ignore[misc]
                out = self._seal_esp(self._salt, head, packet, 0, total, _TUNNEL_TRAILERS[r])
                self._next_seq = seq + 1
                n = self.bytes_protected + total
                self.bytes_protected = n
                if n >= self._out_bytes_mark or seq >= self._out_seq_mark:
                    self._counted()
                return out
        return super().protect(packet, iv=iv)  # type: ignore[misc]

    def unprotect(self, packet: Buffer) -> bytes:
        """The inner packet.

        Raises ``ParseError``, ``UnknownSpiError``, ``ReplayError``, ``IntegrityError``,
        ``LifetimeExpired`` or ``DummyPacket``; only ``DummyPacket`` follows a state change.
        """
        if self._hard:
            raise self._expired()
        try:
            vihl, tos, total, ident_frag, ttl, proto, csum, addresses, spi, seq = \
                _unpack_v4_esp(packet)
        except struct.error:
            vihl = 0
        if (vihl == 0x45 and proto == 50 and 56 <= total <= len(packet)
                and not ident_frag & 0x3FFF):
            if spi != self.spi:
                raise UnknownSpiError(spi)
            replay = self.replay
            top = replay.top
            if seq <= top:
                replay.check(seq)
            try:
                plaintext = self._open_esp(self._salt, packet, 20, total)
            except InvalidTag:
                raise IntegrityError(spi, seq) from None
            pad = plaintext[-2]
            n = total - 54 - pad
            if not pad or plaintext[n:-1] == PADDING[pad]:
                next_header = plaintext[-1]
                out = plaintext[:n]
                # The inner packet must be what Next Header says, with its length (RFC 4301
                # §5.2); the plain IPv4 case is checked here, the others by ``check_inner``.
                if not (next_header == 4 and n >= 20 and out[0] == 0x45
                        and (out[2] << 8 | out[3]) == n) and next_header != 59:
                    check_inner(out, next_header)
                # RFC 4303 §3.4.3: the window moves only now that the ICV verified.
                self._accept(seq, next_header, n)
                return out
        return super().unprotect(packet)  # type: ignore[misc]
