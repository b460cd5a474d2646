"""``IkeEndpoint``: the sans-I/O IKEv1 engine, shaped like aioquic's ``QuicConnection``.

Inputs are methods (``receive_datagram``, ``handle_timer``, the commands ``initiate``,
``delete_phase2``, ``delete_phase1``); outputs are queued (``datagrams_to_send``, ``next_event``,
``get_timer``). The endpoint owns demultiplexing (cookies, then message ID), the IKE SAs with any
number of peers, one timer heap over them, the limits on half-open SAs, and the counters.

Rules at the boundary (ARCHITECTURE "Hostile input"): nothing a peer sends raises out of
``receive_datagram``; a datagram that does not parse, names unknown cookies, comes from another
address than its SA's peer, is not what the exchange expects, fails its payload rules, does not
decrypt or does not authenticate is counted in ``stats.dropped`` under a reason, traced, and
changes no state. Responder cookies are derived from a secret and the peer's address and CKY-I
(RFC 2522-style, so a retransmitted message 1 maps to the same SA and a message 3 from another
address finds nothing); message 2 is never retransmitted on a timer (CVE-2016-5361).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import os
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ikeproto.config import Address, ConfigProvider, Phase2Config, RetransmitPolicy
from ikeproto.enums import ExchangeType, NotifyType, ProtocolId
from ikeproto.errors import ParseError, ProtocolError, UsageError
from ikeproto.events import Event, NegotiationFailed, Phase1Deleted, Phase2Deleted
from ikeproto.exchanges import MessageKind, check_payloads
from ikeproto.exchanges.common import Inbound
from ikeproto.exchanges.informational import clear_notify, process_clear, process_protected, send_protected
from ikeproto.exchanges.main_mode import MainMode, Step
from ikeproto.exchanges.quick_mode import QuickMode
from ikeproto.exchanges.quick_mode import Step as QmStep
from ikeproto.ike_sa import ChildRecord, IkeSa, IkeSaInfo, IkeSaState
from ikeproto.message import Message, parse_message, pull_payloads
from ikeproto.natt import KEEPALIVE_INTERVAL_S
from ikeproto.negotiation import phase2_sa
from ikeproto.payloads import DeletePayload
from ikeproto.trace import IkeTrace

__all__ = ["EndpointStats", "IkeEndpoint"]

MM, QM, INFO = ExchangeType.IDENTITY_PROTECTION, ExchangeType.QUICK_MODE, ExchangeType.INFORMATIONAL
ZERO_COOKIE = bytes(8)


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


class IkeEndpoint:
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
        self._cookie_secret = rng(32)
        self._sas: dict[tuple[bytes, bytes], IkeSa] = {}
        self._initiating: dict[bytes, IkeSa] = {}  # our CKY-I -> SA waiting for message 2
        self._by_peer: dict[str, list[IkeSa]] = {}
        self._children: dict[str, dict[tuple[str, int], ChildRecord]] = {}
        self._out: list[tuple[bytes, Address, int]] = []
        self._events: deque[Event] = deque()
        self._keepalives: list[tuple[Address, int]] = []
        self._heap: list[tuple[float, int, IkeSa]] = []
        self._seq = itertools.count()
        self._request_ids = itertools.count(1)

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
        """Views of every IKE SA (connecting and established)."""
        return [sa.info() for sas in self._by_peer.values() for sa in sas]

    def ike_sa(self, peer: Address | str) -> IkeSaInfo | None:
        """The newest established IKE SA with ``peer`` (its address), or None."""
        sa = self._established(peer if isinstance(peer, str) else peer[0])
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
        while True:
            mid = int.from_bytes(self.rng(4), "big")
            if mid and mid not in sa.quick_modes and mid not in sa.finished and mid not in sa.informational_seen:
                return mid

    def new_spi(self) -> bytes:
        in_use = {spi for recs in self._children.values() for (_p, spi) in recs}
        while True:
            spi = self.rng(4)
            value = int.from_bytes(spi, "big")
            if value >= 256 and value not in in_use:  # RFC 4303 §2.1: 1-255 reserved, 0 local
                return spi

    def is_first_contact(self, sa: IkeSa) -> bool:
        return not any(o is not sa and o.is_established for o in self._by_peer.get(sa.peer_ip, ()))

    def find_sa(self, cky_i: bytes, cky_r: bytes) -> IkeSa | None:
        return self._sas.get((cky_i, cky_r))

    def add_child(self, sa: IkeSa, record: ChildRecord) -> None:
        self._children.setdefault(sa.peer_ip, {})[(record.protocol, record.spi_in)] = record

    def take_child(self, peer_ip: str, protocol: str, spi_out: int) -> int | None:
        records = self._children.get(peer_ip, {})
        for key, rec in records.items():
            if rec.protocol == protocol and rec.spi_out == spi_out:
                del records[key]
                return rec.spi_in
        return None

    def initial_contact(self, sa: IkeSa, now: float) -> None:
        """RFC 2407 §4.6.3.3: the peer has no state for us but ``sa``; everything older goes
        (requests waiting on an older connecting SA move to ``sa``)."""
        for other in list(self._by_peer.get(sa.peer_ip, ())):
            if other is sa or other.created_at > sa.created_at:
                continue
            sa.pending.extend(other.pending)
            other.pending.clear()
            self.phase1_deleted(other, now, by_peer=True, reason="initial contact")
        records = self._children.pop(sa.peer_ip, {})
        for protocol in ("ah", "esp"):
            spis = tuple(r.spi_in for r in records.values() if r.protocol == protocol)
            if spis:
                self.emit(Phase2Deleted(at=now, peer=sa.peer, protocol=protocol, spis=spis, by_peer=True,  # type: ignore[arg-type]
                                        reason="initial contact"))
        if sa.is_established:
            self._start_pending(sa, now)

    def phase1_deleted(self, sa: IkeSa, now: float, *, by_peer: bool, reason: str) -> None:
        if sa.state is IkeSaState.DELETED:
            return
        was_established = sa.is_established
        for qm in list(sa.quick_modes.values()):
            qm.fail(now, reason=f"ISAKMP SA {reason}", notify=None, failure_point="peer" if by_peer else "me")
        sa.quick_modes.clear()
        for rid, _cfg in sa.pending:
            self.emit(NegotiationFailed(at=now, peer=sa.peer, phase=1, request_id=rid, reason=f"ISAKMP SA {reason}",
                                        failure_point="peer" if by_peer else "me"))
        sa.pending.clear()
        if sa.main_mode is not None and not was_established:
            sa.main_mode.fail()
        sa.delete()
        self._unregister(sa)
        if was_established:
            self.emit(Phase1Deleted(at=now, peer=sa.peer, cookies=sa.cookies, by_peer=by_peer, reason=reason))

    def abort_phase1(self, sa: IkeSa, now: float) -> None:
        self._give_up_phase1(sa, now)

    # --- commands -------------------------------------------------------------------------------

    def initiate(self, peer: Address, phase2: Phase2Config, now: float) -> int:
        """Negotiate IPsec SAs with ``peer`` for ``phase2``; returns the request id that the
        ``Phase2Established`` / ``NegotiationFailed`` for it carry. Reuses an established ISAKMP
        SA with the peer, joins a Main Mode in progress, or starts one."""
        # Local misuse surfaces here, not as a failed negotiation later.
        phase2_sa(phase2, spis={"esp": b"\x00\x00\x01\x00", "ah": b"\x00\x00\x01\x00"}, encapsulation=1)
        rid = next(self._request_ids)
        sa = self._established(peer[0])
        if sa is not None:
            self._start_quick_mode(sa, rid, phase2, now)
            self._schedule(sa)
            return rid
        for other in self._by_peer.get(peer[0], ()):
            if other.state is IkeSaState.CONNECTING:
                other.pending.append((rid, phase2))
                return rid
        config = self.provider.phase1_config(peer)
        if config is None:
            raise UsageError(f"no phase-1 configuration for {peer[0]}")
        while True:
            cky_i = self.rng(8)
            if cky_i != ZERO_COOKIE and cky_i not in self._initiating:
                break
        sa = IkeSa(cky_i=cky_i, cky_r=ZERO_COOKIE, is_initiator=True, peer=peer, local_address=self.local_address,
                   local_port=self.ike_port, config=config, now=now, trace=self.trace)
        sa.main_mode = MainMode(sa, self)
        sa.pending.append((rid, phase2))
        sa.main_mode.start(now)
        self._initiating[cky_i] = sa
        self._by_peer.setdefault(sa.peer_ip, []).append(sa)
        self._schedule(sa)
        return rid

    def delete_phase2(self, peer: Address, spi_in: int, protocol: str = "esp", *, now: float) -> None:
        """Delete the IPsec SA pair whose inbound SPI is ``spi_in``: a Delete goes to the peer
        (RFC 2408 §3.15, naming our inbound SPI) and ``Phase2Deleted(by_peer=False)`` is queued."""
        record = self._children.get(peer[0], {}).pop((protocol, spi_in), None)
        if record is None:
            raise UsageError(f"no {protocol} SA with inbound SPI {spi_in:#x} for {peer[0]}")
        sa = self._established(peer[0])
        if sa is not None:
            proto = ProtocolId.IPSEC_ESP if protocol == "esp" else ProtocolId.IPSEC_AH
            send_protected(sa, self, [DeletePayload.of(proto, [spi_in.to_bytes(4, "big")])])
        self.emit(Phase2Deleted(at=now, peer=peer, protocol=protocol, spis=(spi_in,), by_peer=False,  # type: ignore[arg-type]
                                reason="deleted"))

    def delete_phase1(self, peer: Address, *, now: float) -> None:
        """Delete every ISAKMP SA with ``peer``: established ones with a Delete to the peer."""
        for sa in list(self._by_peer.get(peer[0], ())):
            if sa.is_established:
                send_protected(sa, self, [DeletePayload.of(ProtocolId.ISAKMP, [sa.cky_i + sa.cky_r])])
            self.phase1_deleted(sa, now, by_peer=False, reason="deleted")

    # --- input ----------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float, local_port: int | None = None) -> None:
        """One ISAKMP message (non-ESP marker already stripped) from ``addr`` on ``local_port``."""
        self.stats.received += 1
        port = self.ike_port if local_port is None else local_port
        try:
            msg = parse_message(data)
        except ParseError as exc:
            self._drop("malformed", exc, addr)
            return
        try:
            sa = self._dispatch(msg, bytes(data), addr, port, now)
        except ProtocolError as exc:  # pragma: no cover - every path handles its own errors
            self._drop("refused", exc, addr)
            return
        if sa is not None:
            self._schedule(sa)

    def _dispatch(self, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> IkeSa | None:
        exch, cky_i, cky_r = msg.exchange_type, msg.initiator_cookie, msg.responder_cookie
        if exch == MM and cky_r == ZERO_COOKIE:
            return self._message_1(msg, raw, addr, port, now)
        sa = self._sas.get((cky_i, cky_r))
        if sa is None and not msg.is_encrypted and exch in (MM, INFO):
            sa = self._initiating.get(cky_i)  # message 2, or a notify answering message 1
        if sa is None:
            self._drop("unknown cookies", None, addr)
            return None
        if addr[0] != sa.peer_ip:
            self._drop("address does not match the SA", None, addr)
            return None
        if exch == MM:
            self._main_mode(sa, msg, raw, addr, port, now)
        elif exch == QM:
            self._quick_mode(sa, msg, raw, addr, port, now)
        elif exch == INFO:
            self._informational(sa, msg, raw, addr, port, now)
        else:
            self._drop("unsupported exchange type", None, addr, exchange=exch)
        return sa

    def _inbound(self, sa: IkeSa | None, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> Inbound:
        """Decrypt (without touching any state) and parse; ParseError/ProtocolError on failure."""
        if not msg.is_encrypted:
            return Inbound(message=msg, payloads=msg.payloads, raw=raw, addr=addr, local_port=port, now=now)
        assert sa is not None
        plaintext, last = sa.unprotect(msg)
        payloads, end = pull_payloads(plaintext, 0, len(plaintext), msg.first_payload_type, allow_trailing=True)
        return Inbound(message=msg, payloads=payloads, raw=raw, addr=addr, local_port=port, now=now,
                       plaintext=plaintext, chain_end=end, last_block=last)

    def _message_1(self, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> IkeSa | None:
        cky_r = self._responder_cookie(addr[0], msg.initiator_cookie)
        sa = self._sas.get((msg.initiator_cookie, cky_r))
        if sa is not None:
            if sa.main_mode is not None and sa.main_mode.replay(raw):
                self.stats.duplicates += 1
            else:
                self._drop("unexpected message 1", None, addr)
            return None
        if msg.is_encrypted:
            self._drop("encrypted message 1", None, addr)
            return None
        try:
            check_payloads(MessageKind.MM1, msg.payloads)
        except ProtocolError as exc:
            self._drop("bad payloads", exc, addr)
            return None
        peers = self._by_peer.get(addr[0], ())
        if sum(1 for s in peers if not s.is_initiator and s.state is IkeSaState.CONNECTING) >= self.max_half_open_per_peer:
            self._drop("half-open limit per peer", None, addr)
            return None
        if sum(1 for s in self._sas.values() if s.state is IkeSaState.CONNECTING) >= self.max_half_open:
            self._drop("half-open limit", None, addr)
            return None
        config = self.provider.phase1_config(addr)
        if config is None:
            self._drop("no phase-1 configuration for the peer", None, addr)
            return None
        sa = IkeSa(cky_i=msg.initiator_cookie, cky_r=cky_r, is_initiator=False, peer=addr,
                   local_address=self.local_address, local_port=port, config=config, now=now, trace=self.trace)
        sa.main_mode = MainMode(sa, self)
        inb = Inbound(message=msg, payloads=msg.payloads, raw=raw, addr=addr, local_port=port, now=now)
        self.trace.message("received", msg.payloads, exchange="main mode 1", peer=addr[0], cookies=sa.cookie_text)
        try:
            sa.main_mode.respond(inb, expire_at=now + self.half_open_timeout_s)
        except ProtocolError as exc:
            self._drop("refused", exc, addr)
            self._out.append((clear_notify(sa.cky_i, cky_r, exc.notify), addr, port))
            self.stats.sent += 1
            self.emit(NegotiationFailed(at=now, peer=addr, phase=1, request_id=None, reason=str(exc),
                                        notify=exc.notify, failure_point="me"))
            return None
        self._sas[sa.cookies] = sa
        self._by_peer.setdefault(sa.peer_ip, []).append(sa)
        return sa

    def _main_mode(self, sa: IkeSa, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> None:
        mm: MainMode = sa.main_mode
        if mm.replay(raw):
            self.stats.duplicates += 1
            return
        kind = mm.expected
        if kind is None:
            self._drop("unexpected main mode message", None, addr)
            return
        encrypted = kind in (MessageKind.MM5, MessageKind.MM6)
        if msg.is_encrypted != encrypted:
            self._drop("wrong encryption for the step", None, addr, expected=kind.value)
            return
        try:
            try:
                inb = self._inbound(sa, msg, raw, addr, port, now)
            except ProtocolError as exc:
                # A body that does not decrypt to payloads under the new keys: a different
                # pre-shared key (or DH result), or tampering.
                raise ProtocolError(f"{kind.value} does not decrypt to valid payloads ({exc})",
                                    notify=NotifyType.AUTHENTICATION_FAILED) from None
            self.trace.message("received", inb.payloads, exchange=kind.value, peer=addr[0], cookies=sa.cookie_text)
            check_payloads(kind, inb.payloads)
            mm.process(inb)
        except ProtocolError as exc:
            sa.note_failure(str(exc), exc.notify, "me")
            self._drop("refused", exc, addr, exchange=kind.value)
            if not sa.is_initiator:  # the answer to a refused message is its Notify, nothing else
                self._out.append((clear_notify(sa.cky_i, sa.cky_r, exc.notify), addr, port))
                self.stats.sent += 1
            return
        if kind is MessageKind.MM2:
            self._initiating.pop(sa.cky_i, None)
            self._sas[sa.cookies] = sa
        if mm.step is Step.ESTABLISHED:
            self.stats.phase1_established += 1
            if sa.udp_encapsulation and sa.nat is not None and sa.nat.local_behind_nat:
                sa.keepalive_at = now + KEEPALIVE_INTERVAL_S
            self._start_pending(sa, now)

    def _quick_mode(self, sa: IkeSa, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> None:
        mid = msg.message_id
        if not sa.is_established or not msg.is_encrypted or mid == 0:
            self._drop("quick mode outside an established SA", None, addr)
            return
        qm: QuickMode | None = sa.quick_modes.get(mid)
        if qm is not None and qm.last_in == raw:
            self.stats.duplicates += 1
            if not qm.is_initiator:
                self.send(sa, qm.last_out)
            return
        done = sa.finished.get(mid)
        if done is not None:
            if done[0] == raw:
                self.stats.duplicates += 1
                self.send(sa, done[1])
            else:
                self._drop("message for a finished exchange", None, addr)
            return
        kind = qm.expected if qm is not None else MessageKind.QM1
        if kind is None or mid in sa.informational_seen:
            self._drop("unexpected quick mode message", None, addr)
            return
        try:
            inb = self._inbound(sa, msg, raw, addr, port, now)
            self.trace.message("received", inb.payloads, exchange=kind.value, peer=addr[0], message_id=f"{mid:08x}")
            check_payloads(kind, inb.payloads)
            if qm is None:
                qm = QuickMode(sa, self, message_id=mid, initiator=False)
                qm.respond(inb)
                if qm.step is QmStep.ANSWERED:
                    sa.quick_modes[mid] = qm
            else:
                qm.process(inb)
        except ProtocolError as exc:
            self._drop("refused", exc, addr, exchange=kind.value)
            return
        self._float_peer(sa, addr, port)
        if qm.step in (QmStep.DONE, QmStep.FAILED):
            sa.quick_modes.pop(mid, None)

    def _informational(self, sa: IkeSa, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> None:
        mid = msg.message_id
        try:
            if msg.is_encrypted:
                if sa.keys is None or mid == 0 or mid in sa.informational_seen or mid in sa.quick_modes:
                    self._drop("unexpected protected informational", None, addr)
                    return
                inb = self._inbound(sa, msg, raw, addr, port, now)
                self.trace.message("received", inb.payloads, exchange="informational", peer=addr[0])
                check_payloads(MessageKind.INFO, inb.payloads)
                process_protected(sa, self, inb)
                if sa.state is not IkeSaState.DELETED:
                    self._float_peer(sa, addr, port)
            else:
                if sa.is_established:
                    self._drop("unprotected informational on an established SA", None, addr)
                    return
                check_payloads(MessageKind.INFO_CLEAR, msg.payloads)
                self.trace.message("received", msg.payloads, exchange="informational (unprotected)", peer=addr[0])
                process_clear(sa, self, Inbound(message=msg, payloads=msg.payloads, raw=raw, addr=addr,
                                                local_port=port, now=now))
        except ProtocolError as exc:
            self._drop("refused", exc, addr, exchange="informational")
        for m, qm in list(sa.quick_modes.items()):
            if qm.step in (QmStep.DONE, QmStep.FAILED):
                del sa.quick_modes[m]

    def _float_peer(self, sa: IkeSa, addr: Address, port: int) -> None:
        """After an authenticated message: answer where it came from (RFC 3947 §4, a NAT may
        change the port), and stay on the NAT-T port once there."""
        if port == self.natt_port:
            sa.local_port = port
            sa.peer_port = addr[1]

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
            self.trace.step("ISAKMP SA lifetime expired", cookies=sa.cookie_text, peer=sa.peer_ip)
            if sa.is_established:
                send_protected(sa, self, [DeletePayload.of(ProtocolId.ISAKMP, [sa.cky_i + sa.cky_r])])
            self.phase1_deleted(sa, now, by_peer=False, reason="expired")
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
                answered = qm.last_in is not None
                qm.fail(now, reason="no answer to quick mode message" + (" 2" if not qm.is_initiator else " 1"),
                        notify=None, failure_point="peer", timed_out=not answered)
                del sa.quick_modes[mid]
        if sa.keepalive_at is not None and now >= sa.keepalive_at:
            self._keepalives.append((sa.peer, sa.local_port))
            sa.keepalive_at = now + KEEPALIVE_INTERVAL_S

    def _give_up_phase1(self, sa: IkeSa, now: float) -> None:
        f = sa.last_failure
        if f is not None:
            reason, notify, point, timed_out = f.reason, f.notify, f.failure_point, False
        elif sa.peer_answered:
            reason, notify, point, timed_out = "peer stopped answering main mode", None, "peer", False
        else:
            reason, notify, point, timed_out = "no answer from peer", None, "peer", True
        self.trace.failure(reason, exchange="main mode", peer=sa.peer_ip, cookies=sa.cookie_text)
        if sa.main_mode is not None:
            sa.main_mode.fail()
        pending, sa.pending = sa.pending, []
        for rid, _cfg in pending:
            self.emit(NegotiationFailed(at=now, peer=sa.peer, phase=1, request_id=rid, reason=reason, notify=notify,
                                        failure_point=point, timed_out=timed_out))  # type: ignore[arg-type]
        # A responder reports only peers that proved their address (message 3 carried our
        # cookie): spoofed message 1 floods leave no audit trail of their own.
        if not pending and (sa.is_initiator or sa.peer_answered):
            self.emit(NegotiationFailed(at=now, peer=sa.peer, phase=1, request_id=None, reason=reason, notify=notify,
                                        failure_point=point, timed_out=timed_out))  # type: ignore[arg-type]
        sa.delete()
        self._unregister(sa)

    # --- helpers --------------------------------------------------------------------------------

    def _schedule(self, sa: IkeSa) -> None:
        if sa.state is IkeSaState.DELETED:
            return
        at = sa.next_deadline()
        if at is not None and at != sa.scheduled_at:
            sa.scheduled_at = at
            heapq.heappush(self._heap, (at, next(self._seq), sa))

    def _start_pending(self, sa: IkeSa, now: float) -> None:
        pending, sa.pending = sa.pending, []
        for rid, cfg in pending:
            self._start_quick_mode(sa, rid, cfg, now)

    def _start_quick_mode(self, sa: IkeSa, rid: int, cfg: Phase2Config, now: float) -> None:
        qm = QuickMode(sa, self, message_id=self.new_message_id(sa), initiator=True, request_id=rid, config=cfg)
        try:
            qm.start(now)
        except UsageError as exc:
            self.emit(NegotiationFailed(at=now, peer=sa.peer, phase=2, request_id=rid, reason=str(exc),
                                        failure_point="me"))
            return
        sa.quick_modes[qm.message_id] = qm

    def _established(self, peer_ip: str) -> IkeSa | None:
        for sa in reversed(self._by_peer.get(peer_ip, ())):
            if sa.is_established:
                return sa
        return None

    def _unregister(self, sa: IkeSa) -> None:
        self._sas.pop(sa.cookies, None)
        if self._initiating.get(sa.cky_i) is sa:
            del self._initiating[sa.cky_i]
        peers = self._by_peer.get(sa.peer_ip)
        if peers is not None:
            if sa in peers:
                peers.remove(sa)
            if not peers:
                del self._by_peer[sa.peer_ip]

    def _responder_cookie(self, peer_ip: str, cky_i: bytes) -> bytes:
        """CKY-R = HMAC(secret, peer IP | CKY-I): bound to the peer's address, stable for a
        retransmitted message 1, unguessable for anyone else (RFC 2408 §2.5.3)."""
        digest = hmac.digest(self._cookie_secret, peer_ip.encode() + b"|" + cky_i, hashlib.sha256)
        cookie = digest[:8]
        return cookie if cookie != ZERO_COOKIE else b"\x00" * 7 + b"\x01"

    def _drop(self, reason: str, exc: Exception | None, addr: Address, **fields: Any) -> None:
        self.stats.dropped[reason] += 1
        detail = {"error": str(exc)} if exc is not None else {}
        notify = getattr(exc, "notify", None)
        if notify is not None:
            detail["notify"] = notify
        self.trace.failure(reason, peer=addr[0], **detail, **fields)
