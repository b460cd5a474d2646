"""``policyagent ping HOST``: ICMP echo through the running service's secured path.

Like Windows 2000's ping: an echo that IKE is still negotiating for prints
*Negotiating IP Security.*; replies print their size and time (and whether IPsec secured them);
statistics at the end.
"""

from __future__ import annotations

import argparse
import sys

from policyagent.commands._service import add_via, via_path
from policyagent.control import ControlError, request


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ping", help="ping HOST through the running service (prints Negotiating IP Security.)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("host")
    p.add_argument("-n", dest="count", type=int, default=4, help="echo requests to send (default 4)")
    p.add_argument("-l", dest="size", type=int, default=32, help="bytes of data (default 32)")
    p.add_argument("-w", dest="timeout_ms", type=int, default=1000, help="timeout per reply in ms (default 1000)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between echo requests (default 1)")
    add_via(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = via_path(args)
    print(f"\nPinging {args.host} with {args.size} bytes of data:\n", flush=True)
    sent = received = 0
    times: list[float] = []
    try:
        for line in request(path, {"op": "ping", "host": args.host, "count": args.count, "size": args.size,
                                   "timeout": args.timeout_ms / 1000, "interval": args.interval},
                            timeout=args.count * (args.interval + args.timeout_ms / 1000) + 30):
            if line.get("done"):
                break
            sent += 1
            print(format_result(line), flush=True)
            if line["status"] == "reply":
                received += 1
                times.append(line["rtt_ms"])
    except ControlError as exc:
        print(f"policyagent ping: {exc}", file=sys.stderr)
        return 1
    lost = sent - received
    print(f"\nPing statistics for {args.host}:")
    print(f"    Packets: Sent = {sent}, Received = {received}, Lost = {lost} "
          f"({(lost * 100 // sent) if sent else 0}% loss),")
    if times:
        print("Approximate round trip times in milli-seconds:")
        print(f"    Minimum = {min(times):.0f}ms, Maximum = {max(times):.0f}ms, "
              f"Average = {sum(times) / len(times):.0f}ms")
    return 0 if received else 1


def format_result(line: dict) -> str:
    """One ping line, Windows style."""
    status = line["status"]
    if status == "negotiating":
        return "Negotiating IP Security."
    if status == "blocked":
        return "Destination blocked by IP Security" + (f" ({line['reason']})" if line.get("reason") else ".")
    if status == "timeout":
        return "Request timed out."
    ms = line["rtt_ms"]
    shown = "time<1ms" if ms < 1 else f"time={ms:.0f}ms"
    how = "secured by IPsec" if line.get("protected") else "in clear"
    return f"Reply from {line['host']}: bytes={line['size']} {shown} ({how})"
