"""The built-in policies, filter lists, filter actions and defaults (Windows 2000 semantics)."""

from __future__ import annotations

import pytest

from policyagent import builtin
from policyagent.model import ActionKind, AddressKind, AuthMethod
from policyagent.validate import check_policy


def test_default_main_mode_offers_modern_first_then_windows_2000():
    got = [(m.cipher, m.hash, m.dh_group) for m in builtin.DEFAULT_MAIN_MODE]
    assert got == [
        ("aes-cbc-256", "sha2-256", 14),
        ("aes-cbc-128", "sha1", 14),
        ("3des", "sha1", 2),
        ("3des", "md5", 2),
        ("des", "sha1", 1),
        ("des", "md5", 1),
    ]
    assert builtin.DEFAULT_KEY_EXCHANGE.lifetime_min == 480
    assert builtin.DEFAULT_KEY_EXCHANGE.lifetime_sessions is None and not builtin.DEFAULT_KEY_EXCHANGE.has_master_key_pfs


def test_default_quick_mode_methods():
    got = [(m.esp_cipher, m.esp_key_bits, m.esp_integrity, m.ah_integrity) for m in builtin.DEFAULT_SECURITY_METHODS]
    assert got == [
        ("aes-cbc", 128, "hmac-sha1-96", None),
        ("3des-cbc", None, "hmac-sha1-96", None),
        ("des-cbc", None, "hmac-sha1-96", None),
        ("des-cbc", None, "hmac-md5-96", None),
        (None, None, None, "hmac-sha1-96"),
        (None, None, None, "hmac-md5-96"),
    ]
    assert all(m.lifetime_s == 3600 and m.lifetime_kb == 100_000 for m in builtin.DEFAULT_SECURITY_METHODS)


def test_presets():
    """High = ESP (integrity and encryption); Medium = AH, integrity only."""
    assert builtin.HIGH.has_esp and builtin.HIGH.esp_integrity and not builtin.HIGH.has_ah
    assert builtin.MEDIUM.has_ah and not builtin.MEDIUM.has_esp


def test_builtin_filter_lists_and_actions():
    ip_all = builtin.ALL_IP_TRAFFIC.filters[0]
    icmp = builtin.ALL_ICMP_TRAFFIC.filters[0]
    assert ip_all.source.kind is AddressKind.ME and ip_all.destination.kind is AddressKind.ANY and ip_all.is_mirrored and ip_all.protocol is None
    assert icmp.protocol == 1 and icmp.is_mirrored
    assert builtin.PERMIT.kind is ActionKind.PERMIT and not builtin.PERMIT.security_methods
    req, rq = builtin.REQUEST_SECURITY, builtin.REQUIRE_SECURITY
    assert req.kind is rq.kind is ActionKind.NEGOTIATE
    assert req.accepts_unsecured and req.falls_back_to_clear  # Request Security (Optional)
    assert rq.accepts_unsecured and not rq.falls_back_to_clear  # Require Security
    assert not req.has_session_key_pfs and not rq.has_session_key_pfs
    assert set(builtin.BUILTIN_FILTER_LISTS) == {"All IP Traffic", "All ICMP Traffic"}
    assert {"Permit", "Request Security (Optional)", "Require Security"} <= set(builtin.BUILTIN_FILTER_ACTIONS)


def test_client_only_responds():
    rules = builtin.CLIENT.rules
    assert len(rules) == 1 and rules[0].is_default_response and rules[0].filter_list is None
    assert rules[0].authentication == (AuthMethod.kerberos(),)


def test_server_requests_security_and_permits_icmp():
    p = builtin.SERVER
    plain = {r.filter_list: r.filter_action for r in p.rules if not r.is_default_response}
    assert plain == {"All IP Traffic": "Request Security (Optional)", "All ICMP Traffic": "Permit"}
    assert p.default_response_rule is not None


def test_secure_server_requires_security_for_everything():
    p = builtin.SECURE_SERVER
    plain = {r.filter_list: r.filter_action for r in p.rules if not r.is_default_response}
    assert plain == {"All IP Traffic": "Require Security"}  # ICMP too: the seed's ping negotiates
    assert all(r.authentication == (AuthMethod.kerberos(),) for r in p.rules)


@pytest.mark.parametrize("policy", list(builtin.BUILTIN_POLICIES.values()), ids=list(builtin.BUILTIN_POLICIES))
def test_builtins_validate_with_only_weak_algorithm_warnings(policy):
    issues = check_policy(policy)
    assert not [i for i in issues if i.is_error]
    assert {i.code for i in issues} == {"weak-algorithm"}


@pytest.mark.parametrize("name", ["Client", "client (respond only)", "Server", "SECURE SERVER", "Secure Server (Require Security)"])
def test_builtins_by_short_or_full_name(name):
    assert builtin.is_builtin(name) and builtin.builtin_policy(name) in builtin.BUILTIN_POLICIES.values()


def test_unknown_name_is_not_builtin():
    assert builtin.builtin_policy("Partner") is None and not builtin.is_builtin("Partner")
