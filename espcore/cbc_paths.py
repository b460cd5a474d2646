"""Specialised per-packet paths for ESP with a CBC cipher and an HMAC on IPv4.

This module owns the data path of AES-CBC (RFC 3602), 3DES-CBC (RFC 2451) and DES-CBC
(RFC 2405) with any HMAC integrity transform (RFC 2403, 2404, 4868) and 32-bit sequence
numbers: IPv4 transport mode, IPv4 tunnel mode around an IPv4 packet and the payload-level
methods of UDP encapsulation (RFC 3948), as ``espcore.aead_paths`` does for the AEAD ciphers.
``espcore.sa`` picks the subclass once. Wire bytes, checks, their order (RFC 4303 §3.4: SPI, the
cheap replay check, ICV, decryption, trailer, window update) and state changes are those of the
general paths (``espcore.modes``, ``espcore.esp``); any other packet goes there.

What makes it short:

- the SA keeps one encrypting and one decrypting CBC context (``espcore.esp``). Outbound, one
  ``update`` call takes a random block followed by payload and trailer: the first output block
  is the IV, E(R xor previous block), unpredictable as RFC 3602 §2.4 requires, and the rest is
  the payload chained from it. Inbound, one ``update`` call takes IV and ciphertext: the first
  output block is discarded and the rest is the payload decrypted from that IV;
- the ICV is a copy of the keyed HMAC (RFC 2104 pads computed once) over the ESP header and the
  IV || ciphertext string as it is, truncated (RFC 2404 §2: 96 bits for SHA-1; RFC 4868 §2.1)
  and compared with ``hmac.compare_digest`` (house rule 6);
- the trailer (padding 1, 2, 3... to the block, RFC 4303 §2.4) and the length and checksum
  growth of the IPv4 header (RFC 1624 eqn. 3, as in ``espcore.aead_paths``) are table entries
  per length modulo the block size.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from hmac import compare_digest

from espcore.errors import IntegrityError, UnknownSpiError
from espcore.esp import PADDING
from espcore.ip import IPPROTO_ESP, IPPROTO_IPIP, check_inner
from espcore.replay import ReplayWindow

Buffer = bytes | bytearray | memoryview

_V4 = struct.Struct("!BBHIBBH8s")
_unpack_v4, _pack_v4 = _V4.unpack_from, _V4.pack
#: An IPv4 header followed by SPI and sequence number (28 bytes), as in ``aead_paths``.
_V4_SPI_SEQ = struct.Struct("!BBHIBBH8sII")
_unpack_v4_spi_seq, _pack_v4_spi_seq = _V4_SPI_SEQ.unpack_from, _V4_SPI_SEQ.pack
_pack_outer_spi_seq = struct.Struct("!BBHHHBBH8sII").pack
_unpack_inner_v4 = struct.Struct("!BBHI").unpack_from
_SPI_SEQ = struct.Struct("!II")
_unpack_spi_seq, _pack_spi_seq = _SPI_SEQ.unpack_from, _SPI_SEQ.pack
#: RFC 1624 eqn. 3 for the inbound transport header, as in ``espcore.aead_paths``.
_SUM_IN = 3 * 0xFFFF - IPPROTO_ESP + 20 - 1


@functools.cache
def trailers(block: int, offset: int = 0) -> tuple[bytes, ...]:
    """Trailers indexed ``(next_header << log2(block)) | ((L + offset) % block)`` for an
    L-byte payload: padding 1, 2, 3... so that payload and trailer fill whole blocks, Pad
    Length, Next Header. ``offset`` lets a caller index by a length L + offset it already has
    (an IPv4 total length is the payload length + 20). Built once per (block, offset)."""
    return tuple(PADDING[(offset - (i % block) - 2) % block] + bytes((i // block,))
                 for i in range(256 * block))


class CbcPayloadPaths:
    """``protect_payload``/``unprotect_payload`` of a CBC + HMAC SA."""

    __slots__ = ()

    spi: int
    replay: ReplayWindow
    bytes_protected: int
    bytes_unprotected: int
    packets_unprotected: int
    _hard: bool
    _next_seq: int
    _encrypt: Callable[[bytes], bytes]
    _decrypt: Callable[[Buffer], bytes]
    _mac_copy: Callable[[], object]
    _rng: Callable[[int], bytes]
    _iv_size: int
    _icv_size: int
    _block_mask: int
    _block_shift: int
    _pad_table: tuple[bytes, ...]
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
            head = _pack_spi_seq(self.spi, seq)
            body = self._encrypt(b"".join((
                self._rng(self._iv_size), payload,
                self._pad_table[(next_header << self._block_shift) | (n & self._block_mask)])))
            mac = self._mac_copy()
            mac.update(head)
            mac.update(body)
            out = b"".join((head, body, mac.finalize()[:self._icv_size]))
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
        end = len(esp) - self._icv_size
        iv_end = 8 + self._iv_size
        k = end - iv_end  # ciphertext bytes: at least one whole block
        if k > self._block_mask and not k & self._block_mask:
            spi, seq = _unpack_spi_seq(esp)
            if spi != self.spi:
                raise UnknownSpiError(spi)
            replay = self.replay
            top = replay.top
            if seq <= top:
                replay.check(seq)  # RFC 4303 §3.4.3: the cheap check before the ICV
            mac = self._mac_copy()
            mac.update(esp[:end])
            if not compare_digest(mac.finalize()[:self._icv_size], esp[end:]):
                raise IntegrityError(spi, seq)
            plaintext = self._decrypt(esp[8:end])  # the IV block first: chaining starts there
            pad = plaintext[-2]
            n = k - 2 - pad
            start = iv_end - 8
            # RFC 4303 §2.4: the padding is 1, 2, 3...; the general path raises the precise error.
            if n >= 0 and (not pad or plaintext[start + n:-1] == PADDING[pad]):
                next_header = plaintext[-1]
                payload = plaintext[start:start + n]
                # RFC 4303 §3.4.3: the window moves only now that the ICV verified.
                self._accept(seq, next_header, n)
                return next_header, payload
        return super().unprotect_payload(esp)  # type: ignore[misc]


class CbcTransportPaths(CbcPayloadPaths):
    """``protect``/``unprotect`` of a CBC + HMAC SA in transport mode, for plain IPv4 packets."""

    __slots__ = ()

    _pad_table_20: tuple[bytes, ...]
    _grow: tuple[int, ...]
    _sum_out: tuple[int, ...]

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
                r = total & self._block_mask
                try:
                    head = _pack_v4_spi_seq(0x45, tos, total + self._grow[r], ident_frag, ttl, 50,
                                            0xFFFE - (self._sum_out[r] - csum - proto) % 0xFFFF,
                                            addresses, self.spi, seq)
                except struct.error:  # over 65535 bytes: the general path's UsageError
                    return super().protect(packet, iv=iv)  # type: ignore[misc]
                body = self._encrypt(b"".join((
                    self._rng(self._iv_size), packet[20:total],
                    self._pad_table_20[(proto << self._block_shift) | r])))
                mac = self._mac_copy()
                mac.update(head[20:])
                mac.update(body)
                out = b"".join((head, body, mac.finalize()[:self._icv_size]))
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
                _unpack_v4_spi_seq(packet)
        except struct.error:
            vihl = 0
        # RFC 4303 §3.4.1: fragments are reassembled before IPsec (the general path refuses).
        if vihl == 0x45 and proto == 50 and total <= len(packet) and not ident_frag & 0x3FFF:
            end = total - self._icv_size
            iv_end = 28 + self._iv_size
            k = end - iv_end
            if k > self._block_mask and not k & self._block_mask:
                if spi != self.spi:
                    raise UnknownSpiError(spi)
                replay = self.replay
                top = replay.top
                if seq <= top:
                    replay.check(seq)
                mac = self._mac_copy()
                mac.update(packet[20:end])
                if not compare_digest(mac.finalize()[:self._icv_size], packet[end:total]):
                    raise IntegrityError(spi, seq)
                plaintext = self._decrypt(packet[28:end])
                pad = plaintext[-2]
                n = k - 2 - pad
                start = iv_end - 28
                if n >= 0 and (not pad or plaintext[start + n:-1] == PADDING[pad]):
                    next_header = plaintext[-1]
                    out = _pack_v4(0x45, tos, 20 + n, ident_frag, ttl, next_header,
                                   0xFFFE - (_SUM_IN - csum - total + n + next_header) % 0xFFFF,
                                   addresses) + plaintext[start:start + n]
                    # RFC 4303 §3.4.3: the window moves only now that the ICV verified.
                    self._accept(seq, next_header, n + 20)
                    return out
        return super().unprotect(packet)  # type: ignore[misc]


class CbcTunnelPaths(CbcPayloadPaths):
    """``protect``/``unprotect`` of a CBC + HMAC SA in tunnel mode with an IPv4 outer header."""

    __slots__ = ()

    _outer: bytes
    _outer_ttl: int
    _outer_sum: int
    _grow: tuple[int, ...]

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
                r = total & self._block_mask
                length = total + self._grow[r]
                ident, df = seq & 0xFFFF, ident_frag & 0x4000
                try:
                    head = _pack_outer_spi_seq(
                        0x45, tos, length, ident, df, self._outer_ttl, 50,
                        0xFFFE - (self._outer_sum + tos + length + ident + df) % 0xFFFF,
                        self._outer, self.spi, seq)
                except struct.error:  # over 65535 bytes: the general path's UsageError
                    return super().protect(packet, iv=iv)  # type: ignore[misc]
                body = self._encrypt(b"".join((
                    self._rng(self._iv_size), packet if total == n else packet[:total],
                    self._pad_table[(IPPROTO_IPIP << self._block_shift) | r])))
                mac = self._mac_copy()
                mac.update(head[20:])
                mac.update(body)
                out = b"".join((head, body, mac.finalize()[:self._icv_size]))
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
                _unpack_v4_spi_seq(packet)
        except struct.error:
            vihl = 0
        if vihl == 0x45 and proto == 50 and total <= len(packet) and not ident_frag & 0x3FFF:
            end = total - self._icv_size
            iv_end = 28 + self._iv_size
            k = end - iv_end
            if k > self._block_mask and not k & self._block_mask:
                if spi != self.spi:
                    raise UnknownSpiError(spi)
                replay = self.replay
                top = replay.top
                if seq <= top:
                    replay.check(seq)
                mac = self._mac_copy()
                mac.update(packet[20:end])
                if not compare_digest(mac.finalize()[:self._icv_size], packet[end:total]):
                    raise IntegrityError(spi, seq)
                plaintext = self._decrypt(packet[28:end])
                pad = plaintext[-2]
                n = k - 2 - pad
                start = iv_end - 28
                if n >= 0 and (not pad or plaintext[start + n:-1] == PADDING[pad]):
                    next_header = plaintext[-1]
                    out = plaintext[start:start + n]
                    # The inner packet must be what Next Header says, with its length (RFC 4301
                    # §5.2); the plain IPv4 case is checked here, the others by ``check_inner``.
                    if not (next_header == 4 and n >= 20 and out[0] == 0x45
                            and (out[2] << 8 | out[3]) == n) and next_header != 59:
                        check_inner(out, next_header)
                    # RFC 4303 §3.4.3: the window moves only now that the ICV verified.
                    self._accept(seq, next_header, n)
                    return out
        return super().unprotect(packet)  # type: ignore[misc]

