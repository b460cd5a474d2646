"""``policyagent events``: the security audit log (events 541-547 and soft SAs).

From the running service (``--via``), or from an audit log file (``--file``, JSON lines).
``-v`` prints each event's full Event Viewer text; ``--json`` the records.
"""

from __future__ import annotations

import argparse
import json
import sys

from policyagent import audit
from policyagent.commands._service import add_via, via_path
from policyagent.control import ControlError, render_events, request_one


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("events", help="the audit log: IKE events 541-547 and soft SAs",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--file", metavar="FILE", help="read this audit log instead of asking the service")
    p.add_argument("--id", dest="ids", type=int, action="append", metavar="N", help="only event N (repeatable)")
    p.add_argument("--last", type=int, default=0, metavar="N", help="only the last N events")
    p.add_argument("-v", "--verbose", action="store_true", help="full event text")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    add_via(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.file:
        events = audit.read_log(args.file)
        if args.ids:
            events = [e for e in events if e.get("event_id") in args.ids]
    else:
        try:
            events = request_one(via_path(args), {"op": "events", "event_id": args.ids})["events"]
        except ControlError as exc:
            print(f"policyagent events: {exc}", file=sys.stderr)
            return 1
    if args.last:
        events = events[-args.last:]
    if args.json:
        print(json.dumps(events, indent=2))
    elif events:
        print(render_events(events, verbose=args.verbose))
    else:
        print("(no audit events)")
    return 0
