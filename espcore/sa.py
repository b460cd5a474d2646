"""One direction of one IPsec SA: ``protect`` and ``unprotect`` whole IP packets with ESP or AH.

This module owns what happens per packet around the cryptography: where the ESP header goes
(transport mode after the IP header and the IPv6 headers that must stay in front, RFC 4303
§3.1.1; tunnel mode behind a new outer header, RFC 4301 §5.1.2), the IP header's protocol, length
and checksum fields (the IPv4 checksum is updated incrementally, RFC 1624 eqn. 3), the outbound
sequence counter (RFC 4303 §3.3.3: starts at 1 and never cycles; without ESN it stops at
2^32-1), the inbound order of checks (RFC 4303 §3.4: SPI, the cheap replay check, ICV, then the
window update), the counters the monitor shows and the volume lifetimes (``espcore.lifetime``).
It does not own the ciphers (``espcore.esp``), AH's ICV rules (``espcore.ah``), SPI
demultiplexing (``espcore.sad``) or UDP encapsulation (``espcore.udp_encap``).

A failed ``unprotect`` raises an ``EspError`` and changes nothing: not the replay window, not a
counter. Counters count the bytes of the IP packet handed to ``protect`` or returned by
``unprotect`` (the payload for the ``*_payload`` methods). Integrity without confidentiality
(AH, ESP with the null cipher or AES-GMAC) counts as authenticated bytes only.

The IPv4 paths are written out inline: per packet, Python's cost is the number of operations,
and this is the data path of the whole stack.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag

from espcore.ah import AhEngine
from espcore.batch import BatchPaths
from espcore.errors import (DummyPacket, IntegrityError, LifetimeExpired, ParseError,
                            SequenceExhausted, UnknownSpiError, UsageError)
from espcore.esp import PADDING, EspEngine, Rng, make_engine
from espcore.ip import IPPROTO_AH, IPPROTO_ESP, IPPROTO_NONE, TunnelHeader, check_inner
from espcore.lifetime import (HardLifetimeReached, Lifetime, LifetimeTracker, SaState,
                              SoftLifetimeReached)
from espcore.modes import PacketPaths
from espcore.replay import ReplayWindow
from espcore.transforms import integrity as integrity_named
from espcore.transforms import parse_cipher_name, qualified_name

# IPv4 header with addresses, and the same followed by an ESP header and an 8-byte IV.
_V4A = struct.Struct("!BBHHHBBH4s4s")
_V4_ESP = struct.Struct("!BBHHHBBH4s4sIIQ")
_SPI_SEQ = struct.Struct("!II")
_MAX_SEQ_32 = 0xFFFFFFFF
_MAX_SEQ_64 = 0xFFFFFFFFFFFFFFFF
_NO_LIMIT = 1 << 62  # a budget that never runs out
#: Trailers of 4-byte-aligned ciphers, indexed (pad length << 8) | next header.
_TRAILERS_4 = tuple(PADDING[i >> 8] + bytes((i & 0xFF,)) for i in range(4 << 8))

Buffer = bytes | bytearray | memoryview


class SecurityAssociation(PacketPaths, BatchPaths):
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
                 "tunnel", "lifetime", "replay", "bytes_protected", "packets_unprotected",
                 "bytes_unprotected", "has_integrity", "is_confidential", "_initial_seq",
                 "_bytes_left", "_packets_left",
                 "_engine", "_ah", "_next_seq", "_max_seq", "_tracker", "_proto", "_hard",
                 "_trailers", "_align", "_fast", "_aead", "_salt")

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
            engine = make_engine(transform, cipher_key, integ, integrity_key, spi=spi,
                                 esn=self.esn, rng=rng)
            self._engine = engine
            self.key_bits = engine.key_bits
            self.cipher_name: str | None = qualified_name(transform, engine.key_bits)
            self.integrity_name = integ.name if integ is not None else None
            self.has_integrity, self.is_confidential = engine.has_integrity, engine.is_confidential
            self._proto, self._align = IPPROTO_ESP, engine.align_mask
        else:
            if cipher is not None:
                raise UsageError("AH has no cipher")
            if integrity is None:
                raise UsageError("an AH SA needs an integrity transform")
            self._ah = AhEngine(integrity_named(integrity), integrity_key, spi=spi, esn=self.esn)
            self.cipher_name, self.key_bits = None, 0
            self.integrity_name = self._ah.transform.name
            self.has_integrity, self.is_confidential = True, False
            self._proto, self._align = IPPROTO_AH, 3
        self._max_seq = _MAX_SEQ_64 if self.esn else _MAX_SEQ_32
        if not 1 <= initial_sequence <= self._max_seq:
            raise UsageError(f"initial sequence {initial_sequence} out of range")
        self._next_seq = initial_sequence
        # RFC 4303 §3.4.3: anti-replay is only meaningful when integrity is on; ESN inference
        # needs a window even then.
        window = replay_window if self.has_integrity else 0
        if self.esn and window == 0:
            window = 64
        self.replay = ReplayWindow(window, esn=self.esn, top=initial_sequence - 1)
        self._initial_seq = initial_sequence
        self.bytes_protected = self.packets_unprotected = self.bytes_unprotected = 0
        self._tracker = LifetimeTracker(spi, lifetime)
        self._hard = False
        self._bytes_left = self._packets_left = 0
        self._counted()  # sets the budgets to the first lifetime marks
        self._trailers: dict[int, bytes] = {}
        # The inlined IPv4 path: one AEAD call with a 16-byte ICV, 32-bit sequence numbers.
        engine = self._engine
        self._fast = (engine is not None and engine.kind == "aead" and not self.esn
                      and (self.tunnel is None or self.tunnel.version == 4))
        self._aead = engine._aead if self._fast else None
        self._salt = engine._salt if self._fast else b""

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
    def packets_protected(self) -> int:
        """Packets protected so far: each took one sequence number."""
        return self._next_seq - self._initial_seq

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
        return self._hard

    def next_event(self) -> SoftLifetimeReached | HardLifetimeReached | None:
        """The oldest queued lifetime event, or ``None`` (poll after processing packets)."""
        return self._tracker.next_event()

    # -- bookkeeping -----------------------------------------------------------------------------

    def _expired(self) -> LifetimeExpired:
        if self._next_seq > self._max_seq:
            return SequenceExhausted(self.spi)
        return LifetimeExpired(self.spi, self._tracker.expired_by or "lifetime")

    def _counted(self) -> None:
        """A budget ran out: update the lifetime state and set the budgets to the next marks.

        The per-packet paths only decrement ``_bytes_left`` and ``_packets_left`` (shared by
        both directions) and call this when one reaches 0; it recomputes everything exactly.
        """
        total_bytes = self.bytes_protected + self.bytes_unprotected
        total_packets = self.packets_protected + self.packets_unprotected
        tracker = self._tracker
        if total_bytes >= tracker.byte_mark or total_packets >= tracker.packet_mark:
            tracker.crossed(total_bytes, total_packets)
        if self._next_seq > self._max_seq:
            tracker.exhaust("sequence")
        self._hard = tracker.state is SaState.HARD_EXPIRED
        self._bytes_left = min(tracker.byte_mark - total_bytes, _NO_LIMIT)
        # The sequence space is a packet budget too: the last number ends the SA.
        self._packets_left = min(tracker.packet_mark - total_packets,
                                 self._max_seq - self._next_seq + 1, _NO_LIMIT)

    def _esp_engine(self) -> EspEngine:
        if self._engine is None:
            raise UsageError("payload-level processing is for ESP SAs only")
        return self._engine

    # -- outbound --------------------------------------------------------------------------------

    def protect(self, packet: Buffer, *, iv: bytes | None = None) -> bytes:
        """The IP packet protected by this SA (``iv`` fixes the IV, for tests and vectors)."""
        if self._hard:
            raise self._expired()
        seq = self._next_seq
        if self._fast and iv is None and type(packet) is bytes and len(packet) >= 20 \
                and packet[0] == 0x45:
            vihl, tos, total, ident, frag, ttl, proto, csum, src, dst = _V4A.unpack_from(packet)
            if total > len(packet) or total < 20:
                raise ParseError(f"IPv4 total length {total} inconsistent with the buffer",
                                 offset=2)
            tunnel = self.tunnel
            if tunnel is None:
                if frag & 0x3FFF:
                    raise UsageError("transport mode cannot protect a fragment (RFC 4301 §7)")
                pad = -(total - 18) & 3
                length = total + 34 + pad  # + ESP header, IV, trailer, ICV
                # RFC 1624 eqn. 3: total length and protocol change; TTL cancels out.
                s = (0xFFFF - csum) + (0xFFFF - total) + length + (0xFFFF - proto) + IPPROTO_ESP
                s = (s & 0xFFFF) + (s >> 16)
                head = _V4_ESP.pack(0x45, tos, length, ident, frag, ttl, IPPROTO_ESP,
                                    0xFFFF - ((s & 0xFFFF) + (s >> 16)), src, dst, self.spi,
                                    seq & _MAX_SEQ_32, seq)
                body = packet[20:total] + _TRAILERS_4[(pad << 8) | proto]
            else:
                pad = -(total + 2) & 3
                length = total + 54 + pad  # + outer header, ESP header, IV, trailer, ICV
                ident, frag = seq & 0xFFFF, frag & 0x4000  # RFC 4301 §5.1.2.1: DF copied
                s = tunnel.base_sum + tos + length + ident + frag + IPPROTO_ESP
                s = (s & 0xFFFF) + (s >> 16)
                head = _V4_ESP.pack(0x45, tos, length, ident, frag, tunnel.ttl, IPPROTO_ESP,
                                    0xFFFF - ((s & 0xFFFF) + (s >> 16)), tunnel.packed_source,
                                    tunnel.packed_destination, self.spi, seq, seq)
                body = (packet if total == len(packet) else packet[:total]) + _TRAILERS_4[
                    (pad << 8) | 4]
            if length > 0xFFFF:
                raise UsageError(f"protected packet would be {length} bytes, over 65535")
            # RFC 4106 §4/§5: nonce = salt || IV, AAD = SPI || sequence number.
            out = head + self._aead.encrypt(self._salt + head[28:], body, head[20:28])
            n = total
        else:
            if not isinstance(packet, (bytes, bytearray)):
                packet = bytes(packet)
            out = self._protect_general(packet, seq, iv)
            n = len(packet)
        self._next_seq = seq + 1
        self.bytes_protected += n
        self._bytes_left -= n
        self._packets_left -= 1
        if self._bytes_left <= 0 or self._packets_left <= 0:
            self._counted()
        return out

    def protect_payload(self, payload: Buffer, next_header: int, *,
                        iv: bytes | None = None) -> bytes:
        """ESP only: the bytes SPI..ICV carrying ``payload``, without an IP header.

        For UDP-encapsulated ESP on a socket and for payload-level test vectors. In tunnel
        mode ``payload`` is the inner packet and ``next_header`` 4 or 41.
        """
        engine = self._esp_engine()
        if not 0 <= next_header <= 255:
            raise UsageError(f"next header {next_header} out of range")
        if self._hard:
            raise self._expired()
        seq = self._next_seq
        out = b"".join(engine.seal(
            bytes(payload) + self._trailer(len(payload), next_header), seq, iv))
        self._next_seq = seq + 1
        self.bytes_protected += len(payload)
        self._bytes_left -= len(payload)
        self._packets_left -= 1
        if self._bytes_left <= 0 or self._packets_left <= 0:
            self._counted()
        return out

    # -- inbound ---------------------------------------------------------------------------------

    def unprotect(self, packet: Buffer) -> bytes:
        """The original IP packet (transport) or the inner packet (tunnel).

        Raises ``ParseError``, ``UnknownSpiError``, ``ReplayError``, ``IntegrityError``,
        ``LifetimeExpired`` or ``DummyPacket``; only ``DummyPacket`` follows a state change.
        """
        if self._hard:
            raise self._expired()
        if not (self._fast and type(packet) is bytes and len(packet) >= 56 and packet[0] == 0x45
                and packet[9] == IPPROTO_ESP):
            return self._unprotect_general(packet)
        vihl, tos, total, ident, frag, ttl, proto, csum, src, dst = _V4A.unpack_from(packet)
        if total > len(packet) or total < 56 or frag & 0x3FFF:
            return self._unprotect_general(packet)  # raises the precise ParseError
        spi, seq = _SPI_SEQ.unpack_from(packet, 20)
        if spi != self.spi:
            raise UnknownSpiError(spi)
        replay = self.replay
        if seq <= replay.top:
            replay.check(seq)  # RFC 4303 §3.4.3: the cheap check before the ICV
        try:
            plaintext = self._aead.decrypt(self._salt + packet[28:36], packet[36:total],
                                           packet[20:28])
        except InvalidTag:
            raise IntegrityError(spi, seq) from None
        m = len(plaintext)
        pad = plaintext[m - 2]
        payload_len = m - 2 - pad
        # RFC 4303 §2.4: the default padding is 1, 2, 3...; the receiver checks it.
        if payload_len < 0 or (pad and plaintext[payload_len:m - 1] != PADDING[pad]):
            raise ParseError("ESP padding or Pad Length is wrong", offset=total - 18)
        next_header = plaintext[m - 1]
        if self.tunnel is None:
            length = 20 + payload_len
            s = (0xFFFF - csum) + (0xFFFF - total) + length + (0xFFFF - proto) + next_header
            s = (s & 0xFFFF) + (s >> 16)
            out = _V4A.pack(0x45, tos, length, ident, frag, ttl, next_header,
                            0xFFFF - ((s & 0xFFFF) + (s >> 16)), src, dst) + plaintext[:payload_len]
        else:
            out = plaintext[:payload_len]
            if not (next_header == 4 and payload_len >= 20 and out[0] == 0x45
                    and (out[2] << 8 | out[3]) == payload_len) and next_header != IPPROTO_NONE:
                check_inner(out, next_header)  # the general check, and its precise error
        # RFC 4303 §3.4.3: the window moves only now that the ICV verified.
        top = replay.top
        if seq > top and seq - top < replay.size:
            replay.bitmap = ((replay.bitmap << (seq - top)) | 1) & replay.mask
            replay.top = seq
        else:
            replay.accept(seq)
        if next_header == IPPROTO_NONE:
            raise DummyPacket(spi, seq)  # RFC 4303 §2.6: authentic, then dropped
        self.packets_unprotected += 1
        n = len(out)
        self.bytes_unprotected += n
        self._bytes_left -= n
        self._packets_left -= 1
        if self._bytes_left <= 0 or self._packets_left <= 0:
            self._counted()
        return out

    def unprotect_payload(self, esp: Buffer) -> tuple[int, bytes]:
        """ESP only: (Next Header, payload) from the bytes SPI..ICV (UDP-encapsulated input)."""
        self._esp_engine()
        if self._hard:
            raise self._expired()
        next_header, plaintext, payload_len, seq = self._esp_open(esp, 0, len(esp))
        payload = plaintext[:payload_len]
        self._accept(seq, next_header, payload_len)
        return next_header, payload
