"""Main Mode between two in-process endpoints: every auth method, DH group and cipher/hash (a
covering matrix, see below), transport and tunnel, with and without NAT-T, each carrying traffic
through the espcore SAs of the Quick Mode that follows; then the failures (wrong PSK, no common
proposal, tampered HASH, an untrusted certificate, a peer that never answers)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from ikeproto.enums import NotifyType, PayloadType
from ikeproto.events import NegotiationFailed, Phase1Established, Phase2Established
from ikeproto.message import parse_message
from ikeproto.payloads import HashPayload
from tests.ike.helpers import (
    A_ADDR,
    B_ADDR,
    Nat,
    carry_traffic,
    endpoints,
    established,
    events,
    mirror,
    p1,
    phase1,
    phase2,
    reencrypt,
    rsa_lab,
    rsa_phase1,
    run_timers,
    transfer,
)

GROUPS = (1, 2, 5, 14, 15, 16, 19, 20, 31)
CIPHERS = (("des", None), ("3des", None), ("aes-cbc", 128), ("aes-cbc", 192), ("aes-cbc", 256))
HASHES = ("md5", "sha1", "sha2-256", "sha2-384", "sha2-512")


def negotiate(clock, p1_a, p1_b, *, mode: str, nat: bool):
    """Main Mode + Quick Mode (ESP AES-CBC/SHA-1) from a to b; both sides' events."""
    if mode == "tunnel":
        cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    else:
        cfg = phase2(f"{A_ADDR}/32", f"{B_ADDR}/32", mode="transport")
    a, b = endpoints(p1_a, p1_b, phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now, nat=Nat(inside=a) if nat else None)
    return a, b, events(a), events(b)


def check(clock, p1_a, p1_b, *, mode: str, nat: bool, proposal) -> None:
    a, b, ev_a, ev_b = negotiate(clock, p1_a, p1_b, mode=mode, nat=nat)
    assert [type(e) for e in ev_a] == [Phase1Established, Phase2Established], ev_a
    assert [type(e) for e in ev_b] == [Phase1Established, Phase2Established], ev_b
    for e in (ev_a[0], ev_b[0]):
        assert (e.cipher, e.hash, e.dh_group, e.auth) == (proposal.cipher, proposal.hash, proposal.dh_group,
                                                        proposal.auth)
        assert e.key_bits == proposal.key_bits
        assert e.nat_detected is nat
    qa, qb = ev_a[1], ev_b[1]
    assert qa.mode == qb.mode == mode
    assert qa.encapsulation == qb.encapsulation == ("udp" if nat else "none")
    assert carry_traffic(qa, qb) == 6
    assert a.stats.dropped == b.stats.dropped == {}


def configs(auth: str, proposal):
    if auth == "psk":
        return phase1(proposal), phase1(proposal)
    lab = rsa_lab()
    return rsa_phase1(lab.a, lab.b, proposal), rsa_phase1(lab.b, lab.a, proposal)


# Every auth x group x mode x NAT-T combination, the cipher/hash pair rotating through all 25.
_PAIRS = list(itertools.product(CIPHERS, HASHES))
GROUP_CASES = [
    (auth, group, mode, nat, _PAIRS[i % len(_PAIRS)])
    for i, (auth, group, mode, nat) in enumerate(
        itertools.product(("psk", "rsa-sig"), GROUPS, ("tunnel", "transport"), (False, True)))
]
# Every auth x cipher x hash combination, groups, modes and NAT-T rotating.
PAIR_CASES = [
    (auth, GROUPS[i % len(GROUPS)], ("tunnel", "transport")[i % 2], bool(i // 2 % 2), pair)
    for i, (auth, pair) in enumerate(itertools.product(("psk", "rsa-sig"), _PAIRS))
]


@pytest.mark.parametrize(("auth", "group", "mode", "nat", "pair"), GROUP_CASES + PAIR_CASES)
def test_main_mode_and_quick_mode_matrix(clock, auth, group, mode, nat, pair) -> None:
    """Each combination establishes both phases on both sides with the agreed algorithms, and the
    resulting SAs carry traffic both ways (UDP-encapsulated exactly when a NAT was crossed)."""
    (cipher, bits), hash_ = pair
    proposal = p1(cipher=cipher, key_bits=bits, hash=hash_, group=group, auth=auth)
    p1_a, p1_b = configs(auth, proposal)
    check(clock, p1_a, p1_b, mode=mode, nat=nat, proposal=proposal)


def test_milestone_psk_main_mode_quick_mode_esp_tunnel_with_nat_t_carries_traffic(clock) -> None:
    """PSK Main Mode + Quick Mode ESP tunnel through a NAT: both sides float to 4500 in message 5,
    agree UDP encapsulation, and the espcore SAs built from the events carry packets both ways."""
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(phase1(), phase2_b=[mirror(cfg)])
    rid = a.initiate((B_ADDR, 500), cfg, clock.now)
    log = transfer(a, b, clock.now, nat=Nat(inside=a))
    assert [d.dst[1] for d in log] == [500, 500, 500, 500, 4500, 4500, 4500, 4500, 4500]
    qa, qb = established(events(a))[0], established(events(b))[0]
    assert qa.request_id == rid and qb.request_id is None
    assert (qa.local_port, qb.local_port) == (4500, 4500)
    assert qa.sas[0].spi_in == qb.sas[0].spi_out and qa.sas[0].spi_out == qb.sas[0].spi_in
    assert carry_traffic(qa, qb) == 6


def test_forced_encapsulation_without_a_nat_floats_and_encapsulates(clock) -> None:
    """force_encapsulation (strongSwan's libipsec trick) on either side makes both see a NAT."""
    for forced_a in (True, False):
        cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
        a, b = endpoints(phase1(force_encapsulation=forced_a), phase1(force_encapsulation=not forced_a),
                         phase2_b=[mirror(cfg)])
        a.initiate((B_ADDR, 500), cfg, clock.now)
        transfer(a, b, clock.now)
        qa, qb = established(events(a))[0], established(events(b))[0]
        assert qa.encapsulation == qb.encapsulation == "udp"
        assert carry_traffic(qa, qb) == 6


def test_without_nat_traversal_no_vendor_ids_and_plain_esp(clock) -> None:
    """nat_traversal off on one side: no NAT-D, no float, plain ESP even with force_encapsulation."""
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(phase1(force_encapsulation=True), phase1(nat_traversal=False), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    log = transfer(a, b, clock.now)
    assert {d.dst[1] for d in log} == {500}
    assert not any(p.payload_type in (PayloadType.NAT_D, PayloadType.VID)
                   for d in log[1:4] for p in parse_message(d.data).payloads)
    qa, qb = established(events(a))[0], established(events(b))[0]
    assert qa.encapsulation == "none" and carry_traffic(qa, qb) == 6


def test_responder_picks_its_most_preferred_offered_transform(clock) -> None:
    """The initiator offers in its order; the responder takes the first of *its* list offered."""
    offer = (p1(cipher="3des", group=2), p1(cipher="aes-cbc", key_bits=256, group=14), p1(cipher="des", group=1))
    prefer = (p1(cipher="des", group=1), p1(cipher="aes-cbc", key_bits=256, group=14), p1(cipher="3des", group=2))
    a, b, ev_a, ev_b = negotiate(clock, phase1(*offer), phase1(prefer[1], prefer[2]), mode="tunnel", nat=False)
    assert ev_a[0].cipher == ev_b[0].cipher == "aes-cbc" and ev_a[0].key_bits == 256
    a, b, ev_a, ev_b = negotiate(clock, phase1(*offer), phase1(*prefer), mode="tunnel", nat=False)
    assert ev_a[0].cipher == "des" and ev_a[0].dh_group == 1


def test_phase1_lifetime_is_the_shorter_and_expiry_deletes_both_sides(clock) -> None:
    """Without IPsec SAs, the responder lives min(offered, its own) and at expiry sends a Delete,
    so the shorter lifetime ends the ISAKMP SA on both sides."""
    from ikeproto.events import Phase1Deleted

    a, b, ev_a, ev_b = negotiate(clock, phase1(p1(lifetime_s=600)), phase1(p1(lifetime_s=300)),
                                 mode="tunnel", nat=False)
    assert (ev_a[0].lifetime_s, ev_b[0].lifetime_s) == (600, 300)
    a.delete_phase2((B_ADDR, 500), ev_a[1].sas[0].spi_in, now=clock.now)
    transfer(a, b, clock.now)
    events(a), events(b)
    run_timers(a, b, clock, clock.now + 298)
    assert events(a) == events(b) == [] and a.ike_sa(B_ADDR) is not None
    run_timers(a, b, clock, clock.now + 2)
    (da,), (db,) = events(a), events(b)
    assert isinstance(da, Phase1Deleted) and isinstance(db, Phase1Deleted)
    assert (da.reason, da.by_peer, db.reason, db.by_peer) == ("deleted by peer", True, "expired", False)
    assert a.ike_sa(B_ADDR) is None and b.ike_sa(A_ADDR) is None


def test_expired_isakmp_sa_is_kept_until_its_ipsec_sas_are_gone(clock) -> None:
    """Interop finding ikeio-1: at the lifetime the ISAKMP SA stops serving new requests (a new
    Main Mode runs, without INITIAL-CONTACT) but is deleted only once the IPsec SAs it negotiated
    are (MS-IKEE §3.8.4.1): a Delete(ISAKMP) earlier makes strongSwan drop its CHILD_SAs."""
    from ikeproto.events import Phase1Deleted

    a, b, ev_a, ev_b = negotiate(clock, phase1(p1(lifetime_s=60)), phase1(p1(lifetime_s=60)),
                                 mode="tunnel", nat=False)
    run_timers(a, b, clock, clock.now + 61)
    assert events(a) == events(b) == []
    assert a.ike_sa(B_ADDR).expired and b.ike_sa(A_ADDR).expired
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now)
    new_a = events(a)
    assert [type(e) for e in new_a] == [Phase1Established, Phase2Established]
    assert new_a[0].cookies != ev_a[0].cookies and len(a.ike_sas()) == 2
    events(b)
    a.delete_phase2((B_ADDR, 500), ev_a[1].sas[0].spi_in, now=clock.now)
    transfer(a, b, clock.now)
    gone_a = [e for e in events(a) if isinstance(e, Phase1Deleted)]
    gone_b = [e for e in events(b) if isinstance(e, Phase1Deleted)]
    assert [(e.cookies, e.reason) for e in gone_a] == [(ev_a[0].cookies, "expired")]
    assert [e.cookies for e in gone_b] == [ev_a[0].cookies]  # b drains too (or hears a's Delete)
    assert len(a.ike_sas()) == len(b.ike_sas()) == 1
    # With IPsec SAs that are never deleted, it goes when their lifetime (3600 s) ends.
    start = new_a[0].at
    run_timers(a, b, clock, start + 3599)
    assert a.ike_sa(B_ADDR).cookies == new_a[0].cookies and a.ike_sa(B_ADDR).expired
    run_timers(a, b, clock, start + 3601)
    assert a.ike_sa(B_ADDR) is None and b.ike_sa(A_ADDR) is None


# --- failures --------------------------------------------------------------------------------------


def failed(evs) -> NegotiationFailed:
    fails = [e for e in evs if isinstance(e, NegotiationFailed)]
    assert len(fails) == 1, evs
    return fails[0]


def test_wrong_psk_fails_with_authentication_failed_on_both_sides(clock) -> None:
    """Message 5 does not decrypt under the responder's keys: it answers AUTHENTICATION-FAILED
    (unprotected), the initiator gives up after its retransmissions naming the peer's notify,
    and the responder reports the failure when the half-open SA expires."""
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(phase1(psk=b"one key"), phase1(psk=b"another key"), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now)
    assert b.stats.dropped["refused"] == 1
    run_timers(a, b, clock, clock.now + 60)
    fa, fb = failed(events(a)), failed(events(b))
    assert (fa.phase, fa.notify, fa.failure_point, fa.timed_out) == (1, NotifyType.AUTHENTICATION_FAILED, "peer", False)
    assert (fb.phase, fb.notify, fb.failure_point) == (1, NotifyType.AUTHENTICATION_FAILED, "me")
    assert fa.request_id == 1
    assert a.stats.retransmits == 5 and b.stats.dropped["refused"] == 6


def test_no_common_proposal_fails_at_message_1(clock) -> None:
    """The responder refuses message 1 with NO-PROPOSAL-CHOSEN and keeps no state; the initiator
    stops within the first-message budget (3 s) and reports the peer's notify."""
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(phase1(p1(cipher="3des", group=2)), phase1(p1(cipher="aes-cbc", group=14)),
                     phase2_b=[mirror(cfg)])
    start = clock.now
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now)
    fb = failed(events(b))
    assert (fb.notify, fb.failure_point) == (NotifyType.NO_PROPOSAL_CHOSEN, "me")
    assert b.ike_sas() == []
    run_timers(a, b, clock, clock.now + 10)
    fa = failed(events(a))
    assert (fa.notify, fa.failure_point, fa.timed_out) == (NotifyType.NO_PROPOSAL_CHOSEN, "peer", False)
    assert fa.at - start <= 3.0


def test_peer_that_never_answers_gives_up_after_the_retransmissions_within_3_s(clock) -> None:
    """Message 1 is resent at +0.5 s and +1.5 s and the negotiation given up at +3 s:
    NegotiationFailed(timed_out=True, failure_point="peer") for the request."""
    a, _b = endpoints(phase1())
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    start = clock.now
    rid = a.initiate((B_ADDR, 500), cfg, clock.now)
    sends = [(clock.now, len(a.datagrams_to_send(clock.now)))]
    while (t := a.get_timer()) is not None:
        clock.now = t
        a.handle_timer(t)
        sends.append((t - start, len(a.datagrams_to_send(t))))
    f = failed(events(a))
    assert (f.phase, f.request_id, f.timed_out, f.failure_point, f.notify) == (1, rid, True, "peer", None)
    assert [s for s in sends if s[1]][1:] == [(0.5, 1), (1.5, 1)]
    assert f.at - start == pytest.approx(3.0)
    assert a.ike_sas() == [] and a.get_timer() is None


def is_mm5(data: bytes) -> bool:
    msg = parse_message(data)
    return msg.exchange_type == 2 and msg.is_encrypted


def tamper_hash(payloads: list) -> list:
    return [replace(p, data=bytes(b ^ 0xFF for b in p.data)) if isinstance(p, HashPayload) else p
            for p in payloads]


def test_tampered_hash_i_is_dropped_and_the_genuine_message_still_succeeds(clock) -> None:
    """A message 5 with a wrong HASH_I (re-encrypted with the right keys) changes nothing: the
    responder answers INVALID-HASH-INFORMATION, and the genuine message 5 after it establishes."""
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)

    def intercept(d):
        if d.sender == "a" and is_mm5(d.data):
            return [reencrypt(b, d.data, tamper_hash), d.data]
        return d.data

    log = transfer(a, b, clock.now, intercept=intercept)
    assert b.stats.dropped["refused"] == 1
    notify = [parse_message(d.data) for d in log if d.sender == "b" and parse_message(d.data).exchange_type == 5]
    assert notify[0].payloads[0].notify_type == NotifyType.INVALID_HASH_INFORMATION
    assert len(established(events(a))) == len(established(events(b))) == 1


def test_tampered_hash_every_time_fails_with_invalid_hash_information(clock) -> None:
    """When every message 5 carries a wrong HASH_I the negotiation fails on both sides with
    INVALID-HASH-INFORMATION (the initiator names the peer, the responder itself)."""
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)

    def intercept(d):
        if d.sender == "a" and is_mm5(d.data):
            return reencrypt(b, d.data, tamper_hash)
        return d.data

    transfer(a, b, clock.now, intercept=intercept)
    run_timers(a, b, clock, clock.now + 60, intercept=intercept)
    fa, fb = failed(events(a)), failed(events(b))
    assert (fa.notify, fa.failure_point) == (NotifyType.INVALID_HASH_INFORMATION, "peer")
    assert (fb.notify, fb.failure_point) == (NotifyType.INVALID_HASH_INFORMATION, "me")


def test_rsa_signatures_with_certificates_from_a_trusted_ca(clock) -> None:
    """rsa-sig trusting a CA: both send CERT, each verifies the other's SIG with the certified key."""
    lab = rsa_lab()
    proposal = p1(auth="rsa-sig")
    a, b, ev_a, ev_b = negotiate(clock, rsa_phase1(lab.a, None, proposal, trust_ca=True),
                                 rsa_phase1(lab.b, None, proposal, trust_ca=True), mode="tunnel", nat=True)
    assert ev_a[0].auth == ev_b[0].auth == "rsa-sig"
    assert carry_traffic(ev_a[1], ev_b[1]) == 6


@pytest.mark.parametrize("case", ["untrusted certificate", "wrong configured key"])
def test_rsa_signature_failures(clock, case) -> None:
    """An untrusted certificate (INVALID-CERT-AUTHORITY) or a signature that does not verify with
    the configured key (INVALID-SIGNATURE) fails Main Mode on both sides."""
    lab = rsa_lab()
    proposal = p1(auth="rsa-sig")
    if case == "untrusted certificate":
        p1_a = rsa_phase1(lab.stranger, None, proposal, trust_ca=True)
        want = NotifyType.INVALID_CERT_AUTHORITY
    else:
        p1_a = rsa_phase1(lab.stranger, lab.b, proposal)
        want = NotifyType.INVALID_SIGNATURE
    p1_b = rsa_phase1(lab.b, lab.a, proposal, trust_ca=case == "untrusted certificate")
    a, b, _ev_a, ev_b = negotiate(clock, p1_a, p1_b, mode="tunnel", nat=False)
    assert not established(ev_b)
    run_timers(a, b, clock, clock.now + 60)
    fa, fb = failed(events(a)), failed(events(b))
    assert (fa.notify, fb.notify) == (want, want)


def test_peer_identity_must_match_the_configured_one(clock) -> None:
    """A configured peer_id that the peer's ID payload does not match refuses message 5."""
    from ikeproto.config import Identity

    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(phase1(), phase1(peer_id=Identity(kind="fqdn", value="someone.example")),
                     phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now)
    run_timers(a, b, clock, clock.now + 60)
    fa, fb = failed(events(a)), failed(events(b))
    assert fa.notify == fb.notify == NotifyType.INVALID_ID_INFORMATION
