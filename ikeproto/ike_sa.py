"""One ISAKMP SA (an "IKE SA"): its cookies, peer, ports, keys and IV chains, its lifecycle, and
the exchanges running on it.

Owns the ``IkeSaState`` lifecycle as a transition table (every change goes through ``_set_state``
and is traced "old -> new"), message protection with the SA's keys (RFC 2409 §5.3 and Appendix B:
CBC with the per-message-ID IV chains of ``ikeproto.iv``; decrypting changes nothing, the caller
advances the chain only once a message is authenticated), and ``Flight``: a message we resend
with exponential back-off until it is answered or we give up.

Does not own: the exchanges themselves (``ikeproto.exchanges``), demultiplexing and timers across
SAs (``ikeproto.endpoint``), key derivation (``ikeproto.keymat``).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ikeproto.config import Address, Identity, Phase1Config, Phase2Config, RetransmitPolicy
from ikeproto.enums import Flag
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.message import Message, serialize_header
from ikeproto.trace import IkeTrace

if TYPE_CHECKING:  # pragma: no cover
    from ikeproto.iv import IvManager
    from ikeproto.keymat import Phase1Keys
    from ikeproto.natt import NatStatus, NattVariant
    from ikeproto.negotiation import Phase1Choice

__all__ = ["ChildRecord", "Flight", "IkeSa", "IkeSaInfo", "IkeSaState", "TRANSITIONS"]


class IkeSaState(enum.Enum):
    CONNECTING = "connecting"  # Main Mode running
    ESTABLISHED = "established"
    DELETED = "deleted"


TRANSITIONS: dict[IkeSaState, frozenset[IkeSaState]] = {
    IkeSaState.CONNECTING: frozenset({IkeSaState.ESTABLISHED, IkeSaState.DELETED}),
    IkeSaState.ESTABLISHED: frozenset({IkeSaState.DELETED}),
    IkeSaState.DELETED: frozenset(),
}


@dataclass(slots=True, kw_only=True)
class Flight:
    """Datagrams sent together and resent until answered (RFC 2408 §5: retransmission timers).

    ``first`` marks a flight that the peer has not answered anything of yet (Main Mode message 1):
    it follows the short ``first_*`` budget of the ``RetransmitPolicy``."""

    datagrams: tuple[bytes, ...]
    next_at: float
    interval: float
    resent: int = 0
    limit: int
    give_up_at: float | None = None

    @classmethod
    def start(cls, datagrams: tuple[bytes, ...], policy: RetransmitPolicy, now: float, *, first: bool) -> Flight:
        if first:
            return cls(datagrams=datagrams, next_at=now + policy.initial_s, interval=policy.initial_s,
                       limit=policy.first_retransmits, give_up_at=now + policy.first_give_up_s)
        return cls(datagrams=datagrams, next_at=now + policy.initial_s, interval=policy.initial_s,
                   limit=policy.retransmits)

    @property
    def deadline(self) -> float:
        """When ``tick`` has something to do: the next resend, or the give-up."""
        if self.resent >= self.limit:
            return self.give_up_at if self.give_up_at is not None else self.next_at
        if self.give_up_at is not None:
            return min(self.next_at, self.give_up_at)
        return self.next_at

    def tick(self, now: float, policy: RetransmitPolicy) -> str | None:
        """"resend", "give-up" or None (not due). Moves the schedule on when it resends."""
        if now < self.deadline:
            return None
        if self.give_up_at is not None and now >= self.give_up_at:
            return "give-up"
        if self.resent >= self.limit:
            return "give-up"
        self.resent += 1
        self.interval = min(self.interval * policy.backoff, policy.max_interval_s)
        self.next_at = now + self.interval
        return "resend"


@dataclass(slots=True, kw_only=True)
class ChildRecord:
    """An established IPsec SA pair as the endpoint remembers it (for Delete and INITIAL-CONTACT)."""

    protocol: str
    spi_in: int
    spi_out: int
    message_id: int
    cookies: tuple[bytes, bytes] = (b"", b"")  # the ISAKMP SA that negotiated it
    expires_at: float | None = None  # its negotiated time lifetime, when it had one


@dataclass(frozen=True, slots=True, kw_only=True)
class IkeSaInfo:
    """A read-only view of an IKE SA for the monitor."""

    cookies: tuple[bytes, bytes]
    peer: Address
    local_port: int
    is_initiator: bool
    state: str
    created_at: float
    established_at: float | None
    expires_at: float | None
    cipher: str | None
    key_bits: int | None
    hash: str | None
    dh_group: int | None
    auth: str | None
    nat_detected: bool
    local_id: Identity | None
    peer_id: Identity | None
    quick_modes_in_progress: int
    expired: bool = False  # past its lifetime, kept until its IPsec SAs end


@dataclass(slots=True, kw_only=True)
class Failure:
    """The last reason a negotiation on this SA did not progress (reported when it is given up)."""

    reason: str
    notify: int | None
    failure_point: str  # "me": we refused the peer's message; "peer": the peer refused ours


class IkeSa:
    """One ISAKMP SA with one peer. Attributes are read by the exchanges and the endpoint."""

    def __init__(
        self,
        *,
        cky_i: bytes,
        cky_r: bytes,
        is_initiator: bool,
        peer: Address,
        local_address: str,
        local_port: int,
        config: Phase1Config,
        now: float,
        trace: IkeTrace,
    ) -> None:
        self.cky_i = cky_i
        self.cky_r = cky_r
        self.is_initiator = is_initiator
        self.peer_ip, self.peer_port = peer
        self.local_address = local_address
        self.local_port = local_port
        self.config = config
        self.created_at = now
        self.established_at: float | None = None
        self.expires_at: float | None = None
        self.state = IkeSaState.CONNECTING
        self.trace = trace
        self.choice: Phase1Choice | None = None
        self.keys: Phase1Keys | None = None
        self.ivs: IvManager | None = None
        self.natt: NattVariant | None = None
        self.nat: NatStatus | None = None
        self.local_id: Identity | None = None
        self.peer_id: Identity | None = None
        self.main_mode: Any = None
        self.quick_modes: dict[int, Any] = {}
        # Message IDs of finished exchanges: raw of the last message received -> our answer to it,
        # so that a retransmitted message gets the same answer (RFC 2408 §5) and nothing else.
        self.finished: OrderedDict[int, tuple[bytes, tuple[bytes, ...]]] = OrderedDict()
        self.informational_seen: OrderedDict[int, None] = OrderedDict()
        self.pending: list[tuple[int, Phase2Config]] = []  # (request id, config) waiting for Main Mode
        self.peer_answered = False
        self.last_failure: Failure | None = None
        self.keepalive_at: float | None = None
        # Past its lifetime but kept while IPsec SAs it negotiated live (MS-IKEE §3.8.4.1; strongSwan
        # drops its CHILD_SAs with the IKE SA a Delete names): no new Quick Mode starts on it.
        self.expired = False
        self.scheduled_at: float | None = None  # the endpoint's timer entry for this SA

    def __repr__(self) -> str:
        role = "I" if self.is_initiator else "R"
        return f"<IkeSa {role} {self.cky_i.hex()}/{self.cky_r.hex()} {self.peer_ip} {self.state.value}>"

    # --- lifecycle ------------------------------------------------------------------------------

    def _set_state(self, new: IkeSaState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise UsageError(f"IKE SA cannot go from {self.state.value} to {new.value}")
        self.trace.state("IKE SA", self.state, new, cookies=self.cookie_text, peer=self.peer_ip)
        self.state = new

    def establish(self, now: float) -> None:
        assert self.choice is not None
        self._set_state(IkeSaState.ESTABLISHED)
        self.established_at = now
        self.expires_at = now + self.choice.lifetime_s

    def delete(self) -> None:
        if self.state is not IkeSaState.DELETED:
            self._set_state(IkeSaState.DELETED)

    @property
    def is_established(self) -> bool:
        return self.state is IkeSaState.ESTABLISHED

    @property
    def cookies(self) -> tuple[bytes, bytes]:
        return (self.cky_i, self.cky_r)

    @property
    def cookie_text(self) -> str:
        return f"{self.cky_i.hex()}/{self.cky_r.hex()}"

    @property
    def peer(self) -> Address:
        """Where messages to the peer go now (its NAT-T port after a float)."""
        return (self.peer_ip, self.peer_port)

    @property
    def udp_encapsulation(self) -> bool:
        """NAT-T was agreed and a NAT was detected (or faked by either side): ESP goes in UDP."""
        return self.natt is not None and self.nat is not None and self.nat.detected

    def info(self) -> IkeSaInfo:
        c = self.choice
        return IkeSaInfo(
            cookies=self.cookies, peer=self.peer, local_port=self.local_port, is_initiator=self.is_initiator,
            state=self.state.value, created_at=self.created_at, established_at=self.established_at,
            expires_at=self.expires_at, cipher=c.cipher_name if c else None, key_bits=c.key_bits if c else None,
            hash=c.hash_name if c else None, dh_group=c.dh_group if c else None, auth=c.auth if c else None,
            nat_detected=self.udp_encapsulation, local_id=self.local_id, peer_id=self.peer_id,
            quick_modes_in_progress=len(self.quick_modes), expired=self.expired,
        )

    def note_failure(self, reason: str, notify: int | None, failure_point: str) -> None:
        self.last_failure = Failure(reason=reason, notify=notify, failure_point=failure_point)

    # --- message protection --------------------------------------------------------------------

    def header(self, exchange: int, message_id: int, *, encrypted: bool, first: int) -> Message:
        return Message(initiator_cookie=self.cky_i, responder_cookie=self.cky_r, exchange_type=exchange,
                       flags=Flag.ENCRYPTION if encrypted else 0, message_id=message_id, next_payload=first)

    def protect(self, exchange: int, message_id: int, first: int, body: bytes) -> bytes:
        """An encrypted message carrying ``body`` (a serialized payload chain); advances the IV
        chain of ``message_id`` to its last cipher block (RFC 2409 Appendix B)."""
        if self.keys is None or self.ivs is None:
            raise UsageError("no keys yet")
        block = self.keys.cipher.block_size
        if len(body) % block == 0:
            # RFC 2409 Appendix B pads "up to the nearest block size" with zeros; like strongSwan we
            # always pad (1..block octets), so a receiver can refuse anything longer: blocks an
            # attacker appends would otherwise decrypt to ignored padding and derail the IV chain.
            body += bytes(block)
        ciphertext, last = self.keys.encrypt(self.ivs.iv(message_id), body)
        self.ivs.advance(message_id, last)
        head = self.header(exchange, message_id, encrypted=True, first=first)
        return serialize_header(head, len(ciphertext)) + ciphertext

    @property
    def block_size(self) -> int:
        return self.keys.cipher.block_size if self.keys is not None else 0

    def unprotect(self, msg: Message) -> tuple[bytes, bytes]:
        """(plaintext with pad, last cipher block) of an encrypted message. Changes nothing."""
        if self.keys is None or self.ivs is None or msg.encrypted_body is None:
            raise ProtocolError("encrypted message before keys exist", notify=16)
        return self.keys.decrypt(self.ivs.iv(msg.message_id), msg.encrypted_body)

    def remember(self, message_id: int, raw_in: bytes, out: tuple[bytes, ...], *, keep: int = 32) -> None:
        """Keep the answer to ``raw_in`` for retransmissions of it (bounded, oldest dropped)."""
        self.finished[message_id] = (raw_in, out)
        self.finished.move_to_end(message_id)
        while len(self.finished) > keep:
            self.finished.popitem(last=False)

    def next_deadline(self) -> float | None:
        """The earliest time something is due on this SA (resend, give-up, expiry, keep-alive)."""
        times = [t for t in (self.expires_at, self.keepalive_at) if t is not None]
        if self.main_mode is not None and self.main_mode.deadline is not None:
            times.append(self.main_mode.deadline)
        for qm in self.quick_modes.values():
            if qm.deadline is not None:
                times.append(qm.deadline)
        return min(times) if times else None

