"""ipsecpol-style one-line specs: filters, negotiation policies, authentication and main mode.

Owns the text forms the ``policy`` command line takes, following the Windows 2000 Resource Kit's
``ipsecpol`` usage text (its ``-f``, ``-n``, ``-a``, ``-1s``, ``-1k`` flags):

- filter spec ``SRC[/MASK][:PORT]=DST[/MASK][:PORT][:PROTOCOL]``: ``=`` is one filter, ``+``
  is mirrored (two filters, one each direction). An address is ``A.B.C.D``, ``A.B.C.D/mask``
  (dotted mask or prefix length), star notation (``144.92.*.*`` = ``144.92.0.0/16``), a range
  ``A.B.C.D-E.F.G.H`` (our addition), ``0`` or ``me`` for this host's addresses (ipsecpol: "0
  means My address(es)"), ``*`` or ``any`` for any address; IPv6 goes in brackets
  (``[2001:db8::1]/64:80``). Port ``0`` or empty means any port; protocol is a number or ICMP,
  TCP, UDP, RAW, and ``0`` or empty means any. A protocol must be preceded by a port or ``::``.
  Host names are not resolved here: give addresses.
- negotiation list, space separated: ``ESP[ConfAlg,AuthAlg]``, ``AH[HashAlg]``,
  ``AH[HashAlg]+ESP[ConfAlg,AuthAlg]``, each optionally followed by ``[:]Rekey`` (``3600S``,
  ``100000K``, ``3600S/100000K``) and ``PFS`` (or ``P``). ConfAlg: NONE, DES, 3DES, AES128/192/256
  (AES = AES128), AESGCM128/192/256 (no AuthAlg); AuthAlg/HashAlg: NONE, MD5, SHA (= SHA1), SHA1,
  SHA256, SHA384, SHA512. Also the words BLOCK, PASS (Permit), INPASS (accept unsecured inbound),
  HIGH and MEDIUM (the presets).
- authentication list: ``KERBEROS``, ``CERT:"CA name"``, ``PRESHARE:"key"`` (or K, C, P).
- main-mode list (``-1s``): ``ConfAlg-HashAlg-Group``, e.g. ``3DES-SHA-2``, ``AES256-SHA256-14``.
- main-mode rekey (``-1k``): ``10Q`` quick modes, ``28800S`` seconds, ``480M`` minutes, joined by ``/``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from policyagent import builtin
from policyagent.errors import UsageError
from policyagent.model import (
    ActionKind,
    Address,
    AddressKind,
    AuthMethod,
    Filter,
    MainModeMethod,
    SecurityMethod,
    parse_protocol,
)

# --- filters ---------------------------------------------------------------------------------------


def _split_side(text: str) -> list[str]:
    """Split ``addr[:port[:proto]]`` on colons, keeping a bracketed IPv6 address whole."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"unclosed '[' in {text!r}")
        addr, rest = text[1:end], text[end + 1 :]
        if rest.startswith("/"):
            mask, _, rest = rest[1:].partition(":")
            addr = f"{addr}/{mask}"
            return [addr] + (rest.split(":") if rest else [])
        if rest and not rest.startswith(":"):
            raise UsageError(f"unexpected {rest!r} after the IPv6 address in {text!r}")
        return [addr] + (rest[1:].split(":") if rest else [])
    return text.split(":")


def parse_address(text: str) -> Address:
    """One address in ipsecpol form (see the module docstring)."""
    t = text.strip()
    low = t.lower()
    if low in ("0", "me"):
        return Address.me()
    if low in ("*", "any"):
        return Address.any()
    if "*" in t:
        parts = t.split(".")
        fixed = [p for p in parts if p != "*"]
        if parts[: len(fixed)] != fixed or not fixed or len(parts) > 4:
            raise UsageError(f"star notation wildcards whole trailing octets, as in 144.92.*.*: {text!r}")
        return Address.subnet(f"{'.'.join(fixed + ['0'] * (4 - len(fixed)))}/{8 * len(fixed)}")
    try:
        return Address.parse(t)
    except ValueError as exc:
        if re.fullmatch(r"[A-Za-z0-9.-]+", t) and re.search(r"[A-Za-z]", t):
            raise UsageError(f"{text!r} looks like a host name: names are not resolved, give an address") from None
        raise UsageError(str(exc)) from None


def _port(text: str, spec: str) -> int | None:
    if text in ("", "0"):
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"bad port {text!r} in filter spec {spec!r}")
    return int(text)


def parse_filter_spec(spec: str) -> Filter:
    """One filter spec; ``+`` gives a mirrored filter, ``=`` a one-way filter."""
    s = spec.strip()
    m = re.search(r"[=+]", s)  # IPv6 addresses contain neither, so the first one separates
    if m is None:
        raise UsageError(f"filter spec {spec!r} needs '=' (one way) or '+' (mirrored) between source and destination")
    left, sep, right = s[: m.start()], s[m.start()], s[m.start() + 1 :]
    if not left or not right:
        raise UsageError(f"filter spec {spec!r} needs a source and a destination")
    lparts, rparts = _split_side(left), _split_side(right)
    if len(lparts) > 2:
        raise UsageError(f"source side of {spec!r} is ADDRESS[:PORT]")
    if len(rparts) > 3:
        raise UsageError(f"destination side of {spec!r} is ADDRESS[:PORT][:PROTOCOL]")
    try:
        protocol = parse_protocol(rparts[2]) if len(rparts) == 3 else None
    except ValueError as exc:
        raise UsageError(f"{exc} in filter spec {spec!r}") from None
    sport = _port(lparts[1], spec) if len(lparts) == 2 else None
    dport = _port(rparts[1], spec) if len(rparts) >= 2 else None
    if (sport is not None or dport is not None) and protocol not in (6, 17):
        raise UsageError(f"filter spec {spec!r} gives a port, so its protocol must be TCP or UDP (e.g. ...:80:TCP)")
    return Filter(
        source=parse_address(lparts[0]),
        destination=parse_address(rparts[0]),
        protocol=protocol,
        source_port=sport,
        destination_port=dport,
        is_mirrored=sep == "+",
    )


def parse_filter_specs(text: str) -> tuple[Filter, ...]:
    """A space-separated list of filter specs (ipsecpol ``-f``)."""
    specs = text.split()
    if not specs:
        raise UsageError("empty filter list")
    return tuple(parse_filter_spec(s) for s in specs)


def format_address(a: Address) -> str:
    if a.kind is AddressKind.ME:
        return "me"
    if a.kind is AddressKind.ANY:
        return "*"
    text = str(a)
    if a.version == 6:
        if a.kind is AddressKind.SUBNET:
            return f"[{a.first}]/{a.prefix}"
        return f"[{text}]"
    return text


def format_filter_spec(f: Filter) -> str:
    """The spec that parses back to ``f`` (apart from its description)."""
    left = format_address(f.source) + (f":{f.source_port}" if f.source_port else "")
    right = format_address(f.destination)
    if f.destination_port or f.protocol is not None:
        right += f":{f.destination_port or ''}"
    if f.protocol is not None:
        right += ":" + {1: "ICMP", 6: "TCP", 17: "UDP"}.get(f.protocol, str(f.protocol))
    return f"{left}{'+' if f.is_mirrored else '='}{right}"


# --- negotiation policies ------------------------------------------------------------------------

_CONF = {
    "NONE": ("null", None),
    "DES": ("des-cbc", None),
    "3DES": ("3des-cbc", None),
    "AES": ("aes-cbc", 128),
    "AES128": ("aes-cbc", 128),
    "AES192": ("aes-cbc", 192),
    "AES256": ("aes-cbc", 256),
    "AESGCM128": ("aes-gcm", 128),
    "AESGCM192": ("aes-gcm", 192),
    "AESGCM256": ("aes-gcm", 256),
}
_AUTH = {
    "NONE": None,
    "MD5": "hmac-md5-96",
    "SHA": "hmac-sha1-96",
    "SHA1": "hmac-sha1-96",
    "SHA256": "hmac-sha2-256-128",
    "SHA384": "hmac-sha2-384-192",
    "SHA512": "hmac-sha2-512-256",
}
_METHOD_RE = re.compile(
    r"^(?P<prot>(?:AH\[[^\]]*\]|ESP\[[^\]]*\])(?:\+(?:AH\[[^\]]*\]|ESP\[[^\]]*\]))?)"
    r":?(?P<rekey>\d+[SK](?:/\d+[SK])?)?(?P<pfs>PFS\d*|P\d*)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Negotiation:
    """What a ``-n`` list asks for: the action kind, its methods and options."""

    kind: ActionKind
    security_methods: tuple[SecurityMethod, ...] = ()
    accepts_unsecured: bool = False
    has_session_key_pfs: bool = False


def _rekey(text: str | None, token: str) -> tuple[int | None, int | None]:
    seconds = kb = None
    for part in (text or "").split("/") if text else []:
        value, unit = int(part[:-1]), part[-1].upper()
        if value <= 0:
            raise UsageError(f"rekey value must be positive in {token!r}")
        if unit == "S":
            seconds = value
        else:
            kb = value
    return seconds, kb


def parse_security_method(token: str) -> tuple[SecurityMethod, bool]:
    """One ``ESP[..]``/``AH[..]`` token with optional rekey and PFS; returns (method, pfs)."""
    m = _METHOD_RE.match(token.strip())
    if m is None:
        raise UsageError(f"bad security method {token!r} (e.g. ESP[3DES,SHA1], AH[SHA1], AH[SHA1]+ESP[DES,MD5], ESP[AES128,SHA1]:3600S/100000K)")
    pfs = m.group("pfs")
    if pfs and pfs.strip("PFSpfs"):
        raise UsageError(f"{token!r}: session-key PFS uses the main-mode Diffie-Hellman group; write PFS without a number")
    lifetime_s, lifetime_kb = _rekey(m.group("rekey"), token)
    fields: dict = {}
    for part in m.group("prot").split("+"):
        name, _, args = part.partition("[")
        name = name.upper()
        values = [a.strip().upper() for a in args.rstrip("]").split(",")]
        if name in fields or (name == "AH" and "ah_integrity" in fields) or (name == "ESP" and "esp_cipher" in fields):
            raise UsageError(f"{token!r} names {name} twice")
        if name == "AH":
            if len(values) != 1 or _AUTH.get(values[0]) is None:
                raise UsageError(f"{token!r}: AH takes one hash, MD5, SHA1, SHA256, SHA384 or SHA512")
            fields["ah_integrity"] = _AUTH[values[0]]
        else:
            if values[0] not in _CONF:
                raise UsageError(f"{token!r}: unknown ESP cipher {values[0]!r} (NONE, DES, 3DES, AES128, AES192, AES256, AESGCM128, ...)")
            cipher, bits = _CONF[values[0]]
            if len(values) > 2 or (len(values) == 2 and values[1] not in _AUTH):
                raise UsageError(f"{token!r}: ESP takes [cipher,integrity], integrity NONE, MD5, SHA1, SHA256, SHA384 or SHA512")
            integrity = _AUTH[values[1]] if len(values) == 2 else None
            if cipher == "null" and integrity is None:
                raise UsageError(f"{token!r}: ESP[NONE,NONE] protects nothing")
            fields.update(esp_cipher=cipher, esp_key_bits=bits, esp_integrity=integrity)
    return SecurityMethod(**fields, lifetime_s=lifetime_s, lifetime_kb=lifetime_kb), bool(pfs)


def parse_negotiation(text: str) -> Negotiation:
    """A space-separated ``-n`` list (see the module docstring)."""
    tokens = text.split()
    if not tokens:
        raise UsageError("empty negotiation policy list")
    words = {t.upper() for t in tokens}
    for word, kind in (("BLOCK", ActionKind.BLOCK), ("PASS", ActionKind.PERMIT), ("PERMIT", ActionKind.PERMIT)):
        if word in words:
            if len(tokens) > 1:
                raise UsageError(f"{word} stands alone: it makes the action {kind.value}")
            return Negotiation(kind=kind)
    methods, pfs, inpass = [], False, False
    for t in tokens:
        up = t.upper()
        if up == "INPASS":
            inpass = True
        elif up in ("HIGH", "MEDIUM"):
            methods.append(builtin.PRESETS[up.lower()])
        else:
            method, p = parse_security_method(t)
            methods.append(method)
            pfs = pfs or p
    if not methods:
        raise UsageError("INPASS needs at least one security method to negotiate")
    return Negotiation(kind=ActionKind.NEGOTIATE, security_methods=tuple(methods), accepts_unsecured=inpass, has_session_key_pfs=pfs)


# --- authentication and main mode ----------------------------------------------------------------


def parse_auth_methods(text: str) -> tuple[AuthMethod, ...]:
    """``KERBEROS CERT:"CA name" PRESHARE:"key"`` (shell-style quoting; K, C, P abbreviate)."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"authentication list: {exc}") from None
    if not tokens:
        raise UsageError("empty authentication list")
    out = []
    for t in tokens:
        name, sep, value = t.partition(":")
        kind = name.upper()
        if kind in ("KERBEROS", "K") and not sep:
            out.append(AuthMethod.kerberos())
        elif kind in ("CERT", "C") and sep:
            out.append(AuthMethod.certificate(value))
        elif kind in ("PRESHARE", "P") and sep:
            out.append(AuthMethod.preshared_key(value))
        else:
            raise UsageError(f"bad authentication method {name!r}: use KERBEROS, CERT:\"CA name\" or PRESHARE:\"key\"")
    return tuple(out)


_MM_CONF = {"DES": "des", "3DES": "3des", "AES": "aes-cbc-128", "AES128": "aes-cbc-128", "AES192": "aes-cbc-192", "AES256": "aes-cbc-256"}
_MM_HASH = {"MD5": "md5", "SHA": "sha1", "SHA1": "sha1", "SHA256": "sha2-256", "SHA384": "sha2-384", "SHA512": "sha2-512"}


def parse_main_mode(text: str) -> tuple[MainModeMethod, ...]:
    """A ``-1s`` list: ``ConfAlg-HashAlg-Group`` items, e.g. ``AES256-SHA256-14 3DES-SHA-2``."""
    out = []
    for t in text.split():
        parts = t.upper().split("-")
        if len(parts) != 3 or parts[0] not in _MM_CONF or parts[1] not in _MM_HASH or not parts[2].isdigit():
            raise UsageError(f"bad main-mode method {t!r}: ConfAlg-HashAlg-Group, e.g. AES256-SHA256-14 or 3DES-SHA-2")
        out.append(MainModeMethod(cipher=_MM_CONF[parts[0]], hash=_MM_HASH[parts[1]], dh_group=int(parts[2])))
    if not out:
        raise UsageError("empty main-mode method list")
    return tuple(out)


def parse_main_mode_rekey(text: str) -> tuple[int | None, int | None]:
    """A ``-1k`` value: returns (lifetime in minutes, quick modes per main mode)."""
    minutes = sessions = None
    for part in text.upper().split("/"):
        m = re.fullmatch(r"(\d+)([QSM])", part.strip())
        if m is None or int(m.group(1)) <= 0:
            raise UsageError(f"bad main-mode rekey {part!r}: e.g. 10Q, 480M, 28800S or 10Q/28800S")
        value = int(m.group(1))
        if m.group(2) == "Q":
            sessions = value
        elif m.group(2) == "M":
            minutes = value
        else:
            if value % 60:
                raise UsageError(f"main-mode lifetime {value}S is not a whole number of minutes")
            minutes = value // 60
    return minutes, sessions

