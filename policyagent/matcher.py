"""The packet matcher: which rule of the assigned policy decides a packet, and how.

Owns the matching semantics of the Windows 2000 policy agent (the seed, "Configuring an IPSec
Filter List"; RFC 4301 §4.4.1 is the standards counterpart) and their compiled form:

1. **Exemptions** (unless the policy turns them off): broadcast, multicast (224.0.0.0/4, ff00::/8),
   RSVP (IP protocol 46), Kerberos (UDP or TCP port 88 either side) and IKE (UDP destination 500,
   and 4500 when NAT-T is on) are never secured. The seed: the exemptions apply to this host's own
   traffic; a forwarded unicast Kerberos/IKE/RSVP packet is *not* exempt from tunnel filters, and
   tunnel filters never carry multicast or broadcast. With exemptions off, IKE stays exempt
   (otherwise no negotiation could start), as Windows' NoDefaultExempt does.
2. **Tunnel filters first**, then **transport filters**; transport filters match only packets
   whose source (outbound) or destination (inbound) is one of this host's addresses.
3. Among matching filters the **most specific wins**: ``filter_weight`` (address specificity
   dominates: a specific address beats a subnet beats any; then protocol, then ports). **Ties**
   go to the earlier rule in the policy, then the earlier filter in its list, then the filter as
   written before its mirror.
4. No match: the packet passes in clear (``Verdict.PERMIT`` with ``rule is None``).

``Matcher`` compiles a policy into an index (exact addresses, prefix buckets per prefix length,
then protocol/port sub-buckets, each sorted by precomputed rank) so a lookup probes a bounded
number of buckets instead of scanning every filter. ``ReferenceMatcher`` is the same semantics
as a plain linear scan: the executable specification the tests and the benchmark compare against.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from policyagent.errors import UsageError
from policyagent.model import (
    ActionKind,
    Address,
    AddressKind,
    AuthMethod,
    Filter,
    FilterAction,
    FilterList,
    IPAddress,
    KeyExchange,
    MainModeMethod,
    Policy,
    Rule,
    SecurityMethod,
)


class Direction(enum.Enum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class Verdict(enum.Enum):
    EXEMPT = "exempt"  # a built-in exemption: never secured, never blocked
    PERMIT = "permit"  # pass in clear (a Permit rule, or no rule matched)
    BLOCK = "block"
    NEGOTIATE = "negotiate"  # secure it: the decision names the rule


class Exemption(enum.Enum):
    BROADCAST = "broadcast"
    MULTICAST = "multicast"
    RSVP = "rsvp"
    KERBEROS = "kerberos"
    IKE = "ike"


class Packet(NamedTuple):
    """The five fields a lookup reads. Ports are None (or 0) for protocols without ports."""

    src: IPAddress
    dst: IPAddress
    protocol: int
    src_port: int | None = None
    dst_port: int | None = None


_VERDICT = {ActionKind.PERMIT: Verdict.PERMIT, ActionKind.BLOCK: Verdict.BLOCK, ActionKind.NEGOTIATE: Verdict.NEGOTIATE}


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to do with a packet, and for Negotiate everything IKE needs to start."""

    verdict: Verdict
    exemption: Exemption | None = None
    policy_name: str | None = None
    rule: Rule | None = None
    rule_index: int | None = None
    filter_list: FilterList | None = None
    filter: Filter | None = None  # as written in its list
    filter_index: int | None = None
    is_mirror_match: bool = False  # matched the mirror of ``filter`` (the reverse direction)
    action: FilterAction | None = None
    key_exchange: KeyExchange | None = None

    @property
    def traffic_filter(self) -> Filter | None:
        """The filter oriented as the packet matched it (source = the packet's source side)."""
        if self.filter is None:
            return None
        return self.filter.mirror() if self.is_mirror_match else self.filter

    @property
    def is_tunnel(self) -> bool:
        return self.rule is not None and self.rule.tunnel_endpoint is not None

    @property
    def tunnel_endpoint(self) -> IPAddress | None:
        return self.rule.tunnel_endpoint if self.rule is not None else None

    @property
    def is_default_response(self) -> bool:
        return self.rule is not None and self.rule.is_default_response

    @property
    def security_methods(self) -> tuple[SecurityMethod, ...]:
        return self.action.security_methods if self.action is not None else ()

    @property
    def authentication(self) -> tuple[AuthMethod, ...]:
        return self.rule.authentication if self.rule is not None else ()

    @property
    def accepts_unsecured(self) -> bool:
        return self.action is not None and self.action.accepts_unsecured

    @property
    def falls_back_to_clear(self) -> bool:
        return self.action is not None and self.action.falls_back_to_clear

    @property
    def has_session_key_pfs(self) -> bool:
        return self.action is not None and self.action.has_session_key_pfs

    @property
    def main_mode_methods(self) -> tuple[MainModeMethod, ...]:
        return self.key_exchange.methods if self.key_exchange is not None else ()

    @property
    def master_key_lifetime_min(self) -> int | None:
        return self.key_exchange.lifetime_min if self.key_exchange is not None else None

    @property
    def has_master_key_pfs(self) -> bool:
        return self.key_exchange is not None and self.key_exchange.has_master_key_pfs


EXEMPT = {e: Decision(verdict=Verdict.EXEMPT, exemption=e) for e in Exemption}

# --- specificity -----------------------------------------------------------------------------------


def address_weight(address: Address) -> int:
    """Specificity of one side, 0 (any) .. 128 (one address), scaled so IPv4 and IPv6 compare."""
    kind = address.kind
    if kind is AddressKind.ANY:
        return 0
    if kind is AddressKind.ME or kind is AddressKind.HOST:
        return 128
    bits = address.first.max_prefixlen  # type: ignore[union-attr]
    if kind is AddressKind.SUBNET:
        fixed = address.prefix or 0
    else:  # a range fixes as many bits as the smallest prefix covering its size
        fixed = bits - (int(address.last) - int(address.first)).bit_length()  # type: ignore[arg-type]
    return fixed * 128 // bits


def filter_weight(f: Filter) -> int:
    """Addresses dominate (a more specific address pair always wins), then protocol, then ports."""
    w = (address_weight(f.source) + address_weight(f.destination)) * 16
    if f.protocol is not None:
        w += 8
    if f.source_port is not None:
        w += 2
    if f.destination_port is not None:
        w += 2
    return w


# --- shared pieces ---------------------------------------------------------------------------------


def _as_ip(value) -> IPAddress:
    return value if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else ipaddress.ip_address(value)


class _Host:
    """This host's addresses (``me``) and its IPv4 broadcast addresses."""

    def __init__(self, local_addresses: Iterable) -> None:
        self.local: set[tuple[int, int]] = set()
        self.broadcast: set[int] = {0xFFFFFFFF}
        for item in local_addresses:
            if isinstance(item, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
                iface = item
            else:
                iface = ipaddress.ip_interface(item)
            self.local.add((iface.version, int(iface.ip)))
            net = iface.network
            if iface.version == 4 and net.prefixlen < 31:
                self.broadcast.add(int(net.broadcast_address))

    def exemption(self, v: int, dst: int, protocol: int, sport, dport, is_local: bool, on: bool, nat_t: bool):
        if on:
            if v == 4:
                if dst >> 28 == 0xE:
                    return Exemption.MULTICAST
                if dst in self.broadcast:
                    return Exemption.BROADCAST
            elif dst >> 120 == 0xFF:
                return Exemption.MULTICAST
        if not is_local:
            return None
        if protocol == 17 and (dport == 500 or (nat_t and dport == 4500)):
            return Exemption.IKE
        if not on:
            return None
        if protocol == 46:
            return Exemption.RSVP
        if (protocol == 17 or protocol == 6) and (sport == 88 or dport == 88):
            return Exemption.KERBEROS
        return None

    def is_multicast_or_broadcast(self, v: int, dst: int) -> bool:
        return (dst >> 28 == 0xE or dst in self.broadcast) if v == 4 else dst >> 120 == 0xFF


class _Candidate(NamedTuple):
    weight: int
    rule_index: int
    filter_index: int
    mirror: int
    is_tunnel: bool
    source: Address
    destination: Address
    protocol: int | None
    source_port: int | None
    destination_port: int | None
    decision: Decision


def _candidates(policy: Policy) -> list[_Candidate]:
    """Every (rule, filter, orientation) a packet can match, in tie-rule order."""
    out = []
    for ri, rule in enumerate(policy.rules):
        if not rule.is_active or rule.is_default_response:
            continue
        fl = policy.filter_list_named(rule.filter_list)
        action = policy.filter_action_named(rule.filter_action)
        if fl is None or action is None:
            raise UsageError(f"rule {rule.name!r} refers to a missing filter list or action: validate the policy first")
        for fi, f in enumerate(fl.filters):
            w = filter_weight(f)
            for mirror in (0, 1) if f.is_mirrored else (0,):
                g = f.mirror() if mirror else f
                decision = Decision(
                    verdict=_VERDICT[action.kind],
                    policy_name=policy.name,
                    rule=rule,
                    rule_index=ri,
                    filter_list=fl,
                    filter=f,
                    filter_index=fi,
                    is_mirror_match=bool(mirror),
                    action=action,
                    key_exchange=policy.key_exchange,
                )
                out.append(
                    _Candidate(w, ri, fi, mirror, rule.is_tunnel, g.source, g.destination, g.protocol, g.source_port, g.destination_port, decision)
                )
    return out


def _default_decision(policy: Policy) -> Decision | None:
    rule = policy.default_response_rule
    if rule is None:
        return None
    action = policy.filter_action_named(rule.filter_action)
    return Decision(
        verdict=Verdict.NEGOTIATE,
        policy_name=policy.name,
        rule=rule,
        rule_index=policy.rules.index(rule),
        action=action,
        key_exchange=policy.key_exchange,
    )


def _side_matches(address: Address, v: int, n: int, host: _Host) -> bool:
    kind = address.kind
    if kind is AddressKind.ANY:
        return True
    if kind is AddressKind.ME:
        return (v, n) in host.local
    return address.first.version == v and int(address.first) <= n <= int(address.last)  # type: ignore[union-attr,arg-type]


class _Base:
    def __init__(self, policy: Policy, local_addresses: Iterable = (), *, nat_t: bool = False) -> None:
        self.policy = policy
        self.nat_t = nat_t
        self._host = _Host(local_addresses)
        self._exempting = policy.has_default_exemptions
        self._unmatched = Decision(verdict=Verdict.PERMIT, policy_name=policy.name)
        self.default_response = _default_decision(policy)
        self._peer_cache: list[_Candidate] | None = None

    def lookup_peer(self, local, remote) -> Decision | None:
        """Main mode (IKE phase 1) sees only addresses: the rule for this host pair.

        The most address-specific active Negotiate rule whose filters cover the pair (either
        orientation), or whose tunnel endpoint is ``remote``; else the default response rule;
        else None. Validation guarantees every rule for one pair agrees on authentication.
        """
        lo, re = _as_ip(local), _as_ip(remote)
        best_key, best = None, None
        for c in self._peer_candidates:
            if c.is_tunnel:
                hit = c.decision.rule.tunnel_endpoint == re  # type: ignore[union-attr]
                w = 128 * 2
            else:
                hit = (
                    _side_matches(c.source, lo.version, int(lo), self._host)
                    and _side_matches(c.destination, re.version, int(re), self._host)
                )
                w = address_weight(c.source) + address_weight(c.destination)
            if hit and (best_key is None or (w, -c.rule_index, -c.filter_index, -c.mirror) > best_key):
                best_key, best = (w, -c.rule_index, -c.filter_index, -c.mirror), c.decision
        return best if best is not None else self.default_response

    @property
    def _peer_candidates(self) -> list[_Candidate]:
        if self._peer_cache is None:
            self._peer_cache = [c for c in _candidates(self.policy) if c.decision.verdict is Verdict.NEGOTIATE]
        return self._peer_cache


class ReferenceMatcher(_Base):
    """The matching semantics as a linear scan over every filter: slow, obviously right."""

    def __init__(self, policy: Policy, local_addresses: Iterable = (), *, nat_t: bool = False) -> None:
        super().__init__(policy, local_addresses, nat_t=nat_t)
        self._all = _candidates(policy)

    def lookup(self, packet, direction: Direction) -> Decision:
        src, dst, protocol, sport, dport = packet
        src, dst = _as_ip(src), _as_ip(dst)
        v, s, d = src.version, int(src), int(dst)
        is_local = (v, s if direction is Direction.OUTBOUND else d) in self._host.local
        ex = self._host.exemption(v, d, protocol, sport, dport, is_local, self._exempting, self.nat_t)
        if ex is not None:
            return EXEMPT[ex]
        for tunnel in (True, False):
            if tunnel and self._host.is_multicast_or_broadcast(v, d):
                continue
            if not tunnel and not is_local:
                continue
            best_key, best = None, None
            for c in self._all:
                if c.is_tunnel != tunnel:
                    continue
                if not (_side_matches(c.source, v, s, self._host) and _side_matches(c.destination, v, d, self._host)):
                    continue
                if c.protocol is not None and c.protocol != protocol:
                    continue
                if (c.source_port is not None and c.source_port != sport) or (
                    c.destination_port is not None and c.destination_port != dport
                ):
                    continue
                key = (c.weight, -c.rule_index, -c.filter_index, -c.mirror)
                if best_key is None or key > best_key:
                    best_key, best = key, c.decision
            if best is not None:
                return best
        return self._unmatched


# --- the compiled index ----------------------------------------------------------------------------

_INF = float("inf")


class _Index:
    """Entries filed under one address key, then one protocol/port key, sorted by rank."""

    def __init__(self) -> None:
        self.exact_dst: dict[tuple[int, int], dict] = {}
        self.exact_src: dict[tuple[int, int], dict] = {}
        self.prefix_dst: dict[tuple[int, int], dict[int, dict]] = {}  # (version, prefix) -> net -> node
        self.prefix_src: dict[tuple[int, int], dict[int, dict]] = {}
        self.residual: dict = {}
        self.size = 0

    def add(self, entry: tuple, src: tuple | None, dst: tuple | None) -> None:
        # Entry: (rank, sv, slo, shi, dv, dlo, dhi, proto, sport, dport, decision); sides are
        # (version, lo, hi, prefix-or-None, is_me) or None for any. The entry is filed under its
        # more selective side: a specific peer address, else a prefix, else one of this host's
        # own addresses (every local packet carries one, so that bucket is the crowded one).
        def score(side: tuple | None) -> int:
            if side is None:
                return 0
            if side[1] == side[2]:
                return 1 if side[4] else 3
            return 2 if side[3] is not None else 0

        sd, ss = score(dst), score(src)
        best = max(sd, ss)
        if best == 0:
            node = self.residual
        elif sd == best:
            node = self._prefix_node(self.prefix_dst, dst) if sd == 2 else self.exact_dst.setdefault((dst[0], dst[1]), {})  # type: ignore[index]
        else:
            node = self._prefix_node(self.prefix_src, src) if ss == 2 else self.exact_src.setdefault((src[0], src[1]), {})  # type: ignore[index]
        proto, sport, dport = entry[7], entry[8], entry[9]
        if proto is None:
            key: object = -1
        elif dport is not None:
            key = (proto, 0, dport)
        elif sport is not None:
            key = (proto, 1, sport)
        else:
            key = proto
        node.setdefault(key, []).append(entry)
        self.size += 1

    @staticmethod
    def _prefix_node(tables: dict, side: tuple) -> dict:
        v, lo, _, plen, _ = side
        shift = (32 if v == 4 else 128) - plen
        return tables.setdefault((v, plen), {}).setdefault(lo >> shift, {})

    def freeze(self) -> None:
        def fix(node: dict) -> None:
            for k, entries in node.items():
                node[k] = tuple(sorted(entries, key=lambda e: e[0]))

        for table in (self.exact_dst, self.exact_src):
            for node in table.values():
                fix(node)
        for tables in (self.prefix_dst, self.prefix_src):
            for nets in tables.values():
                for node in nets.values():
                    fix(node)
        fix(self.residual)
        # Probe lists per address family: (shift, table), most specific prefix first.
        self.probes_dst = {
            v: tuple(((32 if v == 4 else 128) - plen, t) for (vv, plen), t in sorted(self.prefix_dst.items(), key=lambda i: -i[0][1]) if vv == v)
            for v in (4, 6)
        }
        self.probes_src = {
            v: tuple(((32 if v == 4 else 128) - plen, t) for (vv, plen), t in sorted(self.prefix_src.items(), key=lambda i: -i[0][1]) if vv == v)
            for v in (4, 6)
        }

    def search(self, v: int, s: int, d: int, protocol: int, sport, dport) -> Decision | None:
        nodes = []
        node = self.exact_dst.get((v, d))
        if node is not None:
            nodes.append(node)
        node = self.exact_src.get((v, s))
        if node is not None:
            nodes.append(node)
        for shift, table in self.probes_dst[v]:
            node = table.get(d >> shift)
            if node is not None:
                nodes.append(node)
        for shift, table in self.probes_src[v]:
            node = table.get(s >> shift)
            if node is not None:
                nodes.append(node)
        if self.residual:
            nodes.append(self.residual)
        if not nodes:
            return None
        keys = (-1, protocol, (protocol, 0, dport), (protocol, 1, sport))
        best_rank, best = _INF, None
        for node in nodes:
            for key in keys:
                bucket = node.get(key)
                if bucket is None:
                    continue
                for rank, sv, slo, shi, dv, dlo, dhi, p, sp, dp, decision in bucket:
                    if rank >= best_rank:
                        break
                    if (
                        (sv is None or (sv == v and slo <= s <= shi))
                        and (dv is None or (dv == v and dlo <= d <= dhi))
                        and (p is None or p == protocol)
                        and (sp is None or sp == sport)
                        and (dp is None or dp == dport)
                    ):
                        best_rank, best = rank, decision
                        break
        return best


def _sides(address: Address, host: _Host) -> list[tuple | None]:
    if address.kind is AddressKind.ANY:
        return [None]
    if address.kind is AddressKind.ME:
        return [(v, n, n, None, True) for v, n in sorted(host.local)]
    first, last = address.first, address.last
    plen = address.prefix if address.kind is AddressKind.SUBNET else None
    return [(first.version, int(first), int(last), plen, False)]  # type: ignore[union-attr,arg-type]


class Matcher(_Base):
    """A policy compiled for per-packet lookups on a host with ``local_addresses``.

    ``local_addresses``: this host's addresses (``me``), as addresses or interfaces
    (``"192.168.1.5/24"`` also tells the directed broadcast address). ``nat_t``: exempt UDP 4500.
    """

    def __init__(self, policy: Policy, local_addresses: Iterable = (), *, nat_t: bool = False) -> None:
        super().__init__(policy, local_addresses, nat_t=nat_t)
        candidates = _candidates(policy)
        order = sorted(range(len(candidates)), key=lambda i: (-candidates[i].weight, candidates[i].rule_index, candidates[i].filter_index, candidates[i].mirror))
        self._tunnel, self._transport = _Index(), _Index()
        for rank, i in enumerate(order):
            c = candidates[i]
            index = self._tunnel if c.is_tunnel else self._transport
            for src in _sides(c.source, self._host):
                for dst in _sides(c.destination, self._host):
                    entry = (
                        rank,
                        *(src[:3] if src else (None, None, None)),
                        *(dst[:3] if dst else (None, None, None)),
                        c.protocol,
                        c.source_port,
                        c.destination_port,
                        c.decision,
                    )
                    index.add(entry, src, dst)
        self._tunnel.freeze()
        self._transport.freeze()
        self._has_tunnel = self._tunnel.size > 0
        self.filter_count = sum(1 for _ in candidates)

    def lookup(self, packet, direction: Direction) -> Decision:
        """The decision for ``packet`` = (src, dst, protocol, src_port, dst_port) in ``direction``."""
        src, dst, protocol, sport, dport = packet
        if src.__class__ is str or dst.__class__ is str:
            src, dst = _as_ip(src), _as_ip(dst)
        v, s, d = src.version, int(src), int(dst)
        host = self._host
        is_local = (v, s if direction is Direction.OUTBOUND else d) in host.local
        ex = host.exemption(v, d, protocol, sport, dport, is_local, self._exempting, self.nat_t)
        if ex is not None:
            return EXEMPT[ex]
        if self._has_tunnel and not host.is_multicast_or_broadcast(v, d):
            hit = self._tunnel.search(v, s, d, protocol, sport, dport)
            if hit is not None:
                return hit
        if is_local:
            hit = self._transport.search(v, s, d, protocol, sport, dport)
            if hit is not None:
                return hit
        return self._unmatched
