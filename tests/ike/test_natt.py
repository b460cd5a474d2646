"""NAT traversal (RFC 3947 and draft-02/03): dialect choice by vendor ID, NAT-D detection, the
move to port 4500, UDP-encapsulated modes (RFC and draft numbers), NAT-OA in transport mode,
keep-alives, and strongSwan's message 1 answered as strongSwan expects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ikeproto.crypto import hash_algorithm
from ikeproto.enums import ExchangeType, IpsecAttr, PayloadType
from ikeproto.keymat import natd_hash
from ikeproto.message import Message, parse_message, serialize_message
from ikeproto.natt import NattVariant, choose_variant, detect_nat, natd_payloads, offered_vendor_ids
from ikeproto.payloads import NatDPayload, NatOaPayload, VendorIdPayload
from ikeproto.proposals import SaPayload
from ikeproto.vendor_ids import NAT_T_DRAFT_02_N, NAT_T_DRAFT_03, NAT_T_RFC3947
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
    plaintext_payloads,
    run_timers,
    transfer,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
CKY_I, CKY_R = b"\x01" * 8, b"\x02" * 8
SHA1 = hash_algorithm(2)


def test_initiator_offers_rfc_and_draft_vendor_ids_and_the_best_common_one_wins() -> None:
    assert offered_vendor_ids()[0] == NAT_T_RFC3947 and NAT_T_DRAFT_02_N in offered_vendor_ids()
    assert choose_variant([NAT_T_DRAFT_02_N, NAT_T_RFC3947]) is NattVariant.RFC3947
    assert choose_variant([NAT_T_DRAFT_02_N, b"other"]) is NattVariant.DRAFT_02_N
    assert choose_variant([b"x" * 16]) is None
    assert (NattVariant.DRAFT_03.natd_type, NattVariant.DRAFT_03.natoa_type) == (130, 131)
    assert NattVariant.DRAFT_02.encapsulation_mode("tunnel") == 61443
    assert NattVariant.RFC3947.encapsulation_mode("transport") == 4


@pytest.mark.parametrize(("received_for_me", "received_for_peer", "local", "peer"), [
    (("192.0.2.1", 500), ("192.0.2.2", 500), False, False),
    (("203.0.113.9", 20000), ("192.0.2.2", 500), True, False),
    (("192.0.2.1", 500), ("10.0.0.7", 500), False, True),
])
def test_detect_nat_compares_both_hashes(received_for_me, received_for_peer, local, peer) -> None:
    """RFC 3947 §3.2: the first NAT-D is the receiver's address, the others the sender's."""
    hashes = [natd_hash(SHA1, CKY_I, CKY_R, *received_for_me), natd_hash(SHA1, CKY_I, CKY_R, *received_for_peer)]
    s = detect_nat(SHA1, CKY_I, CKY_R, hashes, local=("192.0.2.1", 500), remote=("192.0.2.2", 500))
    assert (s.local_behind_nat, s.peer_behind_nat, s.detected) == (local, peer, local or peer)


def test_faked_nat_sends_a_random_hash_for_ourselves() -> None:
    pl = natd_payloads(SHA1, CKY_I, CKY_R, remote=("192.0.2.2", 500), local=("192.0.2.1", 500),
                       variant=NattVariant.DRAFT_03, fake=True, rng=lambda n: b"\xaa" * n)
    assert [p.payload_type for p in pl] == [130, 130]
    assert pl[0].data == natd_hash(SHA1, CKY_I, CKY_R, "192.0.2.2", 500) and pl[1].data == b"\xaa" * 20


def strip_rfc_vid(keep: bytes):
    """An intercept that leaves the initiator's message 1 with only the ``keep`` NAT-T vendor ID."""
    def intercept(d):
        msg = parse_message(d.data)
        if d.sender == "a" and msg.exchange_type == ExchangeType.IDENTITY_PROTECTION and msg.responder_cookie == bytes(8):
            payloads = tuple(p for p in msg.payloads if not isinstance(p, VendorIdPayload) or p.data == keep)
            return serialize_message(Message(initiator_cookie=msg.initiator_cookie, exchange_type=msg.exchange_type,
                                             payloads=payloads))
        return d.data
    return intercept


@pytest.mark.parametrize("vid", [NAT_T_DRAFT_03, NAT_T_DRAFT_02_N])
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_draft_peer_gets_draft_payload_types_and_encapsulation_modes(clock, vid, mode) -> None:
    """A peer announcing only a draft: NAT-D 130, encapsulation 61443/61444, NAT-OA 131 (one, the
    sender's own address) — and traffic still flows through the NAT."""
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24") if mode == "tunnel" else phase2(f"{A_ADDR}/32", f"{B_ADDR}/32",
                                                                                mode="transport")
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    strip = strip_rfc_vid(vid)
    seen: list = []

    def spy(d):
        data = strip(d)
        msg = parse_message(data)
        if msg.exchange_type == ExchangeType.IDENTITY_PROTECTION and not msg.is_encrypted:
            seen.extend(msg.payloads)
        elif msg.exchange_type == ExchangeType.QUICK_MODE and len(data) > 100:
            seen.extend(plaintext_payloads(b if d.sender == "a" else a, data))
        return data

    transfer(a, b, clock.now, nat=Nat(inside=a), intercept=spy)
    (qa,), (qb,) = established(events(a)), established(events(b))
    assert {p.payload_type for p in seen if isinstance(p, NatDPayload)} == {130}
    vids = [p.data for p in seen if isinstance(p, VendorIdPayload)]
    assert vids.count(vid) == 2 and NAT_T_RFC3947 not in vids
    modes = {t.attribute(IpsecAttr.ENCAPSULATION_MODE) for p in seen if isinstance(p, SaPayload)
             for prop in p.proposals if prop.protocol_id == 3 for t in prop.transforms}
    assert modes == ({61443} if mode == "tunnel" else {61444})
    oas = [p for p in seen if isinstance(p, NatOaPayload)]
    assert [p.payload_type for p in oas] == ([] if mode == "tunnel" else [131, 131])
    assert carry_traffic(qa, qb) == 6


def test_rfc_transport_mode_sends_nat_oa_i_and_r_and_reports_the_original_address(clock) -> None:
    """RFC 3947 §5.2: NAT-OAi and NAT-OAr in messages 1 and 2 of a UDP transport-mode Quick Mode;
    each side reports the peer's original address for the checksum fix-up."""
    cfg = phase2(f"{A_ADDR}/32", f"{B_ADDR}/32", mode="transport")
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    seen = []

    def spy(d):
        msg = parse_message(d.data)
        if msg.exchange_type == ExchangeType.QUICK_MODE and len(d.data) > 100:
            seen.append([p for p in plaintext_payloads(b if d.sender == "a" else a, d.data)
                         if isinstance(p, NatOaPayload)])
        return d.data

    transfer(a, b, clock.now, nat=Nat(inside=a), intercept=spy)
    # The initiator names its own address and the responder's; the responder (like libreswan) the
    # initiator's address as it sees it, and its own.
    assert [[str(p.ip_address()) for p in oas] for oas in seen] == [[A_ADDR, B_ADDR], ["203.0.113.9", B_ADDR]]
    (qa,), (qb,) = established(events(a)), established(events(b))
    assert (qa.peer_original_address, qb.peer_original_address) == (B_ADDR, A_ADDR)
    assert qb.peer[0] == "203.0.113.9"


def test_the_side_behind_the_nat_owes_keepalives_every_20_s(clock) -> None:
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    nat = Nat(inside=a)
    transfer(a, b, clock.now, nat=nat)
    assert a.get_timer() is not None
    start = clock.now
    run_timers(a, b, clock, start + 65, nat=nat)
    assert a.nat_keepalives(clock.now) == [((B_ADDR, 4500), 4500)] * 3
    assert b.nat_keepalives(clock.now) == []


def test_responder_follows_the_nat_mapping_of_message_5_and_later_rebinding(clock) -> None:
    """The responder answers from 4500 to the NAT's mapped port, and to a new port when an
    authenticated message arrives from it (a NAT rebinding)."""
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(cfg)])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    nat = Nat(inside=a)
    log = transfer(a, b, clock.now, nat=nat)
    assert {d.dst for d in log if d.sender == "b"} >= {("192.0.2.1", 4500)}
    assert b.ike_sa("203.0.113.9").peer == ("203.0.113.9", 20001)
    nat.out_map[4500] = 30000  # the NAT forgets and remaps
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now, nat=nat)
    assert b.ike_sa("203.0.113.9").peer == ("203.0.113.9", 30000)
    assert len(established(events(b))) == 2


def test_strongswans_message_1_is_answered_with_one_transform_and_the_rfc_vendor_id(clock) -> None:
    """strongSwan's captured message 1 (XAUTH, DPD, fragmentation, RFC 3947, draft-02 VIDs) gets a
    message 2 with the transform we prefer among its offer and only the RFC 3947 NAT-T VID."""
    golden = json.loads((VECTORS / "keymat_strongswan.json").read_text())
    mm1 = bytes.fromhex(golden["messages"][0]["hex"])
    _a, b = endpoints(phase1(p1(group=14)))
    b.receive_datagram(mm1, ("192.0.2.99", 500), clock.now)
    ((mm2, dest, port),) = b.datagrams_to_send(clock.now)
    msg = parse_message(mm2)
    assert (dest, port, msg.initiator_cookie) == (("192.0.2.99", 500), 500, mm1[:8])
    sa, *vids = msg.payloads
    assert [v.data for v in vids] == [NAT_T_RFC3947]
    (prop,) = sa.proposals
    assert [t.number for t in prop.transforms] == [2]
    assert msg.payloads[0].payload_type == PayloadType.SA
    # No timer ever resends it (CVE-2016-5361), and a duplicate gets the same bytes.
    run_timers(b, b, clock, clock.now + 60)
    assert b.datagrams_to_send(clock.now) == []
    b.receive_datagram(mm1, ("192.0.2.99", 500), clock.now)
    assert [d for d, _, _ in b.datagrams_to_send(clock.now)] == [mm2]
