"""``policyagent demo``: the seed walkthrough, replayed on loopback without root."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="replay the Step-by-Step Guide walkthrough on loopback (no root)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The walkthrough needs the agent (issue: the policy agent); until it lands, say what exists.
    print("policyagent demo: the Step-by-Step Guide walkthrough is not wired yet.")
    print("Available now:")
    print("  make test      the test suite (unit, property, lab)")
    print("  policyagent --help")
    return 0
