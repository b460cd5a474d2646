"""The espcore error tree: one root, ``EspError``.

Every failure that ``SecurityAssociation.protect``/``unprotect``, ``SaDatabase`` or the
``udp_encap`` helpers raise on purpose is an ``EspError`` subclass, and a failed inbound packet
leaves the SA untouched (no replay-window move, no counter change): RFC 4303 §3.4.3 says the
window is updated only once the ICV has verified.

- ``ParseError``: bytes that do not form a packet this SA can process (truncated, bad lengths,
  bad padding, wrong protocol). Carries the offset where the problem was found.
- ``IntegrityError``: the ICV (or AEAD tag) did not verify.
- ``ReplayError``: the sequence number was already seen or is left of the window; carries it.
- ``UnknownSpiError``: no inbound SA has this SPI; carries it.
- ``LifetimeExpired``: the hard byte/packet lifetime was reached; ``SequenceExhausted`` is the
  special case of an outbound counter that would cycle (RFC 4303 §3.3.3).
- ``DummyPacket``: an authentic packet with Next Header 59 (RFC 4303 §2.6), to be dropped. It is
  the one error raised *after* the packet was accepted (the window and counters moved).
- ``UsageError``: local misuse of the API (bad key length, unknown transform name...).

Messages carry SPIs, sequence numbers, lengths and offsets only: never a key, an ICV or
plaintext (house style rule 6).
"""

from __future__ import annotations


class EspError(Exception):
    """Root of every error espcore raises on purpose."""


class UsageError(EspError):
    """The caller used the API wrongly (never raised because of peer input)."""


class ParseError(EspError):
    """Bytes that cannot be processed. ``offset`` counts from the start of the given buffer."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (offset {offset})")
        self.offset = offset


class IntegrityError(EspError):
    """The integrity check value did not verify (RFC 4303 §3.4.4, RFC 4302 §3.4.4)."""

    def __init__(self, spi: int, seq: int) -> None:
        super().__init__(f"ICV check failed for SPI 0x{spi:08x} sequence {seq}")
        self.spi = spi
        self.seq = seq


class ReplayError(EspError):
    """A duplicate, or a sequence number left of the receive window (RFC 4303 §3.4.3)."""

    def __init__(self, seq: int, *, reason: str = "replayed") -> None:
        super().__init__(f"sequence {seq} {reason}")
        self.seq = seq
        self.reason = reason


class UnknownSpiError(EspError):
    """No SA in the database has this SPI (RFC 4303 §3.4.2: discard, auditable event)."""

    def __init__(self, spi: int, *, protocol: str = "esp") -> None:
        super().__init__(f"no inbound {protocol.upper()} SA for SPI 0x{spi:08x}")
        self.spi = spi
        self.protocol = protocol


class LifetimeExpired(EspError):
    """The SA reached a hard lifetime (``limit`` names it: "bytes", "packets", "sequence")."""

    def __init__(self, spi: int, limit: str) -> None:
        super().__init__(f"SA 0x{spi:08x} expired: hard {limit} limit reached")
        self.spi = spi
        self.limit = limit


class SequenceExhausted(LifetimeExpired):
    """The outbound sequence counter would cycle (RFC 4303 §3.3.3): a new SA is needed."""

    def __init__(self, spi: int) -> None:
        super().__init__(spi, "sequence")


class DummyPacket(EspError):
    """An authentic dummy packet (Next Header 59, RFC 4303 §2.6): accepted, then dropped."""

    def __init__(self, spi: int, seq: int) -> None:
        super().__init__(f"dummy packet on SPI 0x{spi:08x} sequence {seq}")
        self.spi = spi
        self.seq = seq
