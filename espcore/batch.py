"""Batches of packets through one SA: ``protect_many`` and ``unprotect_many``.

This module owns the batch forms of the per-packet methods: the same wire bytes, checks and
state changes as calling ``protect`` or ``unprotect`` once per packet (RFC 4303 §3.3 and §3.4),
in the same order. A failure is returned in the packet's place as its ``EspError`` instead of
being raised, so one bad packet does not hide the results of the others.

``BatchPaths`` (every SA) calls the per-packet method through one bound-method lookup.
``AeadBatchPaths`` (the SAs of ``espcore.aead_paths``) inlines their IPv4 paths and keeps the
SA's constants, its counters, its next sequence number and its replay window in local
variables for the whole batch: a packet whose result would reach a lifetime mark, a packet out
of order, off the path or failing after its ICV verified goes through the per-packet method
with the state written back first, so lifetimes, events and errors are exactly those of the
packets one by one. A forged or replayed packet changes nothing, as one by one. The state is
written back even if an unexpected exception ends the batch: a sequence number is never reused.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag

from espcore.aead_paths import _GROW_TRANSPORT, _GROW_TUNNEL, _SUM_IN, _SUM_OUT
from espcore.aead_paths import _TUNNEL_TRAILERS, TRAILERS_4
from espcore.errors import EspError, IntegrityError
from espcore.esp import PADDING
from espcore.replay import ReplayWindow

_V4 = struct.Struct("!BBHIBBH8s")
_V4_SPI_SEQ = struct.Struct("!BBHIBBH8sII")
_V4_ESP = struct.Struct("!BBHIBBH8sIIQ")
_OUTER_ESP = struct.Struct("!BBHHHBBH8sIIQ")

Buffer = bytes | bytearray | memoryview


class BatchPaths:
    """``protect_many``/``unprotect_many`` for every SA: the per-packet methods in a loop."""

    __slots__ = ()

    protect: Callable[[Buffer], bytes]
    unprotect: Callable[[Buffer], bytes]

    def protect_many(self, packets: Iterable[Buffer]) -> list[bytes | EspError]:
        """``protect`` each packet in order; a failure is returned in its place, not raised."""
        results: list[bytes | EspError] = []
        append, protect = results.append, self.protect
        for packet in packets:
            try:
                append(protect(packet))
            except EspError as exc:
                append(exc)
        return results

    def unprotect_many(self, packets: Iterable[Buffer]) -> list[bytes | EspError]:
        """``unprotect`` each packet in order; a failure is returned in its place, not raised."""
        results: list[bytes | EspError] = []
        append, unprotect = results.append, self.unprotect
        for packet in packets:
            try:
                append(unprotect(packet))
            except EspError as exc:
                append(exc)
        return results


class AeadBatchPaths:
    """The batch forms of ``espcore.aead_paths``; the attributes are ``SecurityAssociation``'s."""

    __slots__ = ()

    spi: int
    tunnel: object
    replay: ReplayWindow
    bytes_protected: int
    bytes_unprotected: int
    packets_unprotected: int
    _hard: bool
    _next_seq: int
    _salt: bytes
    _seal_esp: Callable[[bytes, Buffer, Buffer, int, int, bytes], bytes]
    _open_esp: Callable[[bytes, Buffer, int, int], bytes]
    _outer: bytes
    _outer_ttl: int
    _outer_sum: int
    _out_bytes_mark: int
    _out_seq_mark: int
    _in_bytes_mark: int
    _in_packets_mark: int
    protect: Callable[[Buffer], bytes]
    unprotect: Callable[[Buffer], bytes]

    def protect_many(self, packets: Iterable[Buffer]) -> list[bytes | EspError]:
        """``protect`` each packet in order; a failure is returned in its place, not raised.

        The results are the bytes ``protect`` would have returned one by one.
        """
        results: list[bytes | EspError] = []
        append, protect = results.append, self.protect
        seal, salt, spi, is_tunnel = self._seal_esp, self._salt, self.spi, self.tunnel is not None
        outer, outer_ttl, outer_sum = self._outer, self._outer_ttl, self._outer_sum
        unpack, pack, pack_outer = _V4.unpack_from, _V4_ESP.pack, _OUTER_ESP.pack
        seq, sent = self._next_seq, self.bytes_protected
        # A hard-expired SA: every packet gets its LifetimeExpired one by one.
        seq_mark = 0 if self._hard else self._out_seq_mark
        bytes_mark = self._out_bytes_mark
        try:
            for packet in packets:
                if type(packet) is bytes:
                    try:
                        vihl, tos, total, ident_frag, ttl, proto, csum, addresses = unpack(packet)
                    except struct.error:
                        vihl = 0
                    n = len(packet)
                    # Only packets that reach no mark: that one goes through ``protect``.
                    if (vihl == 0x45 and 20 <= total <= n and seq < seq_mark
                            and sent + total < bytes_mark):
                        r = total & 3
                        if is_tunnel:
                            length = total + _GROW_TUNNEL[r]
                            ident, df = seq & 0xFFFF, ident_frag & 0x4000
                            if length <= 0xFFFF:
                                head = pack_outer(
                                    0x45, tos, length, ident, df, outer_ttl, 50,
                                    0xFFFE - (outer_sum + tos + length + ident + df) % 0xFFFF,
                                    outer, spi, seq, seq)
                                append(seal(salt, head, packet, 0, total, _TUNNEL_TRAILERS[r]))
                                seq += 1
                                sent += total
                                continue
                        elif not ident_frag & 0x3FFF and total + _GROW_TRANSPORT[r] <= 0xFFFF:
                            head = pack(0x45, tos, total + _GROW_TRANSPORT[r], ident_frag, ttl,
                                        50, 0xFFFE - (_SUM_OUT[r] - csum - proto) % 0xFFFF,
                                        addresses, spi, seq, seq)
                            append(seal(salt, head, packet, 20, total,
                                        TRAILERS_4[(proto << 2) | r]))
                            seq += 1
                            sent += total
                            continue
                # Off the path or at a mark: one by one, with the state written back first.
                self._next_seq, self.bytes_protected = seq, sent
                try:
                    append(protect(packet))
                except EspError as exc:
                    append(exc)
                seq, sent = self._next_seq, self.bytes_protected
                seq_mark, bytes_mark = self._out_seq_mark, self._out_bytes_mark
                if self._hard:
                    seq_mark = 0  # every further packet gets its LifetimeExpired one by one
        finally:
            self._next_seq, self.bytes_protected = seq, sent
        return results

    def unprotect_many(self, packets: Iterable[Buffer]) -> list[bytes | EspError]:
        """``unprotect`` each packet in order; a failure is returned in its place, not raised.

        The same checks and state changes as ``unprotect`` one by one.
        """
        results: list[bytes | EspError] = []
        append, unprotect = results.append, self.unprotect
        open_, salt, spi, is_tunnel = self._open_esp, self._salt, self.spi, self.tunnel is not None
        unpack, pack = _V4_SPI_SEQ.unpack_from, _V4.pack
        replay = self.replay
        top, bitmap, size, mask = replay.top, replay.bitmap, replay.size, replay.mask
        received, count = self.bytes_unprotected, self.packets_unprotected
        bytes_mark = self._in_bytes_mark
        packets_mark = 0 if self._hard else self._in_packets_mark
        try:
            for packet in packets:
                try:
                    vihl, tos, total, ident_frag, ttl, proto, csum, addresses, got, seq = \
                        unpack(packet)
                except struct.error:
                    vihl = 0
                # In-order packets of this SA that reach no packet mark; the rest (replays and
                # the window's edge included) one by one.
                if (vihl == 0x45 and proto == 50 and got == spi and seq > top
                        and seq - top < size and count + 1 < packets_mark
                        and 56 <= total <= len(packet) and not ident_frag & 0x3FFF):
                    try:
                        plaintext = open_(salt, packet, 20, total)
                    except InvalidTag:
                        append(IntegrityError(spi, seq))  # RFC 4303 §3.4.4: nothing changes
                        continue
                    pad = plaintext[-2]
                    n = len(plaintext) - 2 - pad
                    if not pad or plaintext[n:-1] == PADDING[pad]:
                        next_header = plaintext[-1]
                        if is_tunnel:
                            out = plaintext[:n]
                            good = (next_header == 4 and n >= 20 and out[0] == 0x45
                                    and (out[2] << 8 | out[3]) == n)
                        else:
                            out = pack(0x45, tos, 20 + n, ident_frag, ttl, next_header,
                                       0xFFFE - (_SUM_IN - csum - total + n + next_header)
                                       % 0xFFFF, addresses) + plaintext[:n]
                            good = next_header != 59  # IPPROTO_NONE: one by one
                            n += 20
                        if good and received + n < bytes_mark:
                            if seq - top != 1 or bitmap != mask:  # else the bitmap stays full
                                bitmap = ((bitmap << (seq - top)) | 1) & mask
                            top = seq
                            received += n
                            count += 1
                            append(out)
                            continue
                # One by one, with the state written back first.
                replay.top, replay.bitmap = top, bitmap
                self.bytes_unprotected, self.packets_unprotected = received, count
                try:
                    append(unprotect(packet))
                except EspError as exc:
                    append(exc)
                top, bitmap = replay.top, replay.bitmap
                received, count = self.bytes_unprotected, self.packets_unprotected
                bytes_mark, packets_mark = self._in_bytes_mark, self._in_packets_mark
                if self._hard:
                    packets_mark = 0
        finally:
            replay.top, replay.bitmap = top, bitmap
            self.bytes_unprotected, self.packets_unprotected = received, count
        return results
