"""``policyagent run``: the policy agent service (IKE, the embedded data path, control socket).

Loads the store's assigned policy (or ``--policy NAME``), binds the IKE and NAT-T ports on
``--address``, writes the audit log (JSON lines, ``STORE/audit.jsonl`` by default) and, with
``--trace``, the IKE debug trace (``STORE/oakley.log``, previous run kept as ``.sav``), and listens
on a control socket readable by its owner only (``STORE/control.sock``). Runs on uvloop when it
is installed (``--loop``). Like the Windows policy agent it notices a new assignment: the store
is checked every ``--poll`` seconds (and on SIGHUP), and the assigned policy, or its file,
changing is applied at once. SIGINT/SIGTERM stop it.

Kerberos: ``--kerberos-keytab FILE --kerberos-principal host/<fqdn>@REALM`` authenticate the
policies' Kerberos rules with real Kerberos (GSS-API; ``KRB5_CONFIG`` names the realm's KDC);
``--kerberos-peer ADDRESS=PRINCIPAL`` (repeatable) says which principal a peer must be. Without
credentials the Kerberos rules cannot authenticate; with ``--kerberos-psk KEY`` (same on both
hosts) a pre-shared key stands in for Kerberos, and the service says so.

Certificates: ``--certs DIR`` is the machine certificate store (``policyagent cert``), read each
time a policy is applied; certificates are validated against the system clock.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from policyagent import builtin
from policyagent.agent import AgentConfig
from policyagent.aio import start_agent
from policyagent.control import SOCKET_NAME, ControlError, ControlServer
from policyagent.errors import PolicyError
from policyagent.model import AuthKind
from policyagent.store import PolicyStore


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run the policy agent service (IKE, secured data path, control socket)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--store", metavar="DIR", help="policy store (default $POLICYAGENT_HOME or ~/.local/share/policyagent)")
    p.add_argument("--address", default="127.0.0.1", help="this host's address (default 127.0.0.1)")
    p.add_argument("--ike-port", type=int, default=500, help="IKE port (default 500; needs root below 1024)")
    p.add_argument("--natt-port", type=int, default=4500, help="NAT-T / ESP-in-UDP port (default 4500)")
    p.add_argument("--policy", metavar="NAME", help="run this policy instead of the store's assigned one")
    p.add_argument("--kerberos-psk", metavar="KEY", default=os.environ.get("POLICYAGENT_KERBEROS_PSK"),
                   help="pre-shared key that stands in for Kerberos (no KDC); also $POLICYAGENT_KERBEROS_PSK")
    p.add_argument("--kerberos-keytab", metavar="FILE", help="keytab with this computer's host principal")
    p.add_argument("--kerberos-principal", metavar="PRINCIPAL",
                   help="this computer's Kerberos principal, host/<fqdn>@REALM")
    p.add_argument("--kerberos-peer", metavar="ADDRESS=PRINCIPAL", action="append", default=[],
                   help="the principal the peer at ADDRESS must authenticate as (repeatable)")
    p.add_argument("--certs", metavar="DIR", help="machine certificate store (see 'policyagent cert')")
    p.add_argument("--audit", metavar="FILE", help="audit log (default STORE/audit.jsonl)")
    p.add_argument("--trace", action="store_true", help="write the IKE debug trace to STORE/oakley.log")
    p.add_argument("--trace-file", metavar="FILE", help="write the IKE debug trace here")
    p.add_argument("--trace-secrets", action="store_true", help="include keys in the trace (debugging only)")
    p.add_argument("--control", metavar="PATH", help=f"control socket (default STORE/{SOCKET_NAME})")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="event loop (default: uvloop when installed)")
    p.add_argument("--poll", type=float, default=2.0, metavar="SECONDS",
                   help="how often to check the store for a new assignment (default 2; 0: never)")
    p.set_defaults(func=run)


def _uses_kerberos(policy) -> bool:
    return policy is not None and any(a.kind is AuthKind.KERBEROS for r in policy.rules for a in r.authentication)


def run(args: argparse.Namespace) -> int:
    store = PolicyStore(args.store)
    try:
        if args.policy:
            policy, warnings = store.load(args.policy)
        else:
            name = store.assigned_name()
            policy, warnings = store.load(name) if name else (None, [])
    except PolicyError as exc:
        print(f"policyagent run: {exc}", file=sys.stderr)
        return 1
    weak = [w for w in warnings if w.code == "weak-algorithm"]
    for w in warnings:
        if w.code != "weak-algorithm":
            print(f"policyagent run: {w}", file=sys.stderr)
    if weak:
        print(f"policyagent run: {len(weak)} weak-algorithm warning(s) in '{policy.name}' (offered for old peers; "
              f"'policyagent policy validate' lists them)", file=sys.stderr)
    if min(args.ike_port, args.natt_port) < 1024 and os.geteuid() != 0:
        print(f"policyagent run: UDP ports {args.ike_port}/{args.natt_port} need root; "
              "use e.g. --ike-port 15000 --natt-port 15001 (the same on every host)", file=sys.stderr)
        return 1
    psk = args.kerberos_psk.encode() if args.kerberos_psk else None
    if bool(args.kerberos_keytab) != bool(args.kerberos_principal):
        print("policyagent run: --kerberos-keytab and --kerberos-principal go together", file=sys.stderr)
        return 1
    peers = {}
    for item in args.kerberos_peer:
        address, eq, principal = item.partition("=")
        if not eq or not address or "/" not in principal:
            print(f"policyagent run: --kerberos-peer {item!r}: give ADDRESS=host/<fqdn>@REALM", file=sys.stderr)
            return 1
        peers[address.strip()] = principal.strip()
    if args.kerberos_principal and "/" not in args.kerberos_principal:
        print(f"policyagent run: --kerberos-principal {args.kerberos_principal!r}: give host/<fqdn>@REALM",
              file=sys.stderr)
        return 1
    if args.kerberos_keytab:
        if not os.access(args.kerberos_keytab, os.R_OK):
            print(f"policyagent run: warning: keytab {args.kerberos_keytab} is not readable; Kerberos "
                  "negotiations will fail (audit 545)", file=sys.stderr)
        if _uses_kerberos(policy):
            print(f"policyagent run: Kerberos authentication as {args.kerberos_principal}", file=sys.stderr)
    elif _uses_kerberos(policy):
        if psk is not None:
            print("policyagent run: no Kerberos KDC: a pre-shared key stands in for Kerberos authentication",
                  file=sys.stderr)
        else:
            print("policyagent run: warning: the policy authenticates with Kerberos and no Kerberos credentials "
                  "are given; its rules cannot negotiate (give --kerberos-keytab FILE --kerberos-principal "
                  "host/<fqdn>@REALM, or without a KDC --kerberos-psk KEY on both hosts)", file=sys.stderr)
    root = store.root
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    options = {
        "config": AgentConfig(ike_port=args.ike_port, natt_port=args.natt_port, force_encapsulation=True,
                              kerberos_psk=psk, kerberos_keytab=args.kerberos_keytab,
                              kerberos_principal=args.kerberos_principal, kerberos_peers=peers,
                              cert_store=args.certs),
        "audit": Path(args.audit) if args.audit else root / "audit.jsonl",
        "trace": Path(args.trace_file) if args.trace_file else (root / "oakley.log" if args.trace else None),
        "control": Path(args.control) if args.control else root / SOCKET_NAME,
    }
    uvloop = None
    if args.loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if args.loop == "uvloop":
                print("policyagent run: uvloop is not installed", file=sys.stderr)
                return 1
    loop_name = "uvloop" if uvloop is not None else "asyncio"
    main = _serve(args, store, policy, options, loop_name)
    try:
        if uvloop is not None:
            return uvloop.run(main)
        return asyncio.run(main)
    except KeyboardInterrupt:
        return 0
    except (OSError, ControlError) as exc:
        print(f"policyagent run: {exc}", file=sys.stderr)
        return 1


def _safe(fn):
    def call() -> None:
        try:
            fn()
        except PolicyError as exc:
            print(f"policyagent: cannot reload the policy: {exc}", file=sys.stderr, flush=True)
    return call


async def _serve(args, store: PolicyStore, policy, options, loop_name: str) -> int:
    loop = asyncio.get_running_loop()
    service = await start_agent(policy=policy, address=args.address, config=options["config"],
                                audit_path=options["audit"], trace_path=options["trace"],
                                trace_secrets=args.trace_secrets)

    def reload() -> str | None:
        name = args.policy or store.assigned_name()
        new = store.get(name) if name else None
        service.assign_policy(new)
        print(f"policyagent: policy '{new.name if new else 'none'}' assigned", flush=True)
        return new.name if new else None

    def fingerprint() -> tuple:
        name = args.policy or store.assigned_name()
        path = store.find(name) if name else None
        stamp = []
        for p in (store.state_path, path):
            try:
                stamp.append((str(p), p.stat().st_mtime_ns) if p is not None else None)
            except OSError:
                stamp.append(None)
        return (name, *stamp)

    async def watch() -> None:
        seen = fingerprint()
        while args.poll > 0:
            await asyncio.sleep(args.poll)
            try:
                now = fingerprint()
                if now != seen:
                    seen = now
                    reload()
            except PolicyError as exc:
                print(f"policyagent: store changed but cannot be used: {exc}", file=sys.stderr, flush=True)

    info = {"audit_log": str(options["audit"]), "trace": str(options["trace"]) if options["trace"] else "off",
            "control_socket": str(options["control"]), "event_loop": loop_name, "pid": os.getpid()}
    control = ControlServer(service, options["control"], reload=reload, info=info)
    try:
        await control.start()
    except BaseException:
        service.close()
        raise
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _safe(reload))
    name = policy.name if policy else "none"
    kind = " (built-in)" if policy is not None and builtin.is_builtin(policy.name) else ""
    print(f"policyagent: running on {args.address} (IKE {args.ike_port}, NAT-T {args.natt_port}), "
          f"policy '{name}'{kind}, {loop_name} loop, control socket {options['control']}", flush=True)
    watcher = asyncio.ensure_future(watch())
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        control.close()
        service.close()
    print("policyagent: stopped", flush=True)
    return 0
