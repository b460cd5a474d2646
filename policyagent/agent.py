"""``PolicyAgent``: the sans-I/O core that joins the policy, IKE and ESP/AH for one host.

Owns the per-packet data path of the Windows 2000 policy agent (the seed, "Using a Built-in IPSec
Policy" and "Understanding IKE Negotiation"; RFC 4301 §5.1/§5.2 are the standards counterpart):

- **Outbound** (``send_packet``, ``send_udp``): the matcher's decision (exempt, permit, block,
  negotiate); for Negotiate Security the SA database by flow; without an SA pair an *acquire*
  asks IKE to negotiate once per flow, queues a bounded number of packets and tells the sender
  *negotiating*; a flow whose negotiation failed after the peer answered is *blocked* for one
  minute. Traffic that no rule secures still uses an SA pair a peer negotiated with us (the
  default response rule's dynamic filters) and waits while such a negotiation runs.
- **Inbound** (``receive_datagram``, ``receive_esp``, ``receive_clear``): ESP by SPI (UDP
  encapsulation, RFC 3948), AH and clear packets as IP packets; the unprotected packet must be
  traffic its SA was negotiated for (RFC 4301 §5.2 step 4); clear text where the policy requires
  security is dropped unless the action accepts unsecured inbound or a soft SA allows it;
  replays, forgeries and unknown SPIs are counted and dropped, never raised. An in-agent ICMP
  echo responder answers pings through the same path.
- The IKE side (events, soft SAs, blocks, lifetimes, rekeys, idle deletion) lives in
  ``policyagent.lifecycle``, which this class inherits.

Outputs are queued: ``datagrams_to_send`` (UDP payloads with the local port to send from),
``next_delivery`` (packets for applications), ``next_notification`` (negotiating/blocked notices
for senders), audit events in ``audit``; ``get_timer``/``handle_timer`` drive every timer from the
``now`` the caller passes. No sockets, no clock, randomness injected.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from espcore import (DummyPacket, EspError, IntegrityError, LifetimeExpired, ReplayError,
                     SaState, UnknownSpiError)
from policyagent import datapath as dp
from policyagent.audit import AuditLog
from policyagent.ikeconfig import PolicyConfig, selectors_for
from policyagent.lifecycle import (AgentConfig, AgentStats, Lifecycle, SendResult,
                                   SenderNotified)
from policyagent.matcher import Direction, Matcher, Packet, Verdict
from policyagent.model import Policy
from policyagent.sad import SaDatabase, SaPair
from policyagent.trace import null_logger

__all__ = ["AgentConfig", "AgentStats", "Delivery", "PolicyAgent", "SendResult", "SenderNotified"]

_NAT_KEEPALIVE = b"\xff"
_CACHE_LIMIT = 4096


class Delivery(NamedTuple):
    """A packet for the application side. For ICMP echo messages ``sport`` is the echo
    identifier and ``dport`` the sequence number; ``data`` is the UDP data, the echo data, or
    the transport segment of other protocols."""

    src: str
    dst: str
    protocol: int
    sport: int | None
    dport: int | None
    data: bytes
    is_protected: bool


@dataclass(slots=True)
class _Route:
    """A cached outbound decision for one 5-tuple (flow key for Negotiate, pair if known)."""

    verdict: Verdict
    decision: Any
    flow: Any = None
    pair: SaPair | None = None
    generation: int = -1


def default_ike_factory(**kwargs: Any) -> Any:
    """The real ``ikeproto.endpoint.IkeEndpoint`` (imported late: ikeproto's exchange layer)."""
    from ikeproto.endpoint import IkeEndpoint

    return IkeEndpoint(**kwargs)


class PolicyAgent(Lifecycle):
    """One host's policy agent. ``local_addresses`` are this host's addresses (the first is its
    IKE address); ``policy`` the assigned policy (None: no IPsec, everything in clear);
    ``ike_factory(config=, local_address=, ike_port=, natt_port=, rng=, logger=)`` builds the
    IKE endpoint (a new one on ``restart``); ``logger`` is the IKE debug trace."""

    def __init__(self, *, policy: Policy | None, local_addresses: Sequence[str],
                 config: AgentConfig = AgentConfig(), ike_factory: Callable[..., Any] | None = None,
                 audit: AuditLog | None = None, logger: Any = None,
                 rng: Callable[[int], bytes] = os.urandom, now: float = 0.0) -> None:
        if not local_addresses:
            raise ValueError("an agent needs at least one local address")
        self.config = config
        self.local_addresses = tuple(str(a) for a in local_addresses)
        self.address = self.local_addresses[0]
        self._local = frozenset(self.local_addresses)
        self.audit = audit if audit is not None else AuditLog()
        self.log = logger if logger is not None else null_logger()
        self._rng = rng
        self._ike_factory = ike_factory or default_ike_factory
        self.ike_config = PolicyConfig(None, self.address,
                                       force_encapsulation=config.force_encapsulation,
                                       kerberos_psk=config.kerberos_psk,
                                       has_kerberos=config.has_kerberos)
        self.policy: Policy | None = None
        self.matcher: Matcher | None = None
        self._out: list[tuple[bytes, tuple[str, int], int]] = []
        self._deliveries: deque[Delivery] = deque()
        self._notifications: deque[SenderNotified] = deque()
        self._routes: dict[tuple, _Route] = {}
        self._inbound: dict[tuple, Any] = {}
        self._init_state(now)
        if policy is not None:
            self.assign_policy(policy, now)

    def _init_state(self, now: float) -> None:
        self.sad = SaDatabase()
        self.stats = AgentStats()
        self._out.clear()
        self._deliveries.clear()
        self._notifications.clear()
        self._routes.clear()
        self._inbound.clear()
        self._init_lifecycle(now)
        self.ike = self._ike_factory(config=self.ike_config, local_address=self.address,
                                     ike_port=self.config.ike_port,
                                     natt_port=self.config.natt_port, rng=self._rng,
                                     logger=self.log)
        self.started_at = now

    # -- commands -------------------------------------------------------------------------------

    def assign_policy(self, policy: Policy | None, now: float) -> None:
        """Assign ``policy`` (None unassigns): SAs of the previous policy are deleted."""
        self.delete_all(now, reason="policy changed")
        self.policy = policy
        self.matcher = Matcher(policy, self.local_addresses, nat_t=True) if policy else None
        self.ike_config.matcher = self.matcher
        self._routes.clear()
        self._inbound.clear()
        self.log.info("policy_assigned", policy=policy.name if policy else None)

    def restart(self, now: float) -> None:
        """The seed's ``net stop policyagent`` / ``net start``: all IKE and SA state is cleared."""
        self._init_state(now)
        self.log.info("agent_restarted")

    # -- outputs --------------------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int], int]]:
        """UDP payloads to send: (payload, destination, local port to send it from). IKE on the
        NAT-T port already carries its non-ESP marker (RFC 3948 §2.2)."""
        self._pull_ike(now)
        out, self._out = self._out, []
        return out

    def _pull_ike(self, now: float) -> None:
        """Move the endpoint's datagrams into the output queue, in order: a quick mode's last
        message must leave before the ESP packets its completion releases (the responder
        installs its SAs on that message, RFC 2409 §5.5)."""
        natt = self.config.natt_port
        for message, addr, local_port in self.ike.datagrams_to_send(now):
            self.stats.ike_out += 1
            self._out.append((b"\x00\x00\x00\x00" + message if local_port == natt else message,
                              addr, local_port))

    def next_delivery(self) -> Delivery | None:
        return self._deliveries.popleft() if self._deliveries else None

    def next_notification(self) -> SenderNotified | None:
        return self._notifications.popleft() if self._notifications else None

    # -- outbound -------------------------------------------------------------------------------

    def send_packet(self, packet: bytes, now: float) -> SendResult:
        """An IP packet from this host's applications (its source must be one of our addresses)."""
        try:
            p = dp.parse(packet)
        except dp.PacketError:
            self._drop("malformed")
            return SendResult.DROPPED
        if p.src not in self._local:
            self._drop("not-local")
            return SendResult.DROPPED
        key = (p.src, p.dst, p.protocol, p.sport, p.dport)
        return self._outbound(key, bytes(packet[p.start:p.end]), bytes(packet[:p.end]), now)

    def send_udp(self, src: str, sport: int, dst: str, dport: int, data: bytes,
                 now: float) -> SendResult:
        """The fast path for a datagram of an embedded UDP endpoint (no IP header is built
        unless the packet goes in clear or through AH)."""
        if src not in self._local:
            self._drop("not-local")
            return SendResult.DROPPED
        try:
            segment = dp.udp_segment(src, dst, sport, dport, data)
        except dp.PacketError:
            self._drop("malformed")
            return SendResult.DROPPED
        return self._outbound((src, dst, dp.IPPROTO_UDP, sport, dport), segment, None, now)

    def send_echo(self, dst: str, ident: int, seq: int, data: bytes, now: float, *,
                  src: str | None = None) -> SendResult:
        """An ICMP echo request from this host (``ping``)."""
        packet = dp.build_icmp_echo(src or self._source_for(dst), dst, ident, seq, data,
                                    ttl=self.config.ttl)
        return self.send_packet(packet, now)

    def _source_for(self, dst: str) -> str:
        version = dp.ip_version(dst)
        return next((a for a in self.local_addresses if dp.ip_version(a) == version), self.address)

    def _route(self, key: tuple) -> _Route:
        matcher = self.matcher
        if matcher is None:
            route = _Route(Verdict.PERMIT, None)
        else:
            decision = matcher.lookup(Packet(*key), Direction.OUTBOUND)
            route = _Route(decision.verdict, decision)
            if decision.verdict is Verdict.NEGOTIATE:
                local_ts, remote_ts, mode = selectors_for(decision, key[0], key[1], key[2],
                                                          key[3], key[4])
                peer = str(decision.tunnel_endpoint) if decision.is_tunnel else key[1]
                route.flow = (peer, local_ts, remote_ts, mode)
        if len(self._routes) >= _CACHE_LIMIT:
            self._routes.clear()
        self._routes[key] = route
        return route

    def _outbound(self, key: tuple, segment: bytes, packet: bytes | None, now: float) -> SendResult:
        route = self._routes.get(key) or self._route(key)
        verdict = route.verdict
        if verdict is Verdict.NEGOTIATE:
            if route.generation == self.sad.generation:
                pair = route.pair
            else:
                pair = self.sad.for_flow(route.flow) or self.sad.covering(*key)
                route.pair, route.generation = pair, self.sad.generation
            if pair is not None:
                if pair.is_soft:
                    pair.last_out_at = now
                    return self._send_clear(key, segment, packet)
                return self._protect(pair, key, segment, packet, now)
            return self._acquire(key, route, segment, packet, now)
        if verdict is Verdict.BLOCK:
            self._drop("blocked-by-policy")
            self._notify("blocked", key, segment, now, "a Block filter matched")
            return SendResult.BLOCKED
        if verdict is Verdict.PERMIT and self.matcher is not None and self.matcher.default_response:
            # The default response rule's dynamic filters: a peer negotiated this traffic.
            if route.generation == self.sad.generation:
                pair = route.pair
            else:
                pair = self.sad.covering(*key)
                route.pair, route.generation = pair, self.sad.generation
            if pair is not None and not pair.is_soft:
                return self._protect(pair, key, segment, packet, now)
            if key[1] in self._responding:
                return self._wait_for_peer(key, segment, packet, now)
            self._note_clear_flow(key, segment, now)
        return self._send_clear(key, segment, packet)

    def _send_clear(self, key: tuple, segment: bytes, packet: bytes | None) -> SendResult:
        if packet is None:
            packet = dp.ip_packet(key[0], key[1], key[2], segment, ttl=self.config.ttl)
        natt = self.config.natt_port
        self._out.append((packet, (key[1], natt), natt))
        self.stats.packets_out_clear += 1
        self.stats.bytes_out_clear += len(packet)
        return SendResult.CLEAR

    def _protect(self, pair: SaPair, key: tuple, segment: bytes, packet: bytes | None,
                 now: float) -> SendResult:
        sa = pair.esp_only
        try:
            if sa is not None:
                if pair.mode == "transport":
                    data = sa.protect_payload(segment, key[2])
                else:
                    inner = packet or dp.ip_packet(key[0], key[1], key[2], segment, ttl=self.config.ttl)
                    data = sa.protect_payload(inner, 4 if inner[0] >> 4 == 4 else 41)
            else:
                data = packet or dp.ip_packet(key[0], key[1], key[2], segment, ttl=self.config.ttl)
                for sa in pair.outbound:
                    data = sa.protect(data)
        except LifetimeExpired:
            # The hard kilobyte lifetime ran out: the pair is gone, negotiate a new one.
            self._remove_pair(pair, now, reason="lifetime (kilobytes) expired")
            return self._outbound(key, segment, packet, now)
        except EspError:
            self._drop("too-large")
            return SendResult.DROPPED
        natt = self.config.natt_port
        self._out.append((data, (pair.peer, pair.peer_port if pair.encapsulation == "udp" and pair.peer_port
                                 else natt), natt))
        n = len(segment)
        pair.last_out_at = now
        pair.bytes_out += n
        pair.packets_out += 1
        stats = self.stats
        stats.packets_out_protected += 1
        if pair.has_integrity:
            stats.authenticated_bytes_sent += n
        if pair.is_confidential:
            stats.confidential_bytes_sent += n
        if sa.state is not SaState.ACTIVE:
            self._outbound_soft_limit(pair, now)
        return SendResult.PROTECTED

    def _acquire(self, key: tuple, route: _Route, segment: bytes, packet: bytes | None,
                 now: float) -> SendResult:
        flow = route.flow
        until = self._blocked.get(flow)
        if until is not None:
            if now < until:
                self._drop("blocked")
                self._notify("blocked", key, segment, now, "IKE negotiation failed; blocked "
                             f"for {until - now:.0f} s more")
                return SendResult.BLOCKED
            del self._blocked[flow]
        acquire = self._acquires.get(flow)
        if acquire is None:
            if flow[0] in self._responding:
                # The peer is negotiating with us right now: wait for its quick mode.
                return self._wait_for_peer(key, segment, packet, now)
            acquire = self._start_acquire(flow, route.decision, now)
            if acquire is None:
                self._drop("no-ike-config")
                self._notify("blocked", key, segment, now, "no usable authentication method")
                return SendResult.BLOCKED
        if len(acquire.queue) >= self.config.queue_limit:
            self._drop("queue-full")
        else:
            acquire.queue.append((key, segment, packet))
        self._notify("negotiating", key, segment, now)
        return SendResult.NEGOTIATING

    def _wait_for_peer(self, key: tuple, segment: bytes, packet: bytes | None,
                       now: float) -> SendResult:
        waiting = self._responding[key[1]]
        if len(waiting.queue) >= self.config.queue_limit:
            self._drop("queue-full")
        else:
            waiting.queue.append((key, segment, packet))
        self._notify("negotiating", key, segment, now)
        return SendResult.NEGOTIATING

    def _replay_queue(self, queue: deque, now: float) -> None:
        while queue:
            key, segment, packet = queue.popleft()
            self._outbound(key, segment, packet, now)

    def _notify(self, kind: str, key: tuple, segment: bytes, now: float, reason: str = "") -> None:
        echo = dp.echo_ident(segment) if key[2] in (dp.IPPROTO_ICMP, dp.IPPROTO_ICMPV6) else None
        self._notifications.append(SenderNotified(kind=kind, at=now, src=key[0], dst=key[1],
                                                  protocol=key[2], sport=key[3], dport=key[4],
                                                  echo=echo, reason=reason))

    def _drop(self, reason: str) -> None:
        dropped = self.stats.dropped
        dropped[reason] = dropped.get(reason, 0) + 1

    # -- inbound --------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: tuple[str, int], local_port: int,
                         now: float) -> None:
        """A UDP payload that arrived on ``local_port`` (the IKE port or the NAT-T port)."""
        if local_port != self.config.natt_port:
            self.receive_ike(data, addr, now, local_port=local_port)
            return
        if len(data) >= 8:
            hit = self.sad.esp_in.get(int.from_bytes(data[:4], "big"))
            if hit is not None:
                self._receive_esp(hit[0], hit[1], data, addr, now)
                return
        kind = dp.carrier_kind(data)
        if kind == dp.CARRIER_IKE:
            self.receive_ike(data[4:], addr, now, local_port=local_port)
        elif kind == dp.CARRIER_KEEPALIVE:
            self.stats.keepalives += 1
        elif kind == dp.CARRIER_IP:
            self.receive_ip(data, addr, now)
        else:
            self._drop("no-sa")

    def receive_esp(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """An ESP packet from a UDP-encapsulated flow (RFC 3948 §2.1: SPI first)."""
        hit = self.sad.esp_in.get(int.from_bytes(data[:4], "big")) if len(data) >= 8 else None
        if hit is None:
            self._drop("no-sa")
            return
        self._receive_esp(hit[0], hit[1], data, addr, now)

    def _receive_esp(self, sa, pair: SaPair, data: bytes, addr: tuple[str, int],
                     now: float) -> None:
        try:
            next_header, payload = sa.unprotect_payload(data)
        except EspError as exc:
            self._esp_failed(exc, pair, now)
            return
        if pair.mode == "transport":
            try:
                sport, dport = dp.ports_of(next_header, payload)
            except dp.PacketError:
                self._drop("malformed")
                return
            self._accept(pair, pair.peer, pair.local, next_header, sport, dport, payload,
                         sa, now)
            return
        try:
            p = dp.parse(payload)
        except dp.PacketError:
            self._drop("malformed")
            return
        self._accept(pair, p.src, p.dst, p.protocol, p.sport, p.dport,
                     payload[p.start:p.end], sa, now)

    def _esp_failed(self, exc: EspError, pair: SaPair, now: float) -> None:
        if isinstance(exc, ReplayError):
            self._drop("replay")
        elif isinstance(exc, IntegrityError):
            self._drop("integrity")
        elif isinstance(exc, DummyPacket):
            self._drop("dummy")
        elif isinstance(exc, UnknownSpiError):
            self._drop("no-sa")
        elif isinstance(exc, LifetimeExpired):
            self._drop("expired")
            self._remove_pair(pair, now, reason="lifetime (kilobytes) expired")
        else:
            self._drop("malformed")

    def _accept(self, pair: SaPair, src: str, dst: str, protocol: int, sport: int | None,
                dport: int | None, segment: bytes, sa, now: float) -> None:
        key = (src, dst, protocol, sport, dport)
        verdicts = pair.verdicts
        try:
            refusal = verdicts[key]
        except KeyError:
            refusal = self._inbound_refusal(pair, key)
            if len(verdicts) >= 256:
                verdicts.clear()
            verdicts[key] = refusal
        if refusal is not None:
            self._drop(refusal)
            return
        n = len(segment)
        pair.last_in_at = now
        pair.bytes_in += n
        pair.packets_in += 1
        stats = self.stats
        stats.packets_in_protected += 1
        if pair.has_integrity:
            stats.authenticated_bytes_received += n
        if pair.is_confidential:
            stats.confidential_bytes_received += n
        if sa.state is SaState.HARD_EXPIRED:
            self._remove_pair(pair, now, reason="lifetime (kilobytes) expired")
        self._deliver(src, dst, protocol, sport, dport, segment, True, now)

    def _inbound_refusal(self, pair: SaPair, key: tuple) -> str | None:
        """Why an unprotected packet may not be delivered (None: it may). RFC 4301 §5.2 step 4:
        it must be traffic its SA was negotiated for, and the policy must not block it."""
        if not pair.accepts_inbound(*key):
            return "selector-mismatch"
        if self.matcher is not None and self._decide_in(key).verdict is Verdict.BLOCK:
            return "blocked-by-policy"
        return None

    def _decide_in(self, key: tuple):
        decision = self._inbound.get(key)
        if decision is None:
            decision = self.matcher.lookup(Packet(*key), Direction.INBOUND)
            if len(self._inbound) >= _CACHE_LIMIT:
                self._inbound.clear()
            self._inbound[key] = decision
        return decision

    def receive_ip(self, packet: bytes, addr: tuple[str, int], now: float) -> None:
        """An IP packet from the embedded link: clear text, or AH (whose ICV covers the header).

        Its source must be the sender's address (the link is point to point)."""
        try:
            p = dp.parse(packet)
        except dp.PacketError:
            self._drop("malformed")
            return
        if p.src != addr[0] or p.dst not in self._local:
            self._drop("spoofed")
            return
        if p.protocol in (dp.IPPROTO_AH, dp.IPPROTO_ESP):
            self._receive_ipsec(bytes(packet[:p.end]), p, now)
        else:
            self.receive_clear(bytes(packet[:p.end]), now, parsed=p)

    def _receive_ipsec(self, packet: bytes, p: dp.Parsed, now: float) -> None:
        """AH (and AH+ESP bundles, or ESP inside an IP header): RFC 4302 §3.4, RFC 4303 §3.4."""
        try:
            sa = self.sad.spis.lookup(packet)
        except UnknownSpiError:
            self._drop("no-sa")
            return
        except EspError:
            self._drop("malformed")
            return
        pair = self.sad.by_spi(sa.spi, sa.protocol)
        if pair is None or pair.peer != p.src:
            self._drop("no-sa")
            return
        try:
            inner = sa.unprotect(packet)
            last = sa
            while pair.mode == "transport" and inner[9 if inner[0] >> 4 == 4 else 6] in (
                    dp.IPPROTO_AH, dp.IPPROTO_ESP):
                nested = self.sad.spis.lookup(inner)
                if self.sad.by_spi(nested.spi, nested.protocol) is not pair:
                    self._drop("no-sa")
                    return
                inner, last = nested.unprotect(inner), nested
        except EspError as exc:
            self._esp_failed(exc, pair, now)
            return
        try:
            q = dp.parse(inner)
        except dp.PacketError:
            self._drop("malformed")
            return
        self._accept(pair, q.src, q.dst, q.protocol, q.sport, q.dport, inner[q.start:q.end],
                     last, now)

    def receive_clear(self, packet: bytes, now: float, *, parsed: dp.Parsed | None = None) -> None:
        """A clear-text IP packet for this host: delivered unless the policy requires security
        (and neither accepts unsecured inbound nor fell back to a soft SA) or blocks it."""
        try:
            p = parsed or dp.parse(packet)
        except dp.PacketError:
            self._drop("malformed")
            return
        if p.dst not in self._local:
            self._drop("not-for-us")
            return
        key = (p.src, p.dst, p.protocol, p.sport, p.dport)
        if self.matcher is not None:
            decision = self._decide_in(key)
            verdict = decision.verdict
            if verdict is Verdict.BLOCK:
                self._drop("blocked-by-policy")
                return
            if verdict is Verdict.NEGOTIATE and not decision.accepts_unsecured:
                soft = self._soft_pair_for_inbound(key)
                if soft is None:
                    self._drop("unsecured")
                    return
                soft.last_in_at = now
            elif verdict is Verdict.NEGOTIATE:
                soft = self._soft_pair_for_inbound(key)
                if soft is not None:
                    soft.last_in_at = now
        self.stats.packets_in_clear += 1
        self.stats.bytes_in_clear += p.end
        self._deliver(p.src, p.dst, p.protocol, p.sport, p.dport,
                      bytes(packet[p.start:p.end]), False, now)

    def _soft_pair_for_inbound(self, key: tuple) -> SaPair | None:
        for pair in self.sad.with_peer(key[0]):
            if pair.is_soft and pair.accepts_inbound(*key):
                return pair
        return None

    def _deliver(self, src: str, dst: str, protocol: int, sport: int | None, dport: int | None,
                 segment: bytes, is_protected: bool, now: float) -> None:
        if protocol == dp.IPPROTO_UDP:
            try:
                sport, dport, data = dp.parse_udp_segment(segment)
            except dp.PacketError:
                self._drop("malformed")
                return
            self._deliveries.append(Delivery(src, dst, protocol, sport, dport, data, is_protected))
            return
        if protocol in (dp.IPPROTO_ICMP, dp.IPPROTO_ICMPV6):
            try:
                echo = dp.echo_from_message(protocol, src, dst, segment)
            except dp.PacketError:
                self._drop("malformed")
                return
            if echo is not None:
                if not echo.is_reply:
                    if self.config.echo_responder:
                        self.stats.echo_requests_answered += 1
                        self.send_echo_reply(src, dst, echo, now)
                    return
                self._deliveries.append(Delivery(src, dst, protocol, echo.ident, echo.seq,
                                                 echo.data, is_protected))
                return
        self._deliveries.append(Delivery(src, dst, protocol, sport, dport, segment, is_protected))

    def send_echo_reply(self, requester: str, us: str, echo: dp.Echo, now: float) -> SendResult:
        """The echo responder's reply: through the policy like any packet (the seed's Secure
        Server answers a clear ping but must secure its reply)."""
        reply = dp.build_icmp_echo(us, requester, echo.ident, echo.seq, echo.data, reply=True,
                                   ttl=self.config.ttl)
        return self.send_packet(reply, now)

    # -- views ----------------------------------------------------------------------------------

    @property
    def pending_negotiations(self) -> int:
        return len(self._acquires)

