"""``policyagent monitor``: the IP Security Monitor of the running service.

A live table refreshed every second (the seed sets ipsecmon's refresh from 15 to 1 second):
active security associations with algorithms, SPIs and lifetimes left, and the statistics
(authenticated and confidential bytes, packets, drops, main and quick modes, soft SAs,
failures). ``--once`` prints it once; ``--json`` prints the snapshot as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from policyagent import monitor
from policyagent.commands._service import add_via, via_path
from policyagent.control import ControlError, request_one


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("monitor", help="the IP Security Monitor: SAs and statistics, refreshed every second",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON (implies --once)")
    p.add_argument("--interval", type=float, default=1.0, help="refresh seconds (default 1)")
    p.add_argument("--count", type=int, default=0, help="stop after this many refreshes (0: until Ctrl-C)")
    add_via(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = via_path(args)
    try:
        if args.json or args.once:
            snap = request_one(path, {"op": "monitor"})
            snap.pop("done", None)
            print(json.dumps(snap, indent=2) if args.json else monitor.render(snap))
            return 0
        shown = 0
        while True:
            snap = request_one(path, {"op": "monitor"})
            sys.stdout.write("\x1b[H\x1b[2J" + monitor.render(snap) + "\n")
            sys.stdout.flush()
            shown += 1
            if args.count and shown >= args.count:
                return 0
            time.sleep(args.interval)
    except ControlError as exc:
        print(f"policyagent monitor: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
