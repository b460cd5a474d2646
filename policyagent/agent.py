"""``PolicyAgent``: the sans-I/O core that joins the policy, IKE and ESP/AH for one host.

Owns the per-packet data path of the Windows 2000 policy agent (the seed, "Using a Built-in IPSec
Policy" and "Understanding IKE Negotiation"; RFC 4301 §5.1/§5.2 are the standards counterpart):

- **Outbound** (``send_packet``, ``send_udp``): the matcher's decision (exempt, permit, block,
  negotiate); for Negotiate Security the SA database by flow; without an SA pair an *acquire*
  asks IKE to negotiate once per flow, queues a bounded number of packets and tells the sender
  *negotiating*; a flow whose negotiation failed after the peer answered is *blocked* for one
  minute. Traffic that no rule secures still uses an SA pair a peer negotiated with us (the
  default response rule's dynamic filters) and waits while such a negotiation runs.
- **Inbound** (``receive_datagram``, ``receive_esp``, ``receive_clear``): ESP by SPI, AH and
  clear text, selector and policy checks, the echo responder: ``policyagent.inbound``.
- **IKE** (acquires, events, soft SAs, blocks): ``policyagent.lifecycle``; **time** (lifetimes,
  rekeys, idle deletion, ``get_timer``/``handle_timer``): ``policyagent.timers``. The class
  inherits the three; this module holds its state, commands, outputs and the outbound path.

Outputs are queued: ``datagrams_to_send`` (UDP payloads with the local port to send from),
``next_delivery`` (packets for applications), ``next_notification`` (negotiating/blocked notices
for senders), audit events in ``audit``; ``get_timer``/``handle_timer`` drive every timer from the
``now`` the caller passes. No sockets, no clock, randomness injected; the one file access is the
machine certificate store (``AgentConfig.cert_store``), read when a policy that uses
certificates is assigned.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from espcore import EspError, LifetimeExpired, SaState
from policyagent import datapath as dp
from policyagent.agenttypes import AgentConfig, AgentStats, Delivery, SendResult, SenderNotified
from policyagent.audit import AuditLog
from policyagent.certstore import MachineStore
from policyagent.ikeconfig import PolicyConfig, selectors_for
from policyagent.inbound import Inbound
from policyagent.lifecycle import Lifecycle
from policyagent.matcher import Direction, Matcher, Packet, Verdict
from policyagent.model import AuthKind, Policy
from policyagent.sad import SaDatabase, SaPair
from policyagent.timers import Timers
from policyagent.trace import null_logger

__all__ = ["AgentConfig", "AgentStats", "Delivery", "PolicyAgent", "SendResult", "SenderNotified",
           "kerberos_credentials"]

_CACHE_LIMIT = 4096


@dataclass(slots=True)
class _Route:
    """A cached outbound decision for one 5-tuple (flow key for Negotiate, pair if known)."""

    verdict: Verdict
    decision: Any
    flow: Any = None
    pair: SaPair | None = None
    generation: int = -1


def kerberos_credentials(config: AgentConfig) -> Any:
    """This computer's Kerberos credentials from ``config`` (None: not configured). A keytab and
    principal become an ``ikeproto.krb5.KerberosCredentials`` (``gssapi`` is imported on first
    use, so configuring it never fails for lack of the package; negotiating does, with a 545)."""
    if config.kerberos is not None:
        return config.kerberos
    if config.kerberos_keytab is None or config.kerberos_principal is None:
        return None
    from ikeproto.krb5 import KerberosCredentials

    return KerberosCredentials(keytab=config.kerberos_keytab, principal=config.kerberos_principal)


def default_ike_factory(**kwargs: Any) -> Any:
    """The real ``ikeproto.endpoint.IkeEndpoint`` (imported late: ikeproto's exchange layer)."""
    from ikeproto.endpoint import IkeEndpoint

    return IkeEndpoint(**kwargs)


class PolicyAgent(Inbound, Lifecycle, Timers):
    """One host's policy agent. ``local_addresses`` are this host's addresses (the first is its
    IKE address); ``policy`` the assigned policy (None: no IPsec, everything in clear);
    ``ike_factory(config=, local_address=, ike_port=, natt_port=, rng=, logger=, trace=)``
    builds the IKE endpoint (a new one on ``restart``); ``logger`` is the IKE debug trace
    (None: tracing off, and the endpoint is told so)."""

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
        self._tracing = logger is not None
        self._rng = rng
        self._ike_factory = ike_factory or default_ike_factory
        self.ike_config = PolicyConfig(None, self.address,
                                       force_encapsulation=config.force_encapsulation,
                                       kerberos_psk=config.kerberos_psk,
                                       kerberos=kerberos_credentials(config),
                                       kerberos_peers=config.kerberos_peers)
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
                                     logger=self.log, trace=self._tracing)
        self.started_at = now

    # -- commands -------------------------------------------------------------------------------

    def assign_policy(self, policy: Policy | None, now: float) -> None:
        """Assign ``policy`` (None unassigns): SAs of the previous policy are deleted."""
        self.delete_all(now, reason="policy changed")
        self.policy = policy
        self.matcher = Matcher(policy, self.local_addresses, nat_t=True) if policy else None
        self.ike_config.matcher = self.matcher
        self._load_certificates(policy)
        self._routes.clear()
        self._inbound.clear()
        self.log.info("policy_assigned", policy=policy.name if policy else None)

    def _load_certificates(self, policy: Policy | None) -> None:
        """Read the machine certificate store once per policy load, when a rule uses certificates
        (the only file access of the core: the seed's store is read when the policy is applied)."""
        store = None
        if self.config.cert_store is not None and policy is not None and any(
                a.kind is AuthKind.CERTIFICATE for r in policy.rules for a in r.authentication):
            store = MachineStore.load(self.config.cert_store)
            for problem in store.problems:
                self.log.warning("certificate_store_problem", problem=problem)
        self.ike_config.set_certificates(store, validation_time=self.config.certificate_time)

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
        keepalives = getattr(self.ike, "nat_keepalives", None)
        if keepalives is not None:
            # RFC 3948 §2.3: the single octet 0xFF, without the non-ESP marker, when behind a NAT.
            for addr, local_port in keepalives(now):
                self._out.append((b"\xff", addr, local_port))

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

    # -- views ----------------------------------------------------------------------------------

    @property
    def pending_negotiations(self) -> int:
        return len(self._acquires)
