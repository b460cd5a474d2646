"""Test helpers for the agent: policies the seed uses, and an in-memory network of agents with
real IKE endpoints, moved by a fake clock (``Network.run``/``advance``) with every datagram
recorded for assertions about the wire."""

from __future__ import annotations

from dataclasses import replace

from policyagent import builtin
from policyagent.agent import AgentConfig, PolicyAgent
from policyagent.model import (ActionKind, Address, AuthMethod, Filter, FilterAction, FilterList,
                               Policy, Rule, SecurityMethod)

IKE_PORT, NATT_PORT = 15000, 15001
PSK = "ABC123"


# --- policies --------------------------------------------------------------------------------------


def partner_policy(peer: str, *, key: str = PSK, method: SecurityMethod = builtin.MEDIUM,
                   falls_back: bool = False, accepts_unsecured: bool = False) -> Policy:
    """The seed's custom "Partner" policy: me <-> partner mirrored, Negotiate Security with one
    method (Medium = AH by default), pre-shared key ABC123, no default response rule."""
    fl = FilterList(name="Partner Filter", filters=(Filter(source=Address.me(), destination=Address.host(peer)),))
    fa = FilterAction(name="Partner Filter Action", kind=ActionKind.NEGOTIATE, security_methods=(method,),
                      falls_back_to_clear=falls_back, accepts_unsecured=accepts_unsecured)
    rule = Rule(name="Partner", filter_list=fl.name, filter_action=fa.name,
                authentication=(AuthMethod.preshared_key(key),))
    return Policy(name="Partner", key_exchange=builtin.DEFAULT_KEY_EXCHANGE, rules=(rule,),
                  filter_lists=(fl,), filter_actions=(fa,))


def with_psk(policy: Policy, key: str = PSK) -> Policy:
    """A built-in policy with pre-shared key authentication instead of Kerberos."""
    rules = tuple(replace(r, authentication=(AuthMethod.preshared_key(key),)) for r in policy.rules)
    return replace(policy, rules=rules)


GCM = SecurityMethod(esp_cipher="aes-gcm", esp_key_bits=128, lifetime_s=3600, lifetime_kb=100_000)


# --- an in-memory network of agents ------------------------------------------------------------------


class Network:
    """Agents by address; ``run`` moves datagrams (to the agent owning the destination address,
    on the destination port) and fires due timers until nothing is left to do at ``clock.now``.
    ``wire`` records every datagram as (src, dst, payload); ``down`` addresses swallow traffic."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.agents: dict[str, PolicyAgent] = {}
        self.wire: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []
        self.down: set[str] = set()
        self.tamper = None  # optional function(src, dst, payload) -> payload | None

    def add(self, agent: PolicyAgent) -> PolicyAgent:
        for a in agent.local_addresses:
            self.agents[a] = agent
        return agent

    def run(self, *, rounds: int = 200) -> None:
        now = self.clock.now
        for _ in range(rounds):
            moved = False
            for agent in list(dict.fromkeys(self.agents.values())):
                t = agent.get_timer()
                if t is not None and t <= now:
                    agent.handle_timer(now)
                for payload, dst, local_port in agent.datagrams_to_send(now):
                    src = (agent.address, local_port)
                    self.wire.append((src, dst, payload))
                    if self.tamper is not None:
                        payload = self.tamper(src, dst, payload)
                        if payload is None:
                            continue
                    target = self.agents.get(dst[0])
                    if target is None or dst[0] in self.down:
                        continue
                    target.receive_datagram(payload, src, dst[1], now)
                    moved = True
            if not moved and not any((a.get_timer() or float("inf")) <= now for a in self.agents.values()):
                return
        raise AssertionError("the network did not settle")

    def advance(self, seconds: float, *, step: float | None = None) -> None:
        """Move the clock forward, firing timers on the way (at each timer, or every ``step``)."""
        end = self.clock.now + seconds
        while True:
            timers = [t for a in self.agents.values() if (t := a.get_timer()) is not None]
            nxt = min(timers) if timers else end
            if step is not None:
                nxt = min(nxt, self.clock.now + step)
            if nxt >= end:
                break
            self.clock.now = max(self.clock.now, nxt)
            self.run()
        self.clock.now = end
        self.run()


def make_agent(address: str, policy: Policy | None, clock, **config) -> PolicyAgent:
    """An embedded-mode agent (ESP in UDP always, the real IkeEndpoint) on ``address`` with the
    test ports; Kerberos rules use a stand-in pre-shared key (no KDC in unit tests)."""
    cfg = AgentConfig(ike_port=IKE_PORT, natt_port=NATT_PORT, force_encapsulation=True,
                      kerberos_psk=b"kerberos-substitute", **config)
    return PolicyAgent(policy=policy, local_addresses=[address], config=cfg, now=clock.now)


def drain(agent: PolicyAgent) -> list:
    out = []
    while (d := agent.next_delivery()) is not None:
        out.append(d)
    return out


def notices(agent: PolicyAgent) -> list:
    out = []
    while (n := agent.next_notification()) is not None:
        out.append(n)
    return out


def pair_of(clock, policy_1: Policy | None, policy_2: Policy | None, **config
            ) -> tuple[Network, PolicyAgent, PolicyAgent]:
    """HQ-RES-WRK-01 (127.0.0.1) and HQ-RES-WRK-02 (127.0.0.2) on one in-memory network."""
    net = Network(clock)
    a = net.add(make_agent("127.0.0.1", policy_1, clock, **config))
    b = net.add(make_agent("127.0.0.2", policy_2, clock, **config))
    return net, a, b


def esp_payloads(net: Network) -> list[bytes]:
    """Data-path datagrams on the wire (NAT-T port, not IKE, not clear IP)."""
    from policyagent.datapath import CARRIER_ESP, carrier_kind

    return [p for src, dst, p in net.wire if dst[1] == NATT_PORT and carrier_kind(p) == CARRIER_ESP]


def clear_packets(net: Network) -> list[bytes]:
    from policyagent.datapath import CARRIER_IP, carrier_kind

    return [p for src, dst, p in net.wire if dst[1] == NATT_PORT and carrier_kind(p) == CARRIER_IP]


def ike_datagrams(net: Network) -> list:
    from policyagent.datapath import CARRIER_IKE, carrier_kind

    return [(s, d, p) for s, d, p in net.wire if d[1] == IKE_PORT or carrier_kind(p) == CARRIER_IKE]
