"""The matcher: the seed's built-in decisions, exemptions, tunnel-before-transport, specificity,
and the compiled index against the naive reference scan."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address as ip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policyagent import builtin
from policyagent.errors import UsageError
from policyagent.matcher import (
    Decision,
    Direction,
    Exemption,
    Matcher,
    Packet,
    ReferenceMatcher,
    Verdict,
    address_weight,
    filter_weight,
)
from policyagent.model import (
    ActionKind,
    Address,
    AuthMethod,
    Filter,
    FilterAction,
    FilterList,
    Policy,
    Rule,
)
from tests.agent.policy_strategies import LOCAL, filters, packets_for, policies

OUT, IN = Direction.OUTBOUND, Direction.INBOUND
A, B = "127.0.0.1", "127.0.0.2"  # the demo's two hosts


def pkt(src, dst, protocol=1, sport=None, dport=None) -> Packet:
    return Packet(ip(src), ip(dst), protocol, sport, dport)


def both(policy: Policy, local, packet: Packet, direction: Direction, **kw) -> Decision:
    """Look up with the compiled matcher and the reference scan; they must agree."""
    got = Matcher(policy, local, **kw).lookup(packet, direction)
    assert got == ReferenceMatcher(policy, local, **kw).lookup(packet, direction)
    return got


def policy_of(*rules: tuple[str, tuple[Filter, ...], FilterAction], tunnel: dict | None = None, **kw) -> Policy:
    tunnel = tunnel or {}
    p = Policy(name="test", key_exchange=builtin.DEFAULT_KEY_EXCHANGE, **kw)
    for name, fs, action in rules:
        p = p.with_filter_list(FilterList(name=name, filters=fs)).with_filter_action(action)
        p = p.with_rule(Rule(name=name, filter_list=name, filter_action=action.name, authentication=(AuthMethod.kerberos(),), tunnel_endpoint=tunnel.get(name)))
    return p


def f(src: str, dst: str, protocol=None, sport=None, dport=None, mirrored=True) -> Filter:
    return Filter(source=Address.parse(src), destination=Address.parse(dst), protocol=protocol, source_port=sport, destination_port=dport, is_mirrored=mirrored)


PERMIT, BLOCK, REQUIRE = builtin.PERMIT, FilterAction(name="Block", kind=ActionKind.BLOCK), builtin.REQUIRE_SECURITY

# --- the seed's built-in policies ---------------------------------------------------------------


def test_client_and_client_protect_nothing():
    """Both hosts Client (Respond Only): neither asks for security, so every packet goes clear."""
    for me, peer in ((A, B), (B, A)):
        for p, d in ((pkt(me, peer), OUT), (pkt(peer, me), IN), (pkt(me, peer, 6, 1025, 445), OUT)):
            got = both(builtin.CLIENT, [me], p, d)
            assert got.verdict is Verdict.PERMIT and got.rule is None
    # ...but each would answer a request: the default response rule, Kerberos, the default methods.
    peer_rule = Matcher(builtin.CLIENT, [A]).lookup_peer(A, B)
    assert peer_rule is not None and peer_rule.is_default_response
    assert peer_rule.authentication == (AuthMethod.kerberos(),)
    assert peer_rule.security_methods == builtin.DEFAULT_SECURITY_METHODS


def test_secure_server_requests_security_from_a_client():
    """The seed's walkthrough: the client pings the Secure Server in clear; the server accepts
    the clear echo (accept unsecured) and negotiates for its reply; the client answers with its
    default response rule."""
    client_out = both(builtin.CLIENT, [B], pkt(B, A), OUT)
    assert client_out.verdict is Verdict.PERMIT  # the client sends the first ping unprotected
    server_in = both(builtin.SECURE_SERVER, [A], pkt(B, A), IN)
    assert server_in.verdict is Verdict.NEGOTIATE and server_in.accepts_unsecured
    assert server_in.is_mirror_match and server_in.rule.name == "All IP Traffic"
    server_out = both(builtin.SECURE_SERVER, [A], pkt(A, B), OUT)
    assert server_out.verdict is Verdict.NEGOTIATE
    assert not server_out.falls_back_to_clear  # Require Security never falls back
    assert server_out.security_methods == builtin.DEFAULT_SECURITY_METHODS
    assert server_out.main_mode_methods == builtin.DEFAULT_MAIN_MODE and server_out.master_key_lifetime_min == 480
    assert server_out.authentication == (AuthMethod.kerberos(),) and not server_out.is_tunnel
    responder = Matcher(builtin.CLIENT, [B]).lookup_peer(B, A)
    assert responder.is_default_response


def test_server_requests_but_permits_icmp_and_falls_back():
    """Server (Request Security): ICMP is permitted (the more specific filter), other traffic
    negotiates with fall back to clear."""
    icmp = both(builtin.SERVER, [A], pkt(A, B, 1), OUT)
    assert icmp.verdict is Verdict.PERMIT and icmp.rule.name == "All ICMP Traffic"
    tcp = both(builtin.SERVER, [A], pkt(A, B, 6, 1025, 80), OUT)
    assert tcp.verdict is Verdict.NEGOTIATE and tcp.falls_back_to_clear and tcp.accepts_unsecured


def test_secure_server_both_sides_secure_everything():
    """If the client had Secure Server too, it would not send unprotected pings either."""
    assert both(builtin.SECURE_SERVER, [B], pkt(B, A), OUT).verdict is Verdict.NEGOTIATE


# --- exemptions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet, direction, exemption",
    [
        (pkt(A, B, 17, 500, 500), OUT, Exemption.IKE),
        (pkt(B, A, 17, 500, 500), IN, Exemption.IKE),
        (pkt(A, B, 17, 1088, 88), OUT, Exemption.KERBEROS),
        (pkt(B, A, 17, 88, 1088), IN, Exemption.KERBEROS),
        (pkt(A, B, 6, 1088, 88), OUT, Exemption.KERBEROS),
        (pkt(A, B, 46), OUT, Exemption.RSVP),
        (pkt(A, "224.0.0.5", 89), OUT, Exemption.MULTICAST),
        (pkt(A, "239.255.255.250", 17, 1900, 1900), OUT, Exemption.MULTICAST),
        (pkt(A, "255.255.255.255", 17, 68, 67), OUT, Exemption.BROADCAST),
        (pkt(A, "127.255.255.255", 17, 137, 137), OUT, Exemption.BROADCAST),
        (pkt("::1", "ff02::1", 58), OUT, Exemption.MULTICAST),
    ],
)
def test_exemptions_are_never_secured(packet, direction, exemption):
    """The built-in exemptions win over Secure Server's 'All IP Traffic'."""
    got = both(builtin.SECURE_SERVER, ["127.0.0.1/8", "::1"], packet, direction)
    assert got.verdict is Verdict.EXEMPT and got.exemption is exemption


def test_nat_t_port_is_exempt_only_with_nat_t():
    p = pkt(A, B, 17, 4500, 4500)
    assert both(builtin.SECURE_SERVER, [A], p, OUT).verdict is Verdict.NEGOTIATE
    assert both(builtin.SECURE_SERVER, [A], p, OUT, nat_t=True).exemption is Exemption.IKE


def test_exemptions_can_be_turned_off_but_ike_stays_exempt():
    policy = replace(builtin.SECURE_SERVER, has_default_exemptions=False)
    assert both(policy, [A], pkt(A, B, 17, 1088, 88), OUT).verdict is Verdict.NEGOTIATE
    assert both(policy, [A], pkt(A, B, 46), OUT).verdict is Verdict.NEGOTIATE
    assert both(policy, [A], pkt(A, B, 17, 500, 500), OUT).exemption is Exemption.IKE


# --- tunnel before transport, local traffic only for transport ----------------------------------

TUNNEL = policy_of(
    ("host block", (f("10.0.0.1", "10.1.0.5"),), BLOCK),
    ("to branch", (f("10.0.0.0/24", "10.1.0.0/24", mirrored=False),), REQUIRE),
    tunnel={"to branch": ip("192.0.2.9")},
)


def test_tunnel_filters_are_searched_before_transport_filters():
    """A tunnel filter wins even over a more specific transport filter."""
    got = both(TUNNEL, ["10.0.0.1"], pkt("10.0.0.1", "10.1.0.5"), OUT)
    assert got.verdict is Verdict.NEGOTIATE and got.is_tunnel and got.tunnel_endpoint == ip("192.0.2.9")
    other = both(TUNNEL, ["10.0.0.1"], pkt("10.1.0.5", "10.0.0.1"), IN)
    assert other.verdict is Verdict.BLOCK  # the tunnel filter is one-way; the transport one mirrored


def test_forwarded_packets_only_meet_tunnel_filters_and_are_not_exempt():
    """Transport filters need this host as source or destination; a forwarded Kerberos packet is
    not exempt from a tunnel filter (the seed, exemptions paragraph)."""
    fwd = pkt("10.0.0.7", "10.1.0.5", 17, 1088, 88)
    assert both(TUNNEL, ["10.0.0.1"], fwd, OUT).is_tunnel
    assert both(builtin.SECURE_SERVER, ["10.0.0.1"], pkt("10.0.0.7", "10.1.0.5"), OUT).rule is None
    assert both(TUNNEL, ["10.0.0.1"], pkt("10.0.0.1", "10.1.0.5", 17, 1088, 88), OUT).exemption is Exemption.KERBEROS


# --- specificity and ties -------------------------------------------------------------------------


def test_more_specific_filter_wins():
    """A specific address beats a subnet beats any; protocol and ports add weight."""
    policy = policy_of(
        ("any", (f("me", "any"),), REQUIRE),
        ("subnet", (f("me", "10.1.0.0/16"),), PERMIT),
        ("host", (f("me", "10.1.0.5"),), BLOCK),
        ("host tcp", (f("me", "10.1.0.5", 6),), REQUIRE),
        ("host tcp 80", (f("me", "10.1.0.5", 6, None, 80),), PERMIT),
    )
    local = ["10.0.0.1"]
    name = lambda p, d=OUT: both(policy, local, p, d).rule.name  # noqa: E731
    assert name(pkt("10.0.0.1", "10.2.0.1")) == "any"
    assert name(pkt("10.0.0.1", "10.1.9.9")) == "subnet"
    assert name(pkt("10.0.0.1", "10.1.0.5", 17, 5, 6)) == "host"
    assert name(pkt("10.0.0.1", "10.1.0.5", 6, 5, 6)) == "host tcp"
    assert name(pkt("10.0.0.1", "10.1.0.5", 6, 5, 80)) == "host tcp 80"
    assert name(pkt("10.1.0.5", "10.0.0.1", 6, 80, 5), IN) == "host tcp 80"  # the mirror
    assert filter_weight(f("me", "10.1.0.5", 6, None, 80)) > filter_weight(f("me", "10.1.0.5", 6)) > filter_weight(f("me", "10.1.0.5"))
    assert address_weight(Address.parse("10.0.0.0/24")) > address_weight(Address.parse("10.0.0.0-10.0.1.255")) > address_weight(Address.any())
    assert address_weight(Address.parse("2001:db8::/64")) == address_weight(Address.parse("10.0.0.0/16"))


def test_ties_go_to_the_earlier_rule_then_filter():
    policy = policy_of(("first", (f("me", "any"), f("me", "any")), PERMIT), ("second", (f("me", "any"),), BLOCK))
    got = both(policy, [A], pkt(A, B), OUT)
    assert got.rule.name == "first" and got.filter_index == 0 and not got.is_mirror_match


def test_inactive_and_default_response_rules_match_no_packet():
    policy = policy_of(("off", (f("me", "any"),), BLOCK))
    policy = replace(policy, rules=(replace(policy.rules[0], is_active=False),) + builtin.CLIENT.rules, filter_actions=policy.filter_actions + (builtin.DEFAULT_RESPONSE,))
    got = both(policy, [A], pkt(A, B), OUT)
    assert got.verdict is Verdict.PERMIT and got.rule is None


def test_ipv6_and_string_addresses():
    policy = policy_of(("v6", (f("me", "2001:db8::/64"),), REQUIRE))
    m = Matcher(policy, ["2001:db8::1"])
    assert m.lookup(("2001:db8::1", "2001:db8::99", 58, None, None), OUT).verdict is Verdict.NEGOTIATE
    assert m.lookup(("2001:db8::1", "2001:db9::99", 58, None, None), OUT).verdict is Verdict.PERMIT
    assert m.lookup(("10.0.0.1", "10.0.0.2", 1, None, None), OUT).verdict is Verdict.PERMIT


def test_lookup_peer_uses_addresses_only():
    """Main mode: the most address-specific negotiating rule for the host pair, else the default
    response rule; a tunnel rule answers for its endpoint."""
    policy = policy_of(
        ("all", (f("me", "any"),), REQUIRE),
        ("partner", (f("me", "10.1.0.5"),), REQUIRE),
        ("gw", (f("10.0.0.0/24", "10.2.0.0/24", mirrored=False),), REQUIRE),
        ("permit", (f("me", "10.1.0.6"),), PERMIT),
        tunnel={"gw": ip("192.0.2.9")},
    )
    m = Matcher(policy, ["10.0.0.1"])
    assert m.lookup_peer("10.0.0.1", "10.1.0.5").rule.name == "partner"
    assert m.lookup_peer("10.0.0.1", "10.1.0.6").rule.name == "all"
    assert m.lookup_peer("10.0.0.1", "192.0.2.9").rule.name == "gw"
    assert Matcher(policy_of(("p", (f("me", "10.1.0.5"),), REQUIRE)), ["10.0.0.1"]).lookup_peer("10.0.0.1", "10.1.0.9") is None


def test_a_rule_with_a_missing_list_is_refused_at_compile_time():
    policy = Policy(name="x", key_exchange=builtin.DEFAULT_KEY_EXCHANGE, rules=(Rule(name="r", filter_list="nope", filter_action="Permit"),))
    with pytest.raises(UsageError):
        Matcher(policy, [A])


# --- properties -----------------------------------------------------------------------------------


@given(policy=policies(), data=st.data(), nat_t=st.booleans())
def test_compiled_matcher_equals_the_reference_scan(policy, data, nat_t):
    """For random policies and packets, the indexed lookup returns exactly the linear scan's decision."""
    fast, slow = Matcher(policy, LOCAL, nat_t=nat_t), ReferenceMatcher(policy, LOCAL, nat_t=nat_t)
    for packet, direction in data.draw(st.lists(packets_for(policy), min_size=1, max_size=40)):
        assert fast.lookup(packet, direction) == slow.lookup(packet, direction)


def test_compiled_matcher_equals_the_reference_scan_on_known_cases():
    """Pinned cases: ranges, src-side subnets, equal-weight ties across rules, mirrors."""
    policy = policy_of(
        ("r", (f("me", "10.0.0.0/28"), f("10.0.0.3-10.0.0.9", "any", 6, 80)), REQUIRE),
        ("s", (f("10.0.0.0/29", "any"), f("me", "10.0.0.0/28")), PERMIT),
        ("t", (f("any", "10.0.0.0/30", mirrored=False),), BLOCK),
    )
    for packet, direction in [
        (pkt("10.0.0.1", "10.0.0.5", 6, 80, 80), OUT),
        (pkt("10.0.0.4", "10.0.0.2", 6, 80, 1), IN),
        (pkt("10.0.0.2", "10.0.0.9", 17, 1, 2), OUT),
        (pkt("10.0.0.3", "10.0.0.1", 17, 1, 2), IN),
        (pkt("10.0.0.9", "10.0.0.2", 1), IN),
    ]:
        both(policy, ["10.0.0.1", "10.0.0.2"], packet, direction)


@given(filt=filters().filter(lambda x: x.is_mirrored), data=st.data())
def test_mirrored_filters_match_both_directions(filt, data):
    """A mirrored filter matches a packet iff it matches the reply (addresses and ports swapped,
    direction reversed)."""
    policy = policy_of(("m", (filt,), REQUIRE), has_default_exemptions=False)
    packet, direction = data.draw(packets_for(policy))
    if packet.dst.is_multicast or str(packet.dst) in ("255.255.255.255", "10.0.0.15") or 500 in (packet.src_port, packet.dst_port):
        return  # exempt one way only (IKE is destination-port 500; broadcast is never a source)
    reply = Packet(packet.dst, packet.src, packet.protocol, packet.dst_port, packet.src_port)
    m = Matcher(policy, LOCAL)
    forward = m.lookup(packet, direction)
    backward = m.lookup(reply, IN if direction is OUT else OUT)
    assert (forward.rule is None) == (backward.rule is None)


def test_tunnel_filters_never_carry_multicast_or_broadcast():
    policy = policy_of(("t", (f("any", "any", mirrored=False),), REQUIRE), tunnel={"t": ip("192.0.2.9")}, has_default_exemptions=False)
    for dst in ("224.0.0.5", "255.255.255.255"):
        got = both(policy, ["10.0.0.1"], pkt("10.0.0.7", dst, 17, 1, 2), OUT)
        assert got.rule is None
    assert both(policy, ["10.0.0.1"], pkt("10.0.0.7", "10.9.9.9", 17, 1, 2), OUT).is_tunnel
