"""The Windows 2000 IPsec policy model: immutable values, no I/O.

Owns: policies, rules, filter lists, filters and their addresses, filter actions, security
methods (quick mode), authentication methods, IKE key-exchange settings (main mode), and the
algorithm-name tables both sides use. Does not own: the built-in policies (``builtin``), files
(``store``), checks across objects (``validate``), packet matching (``matcher``).

Every object is a frozen dataclass, so policies compare by value and can be shared freely;
editing means building a new value (``dataclasses.replace`` or the ``with_*`` helpers). A policy
holds its filter lists and filter actions by name and rules refer to them by name, as in the
Windows policy store (RFC 4301 §4.4.1 calls the same thing the SPD; Windows' model predates it).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from espcore import transforms as _transforms

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# --- algorithm names ---------------------------------------------------------------------------


class QmAlgorithm(NamedTuple):
    kind: str  # "cipher" or "integrity"
    key_bits: tuple[int, ...]  # () = one fixed key size, no key_bits in the policy
    is_aead: bool  # carries its own integrity (no separate ESP integrity algorithm)
    is_weak: bool
    label: str  # ipsecpol-style short name used in negotiation specs


# Quick-mode (ESP/AH) algorithms a policy may name: the canonical names of the one registry,
# ``espcore.transforms``, which also says which are AEAD, weak, and which key sizes exist. Only the
# ipsecpol-style labels of negotiation specs ("ESP[3DES,SHA1]") are the policy's own.
_QM_LABELS: dict[str, str] = {
    "null": "NONE",
    "des-cbc": "DES",
    "3des-cbc": "3DES",
    "aes-cbc": "AES",
    "aes-gcm": "AESGCM",
    "hmac-md5-96": "MD5",
    "hmac-sha1-96": "SHA1",
    "hmac-sha2-256-128": "SHA256",
    "hmac-sha2-384-192": "SHA384",
    "hmac-sha2-512-256": "SHA512",
}


def _qm_algorithm(name: str, label: str) -> QmAlgorithm:
    if name in _transforms.INTEGRITY:
        return QmAlgorithm("integrity", (), False, _transforms.INTEGRITY[name].is_weak, label)
    c = _transforms.cipher(name)
    return QmAlgorithm("cipher", c.key_bits if len(c.key_bits) > 1 else (), c.is_aead, c.is_weak, label)


QM_ALGORITHMS: dict[str, QmAlgorithm] = {name: _qm_algorithm(name, label) for name, label in _QM_LABELS.items()}

# Main-mode (IKE phase 1) algorithms are IKE's own names (RFC 2409 Appendix A; groups by number,
# RFC 2409 §6, RFC 3526, RFC 5903, RFC 8031). Weak ones load with a warning.
MM_CIPHERS: dict[str, bool] = {  # name -> is_weak
    "des": True,
    "3des": False,
    "aes-cbc-128": False,
    "aes-cbc-192": False,
    "aes-cbc-256": False,
}
MM_HASHES: dict[str, bool] = {"md5": True, "sha1": False, "sha2-256": False, "sha2-384": False, "sha2-512": False}
DH_GROUPS: dict[int, bool] = {1: True, 2: False, 5: False, 14: False, 15: False, 16: False, 19: False, 20: False, 31: False}

DEFAULT_QM_LIFETIME_S = 3600
DEFAULT_QM_LIFETIME_KB = 100_000
DEFAULT_MM_LIFETIME_MIN = 480
DEFAULT_POLLING_INTERVAL_MIN = 180

# --- addresses and filters ---------------------------------------------------------------------


class AddressKind(enum.Enum):
    ME = "me"  # any of this host's own addresses ("My IP Address")
    ANY = "any"
    HOST = "host"  # one specific address
    SUBNET = "subnet"  # address/prefix (or address/mask)
    RANGE = "range"  # first-last, inclusive


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """One side of a filter. ``first``/``last`` bound HOST, SUBNET and RANGE; ``prefix`` is SUBNET's."""

    kind: AddressKind
    first: IPAddress | None = None
    last: IPAddress | None = None
    prefix: int | None = None

    @classmethod
    def me(cls) -> Address:
        return _ME

    @classmethod
    def any(cls) -> Address:
        return _ANY

    @classmethod
    def host(cls, address: str | IPAddress) -> Address:
        ip = ipaddress.ip_address(address)
        return cls(kind=AddressKind.HOST, first=ip, last=ip)

    @classmethod
    def subnet(cls, network: str | ipaddress.IPv4Network | ipaddress.IPv6Network) -> Address:
        """A subnet; host bits must be zero. A full-length prefix is a HOST."""
        net = ipaddress.ip_network(network, strict=True)
        if net.prefixlen == net.max_prefixlen:
            return cls.host(net.network_address)
        return cls(kind=AddressKind.SUBNET, first=net.network_address, last=net.broadcast_address, prefix=net.prefixlen)

    @classmethod
    def range(cls, first: str | IPAddress, last: str | IPAddress) -> Address:
        a, b = ipaddress.ip_address(first), ipaddress.ip_address(last)
        if a.version != b.version:
            raise ValueError(f"address range {a}-{b} mixes IPv4 and IPv6")
        if int(b) < int(a):
            raise ValueError(f"address range {a}-{b} ends before it starts")
        if a == b:
            return cls.host(a)
        return cls(kind=AddressKind.RANGE, first=a, last=b)

    @classmethod
    def parse(cls, text: str) -> Address:
        """``me``, ``any``, an address, ``address/prefix``, ``address/mask`` or ``first-last``.

        Raises ValueError with a message naming the text.
        """
        t = text.strip()
        low = t.lower()
        if low == "me":
            return _ME
        if low == "any":
            return _ANY
        try:
            if "/" in t:
                return cls.subnet(t)
            if "-" in t:
                a, b = t.split("-", 1)
                return cls.range(a.strip(), b.strip())
            return cls.host(t)
        except ValueError as exc:
            raise ValueError(f"not an address, subnet, range, 'me' or 'any': {text!r} ({exc})") from None

    @property
    def version(self) -> int | None:
        """4 or 6 for a specific address family; None for ME and ANY (which match both)."""
        return self.first.version if self.first is not None else None

    @property
    def is_specific(self) -> bool:
        """True for one address (HOST, or ME: each of this host's addresses)."""
        return self.kind in (AddressKind.HOST, AddressKind.ME)

    def __str__(self) -> str:
        if self.kind is AddressKind.ME:
            return "me"
        if self.kind is AddressKind.ANY:
            return "any"
        if self.kind is AddressKind.HOST:
            return str(self.first)
        if self.kind is AddressKind.SUBNET:
            return f"{self.first}/{self.prefix}"
        return f"{self.first}-{self.last}"


_ME = Address(kind=AddressKind.ME)
_ANY = Address(kind=AddressKind.ANY)

PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}
PROTOCOL_NUMBERS = {v: k for k, v in PROTOCOL_NAMES.items()} | {"icmpv6": 58, "raw": 255}
PORT_PROTOCOLS = (6, 17)  # ports only mean something for TCP and UDP


def parse_protocol(text: str | int | None) -> int | None:
    """``any``/``0``/None -> None; a name (tcp, udp, icmp, ...) or a number 1..255 -> the number."""
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        number = text
    else:
        low = str(text).strip().lower()
        if low in ("any", "0", ""):
            return None
        if low in PROTOCOL_NUMBERS:
            return PROTOCOL_NUMBERS[low]
        if not low.isdigit():
            raise ValueError(f"unknown protocol {text!r} (use any, icmp, tcp, udp or a number)")
        number = int(low)
    if number == 0:
        return None
    if not 1 <= number <= 255:
        raise ValueError(f"protocol {number} is outside 0..255")
    return number


def protocol_name(number: int | None) -> str:
    return "any" if number is None else PROTOCOL_NAMES.get(number, str(number))


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """Traffic from ``source`` to ``destination``; a mirrored filter also matches the reverse."""

    source: Address
    destination: Address
    protocol: int | None = None  # None = any
    source_port: int | None = None  # None = any; only with TCP/UDP
    destination_port: int | None = None
    is_mirrored: bool = True
    description: str | None = None

    @property
    def is_address_only(self) -> bool:
        return self.protocol is None and self.source_port is None and self.destination_port is None

    def mirror(self) -> Filter:
        """The same filter for the opposite direction (what Windows' Mirrored box adds)."""
        return replace(
            self,
            source=self.destination,
            destination=self.source,
            source_port=self.destination_port,
            destination_port=self.source_port,
        )

    def __str__(self) -> str:
        sp = f":{self.source_port}" if self.source_port is not None else ""
        dp = f":{self.destination_port}" if self.destination_port is not None else ""
        arrow = "<->" if self.is_mirrored else "->"
        return f"{self.source}{sp} {arrow} {self.destination}{dp} {protocol_name(self.protocol)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterList:
    """A named list of filters, shared between rules."""

    name: str
    filters: tuple[Filter, ...] = ()
    description: str | None = None


# --- actions and security methods --------------------------------------------------------------


class ActionKind(enum.Enum):
    PERMIT = "permit"
    BLOCK = "block"
    NEGOTIATE = "negotiate"  # "Negotiate Security"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityMethod:
    """One quick-mode offer: AH and/or ESP, with its own lifetimes.

    A lifetime of None is "not specified" (the seed's simplest policy): no lifetime is proposed
    for it and the agent applies its default. Both given: whichever comes first ends the SA.
    """

    ah_integrity: str | None = None
    esp_cipher: str | None = None  # "null" for integrity-only ESP
    esp_key_bits: int | None = None  # only for ciphers with several key sizes
    esp_integrity: str | None = None
    lifetime_s: int | None = None
    lifetime_kb: int | None = None

    @property
    def has_ah(self) -> bool:
        return self.ah_integrity is not None

    @property
    def has_esp(self) -> bool:
        return self.esp_cipher is not None

    def __str__(self) -> str:
        parts = []
        if self.ah_integrity is not None:
            parts.append(f"AH[{_label(self.ah_integrity)}]")
        if self.esp_cipher is not None:
            cipher = _label(self.esp_cipher) + (str(self.esp_key_bits) if self.esp_key_bits else "")
            integrity = _label(self.esp_integrity) if self.esp_integrity else "NONE"
            parts.append(f"ESP[{cipher},{integrity}]" if not _is_aead(self.esp_cipher) else f"ESP[{cipher}]")
        text = "+".join(parts) or "<empty>"
        rekey = [f"{self.lifetime_s}S"] if self.lifetime_s is not None else []
        rekey += [f"{self.lifetime_kb}K"] if self.lifetime_kb is not None else []
        return text + (":" + "/".join(rekey) if rekey else "")


def _label(name: str) -> str:
    alg = QM_ALGORITHMS.get(name)
    return alg.label if alg else name


def _is_aead(name: str) -> bool:
    alg = QM_ALGORITHMS.get(name)
    return bool(alg and alg.is_aead)


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterAction:
    """Permit, Block, or Negotiate Security with ordered methods and the Windows options."""

    name: str
    kind: ActionKind
    security_methods: tuple[SecurityMethod, ...] = ()
    # "Accept unsecured communication, but always respond using IPSec": inbound clear text accepted.
    accepts_unsecured: bool = False
    # "Allow unsecured communication with non IPSec-aware computer": fall back to clear (soft SA).
    falls_back_to_clear: bool = False
    has_session_key_pfs: bool = False
    description: str | None = None


# --- authentication ----------------------------------------------------------------------------


class AuthKind(enum.Enum):
    KERBEROS = "kerberos"
    CERTIFICATE = "certificate"
    PRESHARED_KEY = "psk"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthMethod:
    """Kerberos v5, a certificate chaining to ``root_ca``, or a pre-shared ``key`` (never shown)."""

    kind: AuthKind
    root_ca: str | None = None
    key: str | None = field(default=None, repr=False)

    @classmethod
    def kerberos(cls) -> AuthMethod:
        return cls(kind=AuthKind.KERBEROS)

    @classmethod
    def certificate(cls, root_ca: str) -> AuthMethod:
        return cls(kind=AuthKind.CERTIFICATE, root_ca=root_ca)

    @classmethod
    def preshared_key(cls, key: str) -> AuthMethod:
        return cls(kind=AuthKind.PRESHARED_KEY, key=key)

    def __str__(self) -> str:
        if self.kind is AuthKind.CERTIFICATE:
            return f"certificate ({self.root_ca})"
        if self.kind is AuthKind.PRESHARED_KEY:
            return "pre-shared key"
        return "kerberos"


# --- main mode -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MainModeMethod:
    """One IKE main-mode offer: cipher, hash and Diffie-Hellman group (RFC 2409 §5, Appendix A)."""

    cipher: str
    hash: str
    dh_group: int

    def __str__(self) -> str:
        return f"{self.cipher}/{self.hash}/group {self.dh_group}"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyExchange:
    """IKE key-exchange settings: ordered main-mode offers, master-key lifetime and PFS."""

    methods: tuple[MainModeMethod, ...]
    lifetime_min: int = DEFAULT_MM_LIFETIME_MIN
    lifetime_sessions: int | None = None  # quick modes per main mode; None = no limit
    has_master_key_pfs: bool = False

    @property
    def lifetime_s(self) -> int:
        return self.lifetime_min * 60


# --- rules and policies --------------------------------------------------------------------------


class ConnectionType(enum.Enum):
    ALL = "all"
    LAN = "lan"
    REMOTE_ACCESS = "remote-access"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """Filter list + filter action + authentication methods (+ tunnel endpoint), by name.

    The default response rule has no filter list: it answers peers' requests for security.
    """

    name: str
    filter_list: str | None
    filter_action: str
    authentication: tuple[AuthMethod, ...] = ()
    tunnel_endpoint: IPAddress | None = None  # None = transport mode
    connection_type: ConnectionType = ConnectionType.ALL
    is_active: bool = True
    is_default_response: bool = False
    description: str | None = None

    @property
    def is_tunnel(self) -> bool:
        return self.tunnel_endpoint is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A named IPsec policy. At most one policy is assigned at a time (the store records which)."""

    name: str
    key_exchange: KeyExchange
    rules: tuple[Rule, ...] = ()
    filter_lists: tuple[FilterList, ...] = ()
    filter_actions: tuple[FilterAction, ...] = ()
    description: str | None = None
    polling_interval_min: int = DEFAULT_POLLING_INTERVAL_MIN
    # The built-in exemptions (broadcast, multicast, RSVP, Kerberos, IKE); False turns them off.
    has_default_exemptions: bool = True

    def filter_list_named(self, name: str | None) -> FilterList | None:
        return next((fl for fl in self.filter_lists if fl.name == name), None)

    def filter_action_named(self, name: str) -> FilterAction | None:
        return next((fa for fa in self.filter_actions if fa.name == name), None)

    def rule_named(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    @property
    def default_response_rule(self) -> Rule | None:
        return next((r for r in self.rules if r.is_default_response and r.is_active), None)

    @property
    def has_preshared_key(self) -> bool:
        return any(a.kind is AuthKind.PRESHARED_KEY for r in self.rules for a in r.authentication)

    def with_filter_list(self, filter_list: FilterList) -> Policy:
        """This policy with ``filter_list`` added, or replacing the list of the same name."""
        lists = tuple(fl for fl in self.filter_lists if fl.name != filter_list.name)
        if len(lists) == len(self.filter_lists):
            return replace(self, filter_lists=self.filter_lists + (filter_list,))
        return replace(self, filter_lists=tuple(filter_list if fl.name == filter_list.name else fl for fl in self.filter_lists))

    def with_filter_action(self, action: FilterAction) -> Policy:
        """This policy with ``action`` added, or replacing the action of the same name."""
        if self.filter_action_named(action.name) is None:
            return replace(self, filter_actions=self.filter_actions + (action,))
        return replace(self, filter_actions=tuple(action if fa.name == action.name else fa for fa in self.filter_actions))

    def with_rule(self, rule: Rule) -> Policy:
        """This policy with ``rule`` added (before the default response rule), or replacing it."""
        if self.rule_named(rule.name) is not None:
            return replace(self, rules=tuple(rule if r.name == rule.name else r for r in self.rules))
        plain = tuple(r for r in self.rules if not r.is_default_response)
        default = tuple(r for r in self.rules if r.is_default_response)
        return replace(self, rules=(plain + (rule,) + default) if not rule.is_default_response else self.rules + (rule,))
