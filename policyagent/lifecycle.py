"""The IKE side of the policy agent: acquires, IKE events, soft SAs, blocks, lifetimes, rekeys.

Owns the behaviours the seed describes around negotiation (ARCHITECTURE "Behaviour the seed
describes"), as the ``Lifecycle`` base of ``policyagent.agent.PolicyAgent``:

- an *acquire* per flow (one IKE ``initiate`` per flow, not per packet); when the peer has not
  answered IKE 3 seconds after it started and the action allows unsecured communication, a
  **soft SA** lets the flow go in clear (audited, ``<none>`` in the monitor); without fallback
  the endpoint's give-up is a 547 "No response from peer"; a negotiation that fails *after the
  peer answered* **blocks** the flow for one minute ("If at any time the client does reply,
  then a negotiation is in progress and must succeed completely");
- quick-mode SA pairs from ``Phase2Established`` (initiator or responder); a peer's quick mode
  in progress makes our traffic to it wait (*negotiating*) rather than race it, and senders of
  recent clear traffic to that peer are told *negotiating* (the seed's ping on the client);
- lifetimes in seconds (``now``) and kilobytes (``espcore`` soft/hard byte limits): renegotiated
  at 90 % when traffic flowed in the last 5 minutes, by the side that sent more data or, on a
  tie, initiated the previous quick mode (the other side at 95 % if nothing came); the old pair
  stays a short grace period for packets in flight, then is deleted;
- a pair whose inbound SA is idle for 5 minutes is deleted, both directions, with a Delete;
- a responder-only peer's main mode is dropped one hour after its last packet; a main mode that
  expires (480 minutes) while traffic flows is renegotiated;
- Delete from the peer removes the pair (542); main mode ends are audited (543).

No clock is read: every deadline is computed from the ``now`` given to the inputs.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ikeproto.config import Phase2Config
from ikeproto.events import (NegotiationFailed, Phase1Deleted, Phase1Established,
                             Phase2Deleted, Phase2Established)
from policyagent import audit, records
from policyagent.datapath import IPPROTO_ICMP, IPPROTO_ICMPV6, echo_ident
from policyagent.sad import FlowKey, PairState, SaPair, build_pair

_MM, _QM = 2, 32  # ISAKMP exchange types (RFC 2408 §3.1, RFC 2409 §5): Main Mode, Quick Mode
_NEVER = float("-inf")


class SendResult(enum.Enum):
    """What happened to an outbound packet."""

    PROTECTED = "protected"
    CLEAR = "clear"
    NEGOTIATING = "negotiating"  # queued while IKE negotiates ("Negotiating IP Security")
    BLOCKED = "blocked"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderNotified:
    """A notice for the application that sent traffic ``src``:``sport`` -> ``dst``:``dport``.

    ``kind`` is "negotiating" or "blocked"; ``echo`` is (identifier, sequence) for ICMP echo.
    """

    kind: str
    at: float
    src: str
    dst: str
    protocol: int
    sport: int | None
    dport: int | None
    echo: tuple[int, int] | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Ports, modes and the seed's timers (seconds)."""

    ike_port: int = 500
    natt_port: int = 4500
    force_encapsulation: bool = False  # ESP in UDP always (the embedded path, no root)
    kerberos_psk: bytes | None = field(default=None, repr=False)  # Kerberos substitute
    has_kerberos: bool = False
    queue_limit: int = 16  # packets queued per negotiation
    soft_sa_after_s: float = 3.0  # IKE silence before falling back to clear
    block_s: float = 60.0  # after a failed negotiation the peer answered
    rekey_fraction: float = 0.9
    late_rekey_fraction: float = 0.95  # the side that should not rekey, if nothing came
    active_window_s: float = 300.0  # "traffic in the last 5 minutes"
    idle_s: float = 300.0  # inbound SA idle: delete the pair
    responder_forget_s: float = 3600.0  # responding client: drop state for a server
    negotiation_timeout_s: float = 60.0  # guard when IKE reports nothing at all
    responding_timeout_s: float = 30.0
    superseded_grace_s: float = 10.0  # old pair kept after a rekey for packets in flight
    notice_window_s: float = 5.0  # recent clear flows told about a peer's negotiation
    replay_window: int = 64
    echo_responder: bool = True
    ttl: int = 64


@dataclass(slots=True)
class AgentStats:
    """The monitor's statistics (ipsecmon's, and the drops by reason)."""

    packets_out_protected: int = 0
    packets_in_protected: int = 0
    packets_out_clear: int = 0
    packets_in_clear: int = 0
    bytes_out_clear: int = 0
    bytes_in_clear: int = 0
    authenticated_bytes_sent: int = 0
    authenticated_bytes_received: int = 0
    confidential_bytes_sent: int = 0
    confidential_bytes_received: int = 0
    main_modes: int = 0
    quick_modes: int = 0
    soft_sas: int = 0
    negotiation_failures: int = 0
    acquires: int = 0
    rekeys: int = 0
    sa_deleted: int = 0
    main_mode_deleted: int = 0
    ike_in: int = 0
    ike_out: int = 0
    keepalives: int = 0
    echo_requests_answered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__ if name != "dropped"}
        out["dropped"] = dict(self.dropped)
        out["dropped_total"] = sum(self.dropped.values())
        return out


@dataclass(slots=True, kw_only=True, eq=False)
class _Acquire:
    request_id: int
    key: FlowKey
    peer: str
    decision: Any
    phase2: Phase2Config
    started_at: float
    queue: deque = field(default_factory=deque)
    is_soft: bool = False
    rekey_of: int | None = None


@dataclass(slots=True, eq=False)
class _Responding:
    started_at: float
    queue: deque = field(default_factory=deque)


class Lifecycle:
    """The negotiation and SA lifecycle half of ``PolicyAgent`` (see the module docstring)."""

    def _init_lifecycle(self, now: float) -> None:
        self._acquires: dict[FlowKey, _Acquire] = {}
        self._by_request: dict[int, _Acquire] = {}
        self._blocked: dict[FlowKey, float] = {}
        self._responding: dict[str, _Responding] = {}
        self._heard: dict[str, float] = {}  # peer -> last IKE datagram from it
        self._auth: dict[str, str] = {}  # peer -> phase-1 auth method (for audit)
        self._identity: dict[str, str] = {}  # peer -> identity text
        self._clear_flows: dict[str, dict[tuple, float]] = {}
        self._forget: dict[str, float] = {}  # responder-only peer -> when to drop its state
        self._own_timer: float | None = None
        self._timer_dirty = True

    # -- IKE input ------------------------------------------------------------------------------

    def receive_ike(self, data: bytes, addr: tuple[str, int], now: float, *,
                    local_port: int | None = None) -> None:
        """One ISAKMP message (without the non-ESP marker) from ``addr``."""
        peer = addr[0]
        self.stats.ike_in += 1
        self._heard[peer] = now
        if (peer not in self._responding and len(data) >= 28 and data[18] in (_MM, _QM)
                and self._is_fresh_peer(peer)):
            self._begin_responding(peer, now)
        self.ike.receive_datagram(data, addr, now, local_port=local_port or self.config.ike_port)
        self._timer_dirty = True
        self._drain_ike(now)

    def _is_fresh_peer(self, peer: str) -> bool:
        """No negotiation of ours with ``peer`` runs and no SA pair with it exists."""
        if any(a.peer == peer for a in self._acquires.values()):
            return False
        if any(not p.is_soft for p in self.sad.with_peer(peer)):
            return False
        return self.ike_config.phase1_config((peer, self.config.ike_port)) is not None

    def _begin_responding(self, peer: str, now: float) -> None:
        self._responding[peer] = _Responding(now)
        self._timer_dirty = True
        flows = self._clear_flows.pop(peer, {})
        for key, (at, echo) in flows.items():
            if now - at <= self.config.notice_window_s:
                self._notifications.append(SenderNotified(
                    kind="negotiating", at=now, src=key[0], dst=key[1], protocol=key[2],
                    sport=key[3], dport=key[4], echo=echo, reason="the peer requested security"))
        self.log.info("responding", peer=peer)

    def _end_responding(self, peer: str, now: float) -> None:
        waiting = self._responding.pop(peer, None)
        if waiting is not None:
            self._timer_dirty = True
            self._replay_queue(waiting.queue, now)

    def _note_clear_flow(self, key: tuple, segment: bytes, now: float) -> None:
        """Remember recent clear flows so a peer's negotiation can be announced to them."""
        flows = self._clear_flows.setdefault(key[1], {})
        if len(flows) >= 64:
            flows.clear()
        echo = echo_ident(segment) if key[2] in (IPPROTO_ICMP, IPPROTO_ICMPV6) else None
        flows[key] = (now, echo)

    # -- acquires -------------------------------------------------------------------------------

    def _start_acquire(self, flow: FlowKey, decision: Any, now: float) -> _Acquire | None:
        peer, local_ts, remote_ts, mode = flow
        phase2 = self.ike_config.phase2_for(decision, local_ts, remote_ts, mode)
        if phase2 is None or self.ike_config.phase1_config((peer, self.config.ike_port)) is None:
            return None
        request_id = self.ike.initiate(peer=(peer, self.config.ike_port), phase2=phase2, now=now)
        acquire = _Acquire(request_id=request_id, key=flow, peer=peer, decision=decision,
                           phase2=phase2, started_at=now)
        self._acquires[flow] = acquire
        self._by_request[request_id] = acquire
        self.stats.acquires += 1
        self._timer_dirty = True
        self.log.info("acquire", peer=peer, request=request_id, rule=decision.rule.name
                      if decision.rule else None)
        return acquire

    def _answered(self, acquire: _Acquire) -> bool:
        return self._heard.get(acquire.peer, _NEVER) >= acquire.started_at

    def _soft_sa(self, acquire: _Acquire, now: float) -> None:
        """The seed's soft SA: the peer did not answer IKE, the action allows clear text."""
        peer, local_ts, remote_ts, mode = acquire.key
        pair = SaPair(id=self.sad.new_id(), peer=peer, local=self.address, local_ts=local_ts,
                      remote_ts=remote_ts, mode=mode, is_soft=True, established_at=now,
                      last_in_at=now, last_out_at=now, decision=acquire.decision,
                      policy_name=self.policy.name if self.policy else None,
                      rule_name=acquire.decision.rule.name if acquire.decision.rule else None)
        self.sad.add(pair)
        acquire.is_soft = True
        if self._acquires.get(acquire.key) is acquire:
            del self._acquires[acquire.key]
        self.stats.soft_sas += 1
        self.audit.record(records.soft_sa_established(pair, at=now, host=self.address))
        self.log.info("soft_sa", peer=peer)
        self._timer_dirty = True
        self._replay_queue(acquire.queue, now)

    def _finish_acquire(self, acquire: _Acquire) -> None:
        self._by_request.pop(acquire.request_id, None)
        if self._acquires.get(acquire.key) is acquire:
            del self._acquires[acquire.key]
        self._timer_dirty = True

    def _fail_queue(self, acquire: _Acquire, kind: str, reason: str, now: float) -> None:
        while acquire.queue:
            key, segment, _ = acquire.queue.popleft()
            self._drop("negotiation-failed")
            self._notify(kind, key, segment, now, reason)

    # -- IKE events -----------------------------------------------------------------------------

    def _drain_ike(self, now: float) -> None:
        self._pull_ike(now)
        while (event := self.ike.next_event()) is not None:
            if isinstance(event, Phase2Established):
                self._on_phase2(event, now)
            elif isinstance(event, Phase1Established):
                self._on_phase1(event)
            elif isinstance(event, NegotiationFailed):
                self._on_failed(event, now)
            elif isinstance(event, Phase2Deleted):
                self._on_phase2_deleted(event, now)
            elif isinstance(event, Phase1Deleted):
                self._on_phase1_deleted(event, now)

    def _on_phase1(self, ev: Phase1Established) -> None:
        peer = ev.peer[0]
        self.stats.main_modes += 1
        self._auth[peer] = ev.auth
        label = records.identity_label(ev.auth, ev.peer_id, peer)
        decision = self.ike_config.peer_decision(peer)
        choices = self.ike_config.auth_choices(decision) if decision is not None else []
        if choices and "substitute" in choices[0].label:
            label = label.replace("Preshared key ID", "Preshared key ID (standing in for Kerberos)")
        self._identity[peer] = label
        self.audit.record(records.main_mode_established(ev, host=self.address))

    def _on_phase2(self, ev: Phase2Established, now: float) -> None:
        peer = ev.peer[0]
        acquire = self._by_request.get(ev.request_id) if ev.request_id is not None else None
        if acquire is not None:
            decision, phase2 = acquire.decision, acquire.phase2
        else:
            decision = self.ike_config.responder_decision(peer, ev.local_ts, ev.remote_ts, ev.mode)
            phase2 = (self.ike_config.phase2_for(decision, ev.local_ts, ev.remote_ts, ev.mode)
                      if decision is not None else None)
        pair = build_pair(ev, pair_id=self.sad.new_id(), peer=peer, local=self.address,
                          soft_fraction=self.config.rekey_fraction,
                          replay_window=self.config.replay_window, rng=self._rng, now=now)
        pair.decision, pair.phase2 = decision, phase2
        pair.policy_name = self.policy.name if self.policy else None
        pair.rule_name = decision.rule.name if decision is not None and decision.rule else None
        pair.is_dynamic = decision is None or decision.is_default_response
        pair.peer_identity = self._identity.get(peer, records.identity_label(None, ev.peer_id, peer))
        pair.rekey_at = self._rekey_time(pair, self.config.rekey_fraction)
        self._forget.pop(peer, None)
        replaced = self.sad.add(pair)
        if replaced is not None:
            self._supersede(replaced, now)
        self.stats.quick_modes += 1
        self.audit.record(records.quick_mode_established(ev, pair, host=self.address))
        self.log.info("sa_pair_installed", peer=peer, spis_in=pair.spis_in,
                      spis_out=pair.spis_out, initiator=ev.is_initiator)
        self._timer_dirty = True
        if acquire is not None:
            self._finish_acquire(acquire)
            if acquire.rekey_of is not None:
                old = self.sad.pairs.get(acquire.rekey_of)
                if old is not None and old is not pair:
                    self._supersede(old, now)
            self._replay_queue(acquire.queue, now)
        if peer in self._responding:
            self._end_responding(peer, now)

    def _supersede(self, old: SaPair, now: float) -> None:
        if old.is_soft:
            self.sad.remove(old)
            return
        if old.state is PairState.ACTIVE:
            old.set_state(PairState.SUPERSEDED)
            old.superseded_at = now
            self._timer_dirty = True

    def _on_failed(self, ev: NegotiationFailed, now: float) -> None:
        peer = ev.peer[0]
        self.stats.negotiation_failures += 1
        acquires = ([self._by_request[ev.request_id]] if ev.request_id in self._by_request else
                    [a for a in self._by_request.values() if a.peer == peer and ev.phase == 1
                     and ev.request_id is None])
        answered = (not ev.timed_out) or any(self._answered(a) for a in acquires)
        flt = audit.AuditFilter.from_selectors(*acquires[0].key[1:3]) if acquires else None
        self.audit.record(records.negotiation_failed(ev, host=self.address, filter=flt,
                                                     answered=answered, auth=self._auth.get(peer)))
        self.log.info("negotiation_failed", peer=peer, reason=ev.reason, timed_out=ev.timed_out,
                      answered=answered)
        if not acquires and peer in self._responding:
            self._end_responding(peer, now)
        for acquire in acquires:
            self._finish_acquire(acquire)
            if acquire.rekey_of is not None:
                pair = self.sad.pairs.get(acquire.rekey_of)
                if pair is not None:
                    pair.rekey_request = None
                continue
            if acquire.is_soft:
                continue  # already communicating in clear
            if ev.timed_out and not self._answered(acquire):
                if acquire.decision.falls_back_to_clear:
                    self._soft_sa(acquire, now)
                else:
                    self._fail_queue(acquire, "blocked", "no response from peer", now)
                continue
            self._blocked[acquire.key] = now + self.config.block_s
            self._fail_queue(acquire, "blocked", f"IKE negotiation failed: {ev.reason}", now)

    def _on_phase2_deleted(self, ev: Phase2Deleted, now: float) -> None:
        for spi in ev.spis:
            pair = self.sad.by_spi(spi, ev.protocol)
            if pair is not None:
                reason = "deleted by peer" if ev.by_peer else ev.reason
                self._remove_pair(pair, now, reason=reason, send_delete=False)

    def _on_phase1_deleted(self, ev: Phase1Deleted, now: float) -> None:
        peer = ev.peer[0]
        self.stats.main_mode_deleted += 1
        reason = "deleted by peer" if ev.by_peer else ev.reason
        self.audit.record(records.main_mode_ended(peer, at=now, host=self.address, reason=reason))
        if ev.reason == "expired" and not ev.by_peer:
            # The seed: main mode is renegotiated when data is still flowing at 8 hours.
            active = [p for p in self.sad.with_peer(peer) if not p.is_soft
                      and p.state is PairState.ACTIVE
                      and now - p.last_activity_at <= self.config.active_window_s]
            if active:
                self._rekey(max(active, key=lambda p: p.last_activity_at), now)

    # -- pairs ----------------------------------------------------------------------------------

    def _rekey_time(self, pair: SaPair, fraction: float) -> float | None:
        if not pair.lifetime_s:
            return None
        return pair.established_at + pair.lifetime_s * fraction

    def _rekey(self, pair: SaPair, now: float) -> None:
        if pair.rekey_request is not None or not isinstance(pair.phase2, Phase2Config):
            return
        request_id = self.ike.initiate(peer=(pair.peer, self.config.ike_port), phase2=pair.phase2,
                                       now=now)
        self._by_request[request_id] = _Acquire(request_id=request_id, key=pair.key,
                                                peer=pair.peer, decision=pair.decision,
                                                phase2=pair.phase2, started_at=now,
                                                rekey_of=pair.id)
        pair.rekey_request = request_id
        self.stats.rekeys += 1
        self._timer_dirty = True
        self.log.info("rekey", peer=pair.peer, spis_in=pair.spis_in)

    def _outbound_soft_limit(self, pair: SaPair, now: float) -> None:
        """An outbound SA crossed its soft kilobyte limit: we are the sender, we rekey."""
        if pair.state is PairState.ACTIVE:
            self._rekey(pair, now)

    def _remove_pair(self, pair: SaPair, now: float, *, reason: str,
                     send_delete: bool = True) -> None:
        if not self.sad.remove(pair):
            return
        self._timer_dirty = True
        if pair.is_soft:
            return
        if send_delete:
            for protocol, spi in zip(pair.protocols, pair.spis_in):
                try:
                    self.ike.delete_phase2((pair.peer, self.config.ike_port), spi,
                                           protocol=protocol, now=now)
                except Exception as exc:  # the endpoint may have no ISAKMP SA left to send it
                    self.log.info("delete_not_sent", peer=pair.peer, spi=spi, error=str(exc))
        self.stats.sa_deleted += 1
        self.audit.record(records.quick_mode_ended(pair, at=now, host=self.address, reason=reason))
        self.log.info("sa_pair_removed", peer=pair.peer, spis_in=pair.spis_in, reason=reason)
        if pair.is_dynamic and not self.sad.with_peer(pair.peer):
            self._forget[pair.peer] = pair.last_activity_at + self.config.responder_forget_s

    def delete_all(self, now: float, *, reason: str) -> None:
        """Delete every SA pair (with Deletes) and forget pending negotiations."""
        for pair in list(self.sad):
            self._remove_pair(pair, now, reason=reason)
        for acquire in list(self._by_request.values()):
            self._finish_acquire(acquire)
            self._fail_queue(acquire, "blocked", reason, now)
        self._blocked.clear()
        for peer in list(self._responding):
            self._responding.pop(peer)

    # -- timers ---------------------------------------------------------------------------------

    @property
    def timer_changed(self) -> bool:
        """Whether ``get_timer`` may answer differently than last time (adapters skip the call
        otherwise: data packets alone never bring a deadline forward)."""
        return self._timer_dirty

    def get_timer(self) -> float | None:
        """The absolute time at which ``handle_timer`` should next be called, or None."""
        if self._timer_dirty:
            self._own_timer = self._compute_timer()
            self._timer_dirty = False
        ike = self.ike.get_timer()
        own = self._own_timer
        if ike is None:
            return own
        return ike if own is None or ike < own else own

    def _compute_timer(self) -> float | None:
        c = self.config
        times = []
        for a in self._by_request.values():
            if not a.is_soft and a.rekey_of is None and a.decision.falls_back_to_clear:
                times.append(a.started_at + c.soft_sa_after_s)
            times.append(a.started_at + c.negotiation_timeout_s)
        times.extend(r.started_at + c.responding_timeout_s for r in self._responding.values())
        times.extend(self._forget.values())
        for p in self.sad.pairs.values():
            if p.is_soft:
                times.append(p.last_activity_at + c.idle_s)
                continue
            if p.superseded_at is not None:
                times.append(p.superseded_at + c.superseded_grace_s)
            if p.expires_at is not None:
                times.append(p.expires_at)
            if p.rekey_at is not None and p.rekey_request is None:
                times.append(p.rekey_at)
            times.append(p.last_in_at + c.idle_s)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``: IKE's, then acquires, pairs and peers."""
        c = self.config
        ike_at = self.ike.get_timer()
        if ike_at is not None and ike_at <= now:
            self.ike.handle_timer(now)
            self._drain_ike(now)
        for a in list(self._by_request.values()):
            if (not a.is_soft and a.rekey_of is None and a.decision.falls_back_to_clear
                    and now >= a.started_at + c.soft_sa_after_s and not self._answered(a)):
                self._soft_sa(a, now)
            elif now >= a.started_at + c.negotiation_timeout_s:
                self._finish_acquire(a)
                if a.rekey_of is not None:
                    pair = self.sad.pairs.get(a.rekey_of)
                    if pair is not None:
                        pair.rekey_request = None
                elif not a.is_soft:
                    self._fail_queue(a, "blocked", "negotiation did not complete", now)
        for peer, waiting in list(self._responding.items()):
            if now >= waiting.started_at + c.responding_timeout_s:
                self._end_responding(peer, now)
        for pair in list(self.sad.pairs.values()):
            self._pair_timers(pair, now)
        for peer, at in list(self._forget.items()):
            if now >= at:
                del self._forget[peer]
                if not self.sad.with_peer(peer):
                    self._forget_peer(peer, now)
        self._timer_dirty = True

    def _pair_timers(self, pair: SaPair, now: float) -> None:
        c = self.config
        if pair.is_soft:
            if now >= pair.last_activity_at + c.idle_s:
                self._remove_pair(pair, now, reason="idle")
            return
        if pair.superseded_at is not None and now >= pair.superseded_at + c.superseded_grace_s:
            self._remove_pair(pair, now, reason="replaced by a new quick mode")
        elif pair.expires_at is not None and now >= pair.expires_at:
            self._remove_pair(pair, now, reason="lifetime (seconds) expired")
        elif now >= pair.last_in_at + c.idle_s:
            self._remove_pair(pair, now, reason="idle for 5 minutes")
        elif pair.rekey_at is not None and now >= pair.rekey_at and pair.rekey_request is None:
            late_at = pair.established_at + pair.lifetime_s * c.late_rekey_fraction
            is_late = now >= late_at
            pair.rekey_at = None if is_late else late_at
            if pair.state is not PairState.ACTIVE:
                return
            if now - pair.last_activity_at > c.active_window_s:
                return  # no traffic in the last 5 minutes: let it expire
            # The seed: the side that sent more data, or initiated the last quick mode, rekeys;
            # the other one waits until 95 % in case that never happens.
            ours = pair.bytes_out > pair.bytes_in or (pair.bytes_out == pair.bytes_in
                                                      and pair.is_initiator)
            if ours or is_late:
                self._rekey(pair, now)

    def _forget_peer(self, peer: str, now: float) -> None:
        """The seed: a responding client drops all state for a server an hour after the last
        packet and is back to respond-only."""
        try:
            self.ike.delete_phase1((peer, self.config.ike_port), now=now)
        except Exception as exc:  # no ISAKMP SA left: nothing to delete
            self.log.info("phase1_delete_not_sent", peer=peer, error=str(exc))
        self._drain_ike(now)
        self._heard.pop(peer, None)
        self._auth.pop(peer, None)
        self._identity.pop(peer, None)
        self.log.info("peer_forgotten", peer=peer)
