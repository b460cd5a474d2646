"""SA pair lifetimes and the agent's timers: rekey, expiry, idle deletion, forgetting peers.

Owns, as the ``Timers`` base of ``policyagent.agent.PolicyAgent``, everything that happens to
an SA pair because time passed (the seed, "IKE Quick Mode (Phase 2)" and "Secure Servers"):

- quick-mode lifetimes in seconds (from ``now``) and kilobytes (``espcore`` soft/hard byte
  limits): renegotiated at 90 % when traffic flowed in the last 5 minutes, by the side that sent
  more data or, on a tie, initiated the previous quick mode; the other side at 95 % if nothing
  came; a pair past its lifetime is deleted; a superseded pair after a short grace;
- a pair whose inbound SA is idle for 5 minutes is deleted, both directions, with a Delete;
- soft SAs end after 5 minutes without traffic; a responder-only peer's main mode is dropped one
  hour after its last packet ("back to respond-only");
- ``get_timer``/``handle_timer``: one deadline over IKE's and all of the above, memoized and
  recomputed only when something changed (data packets only ever postpone a deadline).
"""

from __future__ import annotations

from ikeproto.config import Phase2Config
from ikeproto.errors import IkeError
from policyagent import records
from policyagent.lifecycle import _Acquire
from policyagent.sad import PairState, SaPair


class Timers:
    """Lifetimes and timers of ``PolicyAgent`` (see the module docstring)."""

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
                except IkeError as exc:  # the endpoint already forgot this SA (e.g. initial contact)
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
        except IkeError as exc:  # no ISAKMP SA left: nothing to delete
            self.log.info("phase1_delete_not_sent", peer=peer, error=str(exc))
        self._drain_ike(now)
        self._heard.pop(peer, None)
        self._auth.pop(peer, None)
        self._identity.pop(peer, None)
        self.log.info("peer_forgotten", peer=peer)
