"""Batches of packets through one SA: ``protect_many`` and ``unprotect_many``.

This module owns the batch form of the IPv4 AES-GCM-16 / ChaCha20-Poly1305 fast path of
``espcore.sa``: the same wire bytes, checks and state changes as calling ``protect`` or
``unprotect`` once per packet (RFC 4303 §3.3 and §3.4), with the per-SA constants and counters
held in local variables between packets. Any packet off the fast path, at a lifetime mark or
near the replay window's edge goes through the single-packet method. A failure is returned in
the packet's place as its ``EspError`` instead of being raised, so one bad packet does not hide
the results of the others.

``BatchPaths`` is a base class of ``SecurityAssociation`` and keeps no state of its own.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag

from espcore.errors import DummyPacket, EspError, IntegrityError, ParseError, UsageError
from espcore.esp import PADDING
from espcore.ip import IPPROTO_ESP, IPPROTO_NONE, check_inner

_V4A = struct.Struct("!BBHHHBBH4s4s")
_V4_ESP = struct.Struct("!BBHHHBBH4s4sIIQ")
_SPI_SEQ = struct.Struct("!II")
_TRAILERS_4 = tuple(PADDING[i >> 8] + bytes((i & 0xFF,)) for i in range(4 << 8))

Buffer = bytes | bytearray | memoryview


class BatchPaths:
    """``protect_many``/``unprotect_many``; the attributes are ``SecurityAssociation``'s."""

    __slots__ = ()

    def protect_many(self, packets: Iterable[Buffer]) -> list[bytes | EspError]:
        """``protect`` each packet in order; a failure is returned in its place, not raised.

        The batch form of the IPv4 AEAD fast path keeps the SA's state in local variables
        between packets; the results are the bytes ``protect`` would have returned one by one.
        """
        results: list[bytes | EspError] = []
        append = results.append
        protect = self.protect
        if not self._fast:
            for packet in packets:
                try:
                    append(protect(packet))
                except EspError as exc:
                    append(exc)
            return results
        encrypt, salt, spi, tunnel = self._aead.encrypt, self._salt, self.spi, self.tunnel
        unpack, pack, trailers = _V4A.unpack_from, _V4_ESP.pack, _TRAILERS_4
        seq, sent = self._next_seq, 0
        bytes_left, packets_left = self._bytes_left, self._packets_left
        for packet in packets:
            n = len(packet)
            if (type(packet) is not bytes or n < 20 or packet[0] != 0x45 or packets_left <= 1
                    or bytes_left <= n or self._hard):
                # Off the fast path, or at a lifetime mark: one by one, with the state saved.
                self._next_seq, self._bytes_left, self._packets_left = seq, bytes_left, packets_left
                self.bytes_protected += sent
                sent = 0
                try:
                    append(protect(packet))
                except EspError as exc:
                    append(exc)
                seq, bytes_left, packets_left = (self._next_seq, self._bytes_left,
                                                 self._packets_left)
                continue
            vihl, tos, total, ident, frag, ttl, proto, csum, src, dst = unpack(packet)
            if total > n or total < 20 or (tunnel is None and frag & 0x3FFF):
                try:
                    protect(packet)  # raises the precise error, changes nothing
                except EspError as exc:
                    append(exc)
                continue
            if tunnel is None:
                pad = -(total - 18) & 3
                length = total + 34 + pad
                s = (0xFFFF - csum) + (0xFFFF - total) + length + (0xFFFF - proto) + IPPROTO_ESP
                s = (s & 0xFFFF) + (s >> 16)
                head = pack(0x45, tos, length, ident, frag, ttl, IPPROTO_ESP,
                            0xFFFF - ((s & 0xFFFF) + (s >> 16)), src, dst, spi, seq, seq)
                body = packet[20:total] + trailers[(pad << 8) | proto]
            else:
                pad = -(total + 2) & 3
                length = total + 54 + pad
                ident, frag = seq & 0xFFFF, frag & 0x4000
                s = tunnel.base_sum + tos + length + ident + frag + IPPROTO_ESP
                s = (s & 0xFFFF) + (s >> 16)
                head = pack(0x45, tos, length, ident, frag, tunnel.ttl, IPPROTO_ESP,
                            0xFFFF - ((s & 0xFFFF) + (s >> 16)), tunnel.packed_source,
                            tunnel.packed_destination, spi, seq, seq)
                body = (packet if total == n else packet[:total]) + trailers[(pad << 8) | 4]
            if length > 0xFFFF:
                append(UsageError(f"protected packet would be {length} bytes, over 65535"))
                continue
            append(head + encrypt(salt + head[28:], body, head[20:28]))
            seq += 1
            sent += total
            bytes_left -= total
            packets_left -= 1
        self._next_seq, self._bytes_left, self._packets_left = seq, bytes_left, packets_left
        self.bytes_protected += sent
        return results

    def unprotect_many(self, packets: Iterable[Buffer]) -> list[bytes | EspError]:
        """``unprotect`` each packet in order; a failure is returned in its place, not raised.

        The batch form of the IPv4 AEAD fast path: the same checks and state changes as
        ``unprotect`` one by one, with the per-SA constants held in local variables.
        """
        results: list[bytes | EspError] = []
        append = results.append
        unprotect = self.unprotect
        if not self._fast:
            for packet in packets:
                try:
                    append(unprotect(packet))
                except EspError as exc:
                    append(exc)
            return results
        decrypt, salt, spi, transport = self._aead.decrypt, self._salt, self.spi, self.tunnel is None
        unpack, unpack_spi, pack, replay = _V4A.unpack_from, _SPI_SEQ.unpack_from, _V4A.pack, self.replay
        for packet in packets:
            n = len(packet)
            if (type(packet) is not bytes or n < 56 or packet[0] != 0x45 or packet[9] != IPPROTO_ESP
                    or self._packets_left <= 1 or self._bytes_left <= n or self._hard):
                try:
                    append(unprotect(packet))
                except EspError as exc:
                    append(exc)
                continue
            vihl, tos, total, ident, frag, ttl, proto, csum, src, dst = unpack(packet)
            got_spi, seq = unpack_spi(packet, 20)
            if (total > n or total < 56 or frag & 0x3FFF or got_spi != spi
                    or seq <= replay.top):
                try:
                    append(unprotect(packet))  # replays, window edges and errors, one by one
                except EspError as exc:
                    append(exc)
                continue
            try:
                plaintext = decrypt(salt + packet[28:36], packet[36:total], packet[20:28])
            except InvalidTag:
                append(IntegrityError(spi, seq))
                continue
            m = len(plaintext)
            pad = plaintext[m - 2]
            payload_len = m - 2 - pad
            next_header = plaintext[m - 1]
            if payload_len < 0 or (pad and plaintext[payload_len:m - 1] != PADDING[pad]):
                append(ParseError("ESP padding or Pad Length is wrong", offset=total - 18))
                continue
            if transport:
                length = 20 + payload_len
                s = (0xFFFF - csum) + (0xFFFF - total) + length + (0xFFFF - proto) + next_header
                s = (s & 0xFFFF) + (s >> 16)
                out = pack(0x45, tos, length, ident, frag, ttl, next_header,
                           0xFFFF - ((s & 0xFFFF) + (s >> 16)), src, dst) + plaintext[:payload_len]
            else:
                out = plaintext[:payload_len]
                if not (next_header == 4 and payload_len >= 20 and out[0] == 0x45
                        and (out[2] << 8 | out[3]) == payload_len):
                    if next_header != IPPROTO_NONE:
                        try:
                            check_inner(out, next_header)
                        except EspError as exc:
                            append(exc)
                            continue
            top = replay.top
            if seq - top < replay.size:
                replay.bitmap = ((replay.bitmap << (seq - top)) | 1) & replay.mask
                replay.top = seq
            else:
                replay.accept(seq)
            if next_header == IPPROTO_NONE:
                append(DummyPacket(spi, seq))
                continue
            append(out)
            size = len(out)
            self.packets_unprotected += 1
            self.bytes_unprotected += size
            self._bytes_left -= size
            self._packets_left -= 1
        return results
