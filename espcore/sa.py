"""One direction of one IPsec SA: ``protect`` and ``unprotect`` whole IP packets with ESP or AH.

This module owns what happens per packet around the cryptography: where the ESP/AH header goes
(transport mode after the IP header and the IPv6 headers that must stay in front, RFC 4303
§3.1.1 / RFC 4302 §3.1.1; tunnel mode behind a new outer header, RFC 4301 §5.1.2), the outer
header's protocol, length and checksum fields, the outbound sequence counter (RFC 4303 §3.3.3:
starts at 1 and never cycles; without ESN it stops at 2^32-1), the inbound order of checks
(RFC 4303 §3.4: SPI, cheap replay check, ICV, then the window update), the counters the monitor
shows and the volume lifetimes (``espcore.lifetime``). It does not own the ciphers
(``espcore.esp``, ``espcore.ah``), SPI demultiplexing (``espcore.sad``) or UDP encapsulation
(``espcore.udp_encap``).

A failed ``unprotect`` raises an ``EspError`` and changes nothing: not the replay window, not a
counter. Counters count the bytes of the IP packet handed to ``protect`` or returned by
``unprotect`` (the payload for the ``*_payload`` methods). Integrity without confidentiality
(AH, ESP with the null cipher or AES-GMAC) counts as authenticated bytes only.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Iterable

from espcore.ah import AhEngine
from espcore.errors import (DummyPacket, EspError, IntegrityError, LifetimeExpired, ParseError,
                            SequenceExhausted, UnknownSpiError, UsageError)
from espcore.esp import EspEngine, Rng
from espcore.ip import (IPPROTO_AH, IPPROTO_ESP, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_NONE,
                        TunnelHeader, ipv4_header_length, ipv6_find_header, ipv6_insert_point,
                        ipv6_payload_end, set_ipv4_checksum)
from espcore.lifetime import (HardLifetimeReached, Lifetime, LifetimeTracker, SaState,
                              SoftLifetimeReached)
from espcore.replay import ReplayWindow
from espcore.transforms import integrity as integrity_named
from espcore.transforms import parse_cipher_name, qualified_name

_HEADER = struct.Struct("!II")
_MAX_SEQ_32 = 0xFFFFFFFF
_MAX_SEQ_64 = 0xFFFFFFFFFFFFFFFF


def _inner(packet: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Length and tunnel Next Header (4 or 41) of an IP packet to be tunnelled."""
    version = packet[0] >> 4 if packet else 0
    if version == 4:
        return ipv4_header_length(packet)[1], IPPROTO_IPIP
    if version == 6:
        return ipv6_payload_end(packet), IPPROTO_IPV6
    raise ParseError("not an IPv4 or IPv6 packet", offset=0)


def _check_inner(inner: bytearray, next_header: int) -> None:
    """RFC 4303 §3.4.4.1 leaves inner selector checks to the caller; the inner packet must at
    least be the IP packet the Next Header field announces, with consistent lengths."""
    try:
        length, expected = _inner(inner)
    except ParseError as exc:
        raise ParseError(f"tunnelled packet: {exc}") from None
    if expected != next_header or length != len(inner):
        raise ParseError(f"tunnelled packet does not match Next Header {next_header}")


class SecurityAssociation:
    """One direction of one ESP or AH SA.

    ``protocol`` is ``"esp"`` or ``"ah"``; ``mode`` ``"transport"`` or ``"tunnel"`` (then
    ``tunnel_source``/``tunnel_destination``, IPv4 or IPv6, and ``tunnel_ttl``). ESP takes a
    ``cipher`` name from ``espcore.transforms`` (key-qualified names such as ``aes-cbc-256`` pin
    the key size; otherwise it is ``len(cipher_key)`` minus the salt) and, unless the cipher is a
    combined mode, an ``integrity`` name; AH takes ``integrity`` only. ``cipher_key`` includes
    the 4-byte salt of CTR/GCM/GMAC/ChaCha20 at its end. ``replay_window`` is the window size
    (64 by default, 0 disables it; it is off anyway without integrity), ``esn`` turns on 64-bit
    sequence numbers, ``lifetime`` sets soft/hard byte and packet limits, ``initial_sequence``
    the first outbound number and the start of the inbound window (tests and vectors), ``rng``
    the randomness for CBC IVs.
    """

    __slots__ = ("spi", "protocol", "mode", "esn", "cipher_name", "integrity_name", "key_bits",
                 "tunnel", "lifetime", "replay", "packets_protected", "bytes_protected",
                 "packets_unprotected", "bytes_unprotected", "has_integrity", "is_confidential",
                 "_engine", "_ah", "_next_seq", "_max_seq", "_tracker", "_proto", "_slack",
                 "_protect", "_unprotect")

    def __init__(self, *, protocol: str = "esp", spi: int, mode: str = "transport",
                 cipher: str | None = None, cipher_key: bytes = b"", integrity: str | None = None,
                 integrity_key: bytes = b"", tunnel_source: object = None,
                 tunnel_destination: object = None, tunnel_ttl: int = 64,
                 replay_window: int = 64, esn: bool = False, lifetime: Lifetime = Lifetime(),
                 initial_sequence: int = 1, rng: Rng = os.urandom) -> None:
        if protocol not in ("esp", "ah"):
            raise UsageError(f"protocol must be 'esp' or 'ah', not {protocol!r}")
        if mode not in ("transport", "tunnel"):
            raise UsageError(f"mode must be 'transport' or 'tunnel', not {mode!r}")
        if not 256 <= spi <= 0xFFFFFFFF:
            # RFC 4303 §2.1: 0 is reserved for local use and 1-255 by IANA.
            raise UsageError(f"SPI 0x{spi:x} is reserved or out of range")
        self.spi, self.protocol, self.mode, self.esn = spi, protocol, mode, bool(esn)
        self.lifetime = lifetime
        if mode == "tunnel":
            if tunnel_source is None or tunnel_destination is None:
                raise UsageError("tunnel mode needs tunnel_source and tunnel_destination")
            self.tunnel: TunnelHeader | None = TunnelHeader(tunnel_source, tunnel_destination,
                                                            ttl=tunnel_ttl)
        else:
            if tunnel_source is not None or tunnel_destination is not None:
                raise UsageError("tunnel endpoints given for a transport-mode SA")
            self.tunnel = None
        self._engine: EspEngine | None = None
        self._ah: AhEngine | None = None
        if protocol == "esp":
            if cipher is None:
                raise UsageError("an ESP SA needs a cipher ('null' for integrity only)")
            transform, named_bits = parse_cipher_name(cipher)
            if named_bits is not None and len(cipher_key) != transform.key_bytes(named_bits):
                raise UsageError(f"{cipher} takes {transform.key_bytes(named_bits)} key bytes "
                                 f"(salt included), not {len(cipher_key)}")
            integ = integrity_named(integrity) if integrity is not None else None
            self._engine = EspEngine(transform, cipher_key, integ, integrity_key, spi=spi,
                                     esn=self.esn, rng=rng)
            self.key_bits = self._engine.key_bits
            self.cipher_name: str | None = qualified_name(transform, self.key_bits)
            self.integrity_name = integ.name if integ is not None else None
            self.has_integrity = self._engine.has_integrity
            self.is_confidential = self._engine.is_confidential
            self._proto, self._slack = IPPROTO_ESP, self._engine.seal_slack
        else:
            if cipher is not None:
                raise UsageError("AH has no cipher")
            if integrity is None:
                raise UsageError("an AH SA needs an integrity transform")
            self._ah = AhEngine(integrity_named(integrity), integrity_key, spi=spi, esn=self.esn)
            self.cipher_name, self.key_bits = None, 0
            self.integrity_name = self._ah.transform.name
            self.has_integrity, self.is_confidential = True, False
            self._proto, self._slack = IPPROTO_AH, 0
        self._max_seq = _MAX_SEQ_64 if self.esn else _MAX_SEQ_32
        if not 1 <= initial_sequence <= self._max_seq:
            raise UsageError(f"initial sequence {initial_sequence} out of range")
        self._next_seq = initial_sequence
        # RFC 4303 §3.4.3: anti-replay is only meaningful when integrity is on.
        window = replay_window if self.has_integrity else 0
        if self.esn and window == 0:
            window = 64 if self.has_integrity else 32
        self.replay = ReplayWindow(window, esn=self.esn, top=initial_sequence - 1)
        self.packets_protected = self.bytes_protected = 0
        self.packets_unprotected = self.bytes_unprotected = 0
        self._tracker = LifetimeTracker(spi, lifetime)
        if protocol == "esp":
            self._protect = self._esp_tunnel if self.tunnel else self._esp_transport
            self._unprotect = self._esp_open_tunnel if self.tunnel else self._esp_open_transport
        else:
            self._protect = self._ah_protect
            self._unprotect = self._ah_open

    def __repr__(self) -> str:
        transforms = "/".join(n for n in (self.cipher_name, self.integrity_name) if n)
        return (f"<SecurityAssociation {self.protocol.upper()} 0x{self.spi:08x} {self.mode} "
                f"{transforms}{' esn' if self.esn else ''} {self.state.value}>")

    # -- monitor view ----------------------------------------------------------------------------

    @property
    def authenticated_bytes(self) -> int:
        """Bytes that went through this SA with integrity protection."""
        return self.bytes_protected + self.bytes_unprotected if self.has_integrity else 0

    @property
    def confidential_bytes(self) -> int:
        """Bytes that went through this SA encrypted."""
        return self.bytes_protected + self.bytes_unprotected if self.is_confidential else 0

    @property
    def next_sequence(self) -> int:
        """The sequence number the next outbound packet will carry."""
        return self._next_seq

    @property
    def replay_window_size(self) -> int:
        return self.replay.size

    @property
    def state(self) -> SaState:
        return self._tracker.state

    @property
    def is_soft_expired(self) -> bool:
        """A soft limit was reached (or a hard one): negotiate the next SA."""
        return self._tracker.state is not SaState.ACTIVE

    @property
    def is_hard_expired(self) -> bool:
        return self._tracker.state is SaState.HARD_EXPIRED

    def next_event(self) -> SoftLifetimeReached | HardLifetimeReached | None:
        """The oldest queued lifetime event, or ``None`` (poll after processing packets)."""
        return self._tracker.next_event()

    # -- outbound --------------------------------------------------------------------------------

    def _take_sequence(self) -> int:
        tracker = self._tracker
        if tracker.state is SaState.HARD_EXPIRED:
            if self._next_seq > self._max_seq:
                raise SequenceExhausted(self.spi)
            raise LifetimeExpired(self.spi, tracker.expired_by or 'lifetime')
        return self._next_seq

    def _count_out(self, seq: int, n: int) -> None:
        self._next_seq = seq + 1
        self.packets_protected += 1
        self.bytes_protected += n
        tracker = self._tracker
        if (self.bytes_protected + self.bytes_unprotected >= tracker.byte_mark
                or self.packets_protected + self.packets_unprotected >= tracker.packet_mark):
            tracker.crossed(self.bytes_protected + self.bytes_unprotected,
                            self.packets_protected + self.packets_unprotected)
        if seq == self._max_seq:
            tracker.exhaust("sequence")

    def protect(self, packet: bytes | bytearray | memoryview, *, iv: bytes | None = None
                ) -> bytes:
        """The IP packet protected by this SA (``iv`` fixes the IV, for tests and vectors)."""
        seq = self._take_sequence()
        out = self._protect(packet, seq, iv)
        self._count_out(seq, len(packet))
        return out

    def protect_many(self, packets: Iterable[bytes | bytearray | memoryview]) -> list[bytes]:
        """``protect`` each packet in order; an error stops the batch (earlier ones are sent)."""
        return [self.protect(p) for p in packets]

    def protect_payload(self, payload: bytes | bytearray | memoryview, next_header: int, *,
                        iv: bytes | None = None) -> bytes:
        """ESP only: the bytes from SPI to ICV carrying ``payload`` (no IP header).

        For UDP-encapsulated ESP over a socket, and for payload-level test vectors. In tunnel
        mode ``payload`` is the inner packet and ``next_header`` 4 or 41.
        """
        engine = self._esp_engine()
        if not 0 <= next_header <= 255:
            raise UsageError(f"next header {next_header} out of range")
        seq = self._take_sequence()
        n = engine.sealed_length(len(payload))
        buf = bytearray(n + self._slack)
        engine.seal_into(buf, 0, payload, next_header, seq, iv)
        if self._slack:
            del buf[n:]
        self._count_out(seq, len(payload))
        return bytes(buf)

    def _esp_engine(self) -> EspEngine:
        if self._engine is None:
            raise UsageError("payload-level processing is for ESP SAs only")
        return self._engine

    def _esp_transport(self, packet: bytes | bytearray | memoryview, seq: int,
                       iv: bytes | None) -> bytes:
        engine = self._engine
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            ihl, total = ipv4_header_length(packet)
            if (packet[6] & 0x3F) or packet[7]:
                raise UsageError("transport mode cannot protect a fragment (RFC 4301 §7)")
            length = ihl + engine.sealed_length(total - ihl)
            if length > 0xFFFF:
                raise UsageError(f"protected packet would be {length} bytes, over 65535")
            buf = bytearray(length + self._slack)
            buf[:ihl] = packet[:ihl]
            engine.seal_into(buf, ihl, memoryview(packet)[ihl:total], packet[9], seq, iv)
            buf[2] = length >> 8
            buf[3] = length & 0xFF
            buf[9] = IPPROTO_ESP
            set_ipv4_checksum(buf)
        elif version == 6:
            end = ipv6_payload_end(packet)
            start, nh_at = ipv6_insert_point(packet, end)
            length = start + engine.sealed_length(end - start)
            if length - 40 > 0xFFFF:
                raise UsageError(f"protected payload would be {length - 40} bytes, over 65535")
            buf = bytearray(length + self._slack)
            buf[:start] = packet[:start]
            engine.seal_into(buf, start, memoryview(packet)[start:end], packet[nh_at], seq, iv)
            buf[nh_at] = IPPROTO_ESP
            buf[4] = (length - 40) >> 8
            buf[5] = (length - 40) & 0xFF
        else:
            raise ParseError("not an IPv4 or IPv6 packet", offset=0)
        if self._slack:
            del buf[length:]
        return bytes(buf)

    def _esp_tunnel(self, packet: bytes | bytearray | memoryview, seq: int,
                    iv: bytes | None) -> bytes:
        engine, tunnel = self._engine, self.tunnel
        inner_len, next_header = _inner(packet)
        length = tunnel.length + engine.sealed_length(inner_len)
        if length - (0 if tunnel.version == 4 else 40) > 0xFFFF:
            raise UsageError(f"tunnelled packet of {inner_len} bytes is too large")
        buf = bytearray(length + self._slack)
        tunnel.write(buf, packet, IPPROTO_ESP, length, seq)
        engine.seal_into(buf, tunnel.length,
                         packet if inner_len == len(packet) else memoryview(packet)[:inner_len],
                         next_header, seq, iv)
        if self._slack:
            del buf[length:]
        return bytes(buf)

    def _ah_protect(self, packet: bytes | bytearray | memoryview, seq: int,
                    iv: bytes | None) -> bytes:
        ah = self._ah
        if iv is not None:
            raise UsageError("AH has no IV")
        view = memoryview(packet)
        if self.tunnel is not None:
            inner_len, next_header = _inner(packet)
            start = self.tunnel.length
            ah_len = ah.header_length(self.tunnel.version)
            length = start + ah_len + inner_len
            buf = bytearray(length)
            self.tunnel.write(buf, packet, IPPROTO_AH, length, seq)
            payload = view[:inner_len]
        else:
            version = packet[0] >> 4 if packet else 0
            if version == 4:
                start, end = ipv4_header_length(packet)
                if (packet[6] & 0x3F) or packet[7]:
                    raise UsageError("transport mode cannot protect a fragment (RFC 4301 §7)")
                nh_at = 9
            elif version == 6:
                end = ipv6_payload_end(packet)
                start, nh_at = ipv6_insert_point(packet, end)
            else:
                raise ParseError("not an IPv4 or IPv6 packet", offset=0)
            ah_len = ah.header_length(version)
            length = end + ah_len
            buf = bytearray(length)
            buf[:start] = view[:start]
            next_header = packet[nh_at]
            buf[nh_at] = IPPROTO_AH
            payload = view[start:end]
        version = buf[0] >> 4
        if (length if version == 4 else length - 40) > 0xFFFF:
            raise UsageError(f"protected packet would be {length} bytes, too large")
        buf[2 if version == 4 else 4] = (length if version == 4 else length - 40) >> 8
        buf[3 if version == 4 else 5] = (length if version == 4 else length - 40) & 0xFF
        ah.write_header(buf, start, next_header, seq, version)
        buf[start + ah_len:] = payload
        buf[start + 12:start + 12 + ah.icv_size] = ah.icv(buf, start, length, seq, sending=True)
        if version == 4:
            set_ipv4_checksum(buf)
        return bytes(buf)

    # -- inbound ---------------------------------------------------------------------------------

    def unprotect(self, packet: bytes | bytearray | memoryview) -> bytes:
        """The original IP packet (transport) or the inner packet (tunnel).

        Raises ``ParseError``, ``UnknownSpiError``, ``ReplayError``, ``IntegrityError``,
        ``LifetimeExpired`` or ``DummyPacket``; only ``DummyPacket`` follows a state change.
        """
        if self._tracker.state is SaState.HARD_EXPIRED:
            raise LifetimeExpired(self.spi, self._tracker.expired_by or 'lifetime')
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            start, end = ipv4_header_length(packet)
            if packet[9] != self._proto:
                raise ParseError(f"IPv4 protocol {packet[9]} is not {self._proto}", offset=9)
            if (packet[6] & 0x3F) or packet[7]:
                # RFC 4303 §3.4.1: fragments are reassembled before IPsec processing.
                raise ParseError("IPsec packet is a fragment", offset=6)
            nh_at = 9
        elif version == 6:
            end = ipv6_payload_end(packet)
            start, nh_at = ipv6_find_header(packet, end, self._proto)
        else:
            raise ParseError("not an IPv4 or IPv6 packet", offset=0)
        return self._unprotect(packet, start, end, nh_at)

    def unprotect_many(self, packets: Iterable[bytes | bytearray | memoryview]
                       ) -> list[bytes | EspError]:
        """``unprotect`` each packet; a failure is returned in its place, not raised."""
        results: list[bytes | EspError] = []
        for packet in packets:
            try:
                results.append(self.unprotect(packet))
            except EspError as exc:
                results.append(exc)
        return results

    def unprotect_payload(self, esp: bytes | bytearray | memoryview) -> tuple[int, bytes]:
        """ESP only: (Next Header, payload) from the bytes SPI..ICV (UDP-encapsulated input)."""
        engine = self._esp_engine()
        if self._tracker.state is SaState.HARD_EXPIRED:
            raise LifetimeExpired(self.spi, self._tracker.expired_by or 'lifetime')
        view = memoryview(esp)
        out = bytearray(max(len(view) - 8 - engine.iv_size - engine.icv_size, 0))
        next_header, n, seq = self._esp_open(view, out, 0)
        del out[n:]
        self._count_in(seq, n, next_header)
        return next_header, bytes(out)

    def _esp_open(self, esp: memoryview, out: bytearray, off: int) -> tuple[int, int, int]:
        engine = self._engine
        if len(esp) < engine.min_length():
            raise ParseError(f"ESP packet of {len(esp)} bytes is too short", offset=0)
        spi, seq_low = _HEADER.unpack_from(esp)
        if spi != self.spi:
            raise UnknownSpiError(spi)
        replay = self.replay
        seq = replay.infer(seq_low)
        replay.check(seq)  # RFC 4303 §3.4.3: the cheap check before the ICV
        next_header, n = engine.open_into(esp, seq, out, off)
        return next_header, n, seq

    def _count_in(self, seq: int, n: int, next_header: int) -> None:
        # RFC 4303 §3.4.3: the window moves only for a packet whose ICV verified.
        self.replay.accept(seq)
        if next_header == IPPROTO_NONE:
            raise DummyPacket(self.spi, seq)  # RFC 4303 §2.6: authentic, then dropped
        self.packets_unprotected += 1
        self.bytes_unprotected += n
        tracker = self._tracker
        if (self.bytes_protected + self.bytes_unprotected >= tracker.byte_mark
                or self.packets_protected + self.packets_unprotected >= tracker.packet_mark):
            tracker.crossed(self.bytes_protected + self.bytes_unprotected,
                            self.packets_protected + self.packets_unprotected)

    def _esp_open_transport(self, packet: bytes | bytearray | memoryview, start: int, end: int,
                            nh_at: int) -> bytes:
        engine = self._engine
        esp = memoryview(packet)[start:end]
        out = bytearray(start + max(len(esp) - 8 - engine.iv_size - engine.icv_size, 0))
        out[:start] = packet[:start]
        next_header, n, seq = self._esp_open(esp, out, start)
        del out[start + n:]
        length = start + n
        out[nh_at] = next_header
        if out[0] >> 4 == 4:
            out[2] = length >> 8
            out[3] = length & 0xFF
            set_ipv4_checksum(out)
        else:
            out[4] = (length - 40) >> 8
            out[5] = (length - 40) & 0xFF
        self._count_in(seq, length, next_header)
        return bytes(out)

    def _esp_open_tunnel(self, packet: bytes | bytearray | memoryview, start: int, end: int,
                         nh_at: int) -> bytes:
        engine = self._engine
        esp = memoryview(packet)[start:end]
        out = bytearray(max(len(esp) - 8 - engine.iv_size - engine.icv_size, 0))
        next_header, n, seq = self._esp_open(esp, out, 0)
        del out[n:]
        if next_header != IPPROTO_NONE:
            _check_inner(out, next_header)
        self._count_in(seq, n, next_header)
        return bytes(out)

    def _ah_open(self, packet: bytes | bytearray | memoryview, start: int, end: int,
                 nh_at: int) -> bytes:
        ah = self._ah
        view = memoryview(packet)
        version = packet[0] >> 4
        ah_len = ah.header_length(version)
        if end - start < 12 or (view[start + 1] + 2) * 4 != ah_len or start + ah_len > end:
            raise ParseError(f"AH header length does not match the SA's {ah_len} bytes",
                             offset=start)
        spi, seq_low = _HEADER.unpack_from(view, start + 4)
        if spi != self.spi:
            raise UnknownSpiError(spi, protocol="ah")
        replay = self.replay
        seq = replay.infer(seq_low)
        replay.check(seq)
        expected = ah.icv(view, start, end, seq, sending=False)
        if not hmac.compare_digest(expected, view[start + 12:start + 12 + ah.icv_size]):
            raise IntegrityError(self.spi, seq)
        next_header = view[start]
        if self.tunnel is not None:
            out = bytearray(view[start + ah_len:end])
            if next_header != IPPROTO_NONE:
                _check_inner(out, next_header)
        else:
            out = bytearray(view[:start])
            out += view[start + ah_len:end]
            out[nh_at] = next_header
            length = len(out)
            if version == 4:
                out[2] = length >> 8
                out[3] = length & 0xFF
                set_ipv4_checksum(out)
            else:
                out[4] = (length - 40) >> 8
                out[5] = (length - 40) & 0xFF
        self._count_in(seq, len(out), next_header)
        return bytes(out)
