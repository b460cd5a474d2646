"""``IkeEndpoint``: the sans-I/O IKEv1 engine, shaped like aioquic's ``QuicConnection``.

Inputs are methods (``receive_datagram``, ``handle_timer``, the commands ``initiate``,
``delete_phase2``, ``delete_phase1``); outputs are queued (``datagrams_to_send``, ``next_event``,
``get_timer``, ``nat_keepalives``). The endpoint owns the IKE SAs with any number of peers (their
table is ``ikeproto.sa_table``, the receive path ``ikeproto.demux``), one timer heap over them,
the limits on half-open SAs, the ISAKMP SA lifecycle and the counters; the exchanges are tasks
(``ikeproto.exchanges``) that it drives and that call back into it (their ``Env``).

Rules at the boundary (ARCHITECTURE "Hostile input"): nothing a peer sends raises out of
``receive_datagram``; a datagram that does not parse, names unknown cookies, comes from another
address than its SA's peer, is not what the exchange expects, fails its payload rules, does not
decrypt or does not authenticate is counted in ``stats.dropped`` under a reason, traced, and
changes no state. Responder cookies are bound to the peer's address; message 2 is never
retransmitted on a timer (CVE-2016-5361).

Decisions: an unanswered Main Mode message 1 is given up within 3 s by default (``RetransmitPolicy``)
so the agent can fall back to clear text; ``NegotiationFailed.timed_out`` means the peer never
answered that exchange. An ISAKMP SA past its lifetime is kept (``expired``, serving no new
request) while IPsec SAs it negotiated live (MS-IKEE §3.8.4.1; a Delete would make strongSwan drop
its CHILD_SAs). INITIAL-CONTACT is sent only when no other SA with the peer exists, and on receipt
deletes older established SAs and every IPsec SA with the peer.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ikeproto.config import Address, ConfigProvider, Phase2Config, RetransmitPolicy
from ikeproto.demux import Demultiplexer
from ikeproto.enums import ProtocolId
from ikeproto.errors import UsageError
from ikeproto.events import Event, NegotiationFailed, Phase1Deleted, Phase2Deleted
from ikeproto.exchanges.informational import send_protected
from ikeproto.exchanges.main_mode import MainMode
from ikeproto.exchanges.quick_mode import QuickMode
from ikeproto.ike_sa import ChildRecord, IkeSa, IkeSaInfo, IkeSaState
from ikeproto.natt import KEEPALIVE_INTERVAL_S
from ikeproto.negotiation import phase2_sa
from ikeproto.payloads import DeletePayload
from ikeproto.pki import CertificateError
from ikeproto.sa_table import ZERO_COOKIE, SaTable
from ikeproto.trace import IkeTrace

__all__ = ["EndpointStats", "IkeEndpoint", "REAUTH_WINDOW_S"]

# A peer that deleted its ISAKMP SA with us this recently and then sends INITIAL-CONTACT is
# re-authenticating, not restarting (see IkeEndpoint.initial_contact).
REAUTH_WINDOW_S = 60.0


@dataclass(slots=True)
class EndpointStats:
    """Counters for the monitor: datagrams, drops by reason, retransmissions, outcomes."""

    received: int = 0
    sent: int = 0
    retransmits: int = 0
    duplicates: int = 0
    phase1_established: int = 0
    phase2_established: int = 0
    negotiation_failures: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"received": self.received, "sent": self.sent, "retransmits": self.retransmits,
                "duplicates": self.duplicates, "phase1_established": self.phase1_established,
                "phase2_established": self.phase2_established, "negotiation_failures": self.negotiation_failures,
                "dropped": dict(self.dropped)}


class IkeEndpoint(Demultiplexer):
    """Many IKE SAs with many peers, driven by datagrams and timers (see the module docstring)."""

    def __init__(
        self,
        *,
        config: ConfigProvider,
        local_address: str,
        ike_port: int = 500,
        natt_port: int = 4500,
        rng: Callable[[int], bytes] = os.urandom,
        logger: Any = None,
        trace_secrets: bool = False,
        trace: bool = True,
        max_half_open_per_peer: int = 8,
        max_half_open: int = 512,
        half_open_timeout_s: float = 30.0,
        retransmit: RetransmitPolicy = RetransmitPolicy(),
    ) -> None:
        self.provider = config
        self.local_address = local_address
        self.ike_port = ike_port
        self.natt_port = natt_port
        self.rng = rng
        self.trace = IkeTrace(logger, enabled=trace, include_secrets=trace_secrets)
        self.max_half_open_per_peer = max_half_open_per_peer
        self.max_half_open = max_half_open
        self.half_open_timeout_s = half_open_timeout_s
        self.retransmit = retransmit
        self.stats = EndpointStats()
        self.table = SaTable(rng)
        self._out: list[tuple[bytes, Address, int]] = []
        self._events: deque[Event] = deque()
        self._keepalives: list[tuple[Address, int]] = []
        self._heap: list[tuple[float, int, IkeSa]] = []
        self._seq = itertools.count()
        self._request_ids = itertools.count(1)
        self._peer_deleted_at: dict[str, float] = {}  # when a peer last deleted an ISAKMP SA itself

    # --- outputs --------------------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address, int]]:
        """(ISAKMP message without non-ESP marker, destination, local port to send from)."""
        out, self._out = self._out, []
        return out

    def nat_keepalives(self, now: float) -> list[tuple[Address, int]]:
        """(destination, local port) pairs owed a NAT keep-alive (the single octet 0xFF, RFC 3948
        §2.3, sent *without* the non-ESP marker); due when we are behind a NAT (or fake one)."""
        out, self._keepalives = self._keepalives, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The absolute time ``handle_timer`` should next be called, or None."""
        heap = self._heap
        while heap and (heap[0][2].state is IkeSaState.DELETED or heap[0][2].scheduled_at != heap[0][0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def ike_sas(self) -> list[IkeSaInfo]:
        """Views of every IKE SA (connecting, established and expired)."""
        return [sa.info() for sa in self.table]

    def ike_sa(self, peer: Address | str) -> IkeSaInfo | None:
        """The newest established IKE SA with ``peer`` (its address), or None."""
        sa = self.table.established(peer if isinstance(peer, str) else peer[0], usable=False)
        return sa.info() if sa is not None else None

    # --- Env services for the exchange tasks ------------------------------------------------------

    def send(self, sa: IkeSa, datagrams: tuple[bytes, ...] | list[bytes]) -> None:
        for d in datagrams:
            self._out.append((d, sa.peer, sa.local_port))
            self.stats.sent += 1

    def emit(self, event: Event) -> None:
        name = type(event).__name__
        if name == "Phase2Established":
            self.stats.phase2_established += 1
        elif name == "NegotiationFailed":
            self.stats.negotiation_failures += 1
        self.trace.step("queued event", kind=name, peer=event.peer[0])
        self._events.append(event)

    def new_message_id(self, sa: IkeSa) -> int:
        return self.table.new_message_id(sa)

    def new_spi(self) -> bytes:
        return self.table.new_spi()

    def find_sa(self, cky_i: bytes, cky_r: bytes) -> IkeSa | None:
        return self.table.find(cky_i, cky_r)

    def add_child(self, sa: IkeSa, record: ChildRecord) -> None:
        self.table.add_child(sa.peer_ip, record)

    def take_child(self, peer_ip: str, protocol: str, spi_out: int) -> int | None:
        return self.table.take_child(peer_ip, protocol, spi_out)

    def is_first_contact(self, sa: IkeSa) -> bool:
        # Any other SA with the peer, even one still negotiating (both sides started at once),
        # means we are not a fresh start: no INITIAL-CONTACT, which would delete it.
        return not any(o is not sa for o in self.table.of_peer(sa.peer_ip))

    def initial_contact(self, sa: IkeSa, now: float) -> None:
        """RFC 2407 §4.6.3.3: the peer kept no state for us but ``sa`` ("might then elect to
        delete"): our older established ISAKMP SAs with it and all IPsec SAs with it go, each
        deleted ISAKMP SA announced with a Delete (harmless to a restarted peer, a repair if it was
        not one). Negotiations still in progress are left to finish or time out.

        Exception, a re-authentication (interop finding ikeio-2): when the peer itself deleted an
        ISAKMP SA with us within ``REAUTH_WINDOW_S``, it did not restart — strongSwan's IKEv1
        re-authentication sends Delete(ISAKMP), then a new Main Mode with INITIAL-CONTACT, and keeps
        its IPsec SAs. Then nothing is deleted and the orphaned IPsec SAs move to ``sa``."""
        deleted_at = self._peer_deleted_at.get(sa.peer_ip)
        if deleted_at is not None and now - deleted_at <= REAUTH_WINDOW_S:
            alive = {o.cookies for o in self.table.of_peer(sa.peer_ip)}
            moved = self.table.adopt_children(sa, keep=alive)
            self.trace.step("INITIAL-CONTACT after the peer's own Delete: re-authentication, IPsec SAs kept",
                            peer=sa.peer_ip, adopted=moved)
            return
        for other in self.table.of_peer(sa.peer_ip):
            if other is sa or not other.is_established or other.created_at > sa.created_at:
                continue
            send_protected(other, self, [DeletePayload.of(ProtocolId.ISAKMP, [other.cky_i + other.cky_r])])
            self.phase1_deleted(other, now, by_peer=True, reason="initial contact")
        records = self.table.pop_children(sa.peer_ip)
        for protocol in ("ah", "esp"):
            spis = tuple(r.spi_in for r in records if r.protocol == protocol)
            if spis:
                self.emit(Phase2Deleted(at=now, peer=sa.peer, protocol=protocol, spis=spis, by_peer=True,  # type: ignore[arg-type]
                                        reason="initial contact"))

    def phase1_deleted(self, sa: IkeSa, now: float, *, by_peer: bool, reason: str) -> None:
        """Remove ``sa``: its exchanges and waiting requests fail, Phase1Deleted if it was up."""
        if sa.state is IkeSaState.DELETED:
            return
        was_established = sa.is_established
        point = "peer" if by_peer else "me"
        for qm in list(sa.quick_modes.values()):
            qm.fail(now, reason=f"ISAKMP SA {reason}", notify=None, failure_point=point)
        sa.quick_modes.clear()
        for rid, _cfg in sa.pending:
            self.emit(NegotiationFailed(at=now, peer=sa.peer, phase=1, request_id=rid, reason=f"ISAKMP SA {reason}",
                                        failure_point=point))  # type: ignore[arg-type]
        sa.pending.clear()
        if sa.main_mode is not None and not was_established:
            sa.main_mode.fail()
        sa.delete()
        self.table.remove(sa)
        if was_established:
            if by_peer and reason == "deleted by peer":
                self._peer_deleted_at[sa.peer_ip] = now
            self.emit(Phase1Deleted(at=now, peer=sa.peer, cookies=sa.cookies, by_peer=by_peer, reason=reason))

    def abort_phase1(self, sa: IkeSa, now: float) -> None:
        self._give_up_phase1(sa, now)

    def established(self, sa: IkeSa, now: float) -> None:
        """Main Mode completed on ``sa``: keep-alives if we are behind the NAT, waiting requests go."""
        self.stats.phase1_established += 1
        if sa.udp_encapsulation and sa.nat is not None and sa.nat.local_behind_nat:
            sa.keepalive_at = now + KEEPALIVE_INTERVAL_S
        pending, sa.pending = sa.pending, []
        for rid, cfg in pending:
            self._start_quick_mode(sa, rid, cfg, now)

    # --- commands -------------------------------------------------------------------------------

    def initiate(self, peer: Address, phase2: Phase2Config, now: float) -> int:
        """Negotiate IPsec SAs with ``peer`` for ``phase2``; returns the request id that the
        ``Phase2Established`` / ``NegotiationFailed`` for it carry. Reuses an established ISAKMP
        SA with the peer, joins a Main Mode in progress, or starts one."""
        # Local misuse surfaces here, not as a failed negotiation later.
        phase2_sa(phase2, spis={"esp": b"\x00\x00\x01\x00", "ah": b"\x00\x00\x01\x00"}, encapsulation=1)
        rid = next(self._request_ids)
        sa = self.table.established(peer[0])
        if sa is not None:
            self._start_quick_mode(sa, rid, phase2, now)
            self._schedule(sa)
            return rid
        for other in self.table.of_peer(peer[0]):
            if other.state is IkeSaState.CONNECTING:
                other.pending.append((rid, phase2))
                return rid
        config = self.provider.phase1_config(peer)
        if config is None:
            raise UsageError(f"no phase-1 configuration for {peer[0]}")
        sa = IkeSa(cky_i=self.table.new_initiator_cookie(), cky_r=ZERO_COOKIE, is_initiator=True, peer=peer,
                   local_address=self.local_address, local_port=self.ike_port, config=config, now=now,
                   trace=self.trace)
        sa.main_mode = self._new_main_mode(sa)
        sa.pending.append((rid, phase2))
        sa.main_mode.start(now)
        self.table.add(sa)
        self._schedule(sa)
        return rid

    def delete_phase2(self, peer: Address, spi_in: int, protocol: str = "esp", *, now: float) -> None:
        """Delete the IPsec SA pair whose inbound SPI is ``spi_in``: a Delete goes to the peer
        (RFC 2408 §3.15, naming our inbound SPI) and ``Phase2Deleted(by_peer=False)`` is queued."""
        record = self.table.pop_child(peer[0], protocol, spi_in)
        if record is None:
            raise UsageError(f"no {protocol} SA with inbound SPI {spi_in:#x} for {peer[0]}")
        # Over the newest ISAKMP SA with the peer: strongSwan moves IPsec SAs to a new IKE SA and
        # looks a Delete's SPI up only among the children of the SA it came on (finding ikeio-3).
        sa = (self.table.established(peer[0]) or self.table.find(*record.cookies)
              or self.table.established(peer[0], usable=False))
        if sa is not None and sa.is_established:
            proto = ProtocolId.IPSEC_ESP if protocol == "esp" else ProtocolId.IPSEC_AH
            send_protected(sa, self, [DeletePayload.of(proto, [spi_in.to_bytes(4, "big")])])
        self.emit(Phase2Deleted(at=now, peer=peer, protocol=protocol, spis=(spi_in,), by_peer=False,  # type: ignore[arg-type]
                                reason="deleted"))
        self._drain(peer[0], now)

    def delete_phase1(self, peer: Address, *, now: float) -> None:
        """Delete every ISAKMP SA with ``peer``: established ones with a Delete to the peer."""
        for sa in self.table.of_peer(peer[0]):
            if sa.is_established:
                send_protected(sa, self, [DeletePayload.of(ProtocolId.ISAKMP, [sa.cky_i + sa.cky_r])])
            self.phase1_deleted(sa, now, by_peer=False, reason="deleted")

    # --- timers ---------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Resend unanswered messages, give up negotiations, expire ISAKMP SAs, owe keep-alives."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, sa = heapq.heappop(heap)
            if sa.state is IkeSaState.DELETED or sa.scheduled_at != at:
                continue
            sa.scheduled_at = None
            self._tick(sa, now)
            self._schedule(sa)

    def _tick(self, sa: IkeSa, now: float) -> None:
        if sa.expires_at is not None and now >= sa.expires_at:
            live = [c.expires_at for c in self.table.children_of(sa) if c.expires_at is None or c.expires_at > now]
            if live and not sa.expired:
                # Windows' rule (MS-IKEE §3.8.4.1): the ISAKMP SA outlives its IPsec SAs. A Delete
                # now would make strongSwan drop its CHILD_SAs while ours live on (a black hole)
                # ... but not beyond their lifetimes (one more phase-1 lifetime for any without).
                assert sa.choice is not None
                sa.expired = True
                sa.expires_at = max(t if t is not None else now + sa.choice.lifetime_s for t in live)
                self.trace.step("ISAKMP SA lifetime reached: kept until its IPsec SAs end",
                                cookies=sa.cookie_text, peer=sa.peer_ip, until=sa.expires_at)
            else:
                self._expire(sa, now)
            return
        mm: MainMode | None = sa.main_mode
        if mm is not None and not sa.is_established:
            action = mm.on_timer(now)
            if action == "resend":
                self.stats.retransmits += 1
            elif action == "give-up":
                self._give_up_phase1(sa, now)
                return
        for mid, qm in list(sa.quick_modes.items()):
            action = qm.on_timer(now)
            if action == "resend":
                self.stats.retransmits += 1
            elif action == "give-up":
                qm.fail(now, reason=f"no answer to quick mode message {1 if qm.is_initiator else 2}", notify=None,
                        failure_point="peer", timed_out=qm.last_in is None)
                del sa.quick_modes[mid]
        if sa.keepalive_at is not None and now >= sa.keepalive_at:
            self._keepalives.append((sa.peer, sa.local_port))
            sa.keepalive_at = now + KEEPALIVE_INTERVAL_S

    def _expire(self, sa: IkeSa, now: float) -> None:
        self.trace.step("ISAKMP SA expired", cookies=sa.cookie_text, peer=sa.peer_ip)
        if sa.is_established:
            send_protected(sa, self, [DeletePayload.of(ProtocolId.ISAKMP, [sa.cky_i + sa.cky_r])])
        self.phase1_deleted(sa, now, by_peer=False, reason="expired")

    def _drain(self, peer_ip: str, now: float) -> None:
        """Expired ISAKMP SAs whose IPsec SAs are all gone are deleted now."""
        for sa in self.table.of_peer(peer_ip):
            if sa.expired and sa.is_established and not self.table.children_of(sa):
                self._expire(sa, now)

    def _give_up_phase1(self, sa: IkeSa, now: float) -> None:
        f = sa.last_failure
        if f is not None:
            reason, notify, point, timed_out = f.reason, f.notify, f.failure_point, False
        elif sa.peer_answered:
            reason, notify, point, timed_out = "peer stopped answering main mode", None, "peer", False
        else:
            reason, notify, point, timed_out = "no answer from peer", None, "peer", True
        # Kerberos failures are audited on their own (545): the reason code and what to do.
        audit = None
        if sa.main_mode is not None:
            peer_notify = (f.notify, f.reason) if f is not None and f.failure_point == "peer" and f.notify else None
            audit = sa.main_mode.audit_failure(peer_notify)
        auth_failure = audit[0] if audit is not None else None
        if audit is not None:
            reason = audit[1]
        # A certificate we refused (audit 544): the pki.Failure code of our own refusal.
        refused = sa.main_mode.refused if sa.main_mode is not None and point == "me" else None
        cert_failure = refused.failure.value if isinstance(refused, CertificateError) else None
        self.trace.failure(reason, exchange="main mode", peer=sa.peer_ip, cookies=sa.cookie_text,
                           auth_failure=auth_failure, certificate_failure=cert_failure)
        if sa.main_mode is not None:
            sa.main_mode.fail()
        pending, sa.pending = sa.pending, []
        for rid, _cfg in pending:
            self.emit(NegotiationFailed(at=now, peer=sa.peer, phase=1, request_id=rid, reason=reason, notify=notify,
                                        failure_point=point, timed_out=timed_out,  # type: ignore[arg-type]
                                        auth_failure=auth_failure, certificate_failure=cert_failure))
        # A responder reports only peers that proved their address (message 3 carried our
        # cookie): spoofed message 1 floods leave no audit trail of their own.
        if not pending and (sa.is_initiator or sa.peer_answered):
            self.emit(NegotiationFailed(at=now, peer=sa.peer, phase=1, request_id=None, reason=reason, notify=notify,
                                        failure_point=point, timed_out=timed_out,  # type: ignore[arg-type]
                                        auth_failure=auth_failure, certificate_failure=cert_failure))
        sa.delete()
        self.table.remove(sa)

    # --- helpers --------------------------------------------------------------------------------

    def _schedule(self, sa: IkeSa) -> None:
        if sa.state is IkeSaState.DELETED:
            return
        at = sa.next_deadline()
        if at is not None and at != sa.scheduled_at:
            sa.scheduled_at = at
            heapq.heappush(self._heap, (at, next(self._seq), sa))

    def _new_main_mode(self, sa: IkeSa) -> MainMode:
        """The Main Mode task for a new SA (one place, so an extension can substitute its class)."""
        return MainMode(sa, self)

    def _start_quick_mode(self, sa: IkeSa, rid: int, cfg: Phase2Config, now: float) -> None:
        qm = QuickMode(sa, self, message_id=self.new_message_id(sa), initiator=True, request_id=rid, config=cfg)
        try:
            qm.start(now)
        except UsageError as exc:
            self.emit(NegotiationFailed(at=now, peer=sa.peer, phase=2, request_id=rid, reason=str(exc),
                                        failure_point="me"))
            return
        sa.quick_modes[qm.message_id] = qm
