"""The policy model: addresses, filters and their mirrors, hidden keys, editing helpers."""

from __future__ import annotations

from ipaddress import ip_address

import pytest
from hypothesis import given

from policyagent import builtin
from policyagent.model import (
    QM_ALGORITHMS,
    Address,
    AddressKind,
    AuthMethod,
    Filter,
    FilterList,
    Policy,
    Rule,
    SecurityMethod,
    parse_protocol,
    protocol_name,
)
from tests.agent.policy_strategies import addresses, filters


@pytest.mark.parametrize(
    "text, kind, shown",
    [
        ("me", AddressKind.ME, "me"),
        ("ANY", AddressKind.ANY, "any"),
        ("192.0.2.2", AddressKind.HOST, "192.0.2.2"),
        ("10.0.0.0/8", AddressKind.SUBNET, "10.0.0.0/8"),
        ("172.31.0.0/255.255.0.0", AddressKind.SUBNET, "172.31.0.0/16"),
        ("10.0.0.7/32", AddressKind.HOST, "10.0.0.7"),
        ("10.0.0.1-10.0.0.9", AddressKind.RANGE, "10.0.0.1-10.0.0.9"),
        ("10.0.0.4-10.0.0.4", AddressKind.HOST, "10.0.0.4"),
        ("2001:db8::/32", AddressKind.SUBNET, "2001:db8::/32"),
        ("2001:db8::1", AddressKind.HOST, "2001:db8::1"),
    ],
)
def test_address_forms(text, kind, shown):
    a = Address.parse(text)
    assert a.kind is kind and str(a) == shown and Address.parse(shown) == a


@pytest.mark.parametrize("text", ["", "10.0.0.1/8", "10.0.0.9-10.0.0.1", "10.0.0.1-2001:db8::1", "host.example", "10.0.0.300"])
def test_bad_addresses_are_refused(text):
    with pytest.raises(ValueError):
        Address.parse(text)


@given(addresses())
def test_address_text_round_trips(a):
    """str() of any address parses back to the same address."""
    assert Address.parse(str(a)) == a


@given(filters())
def test_mirror_is_an_involution(f):
    """Mirroring twice gives the filter back; once swaps addresses and ports."""
    m = f.mirror()
    assert m.mirror() == f
    assert (m.source, m.destination, m.source_port, m.destination_port) == (f.destination, f.source, f.destination_port, f.source_port)


def test_protocols():
    assert parse_protocol("TCP") == 6 and parse_protocol("udp") == 17 and parse_protocol(1) == 1
    assert parse_protocol("any") is None and parse_protocol(0) is None and parse_protocol("0") is None
    assert protocol_name(17) == "udp" and protocol_name(None) == "any" and protocol_name(99) == "99"
    for bad in ("ftp", 256, "-1"):
        with pytest.raises(ValueError):
            parse_protocol(bad)


def test_preshared_key_is_not_in_repr_or_str():
    """Keys never reach logs through repr() or str()."""
    a = AuthMethod.preshared_key("ABC123")
    assert "ABC123" not in repr(a) and "ABC123" not in str(a)
    assert "ABC123" not in repr(Rule(name="r", filter_list="l", filter_action="a", authentication=(a,)))


def test_security_method_text():
    assert str(builtin.MEDIUM) == "AH[SHA1]:3600S/100000K"
    assert str(SecurityMethod(ah_integrity="hmac-sha1-96", esp_cipher="des-cbc", esp_integrity="hmac-md5-96")) == "AH[SHA1]+ESP[DES,MD5]"
    assert str(SecurityMethod(esp_cipher="aes-gcm", esp_key_bits=256)) == "ESP[AESGCM256]"
    assert builtin.HIGH.has_esp and not builtin.HIGH.has_ah and builtin.MEDIUM.has_ah and not builtin.MEDIUM.has_esp


def test_algorithm_table_uses_canonical_espcore_names():
    ciphers = {k for k, v in QM_ALGORITHMS.items() if v.kind == "cipher"}
    assert ciphers == {"null", "des-cbc", "3des-cbc", "aes-cbc", "aes-gcm"}
    assert QM_ALGORITHMS["aes-cbc"].key_bits == (128, 192, 256)
    assert {"hmac-md5-96", "hmac-sha1-96", "hmac-sha2-256-128"} <= set(QM_ALGORITHMS)


def test_editing_helpers_keep_the_default_response_rule_last():
    p = builtin.CLIENT
    r = Rule(name="new", filter_list="L", filter_action="Permit")
    p2 = p.with_filter_list(FilterList(name="L", filters=(Filter(source=Address.me(), destination=Address.any()),))).with_filter_action(builtin.PERMIT).with_rule(r)
    assert [x.name for x in p2.rules] == ["new", "<Dynamic>"]
    assert p2.default_response_rule is not None and p2.rule_named("new") == r
    replaced = p2.with_filter_list(FilterList(name="L")).with_rule(Rule(name="new", filter_list="L", filter_action="Permit", is_active=False))
    assert len(replaced.filter_lists) == 1 and not replaced.filter_lists[0].filters and not replaced.rule_named("new").is_active
    assert p.rules == builtin.CLIENT.rules  # values are immutable: the original is unchanged


def test_policy_flags():
    p = Policy(name="x", key_exchange=builtin.DEFAULT_KEY_EXCHANGE, rules=(Rule(name="r", filter_list=None, filter_action="a", authentication=(AuthMethod.preshared_key("k"),), tunnel_endpoint=ip_address("192.0.2.1")),))
    assert p.has_preshared_key and p.rules[0].is_tunnel
    assert not builtin.SERVER.has_preshared_key
    assert builtin.DEFAULT_KEY_EXCHANGE.lifetime_s == 480 * 60
