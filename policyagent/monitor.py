"""The IP Security Monitor (Windows 2000's ``ipsecmon``): what the agent is doing, as data and text.

Owns the snapshot of one agent at ``now`` (a JSON-ready dict) and its rendering as the monitor
table the seed's administrator watches (refreshed every second by ``policyagent monitor``):

- **Security associations**: one row per quick-mode pair (the seed: "The IPSec monitor shows only
  one IPSec security association, the outbound one", so the outbound SPI leads; the inbound one
  is shown too): policy, rule, peer, filter, security (algorithms, or ``<none>`` for a soft SA),
  SPIs, mode and encapsulation, lifetime left in seconds and kilobytes, bytes and packets.
- **Statistics**: authenticated and confidential bytes sent/received, packets, drops by reason
  (replay, integrity, no SA, unsecured, ...), main and quick mode counts, soft SAs, negotiation
  failures, rekeys, deletions, pending negotiations.

Pure: reads the agent, never changes it.
"""

from __future__ import annotations

from typing import Any

from policyagent import records
from policyagent.sad import SaPair


def _selector(ts) -> str:
    net = ts.network
    text = str(net.network_address) if net.num_addresses == 1 else str(net)
    if ts.protocol:
        text += f" proto {ts.protocol}"
    if ts.port:
        text += f" port {ts.port}"
    return text


def _row(pair: SaPair, now: float) -> dict[str, Any]:
    left_s = None if pair.expires_at is None else max(0, round(pair.expires_at - now))
    left_kb = None if not pair.lifetime_kb else max(0, pair.lifetime_kb - pair.kb_used())
    return {
        "id": pair.id,
        "policy": pair.policy_name,
        "rule": pair.rule_name,
        "peer": pair.peer,
        "filter": f"{_selector(pair.local_ts)} <-> {_selector(pair.remote_ts)}",
        "security": records.security_label(pair),
        "protocols": list(pair.protocols),
        "spi_out": list(pair.spis_out),
        "spi_in": list(pair.spis_in),
        "mode": pair.mode,
        "encapsulation": pair.encapsulation,
        "is_soft": pair.is_soft,
        "is_initiator": pair.is_initiator,
        "is_dynamic": pair.is_dynamic,
        "state": pair.state.value,
        "lifetime_left_s": left_s,
        "lifetime_left_kb": left_kb,
        "bytes_out": pair.bytes_out,
        "bytes_in": pair.bytes_in,
        "packets_out": pair.packets_out,
        "packets_in": pair.packets_in,
        "age_s": round(now - pair.established_at, 1),
    }


def snapshot(agent: Any, now: float) -> dict[str, Any]:
    """The monitor's data for ``agent`` at ``now`` (JSON-ready)."""
    pairs = sorted(agent.sad, key=lambda p: p.id)
    stats = agent.stats.as_dict()
    stats["active_sas"] = sum(1 for p in pairs if not p.is_soft)
    stats["active_soft_sas"] = sum(1 for p in pairs if p.is_soft)
    stats["pending_negotiations"] = agent.pending_negotiations
    stats["blocked_flows"] = len(agent.blocked_flows(now))
    return {
        "host": agent.address,
        "policy": agent.policy.name if agent.policy is not None else None,
        "uptime_s": round(now - agent.started_at, 1),
        "security_associations": [_row(p, now) for p in pairs],
        "statistics": stats,
    }


def _spi(values: list[int]) -> str:
    return ",".join(f"{v:08x}" for v in values) or "-"


def render(snap: dict[str, Any]) -> str:
    """The monitor as text: the SA table, then the statistics."""
    lines = [f"IP Security Monitor - {snap['host']}   policy: {snap['policy'] or '(none assigned)'}"
             f"   up {snap['uptime_s']:.0f} s", ""]
    header = (f"{'Policy':<22} {'Peer':<15} {'Filter':<34} {'Security':<26} "
              f"{'SPI out':<9} {'SPI in':<9} {'Life s':>7} {'Life KB':>8}")
    lines.append(header)
    lines.append("-" * len(header))
    rows = snap["security_associations"]
    for r in rows:
        life_s = "-" if r["lifetime_left_s"] is None else str(r["lifetime_left_s"])
        life_kb = "-" if r["lifetime_left_kb"] is None else str(r["lifetime_left_kb"])
        lines.append(f"{(r['policy'] or '-')[:22]:<22} {r['peer']:<15} {r['filter'][:34]:<34} "
                     f"{r['security'][:26]:<26} {_spi(r['spi_out'])[:9]:<9} {_spi(r['spi_in'])[:9]:<9} "
                     f"{life_s:>7} {life_kb:>8}")
    if not rows:
        lines.append("(no security associations)")
    s = snap["statistics"]
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(s["dropped"].items())) or "none"
    lines += [
        "",
        "IPSEC Statistics                          IKE Statistics",
        f"  Active Associations      {s['active_sas']:>10}      Main Modes           {s['main_modes']:>8}",
        f"  Confidential Bytes Sent  {s['confidential_bytes_sent']:>10}      Quick Modes          {s['quick_modes']:>8}",
        f"  Confidential Bytes Recv  {s['confidential_bytes_received']:>10}      Soft Associations    {s['soft_sas']:>8}",
        f"  Authenticated Bytes Sent {s['authenticated_bytes_sent']:>10}      Negotiation Failures {s['negotiation_failures']:>8}",
        f"  Authenticated Bytes Recv {s['authenticated_bytes_received']:>10}      Pending Negotiations {s['pending_negotiations']:>8}",
        f"  Packets Sent (secured)   {s['packets_out_protected']:>10}      Rekeys               {s['rekeys']:>8}",
        f"  Packets Recv (secured)   {s['packets_in_protected']:>10}      SAs Deleted          {s['sa_deleted']:>8}",
        f"  Packets Sent (clear)     {s['packets_out_clear']:>10}      Blocked Flows        {s['blocked_flows']:>8}",
        f"  Packets Recv (clear)     {s['packets_in_clear']:>10}",
        f"  Dropped Packets          {s['dropped_total']:>10}      ({dropped})",
    ]
    return "\n".join(lines)
