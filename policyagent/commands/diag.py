"""``policyagent diag``: the IPsec test of netdiag (``netdiag /test:ipsec /v``).

Asks the running service for its policy, rules, main-mode (ISAKMP) SAs, pending negotiations,
blocked flows and counters. Without a running service it checks the store: which policy is
assigned and whether it validates.
"""

from __future__ import annotations

import argparse
import json
import sys

from policyagent import diag
from policyagent.commands._service import add_via, via_path
from policyagent.control import ControlError, request_one
from policyagent.errors import PolicyError
from policyagent.store import PolicyStore


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("diag", help="diagnose IPsec: policy, main-mode SAs, counters (netdiag /test:ipsec)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--store", metavar="DIR", help="store to check when no service runs")
    add_via(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        rep = request_one(via_path(args), {"op": "diag"})
    except ControlError as exc:
        return _offline(args, str(exc))
    rep.pop("done", None)
    print(json.dumps(rep, indent=2) if args.json else diag.render(rep))
    return 0


def _offline(args: argparse.Namespace, why: str) -> int:
    store = PolicyStore(args.store or (args.via if args.via and not str(args.via).endswith(".sock") else None))
    print(f"IP Security test . . . . . . . . . : Failed\n    The policy agent service is not running: {why}")
    try:
        name = store.assigned_name()
        if name is None:
            print(f"    Store {store.root}: no policy assigned")
        else:
            _, warnings = store.load(name)
            print(f"    Store {store.root}: policy '{name}' assigned and valid"
                  + (f" ({len(warnings)} warning(s))" if warnings else ""))
            for w in warnings:
                print(f"      {w}")
    except PolicyError as exc:
        print(f"    Store {store.root}: {exc}", file=sys.stderr)
    return 1
