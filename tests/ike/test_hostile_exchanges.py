"""Hostile input at the exchange level (ARCHITECTURE "Hostile input"): every hostile datagram is
counted and dropped with no state change, so the genuine negotiation still completes — missing
mandatory payloads at each step, bad KE values and unknown groups, unauthenticated Informational
before Main Mode completes, a spoofed message 1, out-of-order and unsupported messages, and
mutated or random datagrams at every step. The Delete-followed-by-notifies case lives in
test_informational.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikeproto import dh
from ikeproto.enums import ExchangeType, NotifyType, PayloadType, ProtocolId
from ikeproto.events import NegotiationFailed
from ikeproto.exchanges.informational import clear_notify
from ikeproto.message import Message, parse_message, serialize_message, serialize_payloads
from ikeproto.mutations import mutate_bytes
from ikeproto.payloads import DeletePayload, HashPayload, KePayload, NotifyPayload
from ikeproto.strategies import datagrams
from tests.conftest import FakeClock
from tests.ike.helpers import (
    A_ADDR,
    B_ADDR,
    endpoints,
    established,
    events,
    mirror,
    p1,
    phase1,
    phase2,
    reencrypt,
    sa_of,
    transfer,
)

CFG = phase2("10.1.0.0/24", "10.2.0.0/24")
NAMES = ["MM1", "MM2", "MM3", "MM4", "MM5", "MM6", "QM1", "QM2", "QM3"]


def pair(group: int = 14, pfs: int | None = None):
    cfg = replace(CFG, pfs_group=pfs)
    a, b = endpoints(phase1(p1(group=group)), phase2_b=[mirror(cfg)])
    return a, b, cfg


def run(clock, evil, *, group: int = 14, pfs: int | None = None):
    """The genuine negotiation with ``evil(index, delivery, a, b)`` returning extra datagrams to
    deliver *before* genuine message ``index``; returns (a, b, events of a, events of b)."""
    a, b, cfg = pair(group, pfs)
    a.initiate((B_ADDR, 500), cfg, clock.now)
    count = [0]

    def intercept(d):
        if parse_message(d.data).exchange_type == ExchangeType.INFORMATIONAL:
            return d.data  # the notifies answering refused messages are not counted
        i = count[0]
        count[0] += 1
        extra = evil(i, d, a, b) if i < len(NAMES) else []
        return [*extra, d.data]

    transfer(a, b, clock.now, intercept=intercept)
    return a, b, events(a), events(b)


def succeeded(a, b, ev_a, ev_b) -> None:
    assert len(established(ev_a)) == len(established(ev_b)) == 1, (a.stats, b.stats)
    assert not [e for e in ev_a + ev_b if isinstance(e, NegotiationFailed)]


def without(ptype: int):
    """A copy of the message with every payload of ``ptype`` removed (re-encrypted if encrypted)."""
    def make(i, d, a, b):
        receiver = b if d.sender == "a" else a
        msg = parse_message(d.data)
        if msg.is_encrypted:
            # An encrypted body cannot be empty: a lone Notify stands in for a removed HASH.
            return [reencrypt(receiver, d.data, lambda ps: [p for p in ps if p.payload_type != ptype]
                              or [NotifyPayload(notify_type=NotifyType.INITIAL_CONTACT)])]
        return [serialize_message(replace(msg, payloads=tuple(p for p in msg.payloads if p.payload_type != ptype)))]
    return make


MANDATORY = [(0, PayloadType.SA), (1, PayloadType.SA), (2, PayloadType.KE), (2, PayloadType.NONCE),
             (3, PayloadType.KE), (3, PayloadType.NONCE), (4, PayloadType.ID), (4, PayloadType.HASH),
             (5, PayloadType.ID), (5, PayloadType.HASH), (6, PayloadType.HASH), (6, PayloadType.SA),
             (6, PayloadType.NONCE), (7, PayloadType.SA), (7, PayloadType.NONCE), (8, PayloadType.HASH)]


@pytest.mark.parametrize(("index", "ptype"), MANDATORY, ids=[f"{NAMES[i]}-no-{t.name}" for i, t in MANDATORY])
def test_missing_mandatory_payload_is_dropped_and_the_genuine_message_succeeds(clock, index, ptype) -> None:
    """CVE-2013-6467 / CVE-2005-3732 class: a message without a mandatory payload changes nothing."""
    def evil(i, d, a, b):
        return without(ptype)(i, d, a, b) if i == index else []

    a, b, ev_a, ev_b = run(clock, evil)
    succeeded(a, b, ev_a, ev_b)
    receiver = b if index % 2 == 0 else a
    assert sum(receiver.stats.dropped.values()) == 1


def bad_ke(value_of):
    def make(i, d, a, b):
        msg = parse_message(d.data)
        if i not in (2, 3):
            return []
        group = sa_of(b if d.sender == "a" else a, (msg.initiator_cookie, msg.responder_cookie)).choice.dh_group
        value = value_of(dh.group(group))
        return [serialize_message(replace(msg, payloads=tuple(
            KePayload(data=value) if isinstance(p, KePayload) else p for p in msg.payloads)))]
    return make


def _modp(k):
    return lambda g: int(k(g.prime)).to_bytes(g.public_length, "big")


KE_CASES = [
    (14, "zero", _modp(lambda p: 0)), (14, "one", _modp(lambda p: 1)), (14, "p-1", _modp(lambda p: p - 1)),
    (14, "p", _modp(lambda p: p)), (2, "one", _modp(lambda p: 1)), (2, "p-1", _modp(lambda p: p - 1)),
    (14, "short", lambda g: b"\x05" * (g.public_length - 1)), (14, "long", lambda g: b"\x05" * (g.public_length + 1)),
    (19, "zero point", lambda g: bytes(g.public_length)), (19, "off the curve", lambda g: b"\x01" * g.public_length),
    (20, "short", lambda g: b"\x01" * 48), (31, "zero (low order)", lambda g: bytes(32)),
    (31, "short", lambda g: b"\x09" * 31),
]


@pytest.mark.parametrize(("group", "name", "value"), KE_CASES, ids=[f"g{g}-{n}" for g, n, _ in KE_CASES])
def test_bad_ke_values_are_refused_without_state_change(clock, group, name, value) -> None:
    """CVE-2015-3240 / CVE-2014-9221 class: 0, 1, p-1, p, wrong lengths, points off the curve, an
    all-zero X25519 value, in message 3 and in message 4: refused (INVALID-KEY-INFORMATION) and
    dropped; the genuine message right after still completes the negotiation."""
    a, b, ev_a, ev_b = run(clock, bad_ke(value), group=group)
    succeeded(a, b, ev_a, ev_b)
    assert a.stats.dropped["refused"] == b.stats.dropped["refused"] == 1


def test_bad_pfs_ke_in_an_authenticated_quick_mode_ends_the_exchange(clock) -> None:
    """A peer holding the keys sends a Quick Mode with PFS and a KE of 1: after HASH(1) verified
    the refusal is final — INVALID-KEY-INFORMATION both ways, the ISAKMP SA stays."""
    def evil(i, d, a, b):
        if i != 6:
            return []

        def bad(ps):
            rest = [KePayload(data=(1).to_bytes(256, "big")) if isinstance(p, KePayload) else p for p in ps[1:]]
            mid = parse_message(d.data).message_id
            h = sa_of(b, (d.data[:8], d.data[8:16])).keys.qm_hash1(mid, serialize_payloads(rest))
            return [HashPayload(data=h), *rest]
        return [reencrypt(b, d.data, bad)]

    a, b, ev_a, ev_b = run(clock, evil, pfs=14)
    fa = [e for e in ev_a if isinstance(e, NegotiationFailed)]
    fb = [e for e in ev_b if isinstance(e, NegotiationFailed)]
    assert [(f.phase, f.notify, f.failure_point) for f in fa] == [(2, NotifyType.INVALID_KEY_INFORMATION, "peer")]
    assert [(f.phase, f.notify, f.failure_point) for f in fb] == [(2, NotifyType.INVALID_KEY_INFORMATION, "me")]
    assert a.ike_sa(B_ADDR) is not None and b.ike_sa(A_ADDR) is not None


def test_an_offer_of_unknown_groups_only_is_refused(clock) -> None:
    """A transform naming group 3 (EC2N, not implemented) or 99 is never chosen."""
    def evil(i, d, a, b):
        return []

    a, b, cfg = pair()
    a.initiate((B_ADDR, 500), cfg, clock.now)
    ((mm1, _, _),) = a.datagrams_to_send(clock.now)
    msg = parse_message(mm1)
    sa = msg.payloads[0]
    t = sa.proposals[0].transforms[0]
    for group in (3, 99):
        bad_t = replace(t, attributes=tuple(replace(x, value=group) if x.type == 4 else x for x in t.attributes))
        bad = replace(sa, proposals=(replace(sa.proposals[0], transforms=(bad_t,)),))
        b.receive_datagram(serialize_message(replace(msg, payloads=(bad, *msg.payloads[1:]))), (A_ADDR, 500), clock.now)
    notes = [parse_message(d).payloads[0].notify_type for d, _, _ in b.datagrams_to_send(clock.now)]
    assert notes == [NotifyType.NO_PROPOSAL_CHOSEN] * 2 and b.ike_sas() == []


def test_unauthenticated_informational_before_main_mode_completes(clock) -> None:
    """Before Main Mode completes, an unprotected Delete is refused by the payload rules and an
    unprotected error notify is only remembered; the negotiation completes."""
    def evil(i, d, a, b):
        if i not in (2, 3, 4, 5):
            return []
        cky_i, cky_r = d.data[:8], d.data[8:16]
        delete = serialize_message(Message(initiator_cookie=cky_i, responder_cookie=cky_r,
                                           exchange_type=ExchangeType.INFORMATIONAL,
                                           payloads=(DeletePayload.of(ProtocolId.ISAKMP, [cky_i + cky_r]),)))
        return [delete, clear_notify(cky_i, cky_r, NotifyType.AUTHENTICATION_FAILED)]

    a, b, ev_a, ev_b = run(clock, evil)
    succeeded(a, b, ev_a, ev_b)
    assert a.stats.dropped["refused"] == b.stats.dropped["refused"] == 2


def test_unprotected_informational_on_an_established_sa_is_dropped(clock) -> None:
    a, b, ev_a, ev_b = run(clock, lambda *args: [])
    cookies = ev_a[0].cookies
    a.receive_datagram(clear_notify(*cookies, NotifyType.INVALID_SPI), (B_ADDR, 4500), clock.now, local_port=4500)
    assert a.stats.dropped["unprotected informational on an established SA"] == 1
    assert a.ike_sa(B_ADDR) is not None


def test_spoofed_message_1_gets_one_answer_never_a_retransmission_and_no_event(clock) -> None:
    """CVE-2016-5361: the responder answers a (spoofed) message 1 once, never resends on a timer,
    and the half-open SA disappears silently."""
    a, b, cfg = pair()
    a.initiate((B_ADDR, 500), cfg, clock.now)
    ((mm1, _, _),) = a.datagrams_to_send(clock.now)
    b.receive_datagram(mm1, ("203.0.113.66", 500), clock.now)
    assert len(b.datagrams_to_send(clock.now)) == 1
    sent = []
    while (t := b.get_timer()) is not None:
        b.handle_timer(t)
        sent += b.datagrams_to_send(t)
    assert sent == [] and events(b) == [] and b.ike_sas() == []


def test_out_of_order_messages_are_dropped(clock) -> None:
    """Messages 5, 4 and 6 of a recorded run sent too early, and Quick Mode 2 before 1: all dropped
    without changing the receiver; the genuine order then succeeds."""
    record: list[bytes] = []
    run(clock, lambda i, d, a, b: record.append(d.data) or [])

    def evil(i, d, a, b):
        return {1: [record[3]], 2: [record[4]], 3: [record[5]], 6: [record[7]]}.get(i, [])

    a, b, ev_a, ev_b = run(clock, evil)
    succeeded(a, b, ev_a, ev_b)
    assert sum(a.stats.dropped.values()) + sum(b.stats.dropped.values()) == 4


def test_unsupported_exchanges_and_early_quick_mode_are_dropped(clock) -> None:
    def evil(i, d, a, b):
        if i != 2:
            return []
        head = d.data[:18]
        aggressive = head + bytes([ExchangeType.AGGRESSIVE]) + d.data[19:]
        transaction = head + bytes([ExchangeType.TRANSACTION]) + d.data[19:]
        quick = d.data[:18] + bytes([ExchangeType.QUICK_MODE, 1]) + b"\x00\x00\x00\x07" + d.data[24:]
        return [aggressive, transaction, quick]

    a, b, ev_a, ev_b = run(clock, evil)
    succeeded(a, b, ev_a, ev_b)
    assert b.stats.dropped["unsupported exchange type"] == 2
    assert b.stats.dropped["quick mode outside an established SA"] == 1


def test_too_many_vendor_ids_and_id_payload_lies_are_dropped(clock) -> None:
    def evil(i, d, a, b):
        msg = parse_message(d.data)
        if i == 0:
            from ikeproto.payloads import VendorIdPayload

            vids = tuple(VendorIdPayload(data=bytes([n]) * 16) for n in range(20))
            return [serialize_message(replace(msg, payloads=msg.payloads + vids))]
        if i == 4:
            # ID_IPV4_ADDR with 5 octets of data (CVE-2014-2891 class): the ID payload lies.
            def lie(ps):
                from ikeproto.payloads import OpaquePayload

                return [OpaquePayload(payload_type=PayloadType.ID, data=b"\x01\x00\x00\x00" + b"\x01" * 5), *ps[1:]]
            return [reencrypt(b, d.data, lie)]
        return []

    a, b, ev_a, ev_b = run(clock, evil)
    succeeded(a, b, ev_a, ev_b)
    assert sum(b.stats.dropped.values()) == 2


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
@settings(max_examples=25)
@given(data=st.data())
def test_mutated_messages_never_escape_and_encrypted_ones_never_count(index, data) -> None:
    """Property: a structurally mutated copy of message ``index`` delivered before the genuine one
    never makes ``receive_datagram`` raise; for encrypted messages (5, 6 and Quick Mode) it is
    always dropped, so the negotiation completes."""
    def choose(n: int) -> int:
        return data.draw(st.integers(0, max(n - 1, 0)))

    def evil(i, d, a, b):
        if i != index:
            return []
        mutant = mutate_bytes(d.data, choose, rounds=data.draw(st.integers(1, 3)))
        return [] if mutant == d.data else [mutant]

    a, b, ev_a, ev_b = run(FakeClock(), evil)
    if index >= 4:
        succeeded(a, b, ev_a, ev_b)


@settings(max_examples=40)
@given(junk=st.lists(datagrams(), min_size=1, max_size=4), where=st.integers(0, len(NAMES) - 1))
def test_random_datagrams_at_any_step_never_escape(junk, where) -> None:
    """Property: arbitrary datagrams (public ikeproto.strategies) thrown at both endpoints at any
    step are dropped; the genuine negotiation still completes."""
    clock = FakeClock()

    def evil(i, d, a, b):
        if i == where:
            for j in junk:
                a.receive_datagram(j, (B_ADDR, 500), clock.now)
                a.receive_datagram(j, (B_ADDR, 4500), clock.now, local_port=4500)
        return list(junk) if i == where else []

    a, b, ev_a, ev_b = run(clock, evil)
    # A junk datagram may be a well-formed message 1 that is refused (and reported): only the
    # genuine request must be unaffected.
    assert len(established(ev_a)) == len(established(ev_b)) == 1
    assert not [e for e in ev_a if isinstance(e, NegotiationFailed) and e.request_id is not None]


def test_garbage_certificate_is_refused_and_the_genuine_one_succeeds(clock) -> None:
    """Certificate and ASN.1 garbage in the CERT payload of message 5 (rsa-sig, CA trust): refused
    with INVALID-CERTIFICATE, nothing changes, the genuine message 5 then authenticates."""
    from ikeproto.payloads import CertPayload
    from tests.ike.helpers import rsa_lab, rsa_phase1

    lab = rsa_lab()
    a, b = endpoints(rsa_phase1(lab.a, None, p1(auth="rsa-sig"), trust_ca=True),
                     rsa_phase1(lab.b, None, p1(auth="rsa-sig"), trust_ca=True), phase2_b=[mirror(CFG)])
    a.initiate((B_ADDR, 500), CFG, clock.now)
    sent_notes = []

    def intercept(d):
        msg = parse_message(d.data)
        if d.sender == "a" and msg.exchange_type == ExchangeType.IDENTITY_PROTECTION and msg.is_encrypted:
            bad = [reencrypt(b, d.data, lambda ps: [replace(p, data=b"\x30\x82\xff\xff" + bytes(40))
                                                    if isinstance(p, CertPayload) else p for p in ps])]
            return [*bad, d.data]
        if msg.exchange_type == ExchangeType.INFORMATIONAL and not msg.is_encrypted:
            sent_notes.append(msg.payloads[0].notify_type)
        return d.data

    transfer(a, b, clock.now, intercept=intercept)
    assert sent_notes == [NotifyType.INVALID_CERTIFICATE]
    assert len(established(events(a))) == len(established(events(b))) == 1


def snapshot(ep) -> list:
    """Everything that would change if a message were (wrongly) accepted."""
    out = []
    for sa in ep.table:
        mm = sa.main_mode
        out.append((sa.cookies, sa.state, mm.step if mm else None, sa.local_port, sa.peer_port,
                    sa.ivs.phase1_iv if sa.ivs else None, sa.ivs.message_ids if sa.ivs else None,
                    tuple(sorted((m, q.step) for m, q in sa.quick_modes.items()))))
    return out


@pytest.mark.parametrize("state", range(len(NAMES)), ids=[f"before-{n}" for n in NAMES])
def test_every_message_out_of_its_place_changes_nothing(clock, state) -> None:
    """The (state, input) walk: with the exchange waiting for genuine message ``state``, every
    other message of the same negotiation (earlier ones replayed, later ones early), sent to both
    endpoints on both ports, leaves both exactly as they were; the genuine run then completes.
    (Message ``state + 1`` is what the sender of ``state`` legitimately waits for: left out.)"""
    record: list[bytes] = []
    run(FakeClock(), lambda i, d, a, b: record.append(d.data) or [])
    assert len(record) == len(NAMES)

    def evil(i, d, a, b):
        if i != state:
            return []
        before = snapshot(a), snapshot(b)
        for j, other in enumerate(record):
            if j in (state, state + 1):
                continue
            # Earlier messages go to both (replays and reflections); later ones only to their own
            # receiver (an endpoint's own future messages cannot exist yet).
            if j < state or j % 2 == 1:
                a.receive_datagram(other, (B_ADDR, 500), clock.now)
                a.receive_datagram(other, (B_ADDR, 4500), clock.now, local_port=4500)
            if j < state or j % 2 == 0:
                b.receive_datagram(other, (A_ADDR, 500), clock.now)
                b.receive_datagram(other, (A_ADDR, 4500), clock.now, local_port=4500)
        assert (snapshot(a), snapshot(b)) == before
        a.datagrams_to_send(clock.now), b.datagrams_to_send(clock.now)  # replays of old answers
        return []

    a, b, ev_a, ev_b = run(clock, evil)
    succeeded(a, b, ev_a, ev_b)


def test_authenticated_quick_mode_with_a_non_contiguous_subnet_id_is_refused(clock) -> None:
    """An ID_IPV4_ADDR_SUBNET whose mask has holes (255.0.255.0), from a peer holding the keys:
    refused with INVALID-ID-INFORMATION on both sides; the ISAKMP SA stays."""
    from ikeproto.payloads import IdPayload

    def evil(i, d, a, b):
        if i != 6:
            return []

        def bad(ps):
            rest = [replace(p, data=bytes([10, 1, 0, 0, 255, 0, 255, 0])) if isinstance(p, IdPayload) else p
                    for p in ps[1:]]
            mid = parse_message(d.data).message_id
            h = sa_of(b, (d.data[:8], d.data[8:16])).keys.qm_hash1(mid, serialize_payloads(rest))
            return [HashPayload(data=h), *rest]
        return [reencrypt(b, d.data, bad)]

    a, b, ev_a, ev_b = run(clock, evil)
    fa = [e for e in ev_a if isinstance(e, NegotiationFailed)]
    fb = [e for e in ev_b if isinstance(e, NegotiationFailed)]
    assert [(f.notify, f.failure_point) for f in fa] == [(NotifyType.INVALID_ID_INFORMATION, "peer")]
    assert [(f.notify, f.failure_point) for f in fb] == [(NotifyType.INVALID_ID_INFORMATION, "me")]
