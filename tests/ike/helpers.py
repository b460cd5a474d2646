"""Test helpers for two in-process ``IkeEndpoint``s: a config provider, ``transfer`` (shuttles
datagrams between them in memory, optionally through a NAT or an interceptor), and
``carry_traffic`` (builds espcore SAs from both sides' events and sends packets both ways)."""

from __future__ import annotations

import ipaddress
import os
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from espcore import udp_encap
from espcore.ip import set_ipv4_checksum
from ikeproto.child_sa import espcore_sas
from ikeproto.config import (
    IpsecTransform,
    Phase1Config,
    Phase1Proposal,
    Phase2Config,
    Phase2Proposal,
    TrafficSelector,
)
from ikeproto.endpoint import IkeEndpoint
from ikeproto.events import Event, Phase2Established

A_ADDR, B_ADDR = "192.0.2.1", "192.0.2.2"
PSK = b"ABC123-test-key"


class Provider:
    """A ``ConfigProvider`` from fixed records: phase 1 per peer address (or one for all), and
    responder phase-2 configs matched by selectors (contained) and mode."""

    def __init__(self, phase1: Phase1Config | dict[str, Phase1Config] | None,
                 phase2: Sequence[Phase2Config] = ()) -> None:
        self.phase1 = phase1
        self.phase2 = list(phase2)

    def phase1_config(self, peer):
        if isinstance(self.phase1, dict):
            return self.phase1.get(peer[0])
        return self.phase1

    def phase2_config(self, peer, local_ts, remote_ts, mode):
        for cfg in self.phase2:
            if cfg.mode == mode and _contains(cfg.local_ts, local_ts) and _contains(cfg.remote_ts, remote_ts):
                return cfg
        return None


def _contains(outer: TrafficSelector, inner: TrafficSelector) -> bool:
    return (inner.network.version == outer.network.version and inner.network.subnet_of(outer.network)
            and outer.protocol in (0, inner.protocol) and outer.port in (0, inner.port))


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    """Deterministic randomness for reproducible negotiations."""
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def p1(cipher: str = "aes-cbc", hash: str = "sha1", group: int = 14, auth: str = "psk", key_bits: int | None = 128,
       **kw) -> Phase1Proposal:
    return Phase1Proposal(cipher=cipher, hash=hash, dh_group=group, auth=auth,
                          key_bits=key_bits if cipher == "aes-cbc" else None, **kw)


def phase1(*proposals: Phase1Proposal, psk: bytes | None = PSK, **kw) -> Phase1Config:
    return Phase1Config(proposals=proposals or (p1(),), psk=psk, **kw)


def esp(cipher: str = "aes-cbc", integrity: str | None = "hmac-sha1-96", key_bits: int | None = 128) -> IpsecTransform:
    return IpsecTransform(protocol="esp", cipher=cipher, integrity=integrity, key_bits=key_bits)


def ah(integrity: str = "hmac-sha1-96") -> IpsecTransform:
    return IpsecTransform(protocol="ah", integrity=integrity)


def phase2(local: str, remote: str, *proposals: Phase2Proposal, mode: str = "tunnel", pfs_group: int | None = None,
           protocol: int = 0, local_port: int = 0, remote_port: int = 0) -> Phase2Config:
    return Phase2Config(
        proposals=proposals or (Phase2Proposal(transforms=(esp(),)),),
        local_ts=TrafficSelector(network=ipaddress.ip_network(local), protocol=protocol, port=local_port),
        remote_ts=TrafficSelector(network=ipaddress.ip_network(remote), protocol=protocol, port=remote_port),
        mode=mode,  # type: ignore[arg-type]
        pfs_group=pfs_group,
    )


def mirror(cfg: Phase2Config, **changes) -> Phase2Config:
    """The responder's view of an initiator's phase-2 config (selectors swapped)."""
    from dataclasses import replace

    return replace(cfg, local_ts=cfg.remote_ts, remote_ts=cfg.local_ts, **changes)


def endpoints(p1_a: Phase1Config, p1_b: Phase1Config | None = None, *, phase2_b: Sequence[Phase2Config] = (),
              phase2_a: Sequence[Phase2Config] = (), seed: int = 1, **kw) -> tuple[IkeEndpoint, IkeEndpoint]:
    a = IkeEndpoint(config=Provider(p1_a, phase2_a), local_address=A_ADDR, rng=seeded_rng(seed), trace=False, **kw)
    b = IkeEndpoint(config=Provider(p1_b or p1_a, phase2_b), local_address=B_ADDR, rng=seeded_rng(seed + 1000),
                    trace=False, **kw)
    return a, b


@dataclass
class Nat:
    """A NAPT in front of endpoint ``inside``: its datagrams leave from ``public`` with mapped ports."""

    inside: IkeEndpoint
    public: str = "203.0.113.9"
    base_port: int = 20000
    out_map: dict[int, int] = field(default_factory=dict)

    def outbound(self, port: int) -> int:
        if port not in self.out_map:
            self.out_map[port] = self.base_port + len(self.out_map)
        return self.out_map[port]

    def inbound(self, port: int) -> int | None:
        for inner, outer in self.out_map.items():
            if outer == port:
                return inner
        return None


@dataclass(frozen=True)
class Delivery:
    sender: str  # "a" or "b"
    data: bytes
    src: tuple[str, int]
    dst: tuple[str, int]


Intercept = Callable[[Delivery], bytes | None | list[bytes]]


def transfer(a: IkeEndpoint, b: IkeEndpoint, now: float, *, nat: Nat | None = None,
             intercept: Intercept | None = None, max_rounds: int = 50) -> list[Delivery]:
    """Move every queued datagram between ``a`` and ``b`` until both are quiet.

    ``intercept(delivery)`` may return replacement bytes, None (drop) or a list (inject several);
    without it everything is delivered as sent."""
    log: list[Delivery] = []
    names = {id(a): "a", id(b): "b"}
    for _ in range(max_rounds):
        moved = False
        for src_ep, dst_ep in ((a, b), (b, a)):
            for data, dest, lport in src_ep.datagrams_to_send(now):
                moved = True
                src = (src_ep.local_address, lport)
                if nat is not None and src_ep is nat.inside:
                    src = (nat.public, nat.outbound(lport))
                dst_port = dest[1]
                if nat is not None and dst_ep is nat.inside:
                    if dest[0] != nat.public:
                        continue
                    inner = nat.inbound(dest[1])
                    if inner is None:
                        continue  # no mapping: the NAT drops it
                    dst_port = inner
                elif dest[0] != dst_ep.local_address:
                    continue  # not for the other endpoint: lost
                d = Delivery(sender=names[id(src_ep)], data=data, src=src, dst=(dst_ep.local_address, dst_port))
                log.append(d)
                out = intercept(d) if intercept is not None else data
                for item in ([] if out is None else out if isinstance(out, list) else [out]):
                    dst_ep.receive_datagram(item, src, now, local_port=dst_port)
        if not moved:
            return log
    raise AssertionError("endpoints did not go quiet")


def events(ep: IkeEndpoint) -> list[Event]:
    out = []
    while (e := ep.next_event()) is not None:
        out.append(e)
    return out


def established(evs: Sequence[Event]) -> list[Phase2Established]:
    return [e for e in evs if isinstance(e, Phase2Established)]


def run_timers(a: IkeEndpoint, b: IkeEndpoint, clock, until: float, *, nat: Nat | None = None,
               intercept: Intercept | None = None) -> None:
    """Advance ``clock`` from timer to timer up to ``until``, moving datagrams after each."""
    while True:
        timers = [t for t in (a.get_timer(), b.get_timer()) if t is not None and t <= until]
        if not timers:
            clock.now = max(clock.now, until)
            return
        clock.now = max(clock.now, min(timers))
        a.handle_timer(clock.now)
        b.handle_timer(clock.now)
        transfer(a, b, clock.now, nat=nat, intercept=intercept)


# --- traffic through the negotiated SAs --------------------------------------------------------


def udp_packet(src: str, dst: str, payload: bytes, sport: int = 40000, dport: int = 7) -> bytes:
    """An IPv4 UDP packet (UDP checksum 0, IPv4 header checksum set), or IPv6 for v6 addresses."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if ipaddress.ip_address(src).version == 6:
        return struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, ipaddress.ip_address(src).packed,
                           ipaddress.ip_address(dst).packed) + udp
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                                   ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed))
    set_ipv4_checksum(header)
    return bytes(header) + udp


def _host_in(ts: TrafficSelector) -> str:
    net = ts.network
    return str(net.network_address if net.num_addresses == 1 else net.network_address + 1)


def carry_traffic(ev_a: Phase2Established, ev_b: Phase2Established, *, packets: int = 3) -> int:
    """Protect packets with one side's outbound SAs and unprotect them with the other side's
    inbound SAs, both ways (UDP-encapsulated when negotiated). Returns the packets carried."""
    assert ev_a.message_id == ev_b.message_id and ev_a.mode == ev_b.mode
    carried = 0
    for src_ev, dst_ev in ((ev_a, ev_b), (ev_b, ev_a)):
        outs = [espcore_sas(src_ev, c)[1] for c in src_ev.sas]
        ins = [espcore_sas(dst_ev, c)[0] for c in dst_ev.sas]
        if src_ev.mode == "tunnel":
            src_ip, dst_ip = _host_in(src_ev.local_ts), _host_in(src_ev.remote_ts)
        else:
            src_ip, dst_ip = src_ev.local_address, dst_ev.local_address
        for i in range(packets):
            original = udp_packet(src_ip, dst_ip, os.urandom(16) + bytes([i]) * (i * 37))
            wire = original
            for sa in reversed(outs):  # ESP first, then AH outside it (RFC 4301 §4.5 bundles)
                wire = sa.protect(wire)
            if src_ev.encapsulation == "udp":
                assert all(c.protocol == "esp" for c in src_ev.sas)
                wire = udp_encap.encapsulate_packet(wire, sport=src_ev.local_port, dport=src_ev.peer_port)
                wire = udp_encap.decapsulate_packet(wire)
            for sa in ins:  # AH first (outermost), then ESP
                wire = sa.unprotect(wire)
            assert wire == original
            carried += 1
    return carried


# --- RSA keys and certificates (generated once per test session) --------------------------------


@dataclass(frozen=True)
class RsaIdentity:
    key: object
    cert: object  # cryptography x509.Certificate issued by the test CA


@dataclass(frozen=True)
class RsaLab:
    ca_key: object
    ca_cert: object
    a: RsaIdentity
    b: RsaIdentity
    stranger: RsaIdentity  # a self-signed certificate nobody trusts


_LAB: list[RsaLab] = []


def rsa_lab() -> RsaLab:
    """Two host keys with certificates from one CA, and an untrusted self-signed one."""
    if _LAB:
        return _LAB[0]
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def issue(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool = False):
        start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_cert = issue("RESKIT test CA", ca_key, name("RESKIT test CA"), ca_key, ca=True)
    ids = []
    for cn in ("hq-res-wrk-01", "hq-res-wrk-02"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ids.append(RsaIdentity(key=key, cert=issue(cn, key, ca_cert.subject, ca_key)))
    skey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = RsaIdentity(key=skey, cert=issue("stranger", skey, name("stranger"), skey))
    _LAB.append(RsaLab(ca_key=ca_key, ca_cert=ca_cert, a=ids[0], b=ids[1], stranger=stranger))
    return _LAB[0]


def rsa_phase1(me: RsaIdentity, peer: RsaIdentity | None, *proposals: Phase1Proposal, send_cert: bool = True,
               trust_ca: bool = False, **kw) -> Phase1Config:
    """An rsa-sig Phase1Config: trust the peer's key directly, or the CA (then CERTs are sent)."""
    lab = rsa_lab()
    return Phase1Config(
        proposals=proposals or (p1(auth="rsa-sig"),), private_key=me.key,
        certificate=me.cert if send_cert else None,
        peer_public_key=None if trust_ca or peer is None else peer.key.public_key(),  # type: ignore[attr-defined]
        trusted_certificates=(lab.ca_cert,) if trust_ca else (), **kw,
    )


def sa_of(ep: IkeEndpoint, cookies: tuple[bytes, bytes]):
    """The endpoint's IkeSa with these cookies (tests look inside)."""
    return ep.table.find(*cookies) or ep.table.initiating(cookies[0])


def reencrypt(receiver: IkeEndpoint, data: bytes, mutate: Callable[[list], list]) -> bytes:
    """An encrypted message re-made with the *receiver's* keys and IV after ``mutate`` changed its
    payloads: what an attacker holding the keys could send (a tampered HASH, extra payloads)."""
    from ikeproto.message import Message, parse_message, parse_payloads, serialize_header, serialize_payloads

    msg = parse_message(data)
    sa = sa_of(receiver, (msg.initiator_cookie, msg.responder_cookie))
    plaintext, _ = sa.unprotect(msg)
    payloads = mutate(list(parse_payloads(msg.first_payload_type, plaintext, allow_trailing=True)))
    body = serialize_payloads(payloads)
    ciphertext, _ = sa.keys.encrypt(sa.ivs.iv(msg.message_id), body)
    head = Message(initiator_cookie=msg.initiator_cookie, responder_cookie=msg.responder_cookie,
                   exchange_type=msg.exchange_type, flags=msg.flags, message_id=msg.message_id,
                   next_payload=payloads[0].payload_type)
    return serialize_header(head, len(ciphertext)) + ciphertext


def plaintext_payloads(receiver: IkeEndpoint, data: bytes) -> list:
    """The payloads of an encrypted message, decrypted with the receiver's current IV."""
    from ikeproto.message import parse_message, parse_payloads

    msg = parse_message(data)
    sa = sa_of(receiver, (msg.initiator_cookie, msg.responder_cookie))
    plaintext, _ = sa.unprotect(msg)
    return list(parse_payloads(msg.first_payload_type, plaintext, allow_trailing=True))
