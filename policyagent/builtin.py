"""The built-in policies, filter lists, filter actions and security-method presets.

Owns the Windows 2000 defaults as values: *Client (Respond Only)*, *Server (Request Security)*,
*Secure Server (Require Security)*; the filter lists *All IP Traffic* and *All ICMP Traffic*; the
filter actions *Permit*, *Request Security (Optional)*, *Require Security*; the security-method
presets *High* (ESP) and *Medium* (AH, integrity only); the default main-mode and quick-mode
offers. Built-in policies are always present, assignable by name, never edited in place (copy
one with ``policy create NEW --from NAME``).

Defaults (issue 5): main mode offers modern suites first, then the Windows 2000 set, master key
480 minutes; quick mode ESP AES-128 or 3DES with SHA-1, ESP DES with SHA-1 or MD5, AH SHA-1, AH
MD5, each 3600 s / 100,000 KB. The DES, MD5 and group-1 offers are kept for Windows 2000 peers
and load with weak-algorithm warnings.
"""

from __future__ import annotations

from policyagent.model import (
    DEFAULT_MM_LIFETIME_MIN,
    DEFAULT_QM_LIFETIME_KB,
    DEFAULT_QM_LIFETIME_S,
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

DEFAULT_MAIN_MODE: tuple[MainModeMethod, ...] = (
    MainModeMethod(cipher="aes-cbc-256", hash="sha2-256", dh_group=14),
    MainModeMethod(cipher="aes-cbc-128", hash="sha1", dh_group=14),
    MainModeMethod(cipher="3des", hash="sha1", dh_group=2),
    MainModeMethod(cipher="3des", hash="md5", dh_group=2),
    MainModeMethod(cipher="des", hash="sha1", dh_group=1),
    MainModeMethod(cipher="des", hash="md5", dh_group=1),
)

DEFAULT_KEY_EXCHANGE = KeyExchange(methods=DEFAULT_MAIN_MODE, lifetime_min=DEFAULT_MM_LIFETIME_MIN)

_LIFE = {"lifetime_s": DEFAULT_QM_LIFETIME_S, "lifetime_kb": DEFAULT_QM_LIFETIME_KB}


def esp(cipher: str, integrity: str | None, key_bits: int | None = None) -> SecurityMethod:
    """An ESP security method with the default lifetimes."""
    return SecurityMethod(esp_cipher=cipher, esp_key_bits=key_bits, esp_integrity=integrity, **_LIFE)


def ah(integrity: str) -> SecurityMethod:
    """An AH security method with the default lifetimes."""
    return SecurityMethod(ah_integrity=integrity, **_LIFE)


DEFAULT_SECURITY_METHODS: tuple[SecurityMethod, ...] = (
    esp("aes-cbc", "hmac-sha1-96", 128),
    esp("3des-cbc", "hmac-sha1-96"),
    esp("des-cbc", "hmac-sha1-96"),
    esp("des-cbc", "hmac-md5-96"),
    ah("hmac-sha1-96"),
    ah("hmac-md5-96"),
)

# The wizard's presets: High = ESP (integrity and encryption), Medium = AH (integrity only).
HIGH = esp("aes-cbc", "hmac-sha1-96", 128)
MEDIUM = ah("hmac-sha1-96")
PRESETS: dict[str, SecurityMethod] = {"high": HIGH, "medium": MEDIUM}

ALL_IP_TRAFFIC = FilterList(
    name="All IP Traffic",
    description="Matches all IP packets from this computer to any other computer, except broadcast, multicast, Kerberos, RSVP and ISAKMP (IKE).",
    filters=(Filter(source=Address.me(), destination=Address.any(), is_mirrored=True),),
)
ALL_ICMP_TRAFFIC = FilterList(
    name="All ICMP Traffic",
    description="Matches all ICMP packets between this computer and any other computer.",
    filters=(Filter(source=Address.me(), destination=Address.any(), protocol=1, is_mirrored=True),),
)

PERMIT = FilterAction(name="Permit", kind=ActionKind.PERMIT, description="Permit unsecured IP packets to pass through.")
REQUEST_SECURITY = FilterAction(
    name="Request Security (Optional)",
    kind=ActionKind.NEGOTIATE,
    security_methods=DEFAULT_SECURITY_METHODS,
    accepts_unsecured=True,
    falls_back_to_clear=True,
    description="Accepts unsecured communication, but requests clients to establish trust and security methods. "
    "Will communicate insecurely to untrusted clients if they do not respond to request.",
)
REQUIRE_SECURITY = FilterAction(
    name="Require Security",
    kind=ActionKind.NEGOTIATE,
    security_methods=DEFAULT_SECURITY_METHODS,
    accepts_unsecured=True,
    falls_back_to_clear=False,
    description="Accepts unsecured communication, but always requires clients to establish trust and security methods. "
    "Will NOT communicate with untrusted clients.",
)
DEFAULT_RESPONSE = FilterAction(
    name="Default Response",
    kind=ActionKind.NEGOTIATE,
    security_methods=DEFAULT_SECURITY_METHODS,
    description="The default response rule's security methods, offered to peers that request security.",
)

BUILTIN_FILTER_LISTS: dict[str, FilterList] = {fl.name: fl for fl in (ALL_IP_TRAFFIC, ALL_ICMP_TRAFFIC)}
BUILTIN_FILTER_ACTIONS: dict[str, FilterAction] = {
    fa.name: fa for fa in (PERMIT, REQUEST_SECURITY, REQUIRE_SECURITY, DEFAULT_RESPONSE)
}

_KERBEROS = (AuthMethod.kerberos(),)


def default_response_rule(authentication: tuple[AuthMethod, ...] = _KERBEROS) -> Rule:
    """The default response rule: no filter list, answers requests with the default methods."""
    return Rule(
        name="<Dynamic>",
        filter_list=None,
        filter_action=DEFAULT_RESPONSE.name,
        authentication=authentication,
        is_default_response=True,
        description="Default response rule",
    )


CLIENT = Policy(
    name="Client (Respond Only)",
    description="Communicate normally (unsecured). Use the default response rule to negotiate with servers "
    "that request security. Only the requested protocol and port traffic with that server is secured.",
    key_exchange=DEFAULT_KEY_EXCHANGE,
    rules=(default_response_rule(),),
    filter_actions=(DEFAULT_RESPONSE,),
)

SERVER = Policy(
    name="Server (Request Security)",
    description="For all IP traffic, always request security using Kerberos trust. "
    "Allow unsecured communication with clients that do not respond to request.",
    key_exchange=DEFAULT_KEY_EXCHANGE,
    rules=(
        Rule(name="All IP Traffic", filter_list=ALL_IP_TRAFFIC.name, filter_action=REQUEST_SECURITY.name, authentication=_KERBEROS),
        Rule(name="All ICMP Traffic", filter_list=ALL_ICMP_TRAFFIC.name, filter_action=PERMIT.name, authentication=_KERBEROS),
        default_response_rule(),
    ),
    filter_lists=(ALL_IP_TRAFFIC, ALL_ICMP_TRAFFIC),
    filter_actions=(REQUEST_SECURITY, PERMIT, DEFAULT_RESPONSE),
)

# The seed pings a Secure Server from a Client and sees "Negotiating IP Security", so ICMP is
# secured here too (ARCHITECTURE: no ICMP Permit rule in Secure Server).
SECURE_SERVER = Policy(
    name="Secure Server (Require Security)",
    description="For all IP traffic, always require security using Kerberos trust. "
    "Do NOT allow unsecured communication with untrusted clients.",
    key_exchange=DEFAULT_KEY_EXCHANGE,
    rules=(
        Rule(name="All IP Traffic", filter_list=ALL_IP_TRAFFIC.name, filter_action=REQUIRE_SECURITY.name, authentication=_KERBEROS),
        default_response_rule(),
    ),
    filter_lists=(ALL_IP_TRAFFIC,),
    filter_actions=(REQUIRE_SECURITY, DEFAULT_RESPONSE),
)

BUILTIN_POLICIES: dict[str, Policy] = {p.name: p for p in (CLIENT, SERVER, SECURE_SERVER)}

# Short names the seed's console shows ("Client, Secure Server, and Server").
_ALIASES = {"client": CLIENT, "server": SERVER, "secure server": SECURE_SERVER}


def builtin_policy(name: str) -> Policy | None:
    """The built-in policy called ``name`` (full or short name, any case), else None."""
    low = name.strip().lower()
    for policy in BUILTIN_POLICIES.values():
        if policy.name.lower() == low:
            return policy
    return _ALIASES.get(low)


def is_builtin(name: str) -> bool:
    return builtin_policy(name) is not None
