"""Validation: what the seed says is not supported is refused, with rule and field named."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

import pytest

from policyagent import builtin
from policyagent.errors import Issue, ValidationError
from policyagent.model import (
    ActionKind,
    Address,
    AuthMethod,
    Filter,
    FilterAction,
    FilterList,
    KeyExchange,
    MainModeMethod,
    Policy,
    Rule,
    SecurityMethod,
)
from policyagent.validate import check_policy, line_in, validate_policy

KERBEROS = (AuthMethod.kerberos(),)
CERT = (AuthMethod.certificate("CN=SecTestCA3"),)
MODERN = KeyExchange(methods=(MainModeMethod(cipher="aes-cbc-256", hash="sha2-256", dh_group=14),))


def f(src="me", dst="192.0.2.2", protocol=None, sport=None, dport=None, mirrored=True) -> Filter:
    return Filter(source=Address.parse(src), destination=Address.parse(dst), protocol=protocol, source_port=sport, destination_port=dport, is_mirrored=mirrored)


def policy(*rules, actions=(builtin.REQUIRE_SECURITY, builtin.PERMIT), kx=MODERN, **kw) -> Policy:
    """``rules``: (name, filters, action name, auth[, tunnel])."""
    lists, out = [], []
    for name, fs, action, auth, *tunnel in rules:
        lists.append(FilterList(name=name, filters=tuple(fs)))
        out.append(Rule(name=name, filter_list=name, filter_action=action, authentication=auth, tunnel_endpoint=tunnel[0] if tunnel else None))
    modern_actions = tuple(replace(a, security_methods=(builtin.HIGH,)) if a.kind is ActionKind.NEGOTIATE else a for a in actions)
    return Policy(name="test", key_exchange=kx, rules=tuple(out), filter_lists=tuple(lists), filter_actions=modern_actions, **kw)


def codes(p: Policy, severity="error") -> set[str]:
    return {i.code for i in check_policy(p) if i.severity == severity}


def test_a_clean_policy_has_no_issues():
    assert check_policy(policy(("partner", [f()], "Require Security", KERBEROS))) == []


def test_securing_filters_must_be_mirrored_but_permit_and_block_may_be_one_way():
    bad = policy(("one way", [f(mirrored=False)], "Require Security", KERBEROS))
    (issue,) = [i for i in check_policy(bad) if i.is_error]
    assert issue.code == "not-mirrored" and issue.rule == "one way" and issue.field == "filter_lists[0].filters[0].mirrored"
    assert codes(policy(("one way", [f(mirrored=False)], "Permit", KERBEROS))) == set()


def test_the_tcp_kerberos_udp_certificate_trap_is_refused():
    """The seed's example: Kerberos for TCP and certificates for UDP between the same two hosts."""
    trap = policy(("tcp", [f(protocol=6)], "Require Security", KERBEROS), ("udp", [f(protocol=17)], "Require Security", CERT))
    with pytest.raises(ValidationError) as exc:
        validate_policy(trap, path="trap.toml")
    (issue,) = exc.value.errors
    assert issue.code == "auth-conflict" and issue.rule == "udp" and issue.field == "rules[1].authentication"
    assert "same pair of hosts" in str(exc.value) and "trap.toml" in str(exc.value)


@pytest.mark.parametrize(
    "rules, conflict",
    [
        # Same authentication: fine.
        ([("a", [f(protocol=6)], KERBEROS), ("b", [f(protocol=17)], KERBEROS)], False),
        # Different hosts: fine.
        ([("a", [f(dst="192.0.2.2")], KERBEROS), ("b", [f(dst="192.0.2.3")], CERT)], False),
        # A more specific, address-only filter wins every packet and main mode alike: fine.
        ([("all", [f(dst="any")], KERBEROS), ("partner", [f()], CERT)], False),
        # ...but a protocol-specific one does not: UDP to the partner would use Kerberos.
        ([("all", [f(dst="any")], KERBEROS), ("partner tcp", [f(protocol=6)], CERT)], True),
        # Equal address specificity, one of them address-only: still ambiguous.
        ([("a", [f()], KERBEROS), ("b", [f(protocol=6)], CERT)], True),
        # Overlapping subnets through a mirror: the more specific one is address-only, fine...
        ([("a", [f(src="10.0.0.0/8", dst="10.1.0.0/16")], KERBEROS), ("b", [f(src="10.1.2.0/24", dst="10.0.0.0/24")], CERT)], False),
        # ...unless it is protocol-specific.
        ([("a", [f(src="10.0.0.0/8", dst="10.1.0.0/16")], KERBEROS), ("b", [f(src="10.1.2.0/24", dst="10.0.0.0/24", protocol=17)], CERT)], True),
        # Two hosts named explicitly (one of them this host) against me <-> the other: same pair.
        ([("a", [f(src="192.0.2.1", dst="192.0.2.2", protocol=6)], KERBEROS), ("b", [f(protocol=17)], CERT)], True),
    ],
)
def test_one_authentication_method_per_host_pair(rules, conflict):
    p = policy(*[(n, fs, "Require Security", auth) for n, fs, auth in rules])
    assert ("auth-conflict" in codes(p)) is conflict


def test_permit_rules_do_not_take_part_in_the_host_pair_check():
    p = policy(("a", [f(protocol=6)], "Require Security", KERBEROS), ("b", [f(protocol=17)], "Permit", CERT))
    assert codes(p) == set()


def test_tunnel_rules_to_one_endpoint_must_agree_and_their_filters_are_address_only():
    gw = ip_address("192.0.2.9")
    p = policy(
        ("t1", [f("10.0.0.0/24", "10.1.0.0/24", mirrored=False)], "Require Security", KERBEROS, gw),
        ("t2", [f("10.0.0.0/24", "10.2.0.0/24", protocol=6, mirrored=False)], "Require Security", CERT, gw),
    )
    got = codes(p)
    assert "tunnel-filter" in got and "auth-conflict" in got and "not-mirrored" not in got


def test_certificate_methods_must_be_contiguous():
    ok = (AuthMethod.certificate("A"), AuthMethod.certificate("B"), AuthMethod.kerberos())
    bad = (AuthMethod.certificate("A"), AuthMethod.kerberos(), AuthMethod.certificate("B"))
    assert codes(policy(("r", [f()], "Require Security", ok))) == set()
    issues = [i for i in check_policy(policy(("r", [f()], "Require Security", bad))) if i.is_error]
    assert [i.code for i in issues] == ["cert-not-contiguous"] and issues[0].field == "rules[0].authentication[0]"


def test_preshared_keys():
    assert codes(policy(("r", [f()], "Require Security", (AuthMethod.preshared_key(""),)))) == {"empty-psk"}
    assert codes(policy(("r", [f()], "Require Security", (AuthMethod.preshared_key(" ABC123"),))), "warning") == {"psk-whitespace"}
    assert codes(policy(("r", [f()], "Require Security", (AuthMethod.certificate(" "),)))) == {"empty-root-ca"}


def test_negotiating_rules_need_authentication():
    assert codes(policy(("r", [f()], "Require Security", ()))) == {"no-authentication"}
    assert codes(policy(("r", [f()], "Permit", ()))) == set()


def test_weak_algorithms_load_with_warnings():
    weak_kx = KeyExchange(methods=(MainModeMethod(cipher="des", hash="md5", dh_group=1),))
    p = policy(("r", [f()], "Partner Action", KERBEROS), actions=(), kx=weak_kx)
    p = replace(p, filter_actions=(FilterAction(name="Partner Action", kind=ActionKind.NEGOTIATE, security_methods=(SecurityMethod(esp_cipher="des-cbc", esp_integrity="hmac-md5-96"),)),))
    warnings = validate_policy(p)
    assert {w.code for w in warnings} == {"weak-algorithm"} and len(warnings) == 2
    text = " ".join(w.message for w in warnings)
    assert "DES" in text and "MD5" in text and "DH group 1" in text and "des-cbc" in text


@pytest.mark.parametrize(
    "method, code",
    [
        (SecurityMethod(), "empty-method"),
        (SecurityMethod(esp_cipher="rc4", esp_integrity="hmac-sha1-96"), "unknown-algorithm"),
        (SecurityMethod(ah_integrity="3des-cbc"), "unknown-algorithm"),
        (SecurityMethod(esp_cipher="aes-cbc", esp_integrity="hmac-sha1-96"), "bad-key-size"),
        (SecurityMethod(esp_cipher="3des-cbc", esp_key_bits=192, esp_integrity="hmac-sha1-96"), "bad-key-size"),
        (SecurityMethod(esp_cipher="aes-gcm", esp_key_bits=128, esp_integrity="hmac-sha1-96"), "aead-with-integrity"),
        (SecurityMethod(esp_cipher="null"), "esp-no-protection"),
        (SecurityMethod(ah_integrity="hmac-sha1-96", esp_integrity="hmac-sha1-96"), "esp-no-cipher"),
        (SecurityMethod(ah_integrity="hmac-sha1-96", lifetime_s=0), "bad-number"),
    ],
)
def test_bad_security_methods(method, code):
    p = policy(("r", [f()], "A", KERBEROS), actions=())
    p = replace(p, filter_actions=(FilterAction(name="A", kind=ActionKind.NEGOTIATE, security_methods=(method,)),))
    assert code in codes(p)


def test_encryption_only_esp_warns():
    p = policy(("r", [f()], "A", KERBEROS), actions=())
    p = replace(p, filter_actions=(FilterAction(name="A", kind=ActionKind.NEGOTIATE, security_methods=(SecurityMethod(esp_cipher="3des-cbc"),)),))
    assert codes(p, "warning") == {"esp-no-integrity"} and codes(p) == set()


def test_actions_and_references():
    p = policy(("r", [f()], "Missing", KERBEROS))
    assert codes(p) == {"unknown-filter-action"}
    p = replace(policy(("r", [f()], "Permit", KERBEROS)), filter_lists=())
    assert codes(p) == {"unknown-filter-list"}
    permit_with_methods = replace(builtin.PERMIT, security_methods=(builtin.MEDIUM,), falls_back_to_clear=True)
    assert codes(policy(("r", [f()], "Permit", KERBEROS), actions=(permit_with_methods,))) == {"methods-not-negotiate", "options-not-negotiate"}
    empty = FilterAction(name="N", kind=ActionKind.NEGOTIATE)
    assert codes(replace(policy(("r", [f()], "N", KERBEROS), actions=()), filter_actions=(empty,))) == {"no-security-methods"}


def test_filters():
    assert codes(policy(("r", [f(protocol=1, dport=80)], "Permit", KERBEROS))) == {"port-without-protocol"}
    assert codes(policy(("r", [f(protocol=6, dport=70000)], "Permit", KERBEROS))) == {"bad-port"}
    assert codes(policy(("r", [f(src="10.0.0.1", dst="2001:db8::1")], "Permit", KERBEROS))) == {"address-family"}
    assert codes(policy(("r", [], "Permit", KERBEROS)), "warning") == {"empty-filter-list"}


def test_names_and_default_response_rules():
    p = policy(("r", [f()], "Permit", KERBEROS), ("r", [f(dst="192.0.2.3")], "Permit", KERBEROS))
    assert "duplicate-name" in codes(p)
    assert "bad-name" in codes(replace(policy(), name="../etc"))
    assert "empty-name" in codes(replace(policy(), name=" "))
    two = replace(builtin.CLIENT, rules=builtin.CLIENT.rules * 2)
    assert "default-response" in codes(two)
    permit_default = replace(builtin.CLIENT.rules[0], filter_action="Permit")
    assert "default-response" in codes(replace(builtin.CLIENT, rules=(permit_default,), filter_actions=(builtin.PERMIT,)))


def test_key_exchange():
    assert codes(policy(kx=KeyExchange(methods=()))) == {"no-main-mode"}
    odd = KeyExchange(methods=(MainModeMethod(cipher="blowfish", hash="tiger", dh_group=3),), lifetime_min=0)
    assert codes(policy(kx=odd)) == {"unknown-algorithm", "bad-number"}
    pfs = replace(MODERN, has_master_key_pfs=True, lifetime_sessions=5)
    assert codes(policy(kx=pfs), "warning") == {"master-key-pfs"}


def test_validation_error_carries_every_error_and_the_first_location():
    p = policy(("a", [f(mirrored=False)], "Require Security", (AuthMethod.preshared_key(""),)))
    with pytest.raises(ValidationError) as exc:
        validate_policy(p, path="p.toml", line_of={"filter_lists[0].filters[0]": 7, "rules[0]": 12})
    err = exc.value
    assert len(err.errors) == 2 and err.path == "p.toml" and err.rule == "a"
    assert err.line == 7 and err.field == "filter_lists[0].filters[0].mirrored"  # the nearest known line
    assert str(err).startswith("p.toml:7: rule 'a', field filter_lists[0].filters[0].mirrored:") and "1 more error" in str(err)
    assert [i.line for i in err.errors] == [7, 12]


def test_issue_text_and_line_lookup():
    i = Issue(severity="warning", code="x", message="m", rule="r", field="rules[0].name", path="f.toml", line=3)
    assert str(i) == "f.toml:3: rule 'r', field rules[0].name: warning [x]: m"
    assert line_in({"rules[0]": 5}, "rules[0].authentication[1]") == 5 and line_in({}, "rules[0]") is None
