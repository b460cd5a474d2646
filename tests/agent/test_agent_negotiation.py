"""The seed's negotiation behaviours between two agents: Secure Server / Client, Client /
Client, soft SAs after 3 s of IKE silence, no response without fallback, the one-minute block
after a failed negotiation, responding per the default response rule, and restart."""

from __future__ import annotations

from policyagent import builtin, monitor
from policyagent import datapath as dp
from policyagent.agent import SendResult
from tests.agent.helpers import (Network, clear_packets, drain, esp_payloads, ike_datagrams, make_agent,
                                 notices, pair_of, partner_policy, with_psk)

ONE, TWO, THREE = "127.0.0.1", "127.0.0.2", "127.0.0.3"


def test_secure_server_requests_security_and_the_client_responds(clock):
    """Part 1: Secure Server on 01, Client on 02 (pre-shared key in place of Kerberos). The
    client's first echo goes in clear, the server accepts it but must secure its reply: it
    negotiates, the client answers through its default response rule and its ping hears
    "negotiating"; the reply then arrives protected and later echoes are secured both ways."""
    net, one, two = pair_of(clock, builtin.SECURE_SERVER, builtin.CLIENT)
    assert two.send_echo(ONE, 1, 1, b"x" * 32, clock.now) is SendResult.CLEAR
    net.run()
    assert one.stats.acquires == 1 and two.stats.acquires == 0
    assert [(n.kind, n.echo) for n in notices(two)] == [("negotiating", (1, 1))]
    [late] = drain(two)
    assert late.is_protected and late.dport == 1  # the queued reply, sent once secured
    assert two.send_echo(ONE, 1, 2, b"x" * 32, clock.now) is SendResult.PROTECTED
    net.run()
    [reply] = drain(two)
    assert reply.is_protected and reply.dport == 2
    [row] = monitor.snapshot(two, clock.now)["security_associations"]
    assert row["is_dynamic"] and row["peer"] == ONE and row["security"].startswith("ESP")
    qm = [e for e in two.audit.query(event_id=541) if e.mode.startswith("Data")]
    assert qm and qm[0].parameters.inbound_spi == row["spi_in"][0] and qm[0].peer_address == ONE
    assert monitor.snapshot(one, clock.now)["security_associations"][0]["rule"] == "All IP Traffic"


def test_client_and_client_protect_nothing(clock):
    """Part 3: if both computers have client policies, no data is protected."""
    net, one, two = pair_of(clock, builtin.CLIENT, builtin.CLIENT)
    for seq in range(1, 5):
        assert two.send_echo(ONE, 9, seq, b"ping", clock.now) is SendResult.CLEAR
        net.run()
    assert [(d.dport, d.is_protected) for d in drain(two)] == [(s, False) for s in range(1, 5)]
    assert not ike_datagrams(net) and not esp_payloads(net) and len(one.sad) == len(two.sad) == 0


def test_server_falls_back_to_a_soft_sa_when_the_peer_does_not_answer(clock):
    """Part 3: Server (Request Security) against a host with no IPsec: after 3 s of IKE
    silence the flow goes in clear through a soft SA (<none> in the monitor, audited)."""
    net = Network(clock)
    one = net.add(make_agent(ONE, with_psk(builtin.SERVER), clock))
    net.add(make_agent(THREE, None, clock))  # a non-IPsec computer: no policy, no IKE answers
    three = net.agents[THREE]
    three.receive_ike = lambda *a, **k: None  # it ignores IKE entirely
    assert one.send_udp(ONE, 5000, THREE, 7, b"hello", clock.now) is SendResult.NEGOTIATING
    net.run()
    assert drain(three) == []
    net.advance(2.9)
    assert drain(three) == [] and one.stats.soft_sas == 0
    net.advance(0.2)
    assert [d.data for d in drain(three)] == [b"hello"]
    assert one.stats.soft_sas == 1
    [row] = monitor.snapshot(one, clock.now)["security_associations"]
    assert row["security"] == "<none>" and row["is_soft"]
    [soft] = [e for e in one.audit.query(event_id=541) if e.soft]
    assert soft.peer_address == THREE
    assert one.send_udp(ONE, 5000, THREE, 7, b"more", clock.now) is SendResult.CLEAR
    # The clear reply is accepted (Request Security accepts unsecured inbound).
    three.send_udp(THREE, 7, ONE, 5000, b"reply", clock.now)
    net.run()
    assert [d.data for d in drain(one)] == [b"reply"]
    assert ike_datagrams(net) and all(s[0] == ONE for s, _, _ in ike_datagrams(net))


def test_secure_server_without_answer_fails_with_no_response_from_peer(clock):
    """Require Security never falls back: the negotiation fails (547 "No response from peer"),
    the queued packets are dropped, and the next packet simply tries again (no block)."""
    net = Network(clock)
    one = net.add(make_agent(ONE, with_psk(builtin.SECURE_SERVER), clock))
    three = net.add(make_agent(THREE, None, clock))
    three.receive_ike = lambda *a, **k: None
    one.send_udp(ONE, 5000, THREE, 7, b"hello", clock.now)
    net.advance(120, step=1.0)
    assert drain(three) == [] and one.stats.soft_sas == 0
    [failure] = one.audit.query(event_id=547)
    assert failure.reason == "No response from peer" and failure.failure_point == "Peer"
    assert one.stats.dropped["negotiation-failed"] == 1
    assert one.send_udp(ONE, 5000, THREE, 7, b"again", clock.now) is SendResult.NEGOTIATING


def test_a_wrong_key_blocks_the_flow_for_one_minute(clock):
    """The peer answers but the negotiation fails: matching traffic is blocked for one
    minute, then the next packet negotiates again (and succeeds once the keys agree)."""
    net, one, two = pair_of(clock, partner_policy(TWO, key="ABC123", method=builtin.HIGH), partner_policy(ONE, key="WRONG!", method=builtin.HIGH))
    assert two.send_udp(TWO, 1, ONE, 7, b"a", clock.now) is SendResult.NEGOTIATING
    for _ in range(120):  # main mode message 5 is refused; the initiator retries, then gives up
        net.advance(0.5)
        if two.stats.negotiation_failures:
            break
    [failure] = two.audit.query(event_id=547)
    assert failure.mode.startswith("Key Exchange") and one.stats.main_modes == 0
    notices(two)
    assert two.send_udp(TWO, 1, ONE, 7, b"b", clock.now) is SendResult.BLOCKED
    assert [n.kind for n in notices(two)] == ["blocked"]
    ike_before = len(ike_datagrams(net))
    net.advance(50)
    assert two.send_udp(TWO, 1, ONE, 7, b"c", clock.now) is SendResult.BLOCKED
    net.run()
    assert len(ike_datagrams(net)) == ike_before
    net.advance(6)
    two.assign_policy(partner_policy(ONE, key="ABC123", method=builtin.HIGH), clock.now)
    assert two.send_udp(TWO, 1, ONE, 7, b"d", clock.now) is SendResult.NEGOTIATING
    net.run()
    assert [d.data for d in drain(one)] == [b"d"]


def test_a_peer_that_answers_then_goes_silent_is_blocked_not_soft(clock):
    """The seed: "If at any time the client does reply, then a negotiation is in progress and
    must succeed completely" -- no soft SA even with fallback allowed; one-minute block."""
    net, one, two = pair_of(clock, partner_policy(TWO, method=builtin.HIGH, falls_back=True),
                            partner_policy(ONE, method=builtin.HIGH))
    two.send_udp(TWO, 1, ONE, 7, b"a", clock.now)
    # Let the peer answer main mode, then silence it for the quick mode.
    original = one.receive_datagram
    seen = []

    def quiet(data, addr, port, now):
        seen.append(data)
        if len(seen) <= 1:
            original(data, addr, port, now)

    one.receive_datagram = quiet
    net.advance(30, step=0.5)
    assert two.stats.soft_sas == 0
    [failure] = two.audit.query(event_id=547)
    assert failure.reason != "No response from peer"
    assert two.send_udp(TWO, 1, ONE, 7, b"b", clock.now) is SendResult.BLOCKED


def test_restart_clears_all_state(clock):
    """net stop/start policyagent: all IKE and SA state is gone; the peer's old SA packets are
    dropped, and new traffic negotiates afresh."""
    net, one, two = pair_of(clock, partner_policy(TWO, method=builtin.HIGH), partner_policy(ONE, method=builtin.HIGH))
    two.send_udp(TWO, 1, ONE, 7, b"a", clock.now)
    net.run()
    drain(one)
    one.restart(clock.now)
    assert len(one.sad) == 0 and one.stats.quick_modes == 0 and one.pending_negotiations == 0
    assert two.send_udp(TWO, 1, ONE, 7, b"stale", clock.now) is SendResult.PROTECTED
    net.run()
    assert drain(one) == [] and one.stats.dropped["no-sa"] == 1
    assert one.send_udp(ONE, 7, TWO, 1, b"fresh", clock.now) is SendResult.NEGOTIATING
    net.run()
    assert [d.data for d in drain(two)] == [b"fresh"]
    assert two.send_udp(TWO, 1, ONE, 7, b"b", clock.now) is SendResult.PROTECTED
    net.run()
    assert [d.data for d in drain(one)] == [b"b"]


def test_a_peer_without_policy_looks_like_no_response(clock):
    """A peer with no policy assigned does not answer IKE at all (nothing to negotiate with):
    Partner on one side only ends in 547 "No response from peer" (no block: it is not a failed
    negotiation), and the next packet tries again."""
    net, one, two = pair_of(clock, None, partner_policy(ONE, method=builtin.HIGH))
    two.send_udp(TWO, 1, ONE, 7, b"a", clock.now)
    net.advance(20, step=1)
    assert drain(one) == []
    [failure] = two.audit.query(event_id=547)
    assert failure.reason == "No response from peer"
    assert two.send_udp(TWO, 1, ONE, 7, b"b", clock.now) is SendResult.NEGOTIATING


def test_clear_echo_to_a_plain_host_is_delivered(clock):
    net = Network(clock)
    one = net.add(make_agent(ONE, None, clock))
    three = net.add(make_agent(THREE, None, clock))
    one.send_echo(THREE, 3, 1, b"hi", clock.now)
    net.run()
    [reply] = drain(one)
    assert not reply.is_protected and clear_packets(net) and dp.parse(clear_packets(net)[0]).protocol == 1
    assert three.stats.echo_requests_answered == 1


def test_simultaneous_negotiation_keeps_one_pair_on_both_sides(clock):
    """Both hosts send first: two quick modes for one flow. Both keep the same pair (the one the
    lower address initiated) and delete the other, so traffic keeps flowing afterwards."""
    net, one, two = pair_of(clock, partner_policy(TWO, method=builtin.HIGH), partner_policy(ONE, method=builtin.HIGH))
    assert one.send_udp(ONE, 1, TWO, 7, b"a", clock.now) is SendResult.NEGOTIATING
    assert two.send_udp(TWO, 7, ONE, 1, b"b", clock.now) is SendResult.NEGOTIATING
    net.run()
    assert [d.data for d in drain(one)] == [b"b"] and [d.data for d in drain(two)] == [b"a"]
    net.advance(30)
    [p1], [p2] = list(one.sad), list(two.sad)
    assert p1.spis_in == p2.spis_out and p1.is_initiator and not p2.is_initiator
    assert one.send_udp(ONE, 1, TWO, 7, b"c", clock.now) is SendResult.PROTECTED
    assert two.send_udp(TWO, 7, ONE, 1, b"d", clock.now) is SendResult.PROTECTED
    net.run()
    assert [d.data for d in drain(one)] == [b"d"] and [d.data for d in drain(two)] == [b"c"]


def test_no_common_security_method_is_an_invalid_proposal(clock):
    """High on one side, Medium on the other: quick mode finds no common proposal: event 546 on
    both sides (what we offered, that nothing was acceptable), and the flow is blocked."""
    net, one, two = pair_of(clock, partner_policy(TWO, method=builtin.MEDIUM), partner_policy(ONE, method=builtin.HIGH))
    two.send_udp(TWO, 1, ONE, 7, b"a", clock.now)
    net.advance(10, step=1)
    [mine], [theirs] = two.audit.query(event_id=546), one.audit.query(event_id=546)
    assert "ESP[AES128,SHA1]" in mine.expected and mine.mode.startswith("Data")
    assert theirs.peer_address == TWO
    assert two.send_udp(TWO, 1, ONE, 7, b"b", clock.now) is SendResult.BLOCKED
