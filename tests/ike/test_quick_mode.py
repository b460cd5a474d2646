"""Quick Mode between two in-process endpoints: ESP and AH transforms, AH+ESP bundles, transport
and tunnel, IDs for hosts, subnets and protocol/port, PFS, RESPONDER-LIFETIME, retransmission,
duplicates, tampering, refusals. Every established pair carries traffic both ways."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from ikeproto.config import Phase2Proposal
from ikeproto.enums import ExchangeType, NotifyType
from ikeproto.errors import UsageError
from ikeproto.events import NegotiationFailed, Phase2Established
from ikeproto.message import parse_message
from ikeproto.payloads import HashPayload, NotifyPayload
from tests.ike.helpers import (
    A_ADDR,
    B_ADDR,
    Nat,
    ah,
    carry_traffic,
    endpoints,
    esp,
    established,
    events,
    mirror,
    phase1,
    phase2,
    plaintext_payloads,
    reencrypt,
    run_timers,
    transfer,
)

ESP_CIPHERS = [("des-cbc", None), ("3des-cbc", None), ("aes-cbc", 128), ("aes-cbc", 192), ("aes-cbc", 256),
               ("aes-ctr", 128), ("aes-ctr", 256), ("null", None)]
AEAD = [("aes-gcm-8", 128), ("aes-gcm-12", 192), ("aes-gcm-16", 128), ("aes-gcm-16", 256), ("aes-gmac", 128)]
INTEGRITY = ["hmac-md5-96", "hmac-sha1-96", "hmac-sha2-256-128", "hmac-sha2-384-192", "hmac-sha2-512-256"]


def qm(clock, cfg, *, responder_cfgs=None, nat: bool = False, p1_a=None, p1_b=None):
    """Main Mode then Quick Mode for ``cfg``; (a, b, a's Phase2Established, b's)."""
    a, b = endpoints(p1_a or phase1(), p1_b or phase1(), phase2_b=responder_cfgs or [mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now, nat=Nat(inside=a) if nat else None)
    ea, eb = established(events(a)), established(events(b))
    return a, b, ea, eb


def selectors(mode: str):
    return ("10.1.0.0/24", "10.2.0.0/16") if mode == "tunnel" else (f"{A_ADDR}/32", f"{B_ADDR}/32")


CASES = (
    [("esp", c, bits, i, m) for (c, bits), i, m in zip(ESP_CIPHERS, itertools.cycle(INTEGRITY), itertools.cycle(
        ("tunnel", "transport")))]
    + [("esp", c, bits, i, m) for c, bits in (("aes-cbc", 128),) for i in INTEGRITY for m in ("tunnel", "transport")]
    + [("esp", c, bits, None, m) for (c, bits), m in zip(AEAD, itertools.cycle(("transport", "tunnel")))]
    + [("ah", None, None, i, m) for i in INTEGRITY for m in ("tunnel", "transport")]
    + [("ah+esp", "aes-cbc", 256, i, m) for i, m in zip(INTEGRITY, itertools.cycle(("transport", "tunnel")))]
)


@pytest.mark.parametrize(("protocols", "cipher", "bits", "integrity", "mode"), CASES)
def test_transforms_modes_and_bundles_carry_traffic(clock, protocols, cipher, bits, integrity, mode) -> None:
    """ESP (every cipher with an IKEv1 number, every integrity), AH, and AH+ESP bundles (two
    proposal payloads sharing a number) in transport and tunnel mode: keys for both directions
    match and the SAs carry traffic both ways."""
    transforms = {"esp": (esp(cipher, integrity, bits),), "ah": (ah(integrity),),
                  "ah+esp": (esp(cipher, integrity, bits), ah(integrity))}[protocols]
    cfg = phase2(*selectors(mode), Phase2Proposal(transforms=transforms), mode=mode)
    a, b, ea, eb = qm(clock, cfg)
    assert len(ea) == len(eb) == 1, (a.stats, b.stats)
    assert [c.protocol for c in ea[0].sas] == (["ah", "esp"] if protocols == "ah+esp" else [protocols])
    for ca, cb in zip(ea[0].sas, eb[0].sas):
        assert (ca.spi_in, ca.spi_out) == (cb.spi_out, cb.spi_in)
        assert (ca.enc_key_out, ca.auth_key_out) == (cb.enc_key_in, cb.auth_key_in)
        assert ca.enc_key_in != ca.enc_key_out or not ca.enc_key_in
    assert carry_traffic(ea[0], eb[0]) == 6


@pytest.mark.parametrize("group", [2, 14, 19, 31])
def test_pfs_runs_its_own_key_exchange(clock, group) -> None:
    """Session-key PFS: KE in messages 1 and 2, the group in the SA, KEYMAT from g(qm)^xy."""
    cfg = phase2(*selectors("tunnel"), pfs_group=group)
    a, b, ea, eb = qm(clock, cfg)
    assert ea[0].pfs_group == eb[0].pfs_group == group
    assert carry_traffic(ea[0], eb[0]) == 6


def test_pfs_keys_differ_from_the_same_exchange_without_pfs(clock) -> None:
    """The same negotiation (same randomness) with and without PFS gives different keys."""
    _, _, with_pfs, _ = qm(clock, phase2(*selectors("tunnel"), pfs_group=14))
    _, _, without, _ = qm(clock, phase2(*selectors("tunnel")))
    assert with_pfs[0].sas[0].enc_key_out != without[0].sas[0].enc_key_out


def test_pfs_required_by_the_responder_but_not_offered_is_refused(clock) -> None:
    """The responder's policy wants PFS group 14; an offer without it gets NO-PROPOSAL-CHOSEN."""
    cfg = phase2(*selectors("tunnel"))
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg, pfs_group=14)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now)
    fa = [e for e in events(a) if isinstance(e, NegotiationFailed)]
    fb = [e for e in events(b) if isinstance(e, NegotiationFailed)]
    assert [(f.phase, f.notify, f.failure_point) for f in fa] == [(2, NotifyType.NO_PROPOSAL_CHOSEN, "peer")]
    assert [(f.phase, f.notify, f.failure_point) for f in fb] == [(2, NotifyType.NO_PROPOSAL_CHOSEN, "me")]


def test_no_policy_for_the_selectors_is_refused_with_a_protected_notify(clock) -> None:
    """The responder has no phase-2 config for the IDs: it sends NO-PROPOSAL-CHOSEN in a protected
    Informational; the initiator's request fails at once naming the peer."""
    cfg = phase2(*selectors("tunnel"))
    a, b = endpoints(phase1(), phase1(), phase2_b=[phase2("10.9.0.0/24", "10.8.0.0/24")])
    rid = a.initiate((B_ADDR, 500), cfg, clock.now)
    log = transfer(a, b, clock.now)
    info = [d for d in log if d.sender == "b" and parse_message(d.data).exchange_type == ExchangeType.INFORMATIONAL]
    assert len(info) == 1 and parse_message(info[0].data).is_encrypted
    fa = [e for e in events(a) if isinstance(e, NegotiationFailed)]
    fb = [e for e in events(b) if isinstance(e, NegotiationFailed)]
    assert [(f.phase, f.request_id, f.notify, f.failure_point) for f in fa] == [
        (2, rid, NotifyType.NO_PROPOSAL_CHOSEN, "peer")]
    assert [(f.phase, f.notify, f.failure_point) for f in fb] == [(2, NotifyType.NO_PROPOSAL_CHOSEN, "me")]
    assert a.ike_sa(B_ADDR) is not None  # the ISAKMP SA stays


def test_responder_picks_its_preferred_proposal_among_several(clock) -> None:
    """Initiator offers 3DES, then AES-256, then AES-GCM; the responder prefers GCM then AES-256."""
    offer = phase2(*selectors("tunnel"), Phase2Proposal(transforms=(esp("3des-cbc", "hmac-md5-96", None),)),
                   Phase2Proposal(transforms=(esp("aes-cbc", "hmac-sha2-256-128", 256),)),
                   Phase2Proposal(transforms=(esp("aes-gcm-16", None, 128),)))
    prefer = replace(mirror(offer), proposals=(offer.proposals[2], offer.proposals[1]))
    a, b, ea, eb = qm(clock, offer, responder_cfgs=[prefer])
    assert ea[0].sas[0].cipher == eb[0].sas[0].cipher == "aes-gcm-16"
    prefer = replace(mirror(offer), proposals=(offer.proposals[1],))
    a, b, ea, eb = qm(clock, offer, responder_cfgs=[prefer])
    assert (ea[0].sas[0].cipher, ea[0].sas[0].key_bits, ea[0].sas[0].integrity) == ("aes-cbc", 256, "hmac-sha2-256-128")


def test_responder_lifetime_shorter_than_offered_is_notified_and_honoured(clock) -> None:
    """RFC 2407 §4.6.3.1: the responder keeps the offered attributes, sends RESPONDER-LIFETIME
    with its shorter seconds/kilobytes, and both sides use them."""
    cfg = phase2(*selectors("tunnel"), Phase2Proposal(transforms=(esp(),), lifetime_s=3600, lifetime_kb=100_000))
    mine = replace(mirror(cfg), proposals=(Phase2Proposal(transforms=(esp(),), lifetime_s=900, lifetime_kb=5000),))
    a, b = endpoints(phase1(), phase1(), phase2_b=[mine])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    seen = []

    def spy(d):
        msg = parse_message(d.data)
        if d.sender == "b" and msg.exchange_type == ExchangeType.QUICK_MODE and not seen:
            seen.extend(plaintext_payloads(a, d.data))
        return d.data

    transfer(a, b, clock.now, intercept=spy)
    (ea,), (eb,) = established(events(a)), established(events(b))
    assert (ea.lifetime_s, ea.lifetime_kb) == (eb.lifetime_s, eb.lifetime_kb) == (900, 5000)
    notes = [p for p in seen if isinstance(p, NotifyPayload)]
    assert [n.notify_type for n in notes] == [NotifyType.RESPONDER_LIFETIME]


def test_longer_responder_lifetime_keeps_the_offer(clock) -> None:
    cfg = phase2(*selectors("tunnel"), Phase2Proposal(transforms=(esp(),), lifetime_s=600, lifetime_kb=None))
    mine = replace(mirror(cfg), proposals=(Phase2Proposal(transforms=(esp(),), lifetime_s=3600, lifetime_kb=None),))
    _a, _b, ea, eb = qm(clock, cfg, responder_cfgs=[mine])
    assert (ea[0].lifetime_s, eb[0].lifetime_s, ea[0].lifetime_kb) == (600, 600, None)


@pytest.mark.parametrize(("local", "remote", "protocol", "lport", "rport", "mode"), [
    (f"{A_ADDR}/32", f"{B_ADDR}/32", 0, 0, 0, "transport"),
    (f"{A_ADDR}/32", f"{B_ADDR}/32", 17, 0, 7, "transport"),
    (f"{A_ADDR}/32", f"{B_ADDR}/32", 6, 1025, 80, "transport"),
    ("10.1.0.0/16", "10.2.3.0/24", 0, 0, 0, "tunnel"),
    ("10.1.0.5/32", "10.2.0.0/24", 17, 0, 53, "tunnel"),
])
def test_ids_for_hosts_subnets_and_protocol_ports(clock, local, remote, protocol, lport, rport, mode) -> None:
    """Client IDs carry host addresses or subnets with protocol and port; the responder's policy
    lookup sees them mirrored and both events report them."""
    cfg = phase2(local, remote, mode=mode, protocol=protocol, local_port=lport, remote_port=rport)
    _a, _b, ea, eb = qm(clock, cfg)
    assert (ea[0].local_ts, ea[0].remote_ts) == (cfg.local_ts, cfg.remote_ts)
    assert (eb[0].local_ts, eb[0].remote_ts) == (cfg.remote_ts, cfg.local_ts)


def test_second_request_reuses_the_isakmp_sa(clock) -> None:
    """A second initiate with an established ISAKMP SA runs Quick Mode only (3 messages)."""
    cfg = phase2(*selectors("tunnel"))
    a, b, ea, eb = qm(clock, cfg)
    rid = a.initiate((B_ADDR, 500), cfg, clock.now)
    log = transfer(a, b, clock.now)
    assert [parse_message(d.data).exchange_type for d in log] == [ExchangeType.QUICK_MODE] * 3
    (e2,) = established(events(a))
    assert e2.request_id == rid and e2.sas[0].spi_in != ea[0].sas[0].spi_in
    assert carry_traffic(e2, established(events(b))[0]) == 6


def test_requests_made_during_main_mode_wait_for_it(clock) -> None:
    """Several initiates before Main Mode finishes each get their own Quick Mode afterwards."""
    cfg = phase2(*selectors("tunnel"))
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg)])
    rids = [a.initiate((B_ADDR, 500), cfg, clock.now) for _ in range(3)]
    transfer(a, b, clock.now)
    got = established(events(a))
    assert sorted(e.request_id for e in got) == rids and len(established(events(b))) == 3
    assert len({e.message_id for e in got}) == 3


def test_lost_message_3_is_recovered_by_the_responders_retransmission(clock) -> None:
    """Message 3 is lost: the responder resends message 2, the initiator answers it with the same
    message 3 (not a new exchange), and the responder establishes."""
    cfg = phase2(*selectors("tunnel"))
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    dropped = []

    def lose_qm3(d):
        msg = parse_message(d.data)
        if d.sender == "a" and msg.exchange_type == ExchangeType.QUICK_MODE and len(d.data) < 100 and not dropped:
            dropped.append(d.data)
            return None
        return d.data

    transfer(a, b, clock.now, intercept=lose_qm3)
    assert len(established(events(a))) == 1 and not established(events(b))
    run_timers(a, b, clock, clock.now + 1)
    assert len(established(events(b))) == 1
    assert b.stats.retransmits == 1 and a.stats.duplicates == 1


def test_duplicate_message_1_gets_the_same_message_2(clock) -> None:
    cfg = phase2(*selectors("tunnel"))
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    answers = []

    def dup_qm1(d):
        msg = parse_message(d.data)
        if msg.exchange_type == ExchangeType.QUICK_MODE and d.sender == "a" and len(d.data) > 100:
            return [d.data, d.data]
        if msg.exchange_type == ExchangeType.QUICK_MODE and d.sender == "b":
            answers.append(d.data)
        return d.data

    transfer(a, b, clock.now, intercept=dup_qm1)
    assert len(answers) == 2 and answers[0] == answers[1]
    assert len(established(events(a))) == len(established(events(b))) == 1
    assert (b.stats.duplicates, a.stats.duplicates) == (2, 1)  # QM1 and the re-answered QM3; QM2


def test_tampered_hash_1_is_dropped_and_the_genuine_message_1_still_succeeds(clock) -> None:
    """A message 1 with a wrong HASH(1) changes no state (no IV advance, no exchange): the
    genuine one right after it is answered and the exchange completes."""
    cfg = phase2(*selectors("tunnel"))
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)

    def tamper(d):
        msg = parse_message(d.data)
        if msg.exchange_type == ExchangeType.QUICK_MODE and d.sender == "a" and len(d.data) > 100:
            bad = reencrypt(b, d.data, lambda ps: [replace(ps[0], data=bytes(len(ps[0].data))), *ps[1:]])
            return [bad, d.data]
        return d.data

    transfer(a, b, clock.now, intercept=tamper)
    assert b.stats.dropped["refused"] == 1
    assert len(established(events(a))) == len(established(events(b))) == 1


def test_unanswered_quick_mode_is_given_up_after_retransmissions(clock) -> None:
    """The responder never answers message 1: five resends with back-off, then NegotiationFailed
    (phase 2, timed out, the peer's fault); the ISAKMP SA remains."""
    cfg = phase2(*selectors("tunnel"))
    a, b, _, _ = qm(clock, cfg)
    rid = a.initiate((B_ADDR, 500), cfg, clock.now)
    a.datagrams_to_send(clock.now)  # lost
    while (t := a.get_timer()) is not None and t < clock.now + 100:
        clock.now = t
        a.handle_timer(t)
        a.datagrams_to_send(t)
    (f,) = [e for e in events(a) if isinstance(e, NegotiationFailed)]
    assert (f.phase, f.request_id, f.timed_out, f.failure_point) == (2, rid, True, "peer")
    assert a.stats.retransmits == 5 and a.ike_sa(B_ADDR) is not None


def test_commit_bit_is_accepted_and_ignored(clock) -> None:
    cfg = phase2(*selectors("tunnel"))
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)

    def commit(d):
        msg = parse_message(d.data)
        if msg.exchange_type == ExchangeType.QUICK_MODE and d.sender == "a" and len(d.data) > 100:
            return d.data[:19] + bytes([d.data[19] | 0x02]) + d.data[20:]
        return d.data

    transfer(a, b, clock.now, intercept=commit)
    assert len(established(events(a))) == len(established(events(b))) == 1


def test_ah_is_not_offered_through_a_nat(clock) -> None:
    """AH cannot be UDP-encapsulated: AH proposals are left out after a NAT; AH alone fails."""
    both = phase2(*selectors("tunnel"), Phase2Proposal(transforms=(ah(),)), Phase2Proposal(transforms=(esp(),)))
    _a, _b, ea, eb = qm(clock, both, nat=True)
    assert [c.protocol for c in ea[0].sas] == ["esp"] and ea[0].encapsulation == "udp"
    only_ah = phase2(*selectors("tunnel"), Phase2Proposal(transforms=(ah(),)))
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(only_ah)])
    rid = a.initiate((B_ADDR, 500), only_ah, clock.now)
    transfer(a, b, clock.now, nat=Nat(inside=a))
    (f,) = [e for e in events(a) if isinstance(e, NegotiationFailed)]
    assert (f.phase, f.request_id, f.failure_point) == (2, rid, "me")


def test_bad_local_phase2_configs_are_usage_errors(clock) -> None:
    a, _ = endpoints(phase1())
    for bad in (Phase2Proposal(transforms=(esp("aes-gcm-16", "hmac-sha1-96", 128),)),
                Phase2Proposal(transforms=(esp("no-such-cipher", "hmac-sha1-96", 128),)),
                Phase2Proposal(transforms=(esp(), esp()))):
        with pytest.raises(UsageError):
            a.initiate((B_ADDR, 500), phase2(*selectors("tunnel"), bad), clock.now)
    assert a.datagrams_to_send(clock.now) == []


def test_hash_payload_leads_every_quick_mode_message(clock) -> None:
    """RFC 2409 §5.5: HASH comes first in all three messages; a message 3 is HASH alone."""
    cfg = phase2(*selectors("tunnel"))
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    seen = []

    def spy(d):
        if parse_message(d.data).exchange_type == ExchangeType.QUICK_MODE:
            seen.append(plaintext_payloads(b if d.sender == "a" else a, d.data))
        return d.data

    transfer(a, b, clock.now, intercept=spy)
    assert [type(ps[0]) for ps in seen] == [HashPayload] * 3 and len(seen[2]) == 1
    assert isinstance(established(events(a))[0], Phase2Established)


def test_many_quick_modes_at_once_on_one_isakmp_sa(clock) -> None:
    """Forty requests for different selectors run their Quick Modes concurrently on one ISAKMP SA
    (forty IV chains interleaved) and all complete."""
    a, b = endpoints(phase1(), phase1(), phase2_b=[phase2("10.2.0.0/16", "10.1.0.0/16")])
    cfgs = [phase2(f"10.1.{i}.0/24", f"10.2.{i}.0/24") for i in range(40)]
    a.initiate((B_ADDR, 500), cfgs[0], clock.now)
    transfer(a, b, clock.now)
    rids = [a.initiate((B_ADDR, 500), c, clock.now) for c in cfgs[1:]]
    for _ in range(3):  # deliver message by message, all exchanges interleaved
        for data, dest, port in a.datagrams_to_send(clock.now):
            b.receive_datagram(data, (A_ADDR, port), clock.now, local_port=dest[1])
        for data, dest, port in b.datagrams_to_send(clock.now):
            a.receive_datagram(data, (B_ADDR, port), clock.now, local_port=dest[1])
    got = established(events(a))
    assert sorted(e.request_id for e in got[1:]) == rids and len(established(events(b))) == 40
    assert a.stats.dropped == b.stats.dropped == {}


def test_lost_refusal_notify_is_sent_again_for_the_retransmitted_message_1(clock) -> None:
    """The responder's NO-PROPOSAL-CHOSEN is lost: the initiator's retransmitted message 1 gets
    the same protected Notify again and the request fails promptly, not by timeout."""
    cfg = phase2(*selectors("tunnel"))
    a, b = endpoints(phase1(), phase1(), phase2_b=[phase2("10.9.0.0/24", "10.8.0.0/24")])
    rid = a.initiate((B_ADDR, 500), cfg, clock.now)
    lost = []

    def lose_first_notify(d):
        if d.sender == "b" and parse_message(d.data).exchange_type == ExchangeType.INFORMATIONAL and not lost:
            lost.append(d.data)
            return None
        return d.data

    transfer(a, b, clock.now, intercept=lose_first_notify)
    assert lost and not [e for e in events(a) if isinstance(e, NegotiationFailed)]
    run_timers(a, b, clock, clock.now + 1)
    (f,) = [e for e in events(a) if isinstance(e, NegotiationFailed)]
    assert (f.request_id, f.notify, f.timed_out) == (rid, NotifyType.NO_PROPOSAL_CHOSEN, False)


def test_ah_with_a_faked_nat_when_allowed_uses_the_plain_mode(clock) -> None:
    """Agent request (embedded path, faked NAT): with allow_ah_with_nat on both sides, AH and
    AH+ESP proposals are agreed in plain Tunnel/Transport mode (encapsulation "none"), while an
    ESP-only proposal in the same offer keeps UDP-Encapsulated-*."""
    for mode in ("transport", "tunnel"):
        for transforms in ((ah(),), (esp(), ah())):
            cfg = phase2(*selectors(mode), Phase2Proposal(transforms=transforms), mode=mode)
            p1_a = phase1(force_encapsulation=True, allow_ah_with_nat=True)
            p1_b = phase1(allow_ah_with_nat=True)
            _a, _b, ea, eb = qm(clock, cfg, p1_a=p1_a, p1_b=p1_b)
            assert ea[0].encapsulation == eb[0].encapsulation == "none"
            assert [c.protocol for c in ea[0].sas] == [t.protocol for t in sorted(transforms, key=lambda t: t.protocol)]
            assert carry_traffic(ea[0], eb[0]) == 6
    esp_only = phase2(*selectors("tunnel"))
    _a, _b, ea, eb = qm(clock, esp_only, p1_a=phase1(force_encapsulation=True, allow_ah_with_nat=True),
                        p1_b=phase1(allow_ah_with_nat=True))
    assert ea[0].encapsulation == "udp"
    # Without the flag on the responder, AH stays refused through the (faked) NAT.
    only_ah = phase2(*selectors("tunnel"), Phase2Proposal(transforms=(ah(),)))
    a, b, ea, eb = qm(clock, only_ah, p1_a=phase1(force_encapsulation=True, allow_ah_with_nat=True), p1_b=phase1())
    assert not ea and not eb
