"""Hypothesis strategies for policies and packets, shared by the policy tests.

Addresses come from a small universe (10.0.0.0/28, 2001:db8::/124, plus multicast and
broadcast) so that random filters and random packets actually collide.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import strategies as st

from policyagent.matcher import Direction, Packet
from policyagent.model import (
    DH_GROUPS,
    MM_CIPHERS,
    MM_HASHES,
    QM_ALGORITHMS,
    ActionKind,
    Address,
    AddressKind,
    AuthMethod,
    ConnectionType,
    Filter,
    FilterAction,
    FilterList,
    KeyExchange,
    MainModeMethod,
    Policy,
    Rule,
    SecurityMethod,
)

LOCAL = ("10.0.0.1", "10.0.0.2/28", "2001:db8::1")
LOCAL_IPS = [ipaddress.ip_interface(a).ip for a in LOCAL]
V4 = [ipaddress.ip_address(f"10.0.0.{i}") for i in range(16)]
V6 = [ipaddress.ip_address(f"2001:db8::{i:x}") for i in range(16)]
SPECIAL = [ipaddress.ip_address(a) for a in ("224.0.0.5", "255.255.255.255", "10.0.0.15", "ff02::1")]
PROTOCOLS = [None, 1, 6, 17, 46]
PORTS = [None, 80, 88, 500, 4500, 1234]

names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="/\\"), min_size=1, max_size=12).filter(
    lambda s: s.strip() and not s.startswith(".")
)
texts = st.none() | st.text(max_size=30)


@st.composite
def addresses(draw, family: int | None = None) -> Address:
    kind = draw(st.sampled_from(["me", "me", "any", "any", "host", "host", "subnet", "subnet", "range"]))
    if kind == "me":
        return Address.me()
    if kind == "any":
        return Address.any()
    fam = family or draw(st.sampled_from([4, 4, 6]))
    pool = V4 if fam == 4 else V6
    if kind == "host":
        return Address.host(draw(st.sampled_from(pool)))
    if kind == "subnet":
        base = draw(st.sampled_from(pool))
        bits = base.max_prefixlen
        prefix = draw(st.integers(bits - 4, bits - 1))
        return Address.subnet(ipaddress.ip_network(f"{base}/{prefix}", strict=False))
    a, b = sorted(draw(st.lists(st.sampled_from(pool), min_size=2, max_size=2, unique=True)), key=int)
    return Address.range(a, b)


@st.composite
def filters(draw, address_only: bool = False) -> Filter:
    fam = draw(st.sampled_from([4, 4, 6]))
    protocol = None if address_only else draw(st.sampled_from(PROTOCOLS))
    ported = protocol in (6, 17)
    return Filter(
        source=draw(addresses(fam)),
        destination=draw(addresses(fam)),
        protocol=protocol,
        source_port=draw(st.sampled_from(PORTS)) if ported else None,
        destination_port=draw(st.sampled_from(PORTS)) if ported else None,
        is_mirrored=draw(st.booleans()),
        description=draw(st.none() | st.text(max_size=10)),
    )


@st.composite
def security_methods(draw) -> SecurityMethod:
    ciphers = [k for k, v in QM_ALGORITHMS.items() if v.kind == "cipher"]
    integrity = [k for k, v in QM_ALGORITHMS.items() if v.kind == "integrity"]
    cipher = draw(st.none() | st.sampled_from(ciphers))
    bits = draw(st.sampled_from(QM_ALGORITHMS[cipher].key_bits)) if cipher and QM_ALGORITHMS[cipher].key_bits else None
    esp_int = None if cipher is None or QM_ALGORITHMS[cipher].is_aead else draw(st.sampled_from(integrity))
    ah = draw(st.sampled_from(integrity)) if cipher is None else draw(st.none() | st.sampled_from(integrity))
    return SecurityMethod(
        ah_integrity=ah,
        esp_cipher=cipher,
        esp_key_bits=bits,
        esp_integrity=esp_int,
        lifetime_s=draw(st.none() | st.integers(300, 86400)),
        lifetime_kb=draw(st.none() | st.integers(1, 10**7)),
    )


auth_methods = st.one_of(
    st.just(AuthMethod.kerberos()),
    st.text(min_size=1, max_size=20).map(AuthMethod.certificate),
    st.text(min_size=1, max_size=20).map(AuthMethod.preshared_key),
)


@st.composite
def policies(draw, max_rules: int = 6, max_filters: int = 5) -> Policy:
    """Random policies whose references resolve (not necessarily valid otherwise)."""
    n = draw(st.integers(1, max_rules))
    rule_names = draw(st.lists(names, min_size=n, max_size=n, unique=True))
    lists, actions, rules = [], [], []
    # Rules share filters from a small pool, so that equal-weight ties between rules are common.
    pool = draw(st.lists(filters(), min_size=1, max_size=4))
    for i, rname in enumerate(rule_names):
        tunnel = draw(st.sampled_from([None] * 8 + V4[12:14] + V6[8:9]))
        chosen = draw(st.lists(st.sampled_from(pool) | filters(), min_size=0, max_size=max_filters))
        if tunnel is not None:
            chosen = [replace(x, protocol=None, source_port=None, destination_port=None) for x in chosen]
        fl = FilterList(name=f"list {i}", filters=tuple(chosen), description=draw(texts))
        kind = draw(st.sampled_from(list(ActionKind)))
        negotiate = kind is ActionKind.NEGOTIATE
        fa = FilterAction(
            name=f"action {i}",
            kind=kind,
            security_methods=tuple(draw(st.lists(security_methods(), min_size=1, max_size=3))) if negotiate else (),
            accepts_unsecured=negotiate and draw(st.booleans()),
            falls_back_to_clear=negotiate and draw(st.booleans()),
            has_session_key_pfs=negotiate and draw(st.booleans()),
            description=draw(texts),
        )
        lists.append(fl)
        actions.append(fa)
        rules.append(
            Rule(
                name=rname,
                filter_list=fl.name,
                filter_action=fa.name,
                authentication=tuple(draw(st.lists(auth_methods, min_size=1, max_size=3))),
                tunnel_endpoint=tunnel,
                connection_type=draw(st.sampled_from(list(ConnectionType))),
                is_active=draw(st.booleans() | st.just(True)),
                description=draw(texts),
            )
        )
    if draw(st.booleans()):
        actions.append(FilterAction(name="Default Response", kind=ActionKind.NEGOTIATE, security_methods=(draw(security_methods()),)))
        rules.append(Rule(name="<Dynamic>", filter_list=None, filter_action="Default Response", authentication=(AuthMethod.kerberos(),), is_default_response=True))
    mm = tuple(
        draw(
            st.lists(
                st.builds(MainModeMethod, cipher=st.sampled_from(list(MM_CIPHERS)), hash=st.sampled_from(list(MM_HASHES)), dh_group=st.sampled_from(list(DH_GROUPS))),
                min_size=1,
                max_size=4,
            )
        )
    )
    return Policy(
        name=draw(names),
        description=draw(texts),
        key_exchange=KeyExchange(
            methods=mm,
            lifetime_min=draw(st.integers(5, 2880)),
            lifetime_sessions=draw(st.none() | st.integers(1, 100)),
            has_master_key_pfs=draw(st.booleans()),
        ),
        rules=tuple(rules),
        filter_lists=tuple(lists),
        filter_actions=tuple(actions),
        polling_interval_min=draw(st.integers(1, 43200)),
        has_default_exemptions=draw(st.booleans()),
    )


@st.composite
def packets(draw) -> tuple[Packet, Direction]:
    fam = draw(st.sampled_from([4, 4, 6]))
    pool = V4 if fam == 4 else V6
    special = [a for a in SPECIAL if a.version == fam]
    mine = [a for a in LOCAL_IPS if a.version == fam]
    src = draw(st.sampled_from(mine) | st.sampled_from(pool))
    dst = draw(st.sampled_from(mine) | st.sampled_from(pool + special))
    direction = draw(st.sampled_from(list(Direction)))
    protocol = draw(st.sampled_from([1, 6, 17, 46, 50]))
    ported = protocol in (6, 17)
    sport = draw(st.sampled_from(PORTS[1:])) if ported else None
    dport = draw(st.sampled_from(PORTS[1:])) if ported else None
    return Packet(src, dst, protocol, sport, dport), direction



def _inside(address: Address, family: int) -> st.SearchStrategy:
    pool = V4 if family == 4 else V6
    mine = [a for a in LOCAL_IPS if a.version == family]
    if address.kind is AddressKind.ME:
        return st.sampled_from(mine)
    if address.kind is AddressKind.ANY:
        return st.sampled_from(mine + pool)
    cls = type(address.first)
    return st.integers(int(address.first), int(address.last)).map(cls)


@st.composite
def packets_for(draw, policy: Policy) -> tuple[Packet, Direction]:
    """Mostly packets built to fall inside one of the policy's filters (so that rules collide
    and ties happen), sometimes any packet."""
    fs = [f for fl in policy.filter_lists for f in fl.filters]
    if not fs or draw(st.integers(0, 3)) == 0:
        return draw(packets())
    f = draw(st.sampled_from(fs))
    if f.is_mirrored and draw(st.booleans()):
        f = f.mirror()
    family = f.source.version or f.destination.version or draw(st.sampled_from([4, 6]))
    src, dst = draw(_inside(f.source, family)), draw(_inside(f.destination, family))
    protocol = f.protocol if f.protocol is not None else draw(st.sampled_from([1, 6, 17, 46, 50]))
    ported = protocol in (6, 17)
    sport = f.source_port if f.source_port is not None else draw(st.sampled_from(PORTS[1:])) if ported else None
    dport = f.destination_port if f.destination_port is not None else draw(st.sampled_from(PORTS[1:])) if ported else None
    if src in LOCAL_IPS and (dst not in LOCAL_IPS or draw(st.booleans())):
        direction = Direction.OUTBOUND
    elif dst in LOCAL_IPS:
        direction = Direction.INBOUND
    else:
        direction = draw(st.sampled_from(list(Direction)))
    return Packet(src, dst, protocol, sport, dport), direction
