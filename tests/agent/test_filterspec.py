"""ipsecpol-style one-line specs: filters, negotiation policies, authentication, main mode."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given

from policyagent import builtin
from policyagent.errors import UsageError
from policyagent.filterspec import (
    format_filter_spec,
    parse_auth_methods,
    parse_filter_spec,
    parse_filter_specs,
    parse_main_mode,
    parse_main_mode_rekey,
    parse_negotiation,
    parse_security_method,
)
from policyagent.model import ActionKind, Address, AuthKind, MainModeMethod, SecurityMethod
from tests.agent.policy_strategies import filters


@pytest.mark.parametrize(
    "spec, src, dst, protocol, sport, dport, mirrored",
    [
        ("0+192.0.2.2", "me", "192.0.2.2", None, None, None, True),  # the Partner filter
        ("me=192.0.2.2", "me", "192.0.2.2", None, None, None, False),
        ("*+0::ICMP", "any", "me", 1, None, None, True),
        ("172.31.0.0/255.255.0.0:80=157.0.0.0/255.0.0.0:80:TCP", "172.31.0.0/16", "157.0.0.0/8", 6, 80, 80, False),
        ("Any+me:0:0", "any", "me", None, None, None, True),
        ("144.92.*.*=0:53:UDP", "144.92.0.0/16", "me", 17, None, 53, False),
        ("128.*+0", "128.0.0.0/8", "me", None, None, None, True),
        ("10.0.0.1-10.0.0.9+0::6", "10.0.0.1-10.0.0.9", "me", 6, None, None, True),
        ("0+10.0.0.0/24::46", "me", "10.0.0.0/24", 46, None, None, True),
        ("[2001:db8::1]:500+[2001:db8::]/32:500:udp", "2001:db8::1", "2001:db8::/32", 17, 500, 500, True),
    ],
)
def test_filter_specs(spec, src, dst, protocol, sport, dport, mirrored):
    f = parse_filter_spec(spec)
    assert f.source == Address.parse(src) and f.destination == Address.parse(dst)
    assert (f.protocol, f.source_port, f.destination_port, f.is_mirrored) == (protocol, sport, dport, mirrored)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("0 192.0.2.2", "'=' (one way) or '+'"),
        ("0+", "source and a destination"),
        ("0:80+1.2.3.4:80", "must be TCP or UDP"),
        ("0+1.2.3.4:99999:TCP", "bad port"),
        ("0+1.2.3.4::FTP", "unknown protocol"),
        ("0+partner.example.com", "host name"),
        ("0+1.2.3.4/24", "host bits"),
        ("1.*.3.*+0", "star notation"),
        ("0:1:2+1.2.3.4", "ADDRESS[:PORT]"),
        ("[2001:db8::1+0", "unclosed"),
    ],
)
def test_bad_filter_specs_say_why(spec, words):
    with pytest.raises(UsageError) as exc:
        parse_filter_spec(spec)
    assert words in str(exc.value)


def test_a_filter_list_is_space_separated():
    assert len(parse_filter_specs("0+192.0.2.2 0+192.0.2.3::ICMP")) == 2
    with pytest.raises(UsageError):
        parse_filter_specs("  ")


@given(filters())
def test_format_parses_back(f):
    """format_filter_spec(f) parses back to f (descriptions are not part of a spec)."""
    assert parse_filter_spec(format_filter_spec(f)) == replace(f, description=None)


@pytest.mark.parametrize(
    "token, method, pfs",
    [
        ("ESP[3DES,SHA1]", SecurityMethod(esp_cipher="3des-cbc", esp_integrity="hmac-sha1-96"), False),
        ("esp[des,md5]", SecurityMethod(esp_cipher="des-cbc", esp_integrity="hmac-md5-96"), False),
        ("AH[SHA1]", SecurityMethod(ah_integrity="hmac-sha1-96"), False),
        ("AH[SHA]", SecurityMethod(ah_integrity="hmac-sha1-96"), False),
        ("AH[SHA1]+ESP[DES,MD5]", SecurityMethod(ah_integrity="hmac-sha1-96", esp_cipher="des-cbc", esp_integrity="hmac-md5-96"), False),
        ("ESP[NONE,SHA1]", SecurityMethod(esp_cipher="null", esp_integrity="hmac-sha1-96"), False),
        ("ESP[3DES,NONE]", SecurityMethod(esp_cipher="3des-cbc"), False),
        ("ESP[AES256,SHA256]:3600S/100000K", SecurityMethod(esp_cipher="aes-cbc", esp_key_bits=256, esp_integrity="hmac-sha2-256-128", lifetime_s=3600, lifetime_kb=100000), False),
        ("ESP[AES,SHA1]100000K/900S", SecurityMethod(esp_cipher="aes-cbc", esp_key_bits=128, esp_integrity="hmac-sha1-96", lifetime_s=900, lifetime_kb=100000), False),
        ("ESP[AESGCM128]PFS", SecurityMethod(esp_cipher="aes-gcm", esp_key_bits=128), True),
        ("ESP[3DES,SHA1]:3600SP", SecurityMethod(esp_cipher="3des-cbc", esp_integrity="hmac-sha1-96", lifetime_s=3600), True),
    ],
)
def test_security_methods(token, method, pfs):
    assert parse_security_method(token) == (method, pfs)


@pytest.mark.parametrize("token", ["ESP[NONE,NONE]", "ESP[RC4,SHA1]", "AH[DES]", "AH[SHA1]+AH[MD5]", "ESP[3DES,SHA1]PFS2", "ESP[3DES,SHA1]:0S", "ESP[3DES,SHA1,MD5]", "GRE[X]"])
def test_bad_security_methods(token):
    with pytest.raises(UsageError):
        parse_security_method(token)


def test_negotiation_lists():
    n = parse_negotiation("MEDIUM")
    assert n.kind is ActionKind.NEGOTIATE and n.security_methods == (builtin.MEDIUM,) and not n.accepts_unsecured
    n = parse_negotiation("ESP[3DES,SHA1] AH[MD5] INPASS")
    assert len(n.security_methods) == 2 and n.accepts_unsecured
    assert parse_negotiation("ESP[DES,SHA]PFS HIGH").has_session_key_pfs
    assert parse_negotiation("BLOCK").kind is ActionKind.BLOCK and parse_negotiation("pass").kind is ActionKind.PERMIT
    for bad in ("", "BLOCK ESP[DES,SHA1]", "INPASS"):
        with pytest.raises(UsageError):
            parse_negotiation(bad)


def test_authentication_lists():
    got = parse_auth_methods('PRESHARE:"ABC123" K CERT:"CN=SecTestCA3, O=Microsoft"')
    assert [a.kind for a in got] == [AuthKind.PRESHARED_KEY, AuthKind.KERBEROS, AuthKind.CERTIFICATE]
    assert got[0].key == "ABC123" and got[2].root_ca == "CN=SecTestCA3, O=Microsoft"
    assert parse_auth_methods("P:ABC123")[0].key == "ABC123"
    for bad in ("", "NTLM", 'PRESHARE:"unclosed', "KERBEROS:x"):
        with pytest.raises(UsageError):
            parse_auth_methods(bad)


def test_an_error_about_a_key_does_not_show_it():
    with pytest.raises(UsageError) as exc:
        parse_auth_methods("SECRET:hunter2")
    assert "hunter2" not in str(exc.value)


def test_main_mode_lists_and_rekey():
    assert parse_main_mode("3DES-SHA-2 AES256-SHA256-14 des-md5-1") == (
        MainModeMethod(cipher="3des", hash="sha1", dh_group=2),
        MainModeMethod(cipher="aes-cbc-256", hash="sha2-256", dh_group=14),
        MainModeMethod(cipher="des", hash="md5", dh_group=1),
    )
    assert parse_main_mode_rekey("10Q/3600S") == (60, 10) and parse_main_mode_rekey("480M") == (480, None)
    for bad in ("3DES-SHA", "IDEA-SHA-2", ""):
        with pytest.raises(UsageError):
            parse_main_mode(bad)
    for bad in ("10X", "90S", "0Q"):
        with pytest.raises(UsageError):
            parse_main_mode_rekey(bad)
