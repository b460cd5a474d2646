"""The receive-side anti-replay window (RFC 4303 §3.4.3, RFC 4302 §3.4.3) with ESN inference.

This module owns the window state and nothing else: ``check`` is the cheap test done *before* the
ICV (it never changes state), ``accept`` records a sequence number *after* the ICV verified, and
``infer`` reconstructs the high-order 32 bits of an extended sequence number from the low-order
bits on the wire (RFC 4303 Appendix A2.2). The outbound counter lives in the SA.

The bitmap is a Python int: bit ``i`` set means sequence number ``top - i`` was received. Any
window size works (the RFC asks for 32 at least and 64 by default; 1024 and more are fine).
"""

from __future__ import annotations

from espcore.errors import ReplayError, UsageError

_MASK32 = 0xFFFFFFFF


class ReplayWindow:
    """A sliding window of ``size`` sequence numbers ending at ``top``, the highest one accepted.

    ``size=0`` disables replay protection (only allowed without ESN): every number but 0 passes.
    ``top`` may be set to start the window somewhere else than 0, e.g. to process published test
    vectors that use high sequence numbers.
    """

    __slots__ = ("size", "esn", "top", "bitmap", "mask")

    def __init__(self, size: int = 64, *, esn: bool = False, top: int = 0) -> None:
        if size < 0 or (esn and size == 0):
            raise UsageError("the replay window size must be positive (0 disables it without ESN)")
        limit = (1 << 64) - 1 if esn else _MASK32
        if not 0 <= top <= limit:
            raise UsageError(f"window top {top} out of range")
        self.size = size
        self.esn = esn
        self.top = top
        self.bitmap = 0
        self.mask = (1 << size) - 1

    def infer(self, seq_low: int) -> int:
        """The full sequence number for the 32 bits on the wire (RFC 4303 Appendix A2.2).

        Without ESN this is ``seq_low``. With ESN the high half is chosen so the number falls in
        or right of the window; a result below 0 (possible only in the first subspace) comes back
        as a negative number that ``check`` rejects.
        """
        if not self.esn:
            return seq_low
        size = self.size
        top_low = self.top & _MASK32
        top_high = self.top >> 32
        if top_low >= size - 1:
            # Case A: the window lies inside one 2^32 subspace.
            high = top_high if seq_low >= top_low - size + 1 else top_high + 1
        else:
            # Case B: the window straddles two subspaces.
            high = top_high - 1 if seq_low >= ((top_low - size + 1) & _MASK32) else top_high
        return (high << 32) | seq_low if high >= 0 else -1

    def check(self, seq: int) -> None:
        """Raise ``ReplayError`` if ``seq`` must be dropped before spending an ICV on it."""
        if seq <= 0:
            # Sequence 0 is never sent (the counter starts at 1, RFC 4303 §3.3.3).
            raise ReplayError(max(seq, 0), reason="outside the window")
        if self.size == 0:
            return
        top = self.top
        if seq > top:
            return
        offset = top - seq
        if offset >= self.size:
            raise ReplayError(seq, reason="left of the window")
        if (self.bitmap >> offset) & 1:
            raise ReplayError(seq, reason="replayed")

    def accept(self, seq: int) -> None:
        """Record ``seq`` (already ``check``-ed and authenticated): the window slides if needed."""
        if self.size == 0:
            if seq > self.top:
                self.top = seq
            return
        top = self.top
        if seq > top:
            shift = seq - top
            self.bitmap = ((self.bitmap << shift) | 1) & self.mask if shift < self.size else 1
            self.top = seq
        else:
            self.bitmap |= 1 << (top - seq)

    def seen(self, seq: int) -> bool:
        """Whether ``seq`` is marked as received (False left of the window)."""
        offset = self.top - seq
        return 0 <= offset < self.size and bool((self.bitmap >> offset) & 1)
