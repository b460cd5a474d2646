"""The agent's SA database: SA pairs per flow, both directions, soft SAs, and SPI demultiplexing.

Owns the state a quick mode leaves behind (the seed: "Two IPSec security associations are
established, each with its own SPI, one for inbound traffic, one for outbound traffic"): an
``SaPair`` holds the outbound ``espcore.SecurityAssociation`` objects (one per protocol; AH+ESP
is a bundle), the inbound ones, the traffic selectors they were negotiated for, their lifetimes
in seconds and kilobytes, activity times and counters. A *soft* pair has no SAs: the seed's soft
security association, traffic in clear after the peer did not answer IKE.

``SaDatabase`` finds pairs three ways: by flow key for outbound packets (peer, our selector, the
peer's selector, mode; the newest pair wins after a rekey), by covering selectors (responder
pairs and the default response rule's dynamic filters), and by (protocol, SPI) for inbound
packets (RFC 4301 §4.4.2: the SPI selects the SA; ``espcore.SaDatabase`` does the lookup).

It does not decide lifetimes, rekeys or deletions (``policyagent.agent``) and holds no IKE state.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from espcore import Lifetime, SecurityAssociation
from espcore import SaDatabase as SpiTable
from ikeproto.config import TrafficSelector
from ikeproto.events import Phase2Established

FlowKey = tuple[str, TrafficSelector, TrafficSelector, str]  # (peer, local_ts, remote_ts, mode)


class PairState(enum.Enum):
    ACTIVE = "active"
    SUPERSEDED = "superseded"  # a newer pair took over its flow; kept a little for stragglers
    DELETED = "deleted"


TRANSITIONS: dict[PairState, frozenset[PairState]] = {
    PairState.ACTIVE: frozenset((PairState.SUPERSEDED, PairState.DELETED)),
    PairState.SUPERSEDED: frozenset((PairState.DELETED,)),
    PairState.DELETED: frozenset(),
}


def covers(ts: TrafficSelector, address: str, protocol: int, port: int | None) -> bool:
    """Whether a selector covers one side of a packet (protocol/port 0 mean any)."""
    if ts.protocol and ts.protocol != protocol:
        return False
    if ts.port and ts.port != (port or 0):
        return False
    network = ts.network
    if network.num_addresses == 1:
        return str(network.network_address) == address
    return ipaddress.ip_address(address) in network


@dataclass(slots=True, kw_only=True, eq=False)
class SaPair:
    """Both directions of one quick mode (or a soft SA), and what the monitor shows about it."""

    id: int
    peer: str
    local: str
    local_ts: TrafficSelector
    remote_ts: TrafficSelector
    mode: str = "transport"
    policy_name: str | None = None
    rule_name: str | None = None
    is_initiator: bool = True
    is_dynamic: bool = False  # answered through the default response rule
    is_soft: bool = False
    established_at: float = 0.0
    lifetime_s: int | None = None
    lifetime_kb: int | None = None
    outbound: tuple[SecurityAssociation, ...] = ()  # processing order: ESP first, then AH
    inbound: tuple[SecurityAssociation, ...] = ()  # processing order: AH first, then ESP
    protocols: tuple[str, ...] = ()  # as negotiated: AH before ESP
    spis_in: tuple[int, ...] = ()
    spis_out: tuple[int, ...] = ()
    encapsulation: str = "udp"
    peer_port: int = 0
    local_port: int = 0
    peer_identity: str = ""
    message_id: int = 0
    last_in_at: float = 0.0
    last_out_at: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    state: PairState = PairState.ACTIVE
    rekey_at: float | None = None
    rekey_request: int | None = None
    superseded_at: float | None = None
    phase2: object = None  # the Phase2Config to renegotiate with
    decision: object = None  # the matcher decision it was negotiated under
    esp_only: SecurityAssociation | None = None  # the single outbound ESP SA (fast path)
    has_integrity: bool = False
    is_confidential: bool = False
    verdicts: dict = field(default_factory=dict)  # inbound 5-tuple -> drop reason or None (agent)
    _accepts: dict = field(default_factory=dict)

    @property
    def key(self) -> FlowKey:
        return (self.peer, self.local_ts, self.remote_ts, self.mode)

    @property
    def last_activity_at(self) -> float:
        return max(self.last_in_at, self.last_out_at)

    @property
    def expires_at(self) -> float | None:
        return self.established_at + self.lifetime_s if self.lifetime_s else None

    def set_state(self, new: PairState) -> None:
        if new is self.state:
            return
        if new not in TRANSITIONS[self.state]:
            raise ValueError(f"SA pair state {self.state.value} cannot become {new.value}")
        self.state = new

    def accepts_inbound(self, src: str, dst: str, protocol: int, sport: int | None,
                        dport: int | None) -> bool:
        """RFC 4301 §5.2 step 4 (inbound selector check): the unprotected packet must be traffic
        this pair was negotiated for (from the peer's selector to ours)."""
        key = (src, dst, protocol, sport, dport)
        hit = self._accepts.get(key)
        if hit is None:
            hit = (covers(self.remote_ts, src, protocol, sport)
                   and covers(self.local_ts, dst, protocol, dport))
            if len(self._accepts) > 256:
                self._accepts.clear()
            self._accepts[key] = hit
        return hit

    def covers_outbound(self, src: str, dst: str, protocol: int, sport: int | None,
                        dport: int | None) -> bool:
        return covers(self.local_ts, src, protocol, sport) and covers(self.remote_ts, dst, protocol, dport)

    def kb_used(self) -> int:
        """Kilobytes through the busier direction (the quick-mode lifetime counts per SA)."""
        out = max((sa.bytes_protected for sa in self.outbound), default=0)
        inn = max((sa.bytes_unprotected for sa in self.inbound), default=0)
        return max(out, inn) // 1024


def sa_lifetime(lifetime_kb: int | None, *, soft_fraction: float) -> Lifetime:
    """Soft and hard byte limits of one SA from the quick-mode kilobyte lifetime."""
    if not lifetime_kb:
        return Lifetime()
    hard = lifetime_kb * 1024
    return Lifetime(soft_bytes=max(1, int(hard * soft_fraction)), hard_bytes=hard)


def build_pair(event: Phase2Established, *, pair_id: int, peer: str, local: str,
               soft_fraction: float, replay_window: int, rng, now: float) -> SaPair:
    """The SA pair a ``Phase2Established`` describes, with espcore SAs for both directions."""
    lifetime = sa_lifetime(event.lifetime_kb, soft_fraction=soft_fraction)
    outbound, inbound = [], []
    tunnel = {}
    for child in event.sas:
        if event.mode == "tunnel":
            tunnel = {"tunnel_source": local, "tunnel_destination": peer}
        common = {"protocol": child.protocol, "mode": event.mode, "lifetime": lifetime,
                  "integrity": child.integrity, "rng": rng}
        if child.protocol == "esp":
            out_sa = SecurityAssociation(spi=child.spi_out, cipher=child.cipher or "null",
                                         cipher_key=child.enc_key_out,
                                         integrity_key=child.auth_key_out, **common, **tunnel)
            in_tunnel = ({"tunnel_source": peer, "tunnel_destination": local}
                         if event.mode == "tunnel" else {})
            in_sa = SecurityAssociation(spi=child.spi_in, cipher=child.cipher or "null",
                                        cipher_key=child.enc_key_in, integrity_key=child.auth_key_in,
                                        replay_window=replay_window, **common, **in_tunnel)
        else:
            out_sa = SecurityAssociation(spi=child.spi_out, integrity_key=child.auth_key_out,
                                         **common, **tunnel)
            in_tunnel = ({"tunnel_source": peer, "tunnel_destination": local}
                         if event.mode == "tunnel" else {})
            in_sa = SecurityAssociation(spi=child.spi_in, integrity_key=child.auth_key_in,
                                        replay_window=replay_window, **common, **in_tunnel)
        outbound.append(out_sa)
        inbound.append(in_sa)
    outbound.reverse()  # AH is the outer header: ESP is applied first (RFC 2401 bundle order)
    pair = SaPair(
        id=pair_id, peer=peer, local=local, local_ts=event.local_ts, remote_ts=event.remote_ts,
        mode=event.mode, is_initiator=event.is_initiator, established_at=now,
        lifetime_s=event.lifetime_s, lifetime_kb=event.lifetime_kb, outbound=tuple(outbound),
        inbound=tuple(inbound), protocols=tuple(c.protocol for c in event.sas),
        spis_in=tuple(c.spi_in for c in event.sas), spis_out=tuple(c.spi_out for c in event.sas),
        encapsulation=event.encapsulation, peer_port=event.peer_port, local_port=event.local_port,
        message_id=event.message_id, last_in_at=now, last_out_at=now,
    )
    if len(outbound) == 1 and outbound[0].protocol == "esp":
        pair.esp_only = outbound[0]
    pair.has_integrity = any(sa.has_integrity for sa in outbound)
    pair.is_confidential = any(sa.is_confidential for sa in outbound)
    return pair


class SaDatabase:
    """SA pairs by id, by flow, by peer, and inbound SAs by (protocol, SPI)."""

    def __init__(self) -> None:
        self.pairs: dict[int, SaPair] = {}
        self._by_flow: dict[FlowKey, SaPair] = {}
        self._by_peer: dict[str, list[SaPair]] = {}
        self.spis = SpiTable()
        self.esp_in: dict[int, tuple[SecurityAssociation, SaPair]] = {}  # fast path by ESP SPI
        self._by_spi: dict[tuple[str, int], SaPair] = {}
        self._next_id = 1
        self.generation = 0  # changes whenever a pair is added or removed (route caches)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self):
        return iter(list(self.pairs.values()))

    def add(self, pair: SaPair) -> SaPair | None:
        """Store ``pair`` as the flow's current pair; return the pair it replaces, if any."""
        old = self._by_flow.get(pair.key)
        self.generation += 1
        self.pairs[pair.id] = pair
        self._by_flow[pair.key] = pair
        self._by_peer.setdefault(pair.peer, []).append(pair)
        for sa in pair.inbound:
            self.spis.add(sa)
            self._by_spi[(sa.protocol, sa.spi)] = pair
            if sa.protocol == "esp":
                self.esp_in[sa.spi] = (sa, pair)
        return old if old is not None and old is not pair else None

    def remove(self, pair: SaPair) -> bool:
        """Forget ``pair`` (both directions). False if it was already gone."""
        if self.pairs.pop(pair.id, None) is None:
            return False
        self.generation += 1
        if self._by_flow.get(pair.key) is pair:
            del self._by_flow[pair.key]
            # An older pair of the same flow still alive takes over again.
            for other in reversed(self._by_peer.get(pair.peer, [])):
                if other is not pair and other.key == pair.key and other.state is PairState.ACTIVE:
                    self._by_flow[pair.key] = other
                    break
        peers = self._by_peer.get(pair.peer)
        if peers is not None:
            peers[:] = [p for p in peers if p is not pair]
            if not peers:
                del self._by_peer[pair.peer]
        for sa in pair.inbound:
            self.spis.remove(sa.spi, sa.protocol)
            self._by_spi.pop((sa.protocol, sa.spi), None)
            if sa.protocol == "esp":
                self.esp_in.pop(sa.spi, None)
        pair.set_state(PairState.DELETED)
        return True

    def prefer(self, pair: SaPair) -> None:
        """Make ``pair`` its flow's current pair again (a duplicate lost to it)."""
        if self.pairs.get(pair.id) is pair:
            self._by_flow[pair.key] = pair
            self.generation += 1

    def for_flow(self, key: FlowKey) -> SaPair | None:
        return self._by_flow.get(key)

    def by_spi(self, spi: int, protocol: str = "esp") -> SaPair | None:
        return self._by_spi.get((protocol, spi))

    def with_peer(self, peer: str) -> list[SaPair]:
        return list(self._by_peer.get(peer, ()))

    def peers(self) -> list[str]:
        return list(self._by_peer)

    def covering(self, src: str, dst: str, protocol: int, sport: int | None,
                 dport: int | None) -> SaPair | None:
        """The newest active pair with peer ``dst`` whose selectors cover this outbound packet."""
        for pair in reversed(self._by_peer.get(dst, ())):
            if pair.state is PairState.ACTIVE and pair.covers_outbound(src, dst, protocol, sport, dport):
                return pair
        return None

    def clear(self) -> None:
        for pair in list(self.pairs.values()):
            self.remove(pair)
