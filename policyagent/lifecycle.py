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
- main mode expiring (480 minutes) while traffic flows is renegotiated;
- Delete from the peer removes the pair (542); main mode ends are audited (543);
- authentication failures are audited with their reason: Kerberos (545, the ``GssFailure`` and
  the advice, on whichever side saw it; a responder's refused message 3 fails none of our own
  negotiations, a genuine one may follow), the peer's certificate (544), our own missing
  certificate (547); like any failure after the peer answered, the flow is blocked a minute.

Lifetimes, rekeys and idle deletion are ``policyagent.timers``. No clock is read: every
deadline is computed from the ``now`` given to the inputs.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from ikeproto.config import Identity, Phase2Config
from ikeproto.errors import IkeError
from ikeproto.pki import dn_text
from ikeproto.events import (NegotiationFailed, Phase1Deleted, Phase1Established,
                             Phase2Deleted, Phase2Established)
from policyagent import audit, records
from policyagent.agenttypes import SenderNotified
from policyagent.datapath import IPPROTO_ICMP, IPPROTO_ICMPV6, echo_ident
from policyagent.sad import FlowKey, PairState, SaPair, build_pair

_MM, _QM = 2, 32  # ISAKMP exchange types (RFC 2408 §3.1, RFC 2409 §5): Main Mode, Quick Mode
_NEVER = float("-inf")
_NO_LOCAL_CERTIFICATE = "no-local-certificate"  # ikeproto.pki.Failure.NO_LOCAL_CERTIFICATE


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
        try:
            request_id = self.ike.initiate(peer=(peer, self.config.ike_port), phase2=phase2, now=now)
        except IkeError as exc:  # a policy IKE cannot offer (e.g. no proposal it can encode)
            self.log.info("acquire_refused", peer=peer, error=str(exc))
            return None
        acquire = _Acquire(request_id=request_id, key=flow, peer=peer, decision=decision,
                           phase2=phase2, started_at=now)
        self._acquires[flow] = acquire
        self._by_request[request_id] = acquire
        self.stats.acquires += 1
        self._timer_dirty = True
        self.log.info("acquire", peer=peer, request=request_id, rule=decision.rule.name
                      if decision.rule else None)
        return acquire

    def blocked_flows(self, now: float) -> list[tuple[FlowKey, float]]:
        """Flows blocked after a failed negotiation, with the time their block ends."""
        return [(key, until) for key, until in self._blocked.items() if until > now]

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
        if ev.peer_id.kind == "der-dn" and isinstance(ev.peer_id.value, bytes):
            # The certificate subject as Windows shows it ("CN=..., O=..."), not DER in hex.
            ev = replace(ev, peer_id=Identity(kind="der-dn", value=dn_text(ev.peer_id.value)))
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
            # Replacing an aging pair is a rekey; replacing a young one means both hosts
            # negotiated at once (first packets, or both rekeying): settle on one pair.
            if replaced.is_soft or self._is_aging(replaced, now):
                self._supersede(replaced, now)
            else:
                self._settle_duplicate(replaced, pair, now)
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

    def _is_aging(self, pair: SaPair, now: float) -> bool:
        """Whether a new pair for ``pair``'s flow is its rekey (half its life in seconds or
        kilobytes is gone, or we asked for one) rather than a simultaneous duplicate."""
        if pair.rekey_request is not None:
            return True
        if pair.lifetime_s and now - pair.established_at >= pair.lifetime_s / 2:
            return True
        return bool(pair.lifetime_kb) and pair.kb_used() >= pair.lifetime_kb / 2

    def _settle_duplicate(self, old: SaPair, new: SaPair, now: float) -> None:
        """Both hosts negotiated the same flow at once: two pairs. Both sides must keep the same
        one, or each deletes the pair the other uses: the pair initiated by the lower address
        wins (the newer one when both came from the same host)."""
        def initiator(p: SaPair) -> tuple:
            ip = ipaddress.ip_address(self.address if p.is_initiator else p.peer)
            return (ip.version, int(ip))

        if initiator(old) < initiator(new):
            self.sad.prefer(old)
            self._supersede(new, now)
        else:
            self._supersede(old, now)

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
        if ev.request_id is None and ev.phase == 1 and ev.auth_failure is not None:
            # As responder we refused a Kerberos message 3: a genuine one may still follow, and
            # our own negotiations with the peer are not this one.
            acquires: list[_Acquire] = []
        else:
            acquires = ([self._by_request[ev.request_id]] if ev.request_id in self._by_request else
                        [a for a in self._by_request.values() if a.peer == peer and ev.phase == 1
                         and ev.request_id is None])
        answered = (not ev.timed_out) or any(self._answered(a) for a in acquires)
        flt = audit.AuditFilter.from_selectors(*acquires[0].key[1:3]) if acquires else None
        offered = "; ".join(str(m) for m in acquires[0].decision.security_methods) if acquires else ""
        record = self._auth_failure_record(ev)
        if record is None:
            record = records.negotiation_failed(ev, host=self.address, filter=flt, answered=answered,
                                                auth=self._auth.get(peer), offered=offered)
        self.audit.record(record)
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

    def _auth_failure_record(self, ev: NegotiationFailed) -> audit.AuditEvent | None:
        """545 for a Kerberos failure, 544 for a certificate the peer sent (or refused), 547 for
        our own missing certificate; None for every other failure (``records``)."""
        peer = ev.peer[0]
        point = "Me" if ev.failure_point == "me" else "Peer"
        if ev.auth_failure is not None:
            failure = str(ev.auth_failure)
            self.log.info("kerberos_failed", peer=peer, failure=failure, failure_point=point,
                          reason=ev.reason)
            return audit.KerberosFailed(at=ev.at, host=self.address, peer_address=peer,
                                        peer_identity=self.ike_config.kerberos_peers.get(peer, ""),
                                        failure_point=point, failure=failure, reason=ev.reason)
        cert = ev.certificate_failure
        if cert is None:
            return None
        failure = str(getattr(cert, "value", cert))
        self.log.info("certificate_failed", peer=peer, failure=failure, failure_point=point,
                      reason=ev.reason)
        if failure == _NO_LOCAL_CERTIFICATE:
            # Not a trust failure: this computer has no certificate the rule can use.
            return audit.NegotiationFailed(at=ev.at, host=self.address, mode=audit.MAIN_MODE,
                                           peer_address=peer,
                                           filter=audit.AuditFilter.hosts(self.address, peer),
                                           failure_point="Me", reason=ev.reason)
        return audit.CertificateTrustFailed(at=ev.at, host=self.address, peer_address=peer,
                                            failure_point=point, failure=failure, reason=ev.reason)

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
