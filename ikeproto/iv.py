"""The CBC IV chains of one ISAKMP SA (RFC 2409 Appendix B), like strongSwan's iv_manager.

Owns: the phase-1 chain and one chain per post-phase-1 message ID.

- Phase 1 (message ID 0): the first IV is hash(g^xi | g^xr) truncated to the block size; every
  later phase-1 message uses the last cipher block of the previous one ("Subsequent messages MUST
  use the last CBC encryption block from the previous message").
- Quick Mode and Informational exchanges (message ID != 0): the first IV is
  hash(last phase-1 CBC block | M-ID) truncated to the block size, with M-ID as four bytes in
  network order; then the chain continues with the last cipher block of each message of that
  exchange. The seed is always the *phase-1* chain (the final block of Main Mode), never the last
  phase-2 message: each exchange "generates IVs independently to prevent IVs from getting out of
  sync when two different exchanges are started simultaneously" (RFC 2409 Appendix B).

``iv(mid)`` only reads: a message that fails to decrypt or authenticate must change no state, so
the caller calls ``advance(mid, last_block)`` once a message has been sent, or received and
authenticated. Retransmissions are the caller's business: a retransmitted message is the same
bytes and must not be decrypted (or advanced) twice. Only ``max_exchanges`` message-ID chains are
kept, least recently advanced dropped first.

Does not own: encryption itself (``crypto``), key derivation (``keymat``).
"""

from __future__ import annotations

from collections import OrderedDict

from ikeproto.crypto import Hash
from ikeproto.errors import UsageError

__all__ = ["IvManager", "phase1_iv", "phase2_iv"]

_MAX_MESSAGE_ID = 0xFFFFFFFF


def _check_mid(message_id: int) -> None:
    if not 0 <= message_id <= _MAX_MESSAGE_ID:
        raise UsageError(f"message ID {message_id} is not a 32-bit unsigned number")


def phase1_iv(hash_alg: Hash, g_xi: bytes, g_xr: bytes, block_size: int) -> bytes:
    """RFC 2409 Appendix B: hash(g^xi | g^xr), initiator's public value first, cut to a block."""
    return hash_alg.digest(g_xi + g_xr)[:block_size]


def phase2_iv(hash_alg: Hash, last_phase1_block: bytes, message_id: int, block_size: int) -> bytes:
    """RFC 2409 Appendix B: hash(last phase-1 CBC output block | M-ID), cut to a block."""
    _check_mid(message_id)
    return hash_alg.digest(last_phase1_block + message_id.to_bytes(4, "big"))[:block_size]


class IvManager:
    """The IV state of one ISAKMP SA: read with ``iv``, move on with ``advance``."""

    __slots__ = ("_block_size", "_chains", "_hash", "_max", "_phase1")

    def __init__(
        self, *, hash_alg: Hash, block_size: int, g_xi: bytes, g_xr: bytes, max_exchanges: int = 16
    ) -> None:
        if block_size <= 0 or block_size > hash_alg.digest_size:
            raise UsageError(f"block size {block_size} does not fit the {hash_alg.name} output")
        if max_exchanges < 1:
            raise UsageError("max_exchanges must be at least 1")
        self._hash = hash_alg
        self._block_size = block_size
        self._max = max_exchanges
        self._phase1 = phase1_iv(hash_alg, g_xi, g_xr, block_size)
        self._chains: OrderedDict[int, bytes] = OrderedDict()

    def __repr__(self) -> str:
        return f"<IvManager block {self._block_size}, {len(self._chains)} message IDs>"

    @property
    def phase1_iv(self) -> bytes:
        """The current phase-1 IV: after Main Mode, the last CBC block of its final message."""
        return self._phase1

    @property
    def message_ids(self) -> tuple[int, ...]:
        """Message IDs with a chain of their own, least recently advanced first."""
        return tuple(self._chains)

    def iv(self, message_id: int) -> bytes:
        """The IV for the next message with ``message_id`` (0 = phase 1). Changes nothing."""
        _check_mid(message_id)
        if message_id == 0:
            return self._phase1
        current = self._chains.get(message_id)
        if current is None:
            return phase2_iv(self._hash, self._phase1, message_id, self._block_size)
        return current

    def advance(self, message_id: int, last_block: bytes) -> None:
        """Record the last cipher block of a message that was sent, or received and authenticated."""
        _check_mid(message_id)
        if len(last_block) != self._block_size:
            raise UsageError(f"last block must be {self._block_size} bytes, got {len(last_block)}")
        if message_id == 0:
            self._phase1 = bytes(last_block)
            return
        self._chains[message_id] = bytes(last_block)
        self._chains.move_to_end(message_id)
        while len(self._chains) > self._max:
            self._chains.popitem(last=False)

    def forget(self, message_id: int) -> None:
        """Drop the chain of a finished exchange (a later message with that ID starts afresh)."""
        self._chains.pop(message_id, None)
