"""The assigned policy as IKE sees it: main mode per host pair, quick mode proposals, the
responder's answer per the default response rule, and selectors for transport and tunnel."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from ikeproto.config import TrafficSelector
from policyagent import builtin
from policyagent.ikeconfig import PolicyConfig, phase2_proposal, selectors_for
from policyagent.matcher import Direction, Matcher, Packet
from policyagent.model import ActionKind, Address, Filter, FilterAction, FilterList, Rule, SecurityMethod
from tests.agent.helpers import partner_policy

ME, PEER = "10.0.0.1", "10.0.0.2"


def config(policy, **kw) -> PolicyConfig:
    return PolicyConfig(Matcher(policy, [ME], nat_t=True), ME, **kw)


def test_partner_main_mode_is_psk_with_the_policy_methods():
    p1 = config(partner_policy(PEER), force_encapsulation=True).phase1_config((PEER, 500))
    assert p1.psk == b"ABC123" and p1.force_encapsulation and p1.allow_ah_with_nat
    assert [(x.cipher, x.key_bits, x.hash, x.dh_group) for x in p1.proposals][:2] == [
        ("aes-cbc", 256, "sha2-256", 14), ("aes-cbc", 128, "sha1", 14)]
    assert {x.lifetime_s for x in p1.proposals} == {480 * 60}
    assert config(partner_policy(PEER)).phase1_config(("10.0.0.9", 500)) is None  # no rule, no default response


def test_kerberos_needs_a_kdc_or_a_stand_in_key():
    assert config(builtin.SECURE_SERVER).phase1_config((PEER, 500)) is None
    p1 = config(builtin.SECURE_SERVER, kerberos_psk=b"stand-in").phase1_config((PEER, 500))
    assert p1.psk == b"stand-in" and {x.auth for x in p1.proposals} == {"psk"}
    p1 = config(builtin.CLIENT, has_kerberos=True).phase1_config((PEER, 500))
    assert {x.auth for x in p1.proposals} == {"gssapi"} and p1.psk is None


def test_security_methods_become_proposals_in_order():
    both = SecurityMethod(ah_integrity="hmac-sha1-96", esp_cipher="aes-gcm", esp_key_bits=128)
    prop = phase2_proposal(both)
    assert [t.protocol for t in prop.transforms] == ["ah", "esp"]
    assert prop.transforms[1].cipher == "aes-gcm-16" and (prop.lifetime_s, prop.lifetime_kb) == (3600, 100_000)
    cfg = config(builtin.SECURE_SERVER, kerberos_psk=b"k")
    decision = cfg.matcher.lookup(Packet(ipaddress.ip_address(ME), ipaddress.ip_address(PEER), 1), Direction.OUTBOUND)
    p2 = cfg.phase2_for(decision, TrafficSelector.host(ME), TrafficSelector.host(PEER), "transport")
    assert len(p2.proposals) == len(builtin.DEFAULT_SECURITY_METHODS) and p2.pfs_group is None


def test_responder_answers_per_default_response_rule():
    """Client (Respond Only) answers any host pair through its default response rule; Partner,
    which has none, answers only its partner; a Block rule refuses."""
    local, remote = TrafficSelector.host(ME), TrafficSelector.host(PEER)
    client = config(builtin.CLIENT, kerberos_psk=b"k")
    assert client.phase2_config((PEER, 500), local, remote, "transport") is not None
    assert client.responder_decision(PEER, local, remote, "transport").is_default_response
    assert client.phase2_config((PEER, 500), local, remote, "tunnel") is None
    partner = config(partner_policy(PEER))
    assert partner.phase2_config((PEER, 500), local, remote, "transport") is not None
    other = TrafficSelector.host("10.0.0.9")
    assert partner.phase2_config(("10.0.0.9", 500), local, other, "transport") is None
    # Transport selectors must name the peer that negotiates them.
    assert partner.phase2_config(("10.0.0.9", 500), local, remote, "transport") is None
    block = replace(builtin.CLIENT, filter_lists=(FilterList(name="b", filters=(Filter(source=Address.me(), destination=Address.host(PEER)),)),),
                    filter_actions=builtin.CLIENT.filter_actions + (FilterAction(name="Block", kind=ActionKind.BLOCK),),
                    rules=(Rule(name="b", filter_list="b", filter_action="Block"),) + builtin.CLIENT.rules)
    assert config(block, kerberos_psk=b"k").phase2_config((PEER, 500), local, remote, "transport") is None


def test_selectors_instantiate_hosts_and_keep_filter_protocol_and_ports():
    fl = FilterList(name="web", filters=(Filter(source=Address.me(), destination=Address.subnet("10.0.0.0/24"), protocol=6,
                                                destination_port=80),))
    policy = replace(partner_policy(PEER), filter_lists=(fl,), rules=(replace(partner_policy(PEER).rules[0], filter_list="web"),))
    m = Matcher(policy, [ME])
    decision = m.lookup(Packet(ipaddress.ip_address(ME), ipaddress.ip_address(PEER), 6, 4000, 80), Direction.OUTBOUND)
    local, remote, mode = selectors_for(decision, ME, PEER, 6, 4000, 80)
    assert mode == "transport" and local == TrafficSelector.host(ME, 6, 0) and remote == TrafficSelector.host(PEER, 6, 80)
    tunnel = replace(policy, rules=(replace(policy.rules[0], tunnel_endpoint=ipaddress.ip_address(PEER), filter_list="all"),),
                     filter_lists=(FilterList(name="all", filters=(Filter(source=Address.me(), destination=Address.subnet("192.168.0.0/16")),)),))
    m = Matcher(tunnel, [ME])
    decision = m.lookup(Packet(ipaddress.ip_address(ME), ipaddress.ip_address("192.168.1.1"), 17, 1, 2), Direction.OUTBOUND)
    local, remote, mode = selectors_for(decision, ME, "192.168.1.1", 17, 1, 2)
    assert mode == "tunnel" and remote.network == ipaddress.ip_network("192.168.0.0/16") and remote.protocol == 0
