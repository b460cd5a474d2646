"""``python -m ikeproto.fuzz``: the command line of the fuzz harness (see ``ikeproto.fuzz``)."""

from __future__ import annotations

import argparse
import json
import random
import sys

from ikeproto.fuzz import __doc__ as _doc
from ikeproto.fuzz.corpus import case_datagram
from ikeproto.fuzz.inprocess import check_case, fuzz_in_process
from ikeproto.fuzz.target import fuzz_target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ikeproto.fuzz", description=(_doc or "").split("\n\n")[0])
    p.add_argument("--seed", type=int, default=None, help="run seed (default: random, printed)")
    p.add_argument("--cases", type=int, default=None, help="in-process: stop after N cases")
    p.add_argument("--seconds", type=float, default=None, help="in-process: stop after T seconds")
    p.add_argument("--case", type=int, default=None, help="print and check one case of --seed (reproducer)")
    p.add_argument("--target", metavar="HOST:PORT", help="fuzz an IKE responder over UDP instead")
    p.add_argument("--count", type=int, default=200, help="target: cases to send (default 200)")
    p.add_argument("--max-count", type=int, default=100_000, help="target: hard upper bound on --count")
    p.add_argument("--rate", type=float, default=20.0, help="target: cases per second (default 20, max 1000)")
    p.add_argument("--timeout", type=float, default=0.25, help="target: seconds to wait for each answer")
    p.add_argument("--probe-every", type=int, default=20, help="target: liveness probe every N cases")
    p.add_argument("--probe-timeout", type=float, default=1.0, help="target: seconds to wait for a probe answer")
    p.add_argument("--non-esp-marker", action="store_true", help="target: prefix 4 zero octets (port 4500, RFC 3948)")
    p.add_argument("--allow-any", action="store_true", help="target: allow addresses outside loopback/192.0.2.0/24")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    say = (lambda s: print(s, file=sys.stderr)) if args.json else print
    if args.case is not None:
        data = case_datagram(seed, args.case)
        print(data.hex())
        check_case(data)  # raises with the full traceback if it escapes
        print("parses or raises ParseError: ok")
        return 0
    if args.target:
        if args.count > args.max_count or not 0 < args.rate <= 1000:
            raise SystemExit("--count must be <= --max-count and 0 < --rate <= 1000")
        say(f"seed {seed}")
        rep = fuzz_target(args.target, seed=seed, count=args.count, rate=args.rate, timeout=args.timeout,
                          probe_every=max(1, args.probe_every), probe_timeout=args.probe_timeout, allow_any=args.allow_any,
                          non_esp_marker=args.non_esp_marker, out=say)
        if args.json:
            print(json.dumps({"mode": "target", "seed": seed, "sent": rep.sent, "classes": dict(rep.classes),
                              "by_class": rep.by_class,
                              "notable": rep.notable, "crashed_after": rep.crashed_after,
                              "probe_answered_at_start": rep.probe_answered_at_start}, indent=2))
        return 2 if rep.crashed_after else 0
    say(f"seed {seed}")
    summary = fuzz_in_process(seed=seed, max_cases=args.cases, seconds=args.seconds, out=say)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 1 if summary["escapes"] else 0


if __name__ == "__main__":
    sys.exit(main())
