"""SA lifetimes in bytes and packets, the SA state machine and the events it queues.

This module owns the volume lifetimes of RFC 4301 §4.4.2.1 (soft and hard limits on bytes and
packets; a soft limit asks for a rekey, a hard limit ends the SA) and the small lifecycle
``ACTIVE -> SOFT_EXPIRED -> HARD_EXPIRED`` as a transition table (house rule 4). Time lifetimes
are the agent's: cores never read a clock. Events are facts in the past tense, queued for the
agent to poll (house rule 3); there are no callbacks.

Semantics: counters include the packet being processed, and a limit is *reached* when a counter
is greater than or equal to it. The packet that reaches a hard limit is still processed; the
next one raises ``LifetimeExpired``.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass

from espcore.errors import UsageError

# Standard logging: silent unless the application routes it (structlog can, via stdlib).
_log = logging.getLogger("espcore")


@dataclass(frozen=True, slots=True, kw_only=True)
class Lifetime:
    """Soft and hard volume limits of one SA; ``None`` means no limit."""

    soft_bytes: int | None = None
    hard_bytes: int | None = None
    soft_packets: int | None = None
    hard_packets: int | None = None

    def __post_init__(self) -> None:
        for name in ("soft_bytes", "hard_bytes", "soft_packets", "hard_packets"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"lifetime {name} must be positive, not {value}")
        for soft, hard in ((self.soft_bytes, self.hard_bytes),
                           (self.soft_packets, self.hard_packets)):
            if soft is not None and hard is not None and soft > hard:
                raise UsageError("a soft lifetime must not exceed its hard lifetime")


class SaState(enum.Enum):
    ACTIVE = "active"
    SOFT_EXPIRED = "soft-expired"
    HARD_EXPIRED = "hard-expired"


TRANSITIONS: dict[SaState, frozenset[SaState]] = {
    SaState.ACTIVE: frozenset((SaState.SOFT_EXPIRED, SaState.HARD_EXPIRED)),
    SaState.SOFT_EXPIRED: frozenset((SaState.HARD_EXPIRED,)),
    SaState.HARD_EXPIRED: frozenset(),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftLifetimeReached:
    """The SA crossed a soft limit ("bytes" or "packets"): time to negotiate its successor."""

    spi: int
    limit: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HardLifetimeReached:
    """The SA reached a hard limit ("bytes", "packets" or "sequence"): it processes no more."""

    spi: int
    limit: str


class LifetimeTracker:
    """Watches the counters of one SA against its ``Lifetime`` and drives its state.

    The SA calls ``crossed`` only when a counter reaches ``byte_mark`` or ``packet_mark`` (the
    nearest pending limits), so the per-packet cost is two comparisons.
    """

    __slots__ = ("spi", "lifetime", "state", "expired_by", "byte_mark", "packet_mark", "_events")

    def __init__(self, spi: int, lifetime: Lifetime) -> None:
        self.spi = spi
        self.lifetime = lifetime
        self.state = SaState.ACTIVE
        self.expired_by: str | None = None
        self._events: deque[SoftLifetimeReached | HardLifetimeReached] = deque()
        self.byte_mark = self.packet_mark = 0
        self._remark()

    def _remark(self) -> None:
        lt = self.lifetime
        soft_pending = self.state is SaState.ACTIVE
        bytes_limits = [v for v in ((lt.soft_bytes if soft_pending else None), lt.hard_bytes)
                        if v is not None]
        packet_limits = [v for v in ((lt.soft_packets if soft_pending else None), lt.hard_packets)
                         if v is not None]
        self.byte_mark = min(bytes_limits) if bytes_limits else float("inf")
        self.packet_mark = min(packet_limits) if packet_limits else float("inf")

    def _set_state(self, new: SaState, limit: str) -> None:
        old = self.state
        if new not in TRANSITIONS[old]:
            raise UsageError(f"SA state {old.value} cannot become {new.value}")
        self.state = new
        if new is SaState.HARD_EXPIRED:
            self.expired_by = limit
        _log.debug("SA 0x%08x: %s -> %s (%s)", self.spi, old.value, new.value, limit)
        event_type = SoftLifetimeReached if new is SaState.SOFT_EXPIRED else HardLifetimeReached
        self._events.append(event_type(spi=self.spi, limit=limit))
        self._remark()

    def crossed(self, total_bytes: int, total_packets: int) -> None:
        """Counters reached a mark: move to the state the limits now call for."""
        lt = self.lifetime
        hard = ("bytes" if lt.hard_bytes is not None and total_bytes >= lt.hard_bytes else
                "packets" if lt.hard_packets is not None and total_packets >= lt.hard_packets
                else None)
        if self.state is SaState.ACTIVE:
            soft = ("bytes" if lt.soft_bytes is not None and total_bytes >= lt.soft_bytes else
                    "packets" if lt.soft_packets is not None and total_packets >= lt.soft_packets
                    else None)
            if soft is not None:
                self._set_state(SaState.SOFT_EXPIRED, soft)
        if hard is not None and self.state is not SaState.HARD_EXPIRED:
            self._set_state(SaState.HARD_EXPIRED, hard)

    def exhaust(self, limit: str) -> None:
        """End the SA for a reason that is not a volume counter (the sequence space)."""
        if self.state is not SaState.HARD_EXPIRED:
            self._set_state(SaState.HARD_EXPIRED, limit)

    def next_event(self) -> SoftLifetimeReached | HardLifetimeReached | None:
        """The oldest queued event, or ``None``."""
        return self._events.popleft() if self._events else None
