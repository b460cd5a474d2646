"""The ``policyagent`` command line: one entry point, one module per sub-command."""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules under policyagent.commands, in the order --help lists them.
COMMANDS = ("demo", "run", "policy", "ping", "monitor", "events", "diag", "cert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="policyagent", description="IPsec policy agent (IKEv1, ESP/AH)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"policyagent.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `policyagent monitor | head`: the reader left, that is not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
