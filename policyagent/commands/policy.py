"""``policyagent policy ...``: list, show, create, add-rule, assign, unassign, delete, import,
export and validate IPsec policies in the store, with ipsecpol-style one-line specs.

Every sub-command takes ``--store DIR`` (default ``$POLICYAGENT_HOME`` or
``~/.local/share/policyagent``). Errors go to stderr with exit status 1 (2 for usage errors
argparse catches); warnings go to stderr and do not change the status. Pre-shared keys are never
printed unless ``show --show-keys`` asks for them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

from policyagent import builtin, filterspec
from policyagent.errors import Issue, PolicyError, UsageError, ValidationError
from policyagent.model import (
    ActionKind,
    AuthMethod,
    ConnectionType,
    FilterAction,
    FilterList,
    Policy,
    Rule,
    protocol_name,
)
from policyagent.store import PolicyStore, field_lines, loads_policy, policy_to_dict, read_policy_file
from policyagent.validate import check_policy, locate


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("policy", help="list, show, create, edit, assign and check IPsec policies")
    sub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="DIR", help="policy store directory (default $POLICYAGENT_HOME or ~/.local/share/policyagent)")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, parents=[common], help=help, description=help)
        q.set_defaults(func=lambda args: _run(func, args))
        return q

    add("list", cmd_list, "list the built-in and stored policies")
    q = add("show", cmd_show, "show one policy")
    q.add_argument("name")
    q.add_argument("--json", action="store_true", help="print the policy file's fields as JSON")
    q.add_argument("--show-keys", action="store_true", help="print pre-shared keys instead of hiding them")

    q = add("create", cmd_create, "create a policy (no rules yet, unless copied with --from)")
    q.add_argument("name")
    q.add_argument("--description")
    q.add_argument("--from", dest="source", metavar="POLICY", help="start from a copy of this policy (e.g. a built-in one)")
    q.add_argument("--no-default-response", action="store_true", help="do not activate the default response rule")
    q.add_argument("-1s", dest="main_mode", metavar="METHODS", help='main-mode offers, e.g. "AES256-SHA256-14 3DES-SHA-2"')
    q.add_argument("-1k", dest="rekey", metavar="REKEY", help="master-key lifetime: 480M, 28800S, 10Q (quick modes), joined by /")
    q.add_argument("-1p", dest="master_pfs", action="store_true", help="master-key perfect forward secrecy")
    q.add_argument("--polling", type=int, metavar="MIN", help="policy polling interval in minutes (default 180)")
    q.add_argument("--no-exemptions", action="store_true", help="turn off the default exemptions (Kerberos, RSVP, broadcast, multicast; IKE stays exempt)")

    q = add("add-rule", cmd_add_rule, "add a rule: filter list + filter action + authentication (+ tunnel)")
    q.add_argument("policy")
    q.add_argument("-r", "--rule", metavar="NAME", help="rule name (default: the filter list's name)")
    q.add_argument("-f", dest="filters", action="append", metavar="FILTERSPECS", help="ipsecpol filter specs, e.g. 0+192.0.2.2 or me=10.0.0.0/8:80:TCP ('+' mirrors)")
    q.add_argument("--filter-list", metavar="NAME", help="name for the new list of -f filters, or an existing/built-in list to reuse")
    q.add_argument("-n", dest="negotiation", metavar="METHODS", help='negotiation policy: "ESP[3DES,SHA1] AH[SHA1]", MEDIUM, HIGH, PASS, BLOCK, INPASS')
    q.add_argument("--filter-action", metavar="NAME", help="name for the new -n action, or an existing/built-in action to reuse")
    q.add_argument("-a", dest="auth", metavar="METHODS", help='authentication: KERBEROS, CERT:"CA name", PRESHARE:"key" (default KERBEROS)')
    q.add_argument("-t", dest="tunnel", metavar="ADDRESS", help="tunnel endpoint (omit for transport mode)")
    q.add_argument("--soft", action="store_true", help="allow unsecured communication with non-IPsec-aware computers (fall back to clear)")
    q.add_argument("--pfs", action="store_true", help="session-key perfect forward secrecy")
    conn = q.add_mutually_exclusive_group()
    conn.add_argument("--lan", action="store_true", help="LAN connections only")
    conn.add_argument("--dialup", action="store_true", help="remote-access connections only")
    q.add_argument("--inactive", action="store_true", help="add the rule deactivated")

    q = add("assign", cmd_assign, "assign a policy (at most one is assigned)")
    q.add_argument("name")
    add("unassign", cmd_unassign, "unassign the assigned policy")
    q = add("delete", cmd_delete, "delete a stored policy")
    q.add_argument("name")
    q = add("import", cmd_import, "validate a policy file and add it to the store")
    q.add_argument("file")
    q.add_argument("--name", help="store it under this name instead of the file's")
    q.add_argument("--replace", action="store_true", help="replace a stored policy of the same name")
    q = add("export", cmd_export, "write one policy (stored or built-in) to a file")
    q.add_argument("name")
    q.add_argument("file")
    q = add("validate", cmd_validate, "check a stored policy or a policy file; list every error and warning")
    q.add_argument("name", metavar="NAME_OR_FILE")


def _run(func, args: argparse.Namespace) -> int:
    store = PolicyStore(args.store)
    try:
        return int(func(store, args) or 0)
    except ValidationError as exc:
        for issue in exc.issues:
            print(f"policyagent policy: {issue}", file=sys.stderr)
        print(f"policyagent policy: refused ({len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''}); nothing was changed", file=sys.stderr)
        return 1
    except PolicyError as exc:
        print(f"policyagent policy: error: {exc}", file=sys.stderr)
        return 1


def _warn(warnings: list[Issue] | tuple[Issue, ...], name: str) -> None:
    weak = [w for w in warnings if w.code == "weak-algorithm"]
    for w in warnings:
        if w.code != "weak-algorithm":
            print(f"policyagent policy: {w}", file=sys.stderr)
    if weak:
        print(f"policyagent policy: {len(weak)} weak-algorithm warning(s) in {name!r} (DES, MD5 or DH group 1 offered for old peers); "
              f"'policyagent policy validate \"{name}\"' lists them", file=sys.stderr)


# --- list / show ---------------------------------------------------------------------------------


def cmd_list(store: PolicyStore, args) -> int:
    assigned = store.assigned_name()
    print(f"{'ASSIGNED':<9} {'KIND':<8} {'RULES':>5}  NAME")
    for name in store.names():
        b = builtin.builtin_policy(name)
        try:
            policy = b or store.get(name)
            rules = str(sum(1 for r in policy.rules if not r.is_default_response))
        except PolicyError:
            rules = "?"
        print(f"{'yes' if name == assigned else 'no':<9} {'built-in' if b else 'stored':<8} {rules:>5}  {name}")
    return 0


def _hide_keys(d: dict) -> dict:
    for rule in d.get("rules", []):
        for a in rule.get("authentication", []):
            if "key" in a:
                a["key"] = "<hidden>"
    return d


def cmd_show(store: PolicyStore, args) -> int:
    policy, _ = store.load(args.name)
    assigned = store.assigned_name() == policy.name
    if args.json:
        d = policy_to_dict(policy)
        d["builtin"] = builtin.is_builtin(policy.name)
        d["assigned"] = assigned
        print(json.dumps(d if args.show_keys else _hide_keys(d), indent=2))
        return 0
    print(describe(policy, assigned=assigned, show_keys=args.show_keys))
    return 0


def describe(policy: Policy, *, assigned: bool = False, show_keys: bool = False) -> str:
    """The human-readable view ``policy show`` prints."""
    kx = policy.key_exchange
    out = [f"Policy: {policy.name}" + ("  [built-in]" if builtin.is_builtin(policy.name) else "") + ("  [assigned]" if assigned else "")]
    if policy.description:
        out.append(f"  {policy.description}")
    out.append(f"  polling interval {policy.polling_interval_min} min; default exemptions {'on' if policy.has_default_exemptions else 'off'}")
    sessions = f"{kx.lifetime_sessions} quick modes" if kx.lifetime_sessions else "no quick-mode limit"
    out.append(f"Key exchange: master key {kx.lifetime_min} min, {sessions}, master-key PFS {'on' if kx.has_master_key_pfs else 'off'}")
    out += [f"  {i}. {m}" for i, m in enumerate(kx.methods, 1)]
    plain = [r for r in policy.rules if not r.is_default_response]
    out.append("Rules:" if plain else "Rules: none")
    for i, rule in enumerate(plain, 1):
        mode = f"tunnel to {rule.tunnel_endpoint}" if rule.tunnel_endpoint else "transport"
        state = "active" if rule.is_active else "inactive"
        out.append(f"  [{i}] {rule.name}  ({mode}, {rule.connection_type.value} connections, {state})")
        fl = policy.filter_list_named(rule.filter_list)
        out.append(f"      filter list: {rule.filter_list}" + ("" if fl else "  (missing)"))
        for f in fl.filters if fl else ():
            arrow = "<->" if f.is_mirrored else "->"
            ports = f"{f.source_port or 'any'} {arrow} {f.destination_port or 'any'}" if f.protocol in (6, 17) else ""
            out.append(f"        {f.source} {arrow} {f.destination}  protocol {protocol_name(f.protocol)} {ports}".rstrip() + f"   [{filterspec.format_filter_spec(f)}]")
        out += _describe_action(policy, rule)
        out.append("      authentication: " + _auth_text(rule.authentication, show_keys))
    d = policy.default_response_rule
    if d is None:
        out.append("Default response rule: off")
    else:
        out.append("Default response rule: on")
        out += _describe_action(policy, d)
        out.append("      authentication: " + _auth_text(d.authentication, show_keys))
    return "\n".join(out)


def _describe_action(policy: Policy, rule: Rule) -> list[str]:
    fa = policy.filter_action_named(rule.filter_action)
    if fa is None:
        return [f"      filter action: {rule.filter_action}  (missing)"]
    if fa.kind is not ActionKind.NEGOTIATE:
        return [f"      filter action: {fa.name}: {fa.kind.value}"]
    opts = [
        "accept unsecured inbound" if fa.accepts_unsecured else "no unsecured inbound",
        "fall back to clear" if fa.falls_back_to_clear else "no fall back",
        "session-key PFS" if fa.has_session_key_pfs else "no session-key PFS",
    ]
    lines = [f"      filter action: {fa.name}: negotiate security; {', '.join(opts)}"]
    lines += [f"        {i}. {m}" for i, m in enumerate(fa.security_methods, 1)]
    return lines


def _auth_text(methods: tuple[AuthMethod, ...], show_keys: bool) -> str:
    if not methods:
        return "none"
    return ", ".join(f"pre-shared key {a.key!r}" if show_keys and a.key is not None else str(a) for a in methods)


# --- create / add-rule ---------------------------------------------------------------------------


def cmd_create(store: PolicyStore, args) -> int:
    if store.find(args.name) is not None or builtin.is_builtin(args.name):
        raise UsageError(f"a policy called {args.name!r} already exists")
    if args.source:
        policy = replace(store.get(args.source), name=args.name)
    else:
        policy = Policy(name=args.name, key_exchange=builtin.DEFAULT_KEY_EXCHANGE)
        if not args.no_default_response:
            policy = policy.with_filter_action(builtin.DEFAULT_RESPONSE).with_rule(builtin.default_response_rule())
    if args.no_default_response:
        keep = tuple(r for r in policy.rules if not r.is_default_response)
        policy = replace(policy, rules=keep)
    if args.description is not None:
        policy = replace(policy, description=args.description)
    kx = policy.key_exchange
    if args.main_mode:
        kx = replace(kx, methods=filterspec.parse_main_mode(args.main_mode))
    if args.rekey:
        minutes, sessions = filterspec.parse_main_mode_rekey(args.rekey)
        kx = replace(kx, lifetime_min=minutes or kx.lifetime_min, lifetime_sessions=sessions if sessions is not None else kx.lifetime_sessions)
    if args.master_pfs:
        kx = replace(kx, has_master_key_pfs=True, lifetime_sessions=1)
    policy = replace(policy, key_exchange=kx)
    if args.polling is not None:
        policy = replace(policy, polling_interval_min=args.polling)
    if args.no_exemptions:
        policy = replace(policy, has_default_exemptions=False)
    _warn(store.save(policy, replace_existing=False), policy.name)
    print(f"created policy {policy.name!r}" + (" without the default response rule" if policy.default_response_rule is None else ""))
    return 0


def cmd_add_rule(store: PolicyStore, args) -> int:
    if builtin.is_builtin(args.policy):
        raise UsageError(f"{args.policy!r} is a built-in policy: copy it first (policyagent policy create NEW --from {args.policy!r})")
    policy = store.get(args.policy)
    # The filter list: new from -f, or an existing one (the policy's own, else a built-in list).
    if args.filters:
        name = args.filter_list or args.rule
        if not name:
            raise UsageError("name the new filter list with --filter-list (or the rule with -r)")
        if policy.filter_list_named(name) is not None:
            raise UsageError(f"filter list {name!r} already exists in {policy.name!r}: omit -f to reuse it")
        filters = tuple(f for text in args.filters for f in filterspec.parse_filter_specs(text))
        fl = FilterList(name=name, filters=filters)
    elif args.filter_list:
        fl = policy.filter_list_named(args.filter_list) or builtin.BUILTIN_FILTER_LISTS.get(args.filter_list)
        if fl is None:
            raise UsageError(f"no filter list called {args.filter_list!r} (give filters with -f to create it)")
    else:
        raise UsageError("give filters with -f FILTERSPECS, or --filter-list NAME to reuse a list")
    rule_name = args.rule or fl.name
    if policy.rule_named(rule_name) is not None:
        raise UsageError(f"rule {rule_name!r} already exists in {policy.name!r}")
    # The filter action: new from -n, or an existing one (the policy's own, else a built-in action).
    if args.negotiation:
        n = filterspec.parse_negotiation(args.negotiation)
        name = args.filter_action or f"{rule_name} Action"
        if policy.filter_action_named(name) is not None:
            raise UsageError(f"filter action {name!r} already exists in {policy.name!r}: omit -n to reuse it")
        negotiating = n.kind is ActionKind.NEGOTIATE
        fa = FilterAction(
            name=name,
            kind=n.kind,
            security_methods=n.security_methods,
            accepts_unsecured=negotiating and n.accepts_unsecured,
            falls_back_to_clear=negotiating and args.soft,
            has_session_key_pfs=negotiating and (n.has_session_key_pfs or args.pfs),
        )
    elif args.filter_action:
        fa = policy.filter_action_named(args.filter_action) or builtin.BUILTIN_FILTER_ACTIONS.get(args.filter_action)
        if fa is None:
            raise UsageError(f"no filter action called {args.filter_action!r} (give -n METHODS to create it)")
        if args.soft or args.pfs:
            raise UsageError("--soft and --pfs set options of a new action: use them with -n")
    else:
        raise UsageError("give -n NEGOTIATION to create the filter action, or --filter-action NAME to reuse one")
    tunnel = None
    if args.tunnel:
        try:
            tunnel = ip_address(args.tunnel)
        except ValueError:
            raise UsageError(f"tunnel endpoint {args.tunnel!r} is not an address (names are not resolved)") from None
    rule = Rule(
        name=rule_name,
        filter_list=fl.name,
        filter_action=fa.name,
        authentication=filterspec.parse_auth_methods(args.auth) if args.auth else (AuthMethod.kerberos(),),
        tunnel_endpoint=tunnel,
        connection_type=ConnectionType.LAN if args.lan else ConnectionType.REMOTE_ACCESS if args.dialup else ConnectionType.ALL,
        is_active=not args.inactive,
    )
    policy = policy.with_filter_list(fl).with_filter_action(fa).with_rule(rule)
    _warn(store.save(policy), policy.name)
    print(f"added rule {rule.name!r} to {policy.name!r}: {len(fl.filters)} filter(s), action {fa.name!r} ({fa.kind.value})")
    return 0


# --- assign / unassign / delete / import / export / validate -------------------------------------


def cmd_assign(store: PolicyStore, args) -> int:
    before = store.assigned_name()
    policy, warnings = store.assign(args.name)
    _warn(warnings, policy.name)
    print(f"assigned {policy.name!r}" + (f" (was {before!r})" if before and before != policy.name else ""))
    return 0


def cmd_unassign(store: PolicyStore, args) -> int:
    name = store.unassign()
    print(f"unassigned {name!r}" if name else "no policy was assigned")
    return 0


def cmd_delete(store: PolicyStore, args) -> int:
    store.delete(args.name)
    print(f"deleted {args.name!r}")
    return 0


def cmd_import(store: PolicyStore, args) -> int:
    policy, warnings = store.import_file(args.file, name=args.name, replace_existing=args.replace)
    _warn(warnings, policy.name)
    print(f"imported {policy.name!r} from {args.file}")
    return 0


def cmd_export(store: PolicyStore, args) -> int:
    path = store.export(args.name, args.file)
    print(f"exported {args.name!r} to {path}")
    return 0


def cmd_validate(store: PolicyStore, args) -> int:
    path = Path(args.name)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        policy = loads_policy(text, path=str(path))
        issues = locate(check_policy(policy), path=str(path), line_of=field_lines(text))
        try:
            issues += [w for w in read_policy_file(path)[1] if w.code == "key-file-readable"]
        except ValidationError:
            pass
    else:
        b = builtin.builtin_policy(args.name)
        found = store.find(args.name)
        if b is None and found is None:
            raise UsageError(f"no policy or file called {args.name!r}")
        if b is not None:
            policy, issues = b, check_policy(b)
        else:
            text = found.read_text(encoding="utf-8")  # type: ignore[union-attr]
            policy = loads_policy(text, path=str(found))
            issues = locate(check_policy(policy), path=str(found), line_of=field_lines(text))
    for issue in issues:
        print(issue)
    errors = sum(1 for i in issues if i.is_error)
    warnings = len(issues) - errors
    print(f"{policy.name!r}: {errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}" + ("" if errors else ": OK"))
    return 1 if errors else 0
