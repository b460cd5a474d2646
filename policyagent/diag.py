"""``policyagent diag``: what Windows' ``netdiag /test:ipsec /v`` showed, for a running service.

Owns the diagnostic report: the assigned policy and its rules (filter list, action,
authentication, tunnel), the main-mode (ISAKMP) SAs the IKE endpoint holds (the seed: "The IKE
main mode security association is not visible in the IPSec monitor tool. However, it may be
displayed ... using the netdiag.exe /test:ipsec /v command line"), pending negotiations and
blocked flows, and the counters of the agent and of the endpoint; as a JSON-ready dict and as
text. Reads, never changes.
"""

from __future__ import annotations

from typing import Any

from policyagent.model import Policy


def _policy(policy: Policy | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    rules = []
    for r in policy.rules:
        action = policy.filter_action_named(r.filter_action)
        rules.append({
            "name": r.name,
            "filter_list": r.filter_list or "<default response>",
            "action": action.kind.value if action else r.filter_action,
            "action_name": r.filter_action,
            "authentication": [str(a) for a in r.authentication],
            "tunnel_endpoint": str(r.tunnel_endpoint) if r.tunnel_endpoint else None,
            "active": r.is_active,
        })
    return {"name": policy.name, "rules": rules,
            "main_mode": [str(m) for m in policy.key_exchange.methods],
            "master_key_lifetime_min": policy.key_exchange.lifetime_min}


def _ike_sa(info: Any, now: float) -> dict[str, Any]:
    return {
        "peer": info.peer[0], "port": info.peer[1], "state": info.state,
        "role": "initiator" if info.is_initiator else "responder",
        "cipher": info.cipher, "key_bits": info.key_bits, "hash": info.hash,
        "dh_group": info.dh_group, "auth": info.auth, "nat_t": info.nat_detected,
        "age_s": round(now - info.established_at, 1) if info.established_at else None,
        "expires_in_s": round(info.expires_at - now, 1) if info.expires_at else None,
        "expired": getattr(info, "expired", False),
        "quick_modes_in_progress": info.quick_modes_in_progress,
    }


def report(service: Any, *, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The diagnostic report of a running ``AgentService``."""
    agent = service.agent
    now = service.clock()
    ike = agent.ike
    sas = ike.ike_sas() if hasattr(ike, "ike_sas") else []
    stats = ike.stats.as_dict() if hasattr(ike.stats, "as_dict") else dict(ike.stats)
    return {
        "host": agent.address,
        "ike_port": agent.config.ike_port,
        "natt_port": agent.config.natt_port,
        "udp_encapsulation_forced": agent.config.force_encapsulation,
        "kerberos": ("pre-shared key substitute" if agent.config.kerberos_psk is not None
                     else "gssapi" if agent.config.has_kerberos else "unavailable"),
        "policy": _policy(agent.policy),
        "ike_sas": [_ike_sa(i, now) if not isinstance(i, dict) else i for i in sas],
        "ipsec_sa_pairs": len(agent.sad),
        "pending_negotiations": agent.pending_negotiations,
        "blocked_flows": [{"peer": key[0], "until_s": round(until - now, 1)}
                          for key, until in agent.blocked_flows(now)],
        "agent_stats": agent.stats.as_dict(),
        "ike_stats": stats,
        "service": dict(info or {}),
    }


def render(rep: dict[str, Any]) -> str:
    """The report as text, netdiag-style."""
    lines = [f"IP Security test . . . . . . . . . : {'Passed' if rep['policy'] else 'Skipped'}",
             f"    Host {rep['host']}, IKE port {rep['ike_port']}, NAT-T port {rep['natt_port']}"
             + (" (UDP encapsulation forced)" if rep["udp_encapsulation_forced"] else ""),
             f"    Kerberos: {rep['kerberos']}"]
    policy = rep["policy"]
    if policy is None:
        lines.append("    IPSec policy: none assigned")
    else:
        lines.append(f"    Local IPSec Policy Active: '{policy['name']}'")
        lines.append(f"    Main mode offers: {', '.join(policy['main_mode'])}; master key "
                     f"{policy['master_key_lifetime_min']} min")
        for r in policy["rules"]:
            tunnel = f", tunnel to {r['tunnel_endpoint']}" if r["tunnel_endpoint"] else ""
            state = "" if r["active"] else " (inactive)"
            lines.append(f"      rule {r['name']!r}: {r['filter_list']} -> {r['action_name']} "
                         f"[{', '.join(r['authentication']) or '-'}]{tunnel}{state}")
    lines.append("")
    lines.append(f"    Main mode (ISAKMP) SAs: {len(rep['ike_sas'])}")
    for sa in rep["ike_sas"]:
        life = f", expires in {sa['expires_in_s']} s" if sa.get("expires_in_s") is not None else ""
        lines.append(f"      {sa['peer']}: {sa['state']} ({sa['role']}) {sa.get('cipher')}"
                     f"{'-' + str(sa['key_bits']) if sa.get('key_bits') else ''}/{sa.get('hash')}/"
                     f"group {sa.get('dh_group')} auth {sa.get('auth')}"
                     f"{' NAT-T' if sa.get('nat_t') else ''}{life}")
    lines.append(f"    Quick mode SA pairs: {rep['ipsec_sa_pairs']}; pending negotiations: "
                 f"{rep['pending_negotiations']}; blocked flows: {len(rep['blocked_flows'])}")
    ike = rep["ike_stats"]
    lines.append(f"    IKE datagrams received {ike.get('received')}, sent {ike.get('sent')}, "
                 f"retransmits {ike.get('retransmits')}, dropped {ike.get('dropped')}")
    for key, value in sorted(rep["service"].items()):
        lines.append(f"    {key}: {value}")
    return "\n".join(lines)
