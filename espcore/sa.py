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

The methods here are the general paths, for every protocol, cipher, mode and IP version. An SA
whose combination has a specialised path (``espcore.aead_paths``: AES-GCM-16 and
ChaCha20-Poly1305; ``espcore.cbc_paths``: a CBC cipher with an HMAC; both without ESN) becomes
an instance of a subclass that overrides the per-packet methods, chosen once here, so no packet
pays for dispatch; it falls back to these methods for any packet off its path. Per packet,
Python's cost is the number of operations, and this is the data path of the whole stack.
"""

from __future__ import annotations

import os

from espcore.aead_paths import AeadPayloadPaths, AeadTransportPaths, AeadTunnelPaths
from espcore.cbc_paths import CbcPayloadPaths, CbcTransportPaths, CbcTunnelPaths, trailers
from espcore.ah import AhEngine
from espcore.batch import AeadBatchPaths, BatchPaths
from espcore.errors import LifetimeExpired, SequenceExhausted, UsageError
from espcore.esp import EspEngine, Rng, make_engine
from espcore.ip import IPPROTO_AH, IPPROTO_ESP, TunnelHeader
from espcore.lifetime import (HardLifetimeReached, Lifetime, LifetimeTracker, SaState,
                              SoftLifetimeReached)
from espcore.modes import PacketPaths
from espcore.replay import ReplayWindow
from espcore.transforms import integrity as integrity_named
from espcore.transforms import parse_cipher_name, qualified_name

_MAX_SEQ_32 = 0xFFFFFFFF
_MAX_SEQ_64 = 0xFFFFFFFFFFFFFFFF
_NO_LIMIT = 1 << 62  # a mark that is never reached

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
    the randomness for CBC IVs, ``aead_backend`` the implementation of AES-GCM-16 and
    ChaCha20-Poly1305 ("openssl" or "cryptography", ``espcore.aead``; by default the C binding
    where it was built).
    """

    __slots__ = ("spi", "protocol", "mode", "esn", "cipher_name", "integrity_name", "key_bits",
                 "tunnel", "lifetime", "replay", "bytes_protected", "packets_unprotected",
                 "bytes_unprotected", "has_integrity", "is_confidential", "_initial_seq",
                 "_engine", "_ah", "_next_seq", "_max_seq", "_tracker", "_proto", "_hard",
                 "_trailers", "_align", "_out_bytes_mark", "_out_seq_mark", "_in_bytes_mark",
                 "_in_packets_mark", "_salt", "_encrypt", "_decrypt", "_seal_esp", "_open_esp",
                 "_outer", "_outer_ttl", "_outer_sum", "_mac_copy", "_rng", "_iv_size",
                 "_icv_size", "_block_mask", "_block_shift", "_pad_table", "_pad_table_20",
                 "_grow", "_sum_out")

    def __init__(self, *, protocol: str = "esp", spi: int, mode: str = "transport",
                 cipher: str | None = None, cipher_key: bytes = b"", integrity: str | None = None,
                 integrity_key: bytes = b"", tunnel_source: object = None,
                 tunnel_destination: object = None, tunnel_ttl: int = 64,
                 replay_window: int = 64, esn: bool = False, lifetime: Lifetime = Lifetime(),
                 initial_sequence: int = 1, rng: Rng = os.urandom,
                 aead_backend: str | None = None) -> None:
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
                                 esn=self.esn, rng=rng, aead_backend=aead_backend)
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
        self._out_bytes_mark = self._out_seq_mark = self._in_bytes_mark = 0
        self._in_packets_mark = 0
        self._counted()  # sets the marks to the first lifetime limits
        self._trailers: dict[int, bytes] = {}
        self._specialise()

    def _specialise(self) -> None:
        """Become the subclass with the specialised paths for this SA's combination, if any.

        The per-packet constants are copied into slots so that a packet reads each with one
        attribute access. Only the class changes: the slots are the same. A subclass of
        ``SecurityAssociation`` made elsewhere keeps its class (and the general paths).
        """
        engine = self._engine
        self._salt, self._encrypt, self._decrypt = b"", None, None
        self._seal_esp = self._open_esp = None
        self._outer, self._outer_ttl, self._outer_sum = b"", 0, 0
        self._mac_copy, self._rng, self._iv_size, self._icv_size = None, None, 0, 0
        self._block_mask = self._block_shift = 0
        self._pad_table = self._pad_table_20 = self._grow = self._sum_out = ()
        if type(self) is not SecurityAssociation or engine is None or self.esn or not (
                engine.kind == "aead" or (engine.kind == "cbc" and engine.mac is not None)):
            return
        tunnel = self.tunnel
        if tunnel is not None and tunnel.version == 4:
            self._outer = tunnel.packed_source + tunnel.packed_destination
            self._outer_ttl = tunnel.ttl
            # The outer header's constant words and its protocol, less the 1 of the
            # (s - 1) % 0xFFFF + 1 form of the one's complement fold (``espcore.aead_paths``).
            self._outer_sum = tunnel.base_sum + IPPROTO_ESP - 1
        if engine.kind == "aead":
            self._salt = engine._salt
            aead = engine._aead  # an ``espcore.aead.Aead``
            self._seal_esp, self._open_esp = aead.seal_esp, aead.open_esp
            self.__class__ = (_AeadTransport if tunnel is None else
                              _AeadTunnel if tunnel.version == 4 else _AeadPayload)
            return
        block = engine.align_mask + 1
        self._encrypt, self._decrypt = engine._enc.update, engine._dec.update
        self._mac_copy, self._rng = engine.mac.copy, engine._rng
        self._iv_size, self._icv_size = engine.iv_size, engine.icv_size
        self._block_mask, self._block_shift = block - 1, block.bit_length() - 1
        self._pad_table = trailers(block)
        # Growth of an IPv4 packet of total length t (tunnel: inner length t), by t % block:
        # (outer header,) SPI, sequence number, IV, padding, Pad Length, Next Header, ICV.
        overhead = 8 + engine.iv_size + 2 + engine.icv_size
        if tunnel is None:
            self._pad_table_20 = trailers(block, 20)
            self._grow = tuple(overhead + (-(t - 20 + 2)) % block for t in range(block))
            self._sum_out = tuple(3 * 0xFFFF + g + IPPROTO_ESP - 1 for g in self._grow)
            self.__class__ = _CbcTransport
        elif tunnel.version == 4:
            self._grow = tuple(20 + overhead + (-(t + 2)) % block for t in range(block))
            self.__class__ = _CbcTunnel
        else:
            self.__class__ = _CbcPayload

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
        """A mark was reached: update the lifetime state and set the marks to the next limits.

        Per packet, the paths compare the running counters of their direction with two marks
        (bytes, and the sequence number or packet count) and call this when one is reached; it
        recomputes everything exactly from the totals. The limits count both directions
        together, so once an SA has been used one way that direction gets the whole remaining
        budget and the other's marks stay 0 (its first packet calls this); a new SA has all
        marks at 0 (its first packet calls this), and one used both ways keeps them there.
        """
        packets_protected = self._next_seq - self._initial_seq
        total_bytes = self.bytes_protected + self.bytes_unprotected
        total_packets = packets_protected + self.packets_unprotected
        tracker = self._tracker
        if total_bytes >= tracker.byte_mark or total_packets >= tracker.packet_mark:
            tracker.crossed(total_bytes, total_packets)
        if self._next_seq > self._max_seq:
            tracker.exhaust("sequence")
        self._hard = tracker.state is SaState.HARD_EXPIRED
        byte_mark = min(tracker.byte_mark, _NO_LIMIT)
        packet_mark = min(tracker.packet_mark, _NO_LIMIT)
        self._out_bytes_mark = self._out_seq_mark = self._in_bytes_mark = 0
        self._in_packets_mark = 0
        if packets_protected and not self.packets_unprotected:
            self._out_bytes_mark = byte_mark
            # The sequence number that makes the packet count reach its mark; the last number
            # of the sequence space ends the SA too (RFC 4303 §3.3.3).
            self._out_seq_mark = min(packet_mark + self._initial_seq - 1, self._max_seq)
        if self.packets_unprotected and not packets_protected:
            self._in_bytes_mark = byte_mark
            self._in_packets_mark = packet_mark

    def _esp_engine(self) -> EspEngine:
        if self._engine is None:
            raise UsageError("payload-level processing is for ESP SAs only")
        return self._engine

    # -- outbound --------------------------------------------------------------------------------

    def protect(self, packet: Buffer, *, iv: bytes | None = None) -> bytes:
        """The IP packet protected by this SA (``iv`` fixes the IV, for tests and vectors)."""
        if self._hard:
            raise self._expired()
        if not isinstance(packet, (bytes, bytearray)):
            packet = bytes(packet)
        seq = self._next_seq
        out = self._protect_general(packet, seq, iv)
        self._sent(seq, len(packet))
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
        self._sent(seq, len(payload))
        return out

    def _sent(self, seq: int, n: int) -> None:
        """Count a protected packet of ``n`` bytes that took sequence number ``seq``."""
        self._next_seq = seq + 1
        total = self.bytes_protected + n
        self.bytes_protected = total
        if total >= self._out_bytes_mark or seq >= self._out_seq_mark:
            self._counted()

    # -- inbound ---------------------------------------------------------------------------------

    def unprotect(self, packet: Buffer) -> bytes:
        """The original IP packet (transport) or the inner packet (tunnel).

        Raises ``ParseError``, ``UnknownSpiError``, ``ReplayError``, ``IntegrityError``,
        ``LifetimeExpired`` or ``DummyPacket``; only ``DummyPacket`` follows a state change.
        """
        if self._hard:
            raise self._expired()
        return self._unprotect_general(packet)

    def unprotect_payload(self, esp: Buffer) -> tuple[int, bytes]:
        """ESP only: (Next Header, payload) from the bytes SPI..ICV (UDP-encapsulated input)."""
        self._esp_engine()
        if self._hard:
            raise self._expired()
        next_header, plaintext, payload_len, seq = self._esp_open(esp, 0, len(esp))
        payload = plaintext[:payload_len]
        self._accept(seq, next_header, payload_len)
        return next_header, payload


class _AeadTransport(AeadTransportPaths, AeadBatchPaths, SecurityAssociation):
    """AES-GCM-16 or ChaCha20-Poly1305, transport mode, 32-bit sequence numbers."""

    __slots__ = ()


class _AeadTunnel(AeadTunnelPaths, AeadBatchPaths, SecurityAssociation):
    """AES-GCM-16 or ChaCha20-Poly1305, tunnel mode with an IPv4 outer header."""

    __slots__ = ()


class _AeadPayload(AeadPayloadPaths, SecurityAssociation):
    """AES-GCM-16 or ChaCha20-Poly1305 with an IPv6 outer header: the payload paths only."""

    __slots__ = ()


class _CbcTransport(CbcTransportPaths, SecurityAssociation):
    """A CBC cipher with an HMAC, transport mode, 32-bit sequence numbers."""

    __slots__ = ()


class _CbcTunnel(CbcTunnelPaths, SecurityAssociation):
    """A CBC cipher with an HMAC, tunnel mode with an IPv4 outer header."""

    __slots__ = ()


class _CbcPayload(CbcPayloadPaths, SecurityAssociation):
    """A CBC cipher with an HMAC and an IPv6 outer header: the payload paths only."""

    __slots__ = ()
