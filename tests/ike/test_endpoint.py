"""The IkeEndpoint contract: many SAs with many peers, demultiplexing, one timer, retransmission
schedules, responder cookies bound to the peer address, half-open limits, counters, views, and
the debug trace (steps, payloads, failures, "old -> new", secrets only when asked)."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from ikeproto.config import RetransmitPolicy
from ikeproto.endpoint import IkeEndpoint
from ikeproto.enums import ExchangeType
from ikeproto.events import NegotiationFailed
from ikeproto.message import parse_message
from tests.ike.helpers import (
    A_ADDR,
    B_ADDR,
    PSK,
    Provider,
    carry_traffic,
    endpoints,
    established,
    events,
    mirror,
    phase1,
    phase2,
    run_timers,
    seeded_rng,
    transfer,
)

CFG = phase2("10.1.0.0/24", "10.2.0.0/24")


def test_one_responder_serves_many_peers_at_once(clock) -> None:
    """Twenty initiators with their own addresses negotiate with one responder concurrently;
    datagrams are demultiplexed by cookies and every pair carries traffic."""
    b = IkeEndpoint(config=Provider(phase1(), [mirror(CFG)]), local_address=B_ADDR, rng=seeded_rng(5), trace=False)
    peers = [IkeEndpoint(config=Provider(phase1()), local_address=f"198.51.100.{i}", rng=seeded_rng(100 + i),
                         trace=False) for i in range(1, 21)]
    for p in peers:
        p.initiate((B_ADDR, 500), CFG, clock.now)
    # Interleave: one round of every peer's output before any answer.
    for _ in range(12):
        for p in peers:
            for data, dest, port in p.datagrams_to_send(clock.now):
                b.receive_datagram(data, (p.local_address, port), clock.now, local_port=dest[1])
        for data, dest, port in b.datagrams_to_send(clock.now):
            peer = next(p for p in peers if p.local_address == dest[0])
            peer.receive_datagram(data, (B_ADDR, port), clock.now, local_port=dest[1])
    mine = established(events(b))
    assert len(mine) == 20 and len(b.ike_sas()) == 20
    for p in peers:
        (theirs,) = established(events(p))
        (ours,) = [e for e in mine if e.peer[0] == p.local_address]
        assert carry_traffic(theirs, ours) == 6
    assert b.stats.phase1_established == b.stats.phase2_established == 20
    assert b.stats.dropped == {}


def test_timer_follows_the_retransmission_schedule(clock) -> None:
    a, _b = endpoints(phase1())
    assert a.get_timer() is None
    start = clock.now
    a.initiate((B_ADDR, 500), CFG, clock.now)
    assert a.get_timer() == start + 0.5
    a.handle_timer(start + 0.4)  # early: nothing happens
    a.datagrams_to_send(clock.now)
    a.handle_timer(start + 0.4)
    assert a.datagrams_to_send(clock.now) == [] and a.stats.retransmits == 0
    a.handle_timer(start + 0.5)
    assert len(a.datagrams_to_send(clock.now)) == 1 and a.get_timer() == start + 1.5


def test_retransmission_policy_is_configurable(clock) -> None:
    policy = RetransmitPolicy(initial_s=1.0, first_retransmits=4, first_give_up_s=20.0, max_interval_s=4.0)
    a, _b = endpoints(phase1(), retransmit=policy)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    times = []
    while (t := a.get_timer()) is not None:
        a.handle_timer(t)
        if a.datagrams_to_send(t):
            times.append(t - clock.now)
    assert times == [1.0, 3.0, 7.0, 11.0]
    (f,) = events(a)
    assert isinstance(f, NegotiationFailed) and f.at - clock.now == 20.0


def test_after_the_peer_answered_the_longer_schedule_applies(clock) -> None:
    """Message 3 is never answered: 5 resends at +0.5, +1.5, +3.5, +7.5, +15.5, give-up at +23.5;
    the peer did answer message 1, so the failure is not a timeout of an IKE-less peer."""
    a, b = endpoints(phase1(), phase2_b=[mirror(CFG)])
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=lambda d: None if d.sender == "a" and len(d.data) > 300 else d.data)
    start = clock.now
    resent = []
    while (t := a.get_timer()) is not None:
        a.handle_timer(t)
        if a.datagrams_to_send(t):
            resent.append(t - start)
    assert resent == [0.5, 1.5, 3.5, 7.5, 15.5]
    (f,) = [e for e in events(a) if isinstance(e, NegotiationFailed)]
    assert (f.timed_out, f.failure_point, f.at - start) == (False, "peer", 23.5)


def test_responder_cookie_is_bound_to_the_peer_address(clock) -> None:
    """CKY-R is derived from the peer's address and CKY-I: stable for a retransmitted message 1,
    different for another address, and a message 3 from another address finds no SA."""
    a, b = endpoints(phase1(), phase2_b=[mirror(CFG)])
    a.initiate((B_ADDR, 500), CFG, clock.now)
    ((mm1, _, _),) = a.datagrams_to_send(clock.now)
    b.receive_datagram(mm1, (A_ADDR, 500), clock.now)
    b.receive_datagram(mm1, ("198.51.100.7", 500), clock.now)
    (r1, _, _), (r2, _, _) = b.datagrams_to_send(clock.now)
    assert r1[:8] == r2[:8] == mm1[:8] and r1[8:16] != r2[8:16]
    a.receive_datagram(r1, (B_ADDR, 500), clock.now)
    ((mm3, _, _),) = a.datagrams_to_send(clock.now)
    b.receive_datagram(mm3, ("198.51.100.8", 500), clock.now)
    assert b.datagrams_to_send(clock.now) == [] and b.stats.dropped["address does not match the SA"] == 1
    b.receive_datagram(mm3, (A_ADDR, 500), clock.now)
    assert len(b.datagrams_to_send(clock.now)) == 1


def test_half_open_limits_per_peer_and_in_total(clock) -> None:
    b = IkeEndpoint(config=Provider(phase1()), local_address=B_ADDR, rng=seeded_rng(3), trace=False,
                    max_half_open_per_peer=3, max_half_open=5)
    initiators = [IkeEndpoint(config=Provider(phase1()), local_address=A_ADDR, rng=seeded_rng(50 + i), trace=False)
                  for i in range(4)]
    for p in initiators:
        p.initiate((B_ADDR, 500), CFG, clock.now)
        ((mm1, _, _),) = p.datagrams_to_send(clock.now)
        b.receive_datagram(mm1, (A_ADDR, 500), clock.now)
    assert len(b.datagrams_to_send(clock.now)) == 3 and b.stats.dropped["half-open limit per peer"] == 1
    for i in range(4):
        p = IkeEndpoint(config=Provider(phase1()), local_address=f"198.51.100.{i}", rng=seeded_rng(90 + i), trace=False)
        p.initiate((B_ADDR, 500), CFG, clock.now)
        ((mm1, _, _),) = p.datagrams_to_send(clock.now)
        b.receive_datagram(mm1, (p.local_address, 500), clock.now)
    assert len(b.datagrams_to_send(clock.now)) == 2 and b.stats.dropped["half-open limit"] == 2
    # Half-open SAs expire (silently: none of these peers proved its address) and make room.
    clock.advance(31)
    b.handle_timer(clock.now)
    assert b.ike_sas() == [] and events(b) == []


def test_views_and_counters(clock) -> None:
    a, b = endpoints(phase1(), phase2_b=[mirror(CFG)])
    a.initiate((B_ADDR, 500), CFG, clock.now)
    assert [v.state for v in a.ike_sas()] == ["connecting"] and a.ike_sa(B_ADDR) is None
    transfer(a, b, clock.now)
    view = a.ike_sa((B_ADDR, 500))
    assert (view.state, view.cipher, view.key_bits, view.dh_group, view.auth) == ("established", "aes-cbc", 128, 14, "psk")
    assert view.expires_at == clock.now + 28800 and view.is_initiator
    stats = a.stats.as_dict()
    assert stats["sent"] == 5 and stats["received"] == 4 and stats["phase2_established"] == 1


def test_trace_records_steps_payloads_transitions_and_failures_without_secrets(clock) -> None:
    """The trace has every message with its payload summary, "old -> new" state changes and the
    failure reason; no key or PSK appears unless trace_secrets is set, and then keys do."""
    def run(secrets: bool) -> list[dict]:
        log = structlog.get_logger("ikeproto-test")
        a = IkeEndpoint(config=Provider(phase1()), local_address=A_ADDR, rng=seeded_rng(1), logger=log,
                        trace_secrets=secrets)
        b = IkeEndpoint(config=Provider(phase1(psk=b"other-psk"), [mirror(CFG)]), local_address=B_ADDR,
                        rng=seeded_rng(2), logger=log, trace_secrets=secrets)
        with capture_logs() as logs:
            a.initiate((B_ADDR, 500), CFG, clock.now)
            transfer(a, b, clock.now)
        return logs

    logs = run(False)
    text = repr(logs)
    assert any(e["event"] == "message received" and "SA(P1 ISAKMP" in e["payloads"] for e in logs)
    assert any(e.get("transition") == "sa-sent -> ke-sent" for e in logs)
    assert any(e["event"] == "failure" and "does not decrypt" in e.get("error", "") for e in logs)
    assert "secret" not in {e["event"] for e in logs}
    assert PSK.hex() not in text and "other-psk" not in text and PSK.decode() not in text
    secrets = [e for e in run(True) if e["event"] == "secret"]
    assert {e["name"] for e in secrets} >= {"SKEYID", "SKEYID_a", "SKEYID_d", "SKEYID_e", "g^xy"}


def test_exchange_types_in_the_log_are_main_quick_and_informational_only(clock) -> None:
    a, b = endpoints(phase1(), phase2_b=[mirror(CFG)])
    a.initiate((B_ADDR, 500), CFG, clock.now)
    log = transfer(a, b, clock.now)
    a.delete_phase1((B_ADDR, 500), now=clock.now)
    log += transfer(a, b, clock.now)
    assert {parse_message(d.data).exchange_type for d in log} == {
        ExchangeType.IDENTITY_PROTECTION, ExchangeType.QUICK_MODE, ExchangeType.INFORMATIONAL}
    run_timers(a, b, clock, clock.now + 100)
    assert a.get_timer() is None and b.get_timer() is None


def test_ipv6_peers_negotiate_and_carry_ipv6_traffic(clock) -> None:
    """IPv6 addresses throughout: ID_IPV6_ADDR identities, IPv6 NAT-D hashes, subnet IDs, and
    transport/tunnel SAs carrying IPv6 packets (UDP-encapsulated when forced)."""
    from ikeproto.endpoint import IkeEndpoint as Ep

    for mode, forced in (("tunnel", True), ("transport", False)):
        local, remote = ("2001:db8:1::/64", "2001:db8:2::/64") if mode == "tunnel" else ("2001:db8::1/128",
                                                                                          "2001:db8::2/128")
        cfg = phase2(local, remote, mode=mode)
        a = Ep(config=Provider(phase1(force_encapsulation=forced)), local_address="2001:db8::1", rng=seeded_rng(1),
               trace=False)
        b = Ep(config=Provider(phase1(), [mirror(cfg)]), local_address="2001:db8::2", rng=seeded_rng(2), trace=False)
        a.initiate(("2001:db8::2", 500), cfg, clock.now)
        transfer(a, b, clock.now)
        (qa,), (qb,) = established(events(a)), established(events(b))
        assert qa.peer_id.kind == "ipv6" and qa.encapsulation == ("udp" if forced else "none")
        assert carry_traffic(qa, qb) == 6
