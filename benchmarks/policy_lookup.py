"""Policy lookups per second with 10, 1,000 and 10,000 filters: the compiled ``Matcher`` against
the naive linear scan (``ReferenceMatcher``, the same semantics) in the same run.

The policy looks like a large site's: mostly mirrored ``me <-> host`` filters (each peer its own
rule), some subnets, some TCP/UDP port filters, a few ``me <-> any`` rules, one tunnel rule. The
packets are drawn from the same addresses (most hit a filter, some miss), both directions. The
compiled lookup should stay within a few times of the 10-filter rate at 10,000 filters; the naive
scan grows with the filter count.
"""

from __future__ import annotations

import ipaddress
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import Row, measure, parser, report  # noqa: E402

from policyagent import builtin  # noqa: E402
from policyagent.matcher import Direction, Matcher, Packet, ReferenceMatcher  # noqa: E402
from policyagent.model import Address, AuthMethod, Filter, FilterList, Policy, Rule  # noqa: E402

LOCAL = ["10.0.0.1/16"]
ME = ipaddress.ip_address("10.0.0.1")


def build_policy(n: int, rng: random.Random) -> tuple[Policy, list[ipaddress.IPv4Address]]:
    """A policy with ``n`` filters spread over rules of at most 10 filters each."""
    peers: list[ipaddress.IPv4Address] = []
    filters: list[Filter] = []
    for i in range(n):
        peer = ipaddress.IPv4Address((10 << 24) | (rng.randrange(1, 200) << 16) | rng.randrange(1, 65535))
        roll = rng.random()
        if roll < 0.70:
            f = Filter(source=Address.me(), destination=Address.host(peer))
        elif roll < 0.85:
            prefix = rng.choice((16, 20, 24, 28))
            net = ipaddress.ip_network(f"{peer}/{prefix}", strict=False)
            f = Filter(source=Address.me(), destination=Address.subnet(net))
        elif roll < 0.97:
            proto = rng.choice((6, 17))
            f = Filter(source=Address.me(), destination=Address.host(peer), protocol=proto, destination_port=rng.choice((22, 80, 443, 3389, 5060)))
        else:
            f = Filter(source=Address.me(), destination=Address.any(), protocol=rng.choice((1, 6, 17)))
        filters.append(f)
        peers.append(peer)
    actions = (builtin.PERMIT, builtin.REQUIRE_SECURITY, builtin.REQUEST_SECURITY)
    lists, rules = [], []
    for r, start in enumerate(range(0, n, 10)):
        fl = FilterList(name=f"list {r}", filters=tuple(filters[start : start + 10]))
        lists.append(fl)
        rules.append(Rule(name=f"rule {r}", filter_list=fl.name, filter_action=actions[r % 3].name, authentication=(AuthMethod.kerberos(),)))
    tunnel_list = FilterList(name="branch", filters=(Filter(source=Address.parse("10.0.0.0/24"), destination=Address.parse("172.16.0.0/16"), is_mirrored=False),))
    rules.append(Rule(name="branch", filter_list="branch", filter_action=builtin.REQUIRE_SECURITY.name, authentication=(AuthMethod.kerberos(),), tunnel_endpoint=ipaddress.ip_address("192.0.2.9")))
    policy = Policy(
        name=f"{n} filters",
        key_exchange=builtin.DEFAULT_KEY_EXCHANGE,
        rules=tuple(rules),
        filter_lists=tuple(lists) + (tunnel_list,),
        filter_actions=actions,
    )
    return policy, peers


def build_packets(peers: list, count: int, rng: random.Random) -> list[tuple[Packet, Direction]]:
    out = []
    for _ in range(count):
        peer = rng.choice(peers) if rng.random() < 0.8 else ipaddress.IPv4Address(rng.getrandbits(32) | (11 << 24))
        proto = rng.choice((1, 6, 6, 17))
        ports = (rng.randrange(1024, 65535), rng.choice((22, 80, 443, 8080))) if proto in (6, 17) else (None, None)
        if rng.random() < 0.5:
            out.append((Packet(ME, peer, proto, *ports), Direction.OUTBOUND))
        else:
            out.append((Packet(peer, ME, proto, ports[1], ports[0]), Direction.INBOUND))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    sizes = (10, 50, 100) if args.smoke else (10, 1_000, 10_000)
    n_packets = 20 if args.smoke else 500
    rng = random.Random(5)
    rows: list[Row] = []
    per_lookup: dict[int, float] = {}
    for n in sizes:
        policy, peers = build_policy(n, rng)
        packets = build_packets(peers, n_packets, rng)
        fast = Matcher(policy, LOCAL)
        naive = ReferenceMatcher(policy, LOCAL)
        for p, d in packets[:50]:  # the two must agree; a benchmark of a wrong matcher is worthless
            assert fast.lookup(p, d) == naive.lookup(p, d), (p, d)
        case = f"{n:,} filters"

        def run_fast(lookup=fast.lookup, packets=packets) -> None:
            for p, d in packets:
                lookup(p, d)

        naive_packets = packets[: max(1, min(len(packets), 20_000 // n))]

        def run_naive(lookup=naive.lookup, packets=naive_packets) -> None:
            for p, d in packets:
                lookup(p, d)

        calls, seconds = measure(run_naive, seconds=args.seconds)
        rows.append(Row(case, "naive linear scan", calls * len(naive_packets), seconds))
        calls, seconds = measure(run_fast, seconds=args.seconds)
        rows.append(Row(case, "compiled Matcher", calls * len(packets), seconds, ceiling="naive linear scan"))
        per_lookup[n] = seconds / (calls * len(packets))
        calls, seconds = measure(lambda policy=policy: Matcher(policy, LOCAL), seconds=args.seconds)
        rows.append(Row(case, "compile (per policy)", calls, seconds))
    print(report(rows, as_json=args.json))
    if not args.json:
        small, large = min(sizes), max(sizes)
        print(f"\ncompiled lookup time, {large:,} vs {small:,} filters: {per_lookup[large] / per_lookup[small]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
