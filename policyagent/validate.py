"""Validation of a whole policy: every rule the seed's troubleshooting notes say is unsupported.

Owns the checks across objects (ARCHITECTURE, "Validation"): names and references resolve; a
filter list used to *secure* transport traffic is mirrored ("One-Way IPSec Protection of Traffic
Not Allowed"); rules that can apply to the same pair of hosts agree on one authentication method
("Only One Authentication Method Between a Pair of Hosts": IKE main mode sees only addresses, so
a TCP-Kerberos / UDP-certificate pair of rules is refused); tunnel filters are address-only; the
certificate methods of a rule are contiguous; a pre-shared key is never empty; algorithm names are
known; weak algorithms (DES, MD5, DH group 1) load with a warning.

Does not own: parsing files (``store`` turns file problems into issues and adds path and line);
matching (``matcher``; its ``filter_weight`` is reused so the host-pair check agrees with what
the matcher and main mode will actually pick).

``check_policy`` returns every ``Issue``; ``validate_policy`` raises ``ValidationError`` when
there is an error and otherwise returns the warnings. Issue fields are dotted paths in the policy
file's terms (``rules[1].authentication[0]``), so the store can attach line numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from policyagent.errors import Issue, ValidationError
from policyagent.matcher import address_weight
from policyagent.model import (
    DH_GROUPS,
    MM_CIPHERS,
    MM_HASHES,
    PORT_PROTOCOLS,
    QM_ALGORITHMS,
    ActionKind,
    Address,
    AddressKind,
    AuthKind,
    Filter,
    Policy,
    Rule,
    SecurityMethod,
)

_FORBIDDEN_NAME_CHARS = set("/\\\0") | {chr(c) for c in range(32)}


class _Checker:
    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def error(self, code: str, field: str | None, message: str, rule: str | None = None) -> None:
        self.issues.append(Issue(severity="error", code=code, message=message, rule=rule, field=field))

    def warn(self, code: str, field: str | None, message: str, rule: str | None = None) -> None:
        self.issues.append(Issue(severity="warning", code=code, message=message, rule=rule, field=field))


def check_policy(policy: Policy) -> list[Issue]:
    """Every error and warning in ``policy`` (no file path or line: the store adds those)."""
    c = _Checker()
    _check_name(c, "name", "policy", policy.name)
    if policy.polling_interval_min <= 0:
        c.error("bad-number", "polling_interval_min", "the polling interval must be a positive number of minutes")
    _check_key_exchange(c, policy)
    _check_unique(c, "filter_lists", [fl.name for fl in policy.filter_lists], "filter list")
    _check_unique(c, "filter_actions", [fa.name for fa in policy.filter_actions], "filter action")
    _check_unique(c, "rules", [r.name for r in policy.rules], "rule")
    for i, fl in enumerate(policy.filter_lists):
        _check_name(c, f"filter_lists[{i}].name", "filter list", fl.name)
        for j, f in enumerate(fl.filters):
            _check_filter(c, f"filter_lists[{i}].filters[{j}]", f)
    for i, fa in enumerate(policy.filter_actions):
        _check_name(c, f"filter_actions[{i}].name", "filter action", fa.name)
        where = f"filter_actions[{i}]"
        if fa.kind is ActionKind.NEGOTIATE:
            if not fa.security_methods:
                c.error("no-security-methods", f"{where}.methods", f"filter action {fa.name!r} negotiates security but offers no security methods")
            for j, m in enumerate(fa.security_methods):
                _check_method(c, f"{where}.methods[{j}]", m)
        else:
            if fa.security_methods:
                c.error("methods-not-negotiate", f"{where}.methods", f"filter action {fa.name!r} is {fa.kind.value}: only Negotiate Security uses security methods")
            if fa.accepts_unsecured or fa.falls_back_to_clear or fa.has_session_key_pfs:
                c.error("options-not-negotiate", where, f"filter action {fa.name!r} is {fa.kind.value}: accept_unsecured, fall_back_to_clear and session_key_pfs only apply to Negotiate Security")
    defaults = [i for i, r in enumerate(policy.rules) if r.is_default_response]
    if len(defaults) > 1:
        c.error("default-response", f"rules[{defaults[1]}].default_response", "a policy has at most one default response rule")
    for i, rule in enumerate(policy.rules):
        _check_rule(c, policy, i, rule)
    _check_host_pairs(c, policy)
    return c.issues


def validate_policy(
    policy: Policy,
    *,
    path: str | None = None,
    line_of: Callable[[str | None], int | None] | Mapping | None = None,
) -> list[Issue]:
    """Check ``policy``; raise ``ValidationError`` if any error, else return the warnings.

    ``path`` and ``line_of`` (a field path -> line mapping or function) locate each issue in a file.
    """
    issues = locate(check_policy(policy), path=path, line_of=line_of)
    if any(i.is_error for i in issues):
        raise ValidationError(issues)
    return issues


def locate(issues: list[Issue], *, path: str | None, line_of=None) -> list[Issue]:
    """The same issues with the file path and, where known, the line filled in."""
    if isinstance(line_of, Mapping):
        mapping = line_of
        line_of = lambda f: line_in(mapping, f)  # noqa: E731
    out = []
    for i in issues:
        line = line_of(i.field) if line_of is not None else None
        out.append(Issue(severity=i.severity, code=i.code, message=i.message, rule=i.rule, field=i.field, path=path, line=line))
    return out


def line_in(mapping: Mapping, field: str | None) -> int | None:
    """The line of ``field``, or of the nearest enclosing entry the mapping knows."""
    while field:
        if field in mapping:
            return mapping[field]
        cut = max(field.rfind("."), field.rfind("["))
        field = field[:cut] if cut > 0 else ""
    return None


def _check_name(c: _Checker, field: str, what: str, name: str) -> None:
    if not name or not name.strip():
        c.error("empty-name", field, f"the {what} has no name")
    elif any(ch in _FORBIDDEN_NAME_CHARS for ch in name) or name.startswith("."):
        c.error("bad-name", field, f"the {what} name {name!r} has a slash, a control character or a leading dot")


def _check_unique(c: _Checker, section: str, names: list[str], what: str) -> None:
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            c.error("duplicate-name", f"{section}[{i}].name", f"two {what}s are called {n!r}")
        seen.add(n)


def _check_key_exchange(c: _Checker, policy: Policy) -> None:
    kx = policy.key_exchange
    if not kx.methods:
        c.error("no-main-mode", "key_exchange.methods", "the key exchange offers no main-mode security methods")
    for i, m in enumerate(kx.methods):
        where = f"key_exchange.methods[{i}]"
        weak = []
        if m.cipher not in MM_CIPHERS:
            c.error("unknown-algorithm", f"{where}.cipher", f"unknown main-mode cipher {m.cipher!r} (known: {', '.join(MM_CIPHERS)})")
        elif MM_CIPHERS[m.cipher]:
            weak.append(m.cipher.upper())
        if m.hash not in MM_HASHES:
            c.error("unknown-algorithm", f"{where}.hash", f"unknown main-mode hash {m.hash!r} (known: {', '.join(MM_HASHES)})")
        elif MM_HASHES[m.hash]:
            weak.append(m.hash.upper())
        if m.dh_group not in DH_GROUPS:
            c.error("unknown-algorithm", f"{where}.dh_group", f"unknown Diffie-Hellman group {m.dh_group} (known: {', '.join(map(str, DH_GROUPS))})")
        elif DH_GROUPS[m.dh_group]:
            weak.append(f"DH group {m.dh_group}")
        if weak:
            c.warn("weak-algorithm", where, f"main-mode offer {m} uses weak {', '.join(weak)}")
    if kx.lifetime_min <= 0:
        c.error("bad-number", "key_exchange.lifetime_min", "the master-key lifetime must be a positive number of minutes")
    if kx.lifetime_sessions is not None and kx.lifetime_sessions <= 0:
        c.error("bad-number", "key_exchange.lifetime_sessions", "the master-key session limit must be positive (omit it for no limit)")
    if kx.has_master_key_pfs and kx.lifetime_sessions not in (None, 1):
        c.warn("master-key-pfs", "key_exchange.lifetime_sessions", "master-key PFS allows one quick mode per main mode: the session limit is 1")


def _check_filter(c: _Checker, where: str, f: Filter) -> None:
    if f.protocol is not None and not 1 <= f.protocol <= 255:
        c.error("bad-protocol", f"{where}.protocol", f"protocol {f.protocol} is outside 1..255")
    for name, port in (("source_port", f.source_port), ("destination_port", f.destination_port)):
        if port is None:
            continue
        if not 1 <= port <= 65535:
            c.error("bad-port", f"{where}.{name}", f"port {port} is outside 1..65535 (omit it for any port)")
        elif f.protocol not in PORT_PROTOCOLS:
            c.error("port-without-protocol", f"{where}.{name}", "ports can only be given with protocol TCP or UDP")
    vs, vd = f.source.version, f.destination.version
    if vs is not None and vd is not None and vs != vd:
        c.error("address-family", where, f"filter {f} mixes IPv4 and IPv6 addresses")


def _check_method(c: _Checker, where: str, m: SecurityMethod) -> None:
    if not m.has_ah and not m.has_esp:
        c.error("empty-method", where, "a security method needs AH, ESP or both")
    if m.esp_cipher is None and m.esp_integrity is not None:
        c.error("esp-no-cipher", f"{where}.esp_integrity", "ESP integrity needs an ESP cipher (use \"null\" for integrity-only ESP)")
    weak = []
    for name, alg, kind in (("ah_integrity", m.ah_integrity, "integrity"), ("esp_cipher", m.esp_cipher, "cipher"), ("esp_integrity", m.esp_integrity, "integrity")):
        if alg is None:
            continue
        info = QM_ALGORITHMS.get(alg)
        known = ", ".join(k for k, v in QM_ALGORITHMS.items() if v.kind == kind)
        if info is None or info.kind != kind:
            c.error("unknown-algorithm", f"{where}.{name}", f"unknown {kind} algorithm {alg!r} (known: {known})")
        elif info.is_weak:
            weak.append(alg)
    info = QM_ALGORITHMS.get(m.esp_cipher or "")
    if info is not None and info.kind == "cipher":
        if info.key_bits and m.esp_key_bits not in info.key_bits:
            c.error("bad-key-size", f"{where}.esp_key_bits", f"{m.esp_cipher} needs esp_key_bits, one of {', '.join(map(str, info.key_bits))}")
        elif not info.key_bits and m.esp_key_bits is not None:
            c.error("bad-key-size", f"{where}.esp_key_bits", f"{m.esp_cipher} has a fixed key size: omit esp_key_bits")
        if info.is_aead and m.esp_integrity is not None:
            c.error("aead-with-integrity", f"{where}.esp_integrity", f"{m.esp_cipher} carries its own integrity: omit esp_integrity")
        elif m.esp_cipher == "null" and m.esp_integrity is None:
            c.error("esp-no-protection", where, "ESP with neither encryption nor integrity protects nothing")
        elif not info.is_aead and m.esp_integrity is None:
            c.warn("esp-no-integrity", where, f"ESP {m.esp_cipher} without integrity: encryption alone does not stop tampering (RFC 4303 §3.2)")
    elif m.esp_key_bits is not None and m.esp_cipher is None:
        c.error("bad-key-size", f"{where}.esp_key_bits", "esp_key_bits without an ESP cipher")
    if weak:
        c.warn("weak-algorithm", where, f"security method {m} uses weak {', '.join(weak)}")
    for name, value in (("lifetime_s", m.lifetime_s), ("lifetime_kb", m.lifetime_kb)):
        if value is not None and value <= 0:
            c.error("bad-number", f"{where}.{name}", f"{name} must be positive (omit it for none)")


def _check_rule(c: _Checker, policy: Policy, i: int, rule: Rule) -> None:
    where = f"rules[{i}]"
    r = rule.name
    _check_name(c, f"{where}.name", "rule", rule.name)
    action = policy.filter_action_named(rule.filter_action)
    if action is None:
        c.error("unknown-filter-action", f"{where}.filter_action", f"no filter action called {rule.filter_action!r} in this policy", r)
    fl = None
    if rule.is_default_response:
        if rule.filter_list is not None:
            c.error("default-response", f"{where}.filter_list", "the default response rule has no filter list", r)
        if rule.tunnel_endpoint is not None:
            c.error("default-response", f"{where}.tunnel_endpoint", "the default response rule has no tunnel endpoint", r)
        if action is not None and action.kind is not ActionKind.NEGOTIATE:
            c.error("default-response", f"{where}.filter_action", "the default response rule's action must negotiate security", r)
    elif rule.filter_list is None:
        c.error("missing-filter-list", f"{where}.filter_list", "a rule needs a filter list", r)
    else:
        fl = policy.filter_list_named(rule.filter_list)
        if fl is None:
            c.error("unknown-filter-list", f"{where}.filter_list", f"no filter list called {rule.filter_list!r} in this policy", r)
        elif not fl.filters:
            c.warn("empty-filter-list", f"{where}.filter_list", f"filter list {fl.name!r} has no filters: the rule matches nothing", r)
    securing = action is not None and action.kind is ActionKind.NEGOTIATE
    if fl is not None:
        li = policy.filter_lists.index(fl)
        for j, f in enumerate(fl.filters):
            fwhere = f"filter_lists[{li}].filters[{j}]"
            if rule.is_tunnel and not f.is_address_only:
                c.error("tunnel-filter", fwhere, f"tunnel filter {f} must be address-only (no protocol or port): fragments would escape the tunnel", r)
            if securing and not rule.is_tunnel and not f.is_mirrored:
                c.error("not-mirrored", f"{fwhere}.mirrored", f"filter {f} secures traffic but is not mirrored: one-way protection is not allowed (use Permit or Block for one-way filters)", r)
    if rule.is_tunnel and action is not None and rule.tunnel_endpoint is not None:
        if rule.tunnel_endpoint.is_multicast or rule.tunnel_endpoint.is_unspecified:
            c.error("tunnel-endpoint", f"{where}.tunnel_endpoint", "a tunnel endpoint is one unicast address", r)
    if (securing or rule.is_default_response) and rule.is_active and not rule.authentication:
        c.error("no-authentication", f"{where}.authentication", "a rule that negotiates security needs at least one authentication method", r)
    _check_auth(c, where, rule)


def _check_auth(c: _Checker, where: str, rule: Rule) -> None:
    kinds = [a.kind for a in rule.authentication]
    certs = [j for j, k in enumerate(kinds) if k is AuthKind.CERTIFICATE]
    if certs and certs[-1] - certs[0] + 1 != len(certs):
        c.error("cert-not-contiguous", f"{where}.authentication[{certs[0]}]", "the certificate methods must be contiguous: no other method between two certificate authorities", rule.name)
    for j, a in enumerate(rule.authentication):
        field = f"{where}.authentication[{j}]"
        if a.kind is AuthKind.PRESHARED_KEY:
            if not a.key:
                c.error("empty-psk", field, "the pre-shared key is empty: a blank key is not allowed", rule.name)
            elif a.key != a.key.strip():
                c.warn("psk-whitespace", field, "the pre-shared key starts or ends with white space: the peer must use exactly the same string", rule.name)
        elif a.kind is AuthKind.CERTIFICATE and not (a.root_ca or "").strip():
            c.error("empty-root-ca", field, "a certificate method names its root certificate authority", rule.name)


def _overlap(a: Address, b: Address) -> tuple[bool, bool]:
    """(can one address be in both, does that force it to be one of this host's own addresses).

    ``me`` is some address of this host, unknown here: it can meet ``any``, ``me`` or any
    concrete address, but then that address is a local one.
    """
    a_me, b_me = a.kind is AddressKind.ME, b.kind is AddressKind.ME
    if a.kind is AddressKind.ANY or b.kind is AddressKind.ANY:
        return True, a_me or b_me
    if a_me or b_me:
        return True, True
    if a.version != b.version:
        return False, False
    return int(a.first) <= int(b.last) and int(b.first) <= int(a.last), False  # type: ignore[arg-type]


def _pair_overlap(f1: Filter, f2: Filter) -> bool:
    """Can one pair of hosts match both filters (in either orientation)? A pair whose two ends
    would both have to be this host is not a pair of hosts."""
    for s2, d2 in ((f2.source, f2.destination), (f2.destination, f2.source)):
        s_ok, s_local = _overlap(f1.source, s2)
        d_ok, d_local = _overlap(f1.destination, d2)
        if s_ok and d_ok and not (s_local and d_local):
            return True
    return False


def _check_host_pairs(c: _Checker, policy: Policy) -> None:
    """Two Negotiate rules with different authentication must not both apply to one host pair.

    Main mode chooses a rule by addresses alone (the most address-specific filter); packets
    choose by the full filter. They agree only if, wherever two such filters overlap, the more
    address-specific one is address-only (so it also wins every packet between those hosts).
    """
    entries = []  # (rule index, rule, field, filter, address weight)
    for i, rule in enumerate(policy.rules):
        action = policy.filter_action_named(rule.filter_action)
        if not rule.is_active or rule.is_default_response or action is None or action.kind is not ActionKind.NEGOTIATE:
            continue
        if rule.tunnel_endpoint is not None:  # main mode is with the tunnel endpoint itself
            f = Filter(source=Address.me(), destination=Address.host(rule.tunnel_endpoint))
            entries.append((i, rule, f"rules[{i}].tunnel_endpoint", f, 256))
            continue
        fl = policy.filter_list_named(rule.filter_list)
        if fl is None:
            continue
        li = policy.filter_lists.index(fl)
        for j, f in enumerate(fl.filters):
            w = address_weight(f.source) + address_weight(f.destination)
            entries.append((i, rule, f"filter_lists[{li}].filters[{j}]", f, w))
    reported: set[tuple[int, int]] = set()
    for x in range(len(entries)):
        i1, r1, fld1, f1, w1 = entries[x]
        for y in range(x + 1, len(entries)):
            i2, r2, fld2, f2, w2 = entries[y]
            if i1 == i2 or r1.authentication == r2.authentication or (i1, i2) in reported:
                continue
            if not _pair_overlap(f1, f2):
                continue
            if (w1 > w2 and f1.is_address_only) or (w2 > w1 and f2.is_address_only):
                continue
            reported.add((i1, i2))
            a1 = ", ".join(map(str, r1.authentication)) or "none"
            a2 = ", ".join(map(str, r2.authentication)) or "none"
            c.error(
                "auth-conflict",
                f"rules[{i2}].authentication",
                f"rules {r1.name!r} ({a1}) and {r2.name!r} ({a2}) can apply to the same pair of hosts "
                f"(filters {f1} and {f2}) but use different authentication methods; IKE main mode picks a rule "
                "by addresses only, so use one authentication method for the pair, or address-only filters "
                "for negotiation and protocol/port filters only for Permit and Block",
                r2.name,
            )
