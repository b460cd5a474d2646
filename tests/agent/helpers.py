"""Test helpers for the agent: an in-memory network of agents, policies the seed uses, and a
fake IKE endpoint that follows the IkeEndpoint contract (for failure cases the real one makes
hard to stage, e.g. a peer that answers and then goes silent)."""

from __future__ import annotations

import hashlib
import json
import struct
from collections import deque
from dataclasses import dataclass, field, replace

from ikeproto.config import Identity, IpsecTransform, Phase2Config, TrafficSelector
from ikeproto.events import (ChildSa, NegotiationFailed, Phase1Deleted, Phase1Established,
                             Phase2Deleted, Phase2Established)
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


# --- the fake IKE endpoint ---------------------------------------------------------------------------

_HDR = struct.Struct("!8s8sBBBBII")


def _message(exchange: int, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    return _HDR.pack(b"FAKEIKE!", b"\0" * 8, 0, 0x10, exchange, 0, 0, 28 + len(payload)) + payload


def _ts(t: TrafficSelector) -> list:
    return [str(t.network), t.protocol, t.port]


def _ts_from(v: list) -> TrafficSelector:
    import ipaddress

    return TrafficSelector(network=ipaddress.ip_network(v[0]), protocol=v[1], port=v[2])


def _transform_key(t: IpsecTransform) -> list:
    return [t.protocol, t.cipher, t.key_bits, t.integrity]


def _keys(seed: bytes, spi: int, n: int) -> bytes:
    out, block = b"", b""
    while len(out) < n:
        block = hashlib.sha256(block + seed + spi.to_bytes(4, "big")).digest()
        out += block
    return out[:n]


def _key_sizes(t: IpsecTransform) -> tuple[int, int]:
    from espcore.transforms import cipher as cipher_named, integrity as integrity_named

    enc = 0
    if t.cipher is not None:
        c = cipher_named(t.cipher)
        bits = t.key_bits or c.key_bits[0]
        enc = c.key_bytes(bits)
    auth = integrity_named(t.integrity).key_bits // 8 if t.integrity else 0
    return enc, auth


@dataclass
class _Phase1:
    state: str
    started_at: float
    established_at: float = 0.0
    lifetime_s: int = 28_800
    pending: list = field(default_factory=list)  # (request_id, phase2)
    encap: bool = False


class FakeIkeEndpoint:
    """A toy IKE: two-message "main mode" that checks the pre-shared key, two-message "quick
    mode" that asks the ConfigProvider and derives keys from exchanged seeds, retransmissions,
    give-up, phase-1 lifetimes, Deletes. Messages look like ISAKMP headers (exchange type at
    byte 18) so that the agent sees main mode (2) and quick mode (32) arrive."""

    RETRANSMITS = (1.0, 2.0, 4.0)  # then give up at the last + 2

    def __init__(self, *, config, local_address, ike_port, natt_port, rng, logger=None, **_):
        self.config, self.local_address = config, local_address
        self.ike_port, self.natt_port, self.rng = ike_port, natt_port, rng
        self.logger = logger
        self._out: list = []
        self._events: deque = deque()
        self._p1: dict[str, _Phase1] = {}
        self._qm: dict[int, dict] = {}  # request id -> pending quick mode (initiator)
        self._children: dict[tuple[str, str, int], int] = {}  # (peer, proto, spi_in) -> spi_out
        self._next_request = 1
        self.stats: dict[str, int] = {"received": 0, "sent": 0, "retransmits": 0}
        self._retx: dict = {}
        self.silent_after_first = False  # answer the first message, then go quiet (tests)

    # contract ---------------------------------------------------------------------------------
    def initiate(self, *, peer, phase2: Phase2Config, now: float) -> int:
        rid = self._next_request
        self._next_request += 1
        ip = peer[0]
        p1 = self._p1.get(ip)
        if p1 is not None and p1.state == "established":
            self._send_qm1(ip, rid, phase2, now)
        else:
            if p1 is None:
                cfg = self.config.phase1_config((ip, self.ike_port))
                p1 = self._p1[ip] = _Phase1(state="mm1-sent", started_at=now,
                                            encap=bool(cfg and cfg.force_encapsulation))
                self._send(ip, 2, {"t": "mm1", "tag": self._tag(ip, "I")}, now, retransmit=("p1", ip))
            p1.pending.append((rid, phase2))
        return rid

    def delete_phase2(self, peer, spi_in, *, protocol="esp", now):
        ip = peer[0]
        spi_out = self._children.pop((ip, protocol, spi_in), None)
        if spi_out is None:
            return
        self._send(ip, 5, {"t": "delete", "protocol": protocol, "spi": spi_out}, now)
        self._events.append(Phase2Deleted(at=now, peer=(ip, self.ike_port), protocol=protocol,
                                          spis=(spi_in,), by_peer=False, reason="deleted"))

    def delete_phase1(self, peer, *, now):
        ip = peer[0]
        p1 = self._p1.pop(ip, None)
        if p1 is None:
            return
        self._send(ip, 5, {"t": "delete1"}, now)
        self._events.append(Phase1Deleted(at=now, peer=(ip, self.ike_port), cookies=(b"", b""),
                                          by_peer=False, reason="deleted"))

    def receive_datagram(self, data, addr, now, *, local_port=None):
        self.stats["received"] += 1
        try:
            body = json.loads(data[28:])
        except ValueError:
            return
        ip = addr[0]
        getattr(self, "_on_" + body["t"].replace("-", "_"))(ip, body, now)

    def handle_timer(self, now):
        for key, entry in list(self._retx.items()):
            if entry["schedule"] and now >= entry["schedule"][0]:
                entry["schedule"].pop(0)
                self.stats["retransmits"] += 1
                self._out.append(entry["datagram"])
            elif not entry["schedule"] and now >= entry["give_up"]:
                del self._retx[key]
                self._give_up(key, now)
        for ip, p1 in list(self._p1.items()):
            if p1.state == "established" and now >= p1.established_at + p1.lifetime_s:
                del self._p1[ip]
                self._events.append(Phase1Deleted(at=now, peer=(ip, self.ike_port), cookies=(b"", b""),
                                                  by_peer=False, reason="expired"))

    def datagrams_to_send(self, now):
        out, self._out = self._out, []
        self.stats["sent"] += len(out)
        return out

    def get_timer(self):
        times = [e["schedule"][0] if e["schedule"] else e["give_up"] for e in self._retx.values()]
        times += [p.established_at + p.lifetime_s for p in self._p1.values() if p.state == "established"]
        return min(times) if times else None

    def next_event(self):
        return self._events.popleft() if self._events else None

    def ike_sas(self):
        return {ip: p.state for ip, p in self._p1.items()}

    # internals --------------------------------------------------------------------------------
    def _tag(self, ip: str, role: str) -> str:
        cfg = self.config.phase1_config((ip, self.ike_port))
        psk = cfg.psk if cfg is not None and cfg.psk is not None else b""
        return hashlib.sha256(psk + role.encode()).hexdigest()

    def _send(self, ip, exchange, body, now, *, retransmit=None):
        encap = self._p1.get(ip) is not None and self._p1[ip].encap and exchange != 2
        port = self.natt_port if encap else self.ike_port
        datagram = (_message(exchange, body), (ip, port), port)
        if self.silent_after_first and body["t"] not in ("mm1", "qm1"):
            return
        self._out.append(datagram)
        if retransmit is not None:
            times, t = [], now
            for delay in self.RETRANSMITS:
                t += delay
                times.append(t)
            self._retx[retransmit] = {"datagram": datagram, "schedule": times, "give_up": t + 2.0}

    def _give_up(self, key, now):
        kind, ident = key
        if kind == "p1":
            p1 = self._p1.pop(ident, None)
            for rid, _ in (p1.pending if p1 else []):
                self._events.append(NegotiationFailed(at=now, peer=(ident, self.ike_port), phase=1,
                                                      request_id=rid, reason="no response", timed_out=True,
                                                      failure_point="peer"))
        else:
            qm = self._qm.pop(ident, None)
            if qm is not None:
                self._events.append(NegotiationFailed(at=now, peer=(qm["ip"], self.ike_port), phase=2,
                                                      request_id=ident, reason="no response", timed_out=True,
                                                      failure_point="peer"))

    def _established(self, ip, now, *, initiator):
        p1 = self._p1.get(ip)
        if p1 is None:
            cfg = self.config.phase1_config((ip, self.ike_port))
            p1 = self._p1[ip] = _Phase1(state="x", started_at=now, encap=bool(cfg and cfg.force_encapsulation))
        if p1.state == "established":
            return
        cfg = self.config.phase1_config((ip, self.ike_port))
        p1.state, p1.established_at = "established", now
        p1.lifetime_s = cfg.proposals[0].lifetime_s if cfg else 28_800
        prop = cfg.proposals[0]
        self._events.append(Phase1Established(
            at=now, peer=(ip, self.ike_port), cookies=(b"i" * 8, b"r" * 8), is_initiator=initiator,
            local_id=Identity(kind="ipv4", value=self.local_address), peer_id=Identity(kind="ipv4", value=ip),
            cipher=prop.cipher, key_bits=prop.key_bits, hash=prop.hash, dh_group=prop.dh_group, auth=prop.auth,
            lifetime_s=p1.lifetime_s, nat_detected=p1.encap))
        self._retx.pop(("p1", ip), None)
        for rid, phase2 in p1.pending:
            self._send_qm1(ip, rid, phase2, now)
        p1.pending.clear()

    def _on_mm1(self, ip, body, now):
        cfg = self.config.phase1_config((ip, self.ike_port))
        if cfg is None or body["tag"] != self._tag(ip, "I"):
            self._send_raw(ip, {"t": "fail1", "reason": "authentication failed" if cfg else "no policy"})
            self._events.append(NegotiationFailed(at=now, peer=(ip, self.ike_port), phase=1, request_id=None,
                                                  reason="authentication failed", failure_point="me", notify=24))
            return
        self._send_raw(ip, {"t": "mm2", "tag": self._tag(ip, "R")})
        self._established(ip, now, initiator=False)

    def _send_raw(self, ip, body):
        if self.silent_after_first and body["t"] not in ("mm1", "qm1"):
            return
        self._out.append((_message(2, body), (ip, self.ike_port), self.ike_port))

    def _on_mm2(self, ip, body, now):
        p1 = self._p1.get(ip)
        if p1 is None or p1.state == "established":
            return
        if body["tag"] != self._tag(ip, "R"):
            self._fail_phase1(ip, now, "authentication failed", "me")
            return
        self._established(ip, now, initiator=True)

    def _on_fail1(self, ip, body, now):
        self._fail_phase1(ip, now, body["reason"], "peer")

    def _fail_phase1(self, ip, now, reason, point):
        p1 = self._p1.pop(ip, None)
        self._retx.pop(("p1", ip), None)
        for rid, _ in (p1.pending if p1 else []):
            self._events.append(NegotiationFailed(at=now, peer=(ip, self.ike_port), phase=1, request_id=rid,
                                                  reason=reason, failure_point=point, notify=24))

    def _send_qm1(self, ip, rid, phase2, now):
        spis = [int.from_bytes(self.rng(4), "big") | 0x1000 for _ in range(4)]
        seed = self.rng(16).hex()
        self._qm[rid] = {"ip": ip, "phase2": phase2, "spis": spis, "seed": seed}
        body = {"t": "qm1", "rid": rid, "local": _ts(phase2.local_ts), "remote": _ts(phase2.remote_ts),
                "mode": phase2.mode, "seed": seed, "spis": spis,
                "proposals": [[_transform_key(t) for t in p.transforms] + [[p.lifetime_s, p.lifetime_kb]]
                              for p in phase2.proposals]}
        self._send(ip, 32, body, now, retransmit=("qm", rid))

    def _on_qm1(self, ip, body, now):
        mine = self.config.phase2_config((ip, self.ike_port), _ts_from(body["remote"]), _ts_from(body["local"]),
                                         body["mode"])
        chosen = None
        if mine is not None:
            ours = [[_transform_key(t) for t in p.transforms] for p in mine.proposals]
            for i, prop in enumerate(body["proposals"]):
                if prop[:-1] in ours:
                    chosen = i
                    break
        if chosen is None:
            self._send(ip, 32, {"t": "qm-fail", "rid": body["rid"], "notify": 14}, now)
            self._events.append(NegotiationFailed(at=now, peer=(ip, self.ike_port), phase=2, request_id=None,
                                                  reason="no proposal chosen", notify=14, failure_point="me"))
            return
        spis = [int.from_bytes(self.rng(4), "big") | 0x1000 for _ in range(4)]
        self._send(ip, 32, {"t": "qm2", "rid": body["rid"], "chosen": chosen, "spis": spis}, now)
        transforms = [t for t in mine.proposals[[[_transform_key(t) for t in p.transforms]
                                                  for p in mine.proposals].index(body["proposals"][chosen][:-1])].transforms]
        life = body["proposals"][chosen][-1]
        self._child_event(ip, now, initiator=False, rid=None, transforms=transforms, spis_in=spis,
                          spis_out=body["spis"], seed=body["seed"], local_ts=_ts_from(body["remote"]),
                          remote_ts=_ts_from(body["local"]), mode=body["mode"], life=life)

    def _on_qm2(self, ip, body, now):
        qm = self._qm.pop(body["rid"], None)
        if qm is None:
            return
        self._retx.pop(("qm", body["rid"]), None)
        prop = qm["phase2"].proposals[body["chosen"]]
        self._child_event(ip, now, initiator=True, rid=body["rid"], transforms=list(prop.transforms),
                          spis_in=qm["spis"], spis_out=body["spis"], seed=qm["seed"],
                          local_ts=qm["phase2"].local_ts, remote_ts=qm["phase2"].remote_ts, mode=qm["phase2"].mode,
                          life=[prop.lifetime_s, prop.lifetime_kb])

    def _on_qm_fail(self, ip, body, now):
        self._qm.pop(body["rid"], None)
        self._retx.pop(("qm", body["rid"]), None)
        self._events.append(NegotiationFailed(at=now, peer=(ip, self.ike_port), phase=2, request_id=body["rid"],
                                              reason="no proposal chosen", notify=body["notify"], failure_point="peer"))

    def _on_delete(self, ip, body, now):
        spi = body["spi"]
        if self._children.pop((ip, body["protocol"], spi), None) is not None:
            self._events.append(Phase2Deleted(at=now, peer=(ip, self.ike_port), protocol=body["protocol"],
                                              spis=(spi,), by_peer=True, reason="deleted by peer"))

    def _on_delete1(self, ip, body, now):
        if self._p1.pop(ip, None) is not None:
            self._events.append(Phase1Deleted(at=now, peer=(ip, self.ike_port), cookies=(b"", b""),
                                              by_peer=True, reason="deleted by peer"))

    def _child_event(self, ip, now, *, initiator, rid, transforms, spis_in, spis_out, seed, local_ts,
                     remote_ts, mode, life):
        children = []
        for i, t in enumerate(transforms):
            enc, auth = _key_sizes(t)
            # The initiator's inbound SPI keys are the responder's outbound ones and vice versa.
            i_spi, r_spi = (spis_in[i], spis_out[i]) if initiator else (spis_out[i], spis_in[i])
            keys_i = _keys(bytes.fromhex(seed), i_spi, enc + auth)
            keys_r = _keys(bytes.fromhex(seed), r_spi, enc + auth)
            k_in, k_out = (keys_i, keys_r) if initiator else (keys_r, keys_i)
            children.append(ChildSa(protocol=t.protocol, spi_in=spis_in[i], spi_out=spis_out[i], cipher=t.cipher,
                                    key_bits=t.key_bits, integrity=t.integrity, enc_key_in=k_in[:enc],
                                    auth_key_in=k_in[enc:], enc_key_out=k_out[:enc], auth_key_out=k_out[enc:]))
            self._children[(ip, t.protocol, spis_in[i])] = spis_out[i]
        p1 = self._p1.get(ip)
        encap = p1.encap if p1 else False
        self._events.append(Phase2Established(
            at=now, peer=(ip, self.ike_port), cookies=(b"i" * 8, b"r" * 8), message_id=1, is_initiator=initiator,
            request_id=rid, peer_id=Identity(kind="ipv4", value=ip), mode=mode,
            encapsulation="udp" if encap else "none", local_ts=local_ts, remote_ts=remote_ts, sas=tuple(children),
            lifetime_s=life[0], lifetime_kb=life[1], pfs_group=None,
            local_port=self.natt_port if encap else self.ike_port, peer_port=self.natt_port if encap else self.ike_port))


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


def make_agent(address: str, policy: Policy | None, clock, *, fake_ike: bool | None = None, **config) -> PolicyAgent:
    """An embedded-mode agent (ESP in UDP always) on ``address`` with the test ports."""
    cfg = AgentConfig(ike_port=IKE_PORT, natt_port=NATT_PORT, force_encapsulation=True,
                      kerberos_psk=b"kerberos-substitute", **config)
    factory = FakeIkeEndpoint if (not HAS_REAL_IKE if fake_ike is None else fake_ike) else None
    return PolicyAgent(policy=policy, local_addresses=[address], config=cfg, ike_factory=factory, now=clock.now)


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


def _has_real_ike() -> bool:
    import importlib.util

    return importlib.util.find_spec("ikeproto.endpoint") is not None


#: Tests run two agents with the real IkeEndpoint when it exists, else with the fake.
HAS_REAL_IKE = _has_real_ike()


def pair_of(clock, policy_1: Policy | None, policy_2: Policy | None, *, fake_ike: bool | None = None,
            **config) -> tuple[Network, PolicyAgent, PolicyAgent]:
    """HQ-RES-WRK-01 (127.0.0.1) and HQ-RES-WRK-02 (127.0.0.2) on one in-memory network."""
    fake = (not HAS_REAL_IKE) if fake_ike is None else fake_ike
    net = Network(clock)
    a = net.add(make_agent("127.0.0.1", policy_1, clock, fake_ike=fake, **config))
    b = net.add(make_agent("127.0.0.2", policy_2, clock, fake_ike=fake, **config))
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
