"""The inbound half of ``PolicyAgent``: what arrives from the network, and delivery.

Owns the receive path (the seed: packets "are also matched when received (inbound) to see if
they should have been secured, should be blocked, or should be permitted into the system"; RFC
4301 §5.2 is the standards counterpart), as the ``Inbound`` base of ``policyagent.agent.PolicyAgent``:

- the NAT-T port's demultiplexing: a known ESP SPI first (RFC 3948 §2.1), then the non-ESP
  marker (IKE, §2.2), the keep-alive (§2.3), whole IP packets (clear text, or AH whose ICV covers
  the header), else an unknown SPI (dropped, counted);
- ESP and AH (and AH+ESP bundles) unprotected by SPI; failures are counted by reason (replay,
  integrity, no SA, malformed, expired), never raised, and change nothing;
- the unprotected packet must be traffic its SA was negotiated for (the pair's selectors) and
  not blocked by the policy; clear text is delivered unless the matching Negotiate rule requires
  security without accepting unsecured inbound and no soft SA allows it;
- delivery to applications (UDP data, ICMP echo replies) and the in-agent echo responder, whose
  replies go out through the policy like any packet.
"""

from __future__ import annotations

from espcore import DummyPacket, EspError, IntegrityError, LifetimeExpired, ReplayError, SaState, UnknownSpiError
from policyagent import datapath as dp
from policyagent.agenttypes import Delivery, SendResult
from policyagent.matcher import Direction, Packet, Verdict
from policyagent.sad import SaPair


_CACHE_LIMIT = 4096


class Inbound:
    """The receive path of ``PolicyAgent`` (see the module docstring)."""

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
