"""The agent's data path between two hosts: acquire once per flow, queue and report
negotiating, protect on the wire, deliver to the application, and enforce the policy inbound
(clear text, forgeries, replays, unknown SPIs, selector mismatches, spoofing)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from policyagent import builtin
from policyagent import datapath as dp
from policyagent import monitor
from policyagent.agent import SendResult
from policyagent.model import (ActionKind, Address, AuthMethod, Filter, FilterAction, FilterList,
                               Policy, Rule, SecurityMethod)
from tests.agent.helpers import (GCM, IKE_PORT, NATT_PORT, PSK, clear_packets, drain, esp_payloads,
                                 ike_datagrams, notices, pair_of, partner_policy)

ONE, TWO = "127.0.0.1", "127.0.0.2"


@pytest.fixture
def esp_pair(clock):
    """Partner policy with ESP (High) on both hosts."""
    return pair_of(clock, partner_policy(TWO, method=builtin.HIGH), partner_policy(ONE, method=builtin.HIGH))


def test_first_packets_negotiate_once_then_flow_protected(clock, esp_pair):
    """Packets before the SA exist are queued (the sender hears "negotiating"), IKE runs once,
    then the queued packets arrive, in order, protected; the plaintext never crosses the wire."""
    net, one, two = esp_pair
    results = [two.send_udp(TWO, 4000, ONE, 7, b"secret-%d" % i, clock.now) for i in range(5)]
    assert results == [SendResult.NEGOTIATING] * 5
    told = notices(two)
    assert [n.kind for n in told] == ["negotiating"] * 5 and told[0].dport == 7
    assert two.stats.acquires == 1
    net.run()
    got = drain(one)
    assert [d.data for d in got] == [b"secret-%d" % i for i in range(5)]
    assert all(d.is_protected and (d.src, d.sport, d.dport) == (TWO, 4000, 7) for d in got)
    assert two.stats.main_modes == 1 and two.stats.quick_modes == 1 and one.stats.quick_modes == 1
    assert len(esp_payloads(net)) == 5
    assert not any(b"secret" in p for _, _, p in net.wire)
    # Later packets go straight out protected, no new negotiation.
    assert two.send_udp(TWO, 4000, ONE, 7, b"later", clock.now) is SendResult.PROTECTED
    net.run()
    assert [d.data for d in drain(one)] == [b"later"] and two.stats.acquires == 1


def test_two_sas_each_with_its_own_spi(clock, esp_pair):
    """The seed: two SAs per quick mode, one each direction, each with its own SPI; the
    peers' outbound SPI is the other's inbound."""
    net, one, two = esp_pair
    two.send_udp(TWO, 1, ONE, 2, b"x", clock.now)
    net.run()
    [p1], [p2] = list(one.sad), list(two.sad)
    assert p1.spis_in != p1.spis_out
    assert p1.spis_in == p2.spis_out and p1.spis_out == p2.spis_in
    row = monitor.snapshot(two, clock.now)["security_associations"][0]
    assert row["security"].startswith("ESP AES CBC 128") and row["lifetime_left_s"] == 3600
    assert row["spi_out"] == list(p2.spis_out) and row["lifetime_left_kb"] == 100_000


def test_queue_is_bounded(clock):
    net, one, two = pair_of(clock, partner_policy(TWO, method=builtin.HIGH), partner_policy(ONE, method=builtin.HIGH),
                            queue_limit=4)
    for i in range(7):
        two.send_udp(TWO, 1, ONE, 2, bytes([i]), clock.now)
    assert two.stats.dropped["queue-full"] == 3
    net.run()
    assert [d.data for d in drain(one)] == [bytes([i]) for i in range(4)]


def test_gcm_echo_through_the_responder_both_ways(clock):
    """AES-GCM-128: an echo request and the in-agent responder's reply, both protected."""
    net, one, two = pair_of(clock, partner_policy(TWO, method=GCM), partner_policy(ONE, method=GCM))
    assert two.send_echo(ONE, 0x77, 1, b"abcd" * 8, clock.now) is SendResult.NEGOTIATING
    net.run()
    [reply] = drain(two)
    assert (reply.protocol, reply.sport, reply.dport, reply.data, reply.is_protected) == (1, 0x77, 1, b"abcd" * 8, True)
    assert one.stats.echo_requests_answered == 1
    assert "AES GCM 128" in monitor.snapshot(one, clock.now)["security_associations"][0]["security"]


def test_medium_is_ah_carried_with_its_ip_header(clock):
    """Partner with Medium (AH): packets cross as IP packets with protocol 51, readable but
    authenticated; they are delivered as protected."""
    net, one, two = pair_of(clock, partner_policy(TWO), partner_policy(ONE))
    two.send_udp(TWO, 5, ONE, 6, b"visible-but-signed", clock.now)
    net.run()
    [d] = drain(one)
    assert d.data == b"visible-but-signed" and d.is_protected
    ah = [p for p in clear_packets(net) if dp.parse(p).protocol == dp.IPPROTO_AH]
    assert len(ah) == 1 and b"visible-but-signed" in ah[0]
    assert monitor.snapshot(one, clock.now)["security_associations"][0]["security"] == "AH SHA"
    assert one.stats.authenticated_bytes_received > 0 and one.stats.confidential_bytes_received == 0


def test_tunnel_rule_negotiates_tunnel_mode(clock):
    """A rule with a tunnel endpoint: ESP tunnel mode between the hosts."""
    def tunnel_policy(me: str, peer: str) -> Policy:
        p = partner_policy(peer, method=builtin.HIGH)
        return replace(p, rules=(replace(p.rules[0], tunnel_endpoint=Address.host(peer).first),))

    net, one, two = pair_of(clock, tunnel_policy(ONE, TWO), tunnel_policy(TWO, ONE))
    two.send_udp(TWO, 5, ONE, 6, b"tunnelled", clock.now)
    net.run()
    assert [d.data for d in drain(one)] == [b"tunnelled"]
    assert [p.mode for p in one.sad] == ["tunnel"]


def test_block_and_permit_rules(clock):
    """A Block filter drops (the sender hears "blocked"); unmatched traffic goes in clear."""
    fl = FilterList(name="UDP 9", filters=(Filter(source=Address.me(), destination=Address.any(), protocol=17,
                                                   destination_port=9, is_mirrored=False),))
    policy = Policy(name="Blocker", key_exchange=builtin.DEFAULT_KEY_EXCHANGE, filter_lists=(fl,),
                    filter_actions=(FilterAction(name="Block", kind=ActionKind.BLOCK),),
                    rules=(Rule(name="no discard", filter_list="UDP 9", filter_action="Block",
                                authentication=(AuthMethod.preshared_key(PSK),)),))
    net, one, two = pair_of(clock, None, policy)
    assert two.send_udp(TWO, 1, ONE, 9, b"x", clock.now) is SendResult.BLOCKED
    assert [n.kind for n in notices(two)] == ["blocked"]
    assert two.send_udp(TWO, 1, ONE, 10, b"y", clock.now) is SendResult.CLEAR
    net.run()
    assert [(d.dport, d.is_protected) for d in drain(one)] == [(10, False)]
    assert not ike_datagrams(net)


# --- inbound enforcement -----------------------------------------------------------------------------


def _established(clock, esp_pair):
    net, one, two = esp_pair
    two.send_udp(TWO, 4000, ONE, 7, b"hello", clock.now)
    net.run()
    drain(one)
    return net, one, two


def test_clear_text_where_security_is_required_is_dropped(clock, esp_pair):
    """Partner requires security and does not accept unsecured inbound: a clear packet from
    the partner is dropped, counted, not delivered."""
    net, one, two = _established(clock, esp_pair)
    one.receive_datagram(dp.build_udp(TWO, ONE, 4000, 7, b"in clear"), (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert drain(one) == [] and one.stats.dropped["unsecured"] == 1


def test_accept_unsecured_delivers_clear_inbound(clock):
    """Secure Server accepts unsecured inbound ("Accept unsecured communication, but always
    respond using IPsec")."""
    net, one, two = pair_of(clock, builtin.SECURE_SERVER, builtin.CLIENT)
    one.receive_datagram(dp.build_udp(TWO, ONE, 1, 2, b"hi"), (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert [(d.data, d.is_protected) for d in drain(one)] == [(b"hi", False)]


def test_forged_replayed_and_unknown_esp_are_dropped(clock, esp_pair):
    net, one, two = _established(clock, esp_pair)
    two.send_udp(TWO, 4000, ONE, 7, b"again", clock.now)
    [packet] = [p for p, _, _ in two_out(two, clock)]
    forged = bytearray(packet)
    forged[-1] ^= 0x01
    one.receive_datagram(bytes(forged), (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert one.stats.dropped["integrity"] == 1 and drain(one) == []
    one.receive_datagram(packet, (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert [d.data for d in drain(one)] == [b"again"]
    one.receive_datagram(packet, (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert one.stats.dropped["replay"] == 1 and drain(one) == []
    unknown = b"\x12\x34\x56\x78" + packet[4:]
    one.receive_datagram(unknown, (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert one.stats.dropped["no-sa"] == 1 and drain(one) == []


def two_out(agent, clock):
    return agent.datagrams_to_send(clock.now)


def test_inner_packet_outside_the_sa_selectors_is_dropped(clock):
    """RFC 4301 §5.2: an SA negotiated for UDP must not carry ICMP, even with a valid ICV."""
    def udp_only(peer: str) -> Policy:
        p = partner_policy(peer, method=builtin.HIGH)
        fl = FilterList(name="Partner Filter", filters=(Filter(source=Address.me(), destination=Address.host(peer), protocol=17),))
        return replace(p, filter_lists=(fl,))

    net, one, two = pair_of(clock, udp_only(TWO), udp_only(ONE))
    two.send_udp(TWO, 1, ONE, 2, b"ok", clock.now)
    net.run()
    assert [d.data for d in drain(one)] == [b"ok"]
    [pair] = list(two.sad)
    assert pair.local_ts.protocol == 17
    icmp = dp.icmp_echo_message(TWO, ONE, 1, 1, b"smuggled")
    esp = pair.esp_only.protect_payload(icmp, dp.IPPROTO_ICMP)
    one.receive_datagram(esp, (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert one.stats.dropped["selector-mismatch"] == 1 and drain(one) == []
    assert one.stats.echo_requests_answered == 0


def test_spoofed_and_malformed_carrier_packets_are_dropped(clock):
    net, one, two = pair_of(clock, None, None)
    one.receive_datagram(dp.build_udp("127.0.0.9", ONE, 1, 2, b"x"), (TWO, NATT_PORT), NATT_PORT, clock.now)
    one.receive_datagram(b"\xff", (TWO, NATT_PORT), NATT_PORT, clock.now)
    one.receive_datagram(b"\x45\x00", (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert one.stats.dropped == {"spoofed": 1, "no-sa": 1} and one.stats.keepalives == 1
    assert drain(one) == []


def test_forged_ah_is_dropped(clock):
    net, one, two = pair_of(clock, partner_policy(TWO), partner_policy(ONE))
    two.send_udp(TWO, 5, ONE, 6, b"signed", clock.now)
    net.run()
    drain(one)
    two.send_udp(TWO, 5, ONE, 6, b"signed", clock.now)
    [(packet, _, _)] = two.datagrams_to_send(clock.now)
    forged = packet.replace(b"signed", b"SIGNED")
    one.receive_datagram(forged, (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert one.stats.dropped["integrity"] == 1 and drain(one) == []
    one.receive_datagram(packet, (TWO, NATT_PORT), NATT_PORT, clock.now)
    one.receive_datagram(packet, (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert [d.data for d in drain(one)] == [b"signed"] and one.stats.dropped["replay"] == 1


def test_ah_plus_esp_bundle(clock):
    """A security method with AH and ESP: ESP inside, AH outside (RFC 2401 bundle), both SPIs
    per direction; forging the outer AH or the inner ESP is caught."""
    both = SecurityMethod(ah_integrity="hmac-sha1-96", esp_cipher="aes-cbc", esp_key_bits=128,
                          esp_integrity="hmac-sha1-96", lifetime_s=3600, lifetime_kb=100_000)
    net, one, two = pair_of(clock, partner_policy(TWO, method=both), partner_policy(ONE, method=both))
    two.send_udp(TWO, 5, ONE, 6, b"bundled", clock.now)
    net.run()
    assert [d.data for d in drain(one)] == [b"bundled"]
    [pair] = list(one.sad)
    assert pair.protocols == ("ah", "esp") and len(set(pair.spis_in)) == 2
    [packet] = [p for p in clear_packets(net) if dp.parse(p).protocol == dp.IPPROTO_AH]
    assert b"bundled" not in packet
    assert monitor.snapshot(one, clock.now)["security_associations"][0]["security"] == "AH SHA + ESP AES CBC 128 / SHA"
    two.send_udp(TWO, 5, ONE, 6, b"x", clock.now)
    [(p, _, _)] = two.datagrams_to_send(clock.now)
    forged = bytearray(p)
    forged[-1] ^= 1
    one.receive_datagram(bytes(forged), (TWO, NATT_PORT), NATT_PORT, clock.now)
    assert drain(one) == [] and one.stats.dropped["integrity"] == 1


def test_ipv6_hosts(clock):
    """The same path between IPv6 hosts: UDP and ICMPv6 echo, protected both ways."""
    from tests.agent.helpers import Network, make_agent

    net = Network(clock)
    one = net.add(make_agent("2001:db8::1", partner_policy("2001:db8::2", method=builtin.HIGH), clock))
    two = net.add(make_agent("2001:db8::2", partner_policy("2001:db8::1", method=builtin.HIGH), clock))
    assert two.send_udp("2001:db8::2", 5, "2001:db8::1", 7, b"v6", clock.now) is SendResult.NEGOTIATING
    net.run()
    assert [(d.data, d.is_protected) for d in drain(one)] == [(b"v6", True)]
    assert two.send_echo("2001:db8::1", 1, 1, b"ping6", clock.now) is SendResult.PROTECTED
    net.run()
    [reply] = drain(two)
    assert (reply.protocol, reply.data, reply.is_protected) == (dp.IPPROTO_ICMPV6, b"ping6", True)


_FUZZ: dict = {}


def _fuzz_target():
    """Two agents with an established ESP pair, built once for the property tests."""
    if not _FUZZ:
        from tests.conftest import FakeClock

        clock = FakeClock()
        net, one, two = pair_of(clock, partner_policy(TWO, method=builtin.HIGH), partner_policy(ONE, method=builtin.HIGH))
        two.send_udp(TWO, 1, ONE, 2, b"seed", clock.now)
        net.run()
        drain(one)
        two.send_udp(TWO, 1, ONE, 2, b"template", clock.now)
        [(esp, _, _)] = two.datagrams_to_send(clock.now)
        _FUZZ.update(clock=clock, one=one, esp=esp)
    return _FUZZ


@given(data=st.binary(max_size=300), port=st.sampled_from(["ike", "natt"]))
@example(data=b"\x00\x00\x00\x00", port="natt")
@example(data=b"\x45\x00\x00\x14" + bytes(16), port="natt")
def test_arbitrary_datagrams_never_raise_and_change_no_sa(data, port):
    """Any bytes on the IKE or NAT-T port are dropped or handled: nothing raises, the SA pair
    stays, nothing is delivered as protected."""
    f = _fuzz_target()
    one = f["one"]
    before = [p.spis_in for p in one.sad]
    local_port = IKE_PORT if port == "ike" else NATT_PORT
    one.receive_datagram(data, (TWO, local_port), local_port, f["clock"].now)
    assert [p.spis_in for p in one.sad] == before
    assert not any(d.is_protected for d in drain(one))


@given(flips=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=4))
def test_mutated_esp_is_never_delivered(flips):
    """Bit flips anywhere in a valid ESP packet: dropped (integrity, no SA, malformed), never
    delivered."""
    f = _fuzz_target()
    one, esp = f["one"], bytearray(f["esp"])
    for bit in flips:
        esp[(bit // 8) % len(esp)] ^= 1 << (bit % 8)
    if bytes(esp) == f["esp"]:
        return
    one.receive_datagram(bytes(esp), (TWO, NATT_PORT), NATT_PORT, f["clock"].now)
    assert drain(one) == []
