"""Proposal building and selection: phase-1 transforms and phase-2 proposals to and from the wire,
the responder's choice (its most preferred acceptable offer), the initiator's check of the answer,
lifetimes and RESPONDER-LIFETIME, odd transforms; and strongSwan's own SA payloads from the lab
capture (message 1, and Quick Mode 1/2 decrypted with the logged keys)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikeproto.attributes import Attribute
from ikeproto.config import Phase2Proposal
from ikeproto.crypto import cipher as p1_cipher
from ikeproto.enums import EncapsulationMode, IkeAttr, IpsecAttr, NotifyType, ProtocolId
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.message import parse_message, parse_payloads
from ikeproto.negotiation import (
    accept_phase1,
    accept_phase2,
    parse_responder_lifetime,
    phase1_sa,
    phase2_sa,
    responder_lifetime_data,
    responder_sa,
    select_phase1,
    select_phase2,
)
from ikeproto.proposals import Proposal, SaPayload, Transform
from tests.ike.helpers import ah, esp, mirror, p1, phase2

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
SPIS = {"esp": b"\x11\x22\x33\x44", "ah": b"\x55\x66\x77\x88"}


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((VECTORS / "keymat_strongswan.json").read_text())


def strongswan_payloads(golden: dict, index: int) -> list:
    """Payloads of captured message ``index`` (0-based), decrypting Quick Mode with the logged keys."""
    log = golden["initiator_log"]
    msgs = [parse_message(bytes.fromhex(m["hex"])) for m in golden["messages"]]
    msg = msgs[index]
    if not msg.is_encrypted:
        return list(msg.payloads)
    from ikeproto.crypto import hash_algorithm

    suite, sha1 = p1_cipher(5), hash_algorithm(2)
    ka = bytes.fromhex(log["encryption key Ka"][0])
    ivs = {0: bytes.fromhex(log["initial IV"][0])}
    for m in msgs[4 : index + 1]:
        if m.message_id not in ivs:
            ivs[m.message_id] = sha1.digest(ivs[0] + m.message_id.to_bytes(4, "big"))[:8]
        plaintext = suite.decrypt(ka, ivs[m.message_id], m.encrypted_body)
        ivs[m.message_id] = m.encrypted_body[-8:]
    return list(parse_payloads(msg.first_payload_type, plaintext, allow_trailing=True))


def sa_of(payloads: list) -> SaPayload:
    return next(p for p in payloads if isinstance(p, SaPayload))


# --- phase 1 -----------------------------------------------------------------------------------


def test_phase1_offer_is_one_proposal_with_one_transform_per_proposal() -> None:
    sa = phase1_sa([p1(cipher="3des", group=2), p1(cipher="aes-cbc", key_bits=256, hash="sha2-256", lifetime_kb=1000)])
    (prop,) = sa.proposals
    assert prop.protocol_id == ProtocolId.ISAKMP and [t.number for t in prop.transforms] == [1, 2]
    t2 = prop.transforms[1]
    assert t2.attribute(IkeAttr.ENCRYPTION_ALGORITHM) == 7 and t2.attribute(IkeAttr.KEY_LENGTH) == 256
    assert [(a.type, a.int_value) for a in t2.attributes if a.type in (11, 12)] == [(11, 1), (12, 28800), (11, 2), (12, 1000)]
    assert prop.transforms[0].attribute(IkeAttr.KEY_LENGTH) is None  # RFC 2409 App. A: not for 3DES


def test_phase1_offer_skips_what_is_not_implemented() -> None:
    sa = phase1_sa([p1(auth="gssapi"), p1()])
    assert len(sa.proposals[0].transforms) == 1
    with pytest.raises(UsageError):
        phase1_sa([p1(auth="gssapi")])


def test_strongswan_message_1_offer_is_read_and_the_responder_prefers_its_own_order(golden) -> None:
    """strongSwan offers 3DES/SHA-1/MODP-1024 then AES-128/SHA-1/MODP-2048 (lifetime 0 = none)."""
    offer = sa_of(strongswan_payloads(golden, 0))
    c = select_phase1(offer, [p1(cipher="3des", group=2), p1(group=14)])
    assert (c.cipher_name, c.dh_group, c.lifetime_s, c.transform.number) == ("3des", 2, 28800, 1)
    c = select_phase1(offer, [p1(cipher="aes-cbc", key_bits=128, group=14), p1(cipher="3des", group=2)])
    assert (c.cipher_name, c.key_bits, c.dh_group, c.transform) == ("aes-cbc", 128, 14, offer.proposals[0].transforms[1])
    with pytest.raises(ProtocolError) as err:
        select_phase1(offer, [p1(cipher="aes-cbc", key_bits=256)])
    assert err.value.notify == NotifyType.NO_PROPOSAL_CHOSEN
    # ... and strongSwan's answer (message 2) is accepted by an initiator that offered it.
    answer = sa_of(strongswan_payloads(golden, 1))
    assert accept_phase1(answer, [p1(group=14), p1(cipher="3des", group=2)]).cipher_name == "3des"


def test_initiator_refuses_an_answer_it_did_not_offer_or_with_several_transforms() -> None:
    offered = [p1(cipher="3des", group=2)]
    other = phase1_sa([p1(cipher="aes-cbc", key_bits=256)])
    with pytest.raises(ProtocolError) as err:
        accept_phase1(other, offered)
    assert err.value.notify == NotifyType.NO_PROPOSAL_CHOSEN
    two = phase1_sa([p1(cipher="3des", group=2), p1()])
    with pytest.raises(ProtocolError) as err:
        accept_phase1(two, offered)
    assert err.value.notify == NotifyType.BAD_PROPOSAL_SYNTAX


def test_phase1_lifetime_is_the_shorter_of_offered_and_ours() -> None:
    offer = phase1_sa([p1(lifetime_s=600)])
    assert select_phase1(offer, [p1(lifetime_s=300)]).lifetime_s == 300
    assert select_phase1(offer, [p1(lifetime_s=900)]).lifetime_s == 600


def odd(transform: Transform, *attrs: Attribute) -> SaPayload:
    return SaPayload.ipsec([Proposal.isakmp([replace(transform, attributes=attrs)])])


@pytest.mark.parametrize("attrs", [
    (Attribute.tv(1, 7), Attribute.tv(14, 100), Attribute.tv(2, 2), Attribute.tv(3, 1), Attribute.tv(4, 14)),
    (Attribute.tv(1, 5), Attribute.tv(14, 64), Attribute.tv(2, 2), Attribute.tv(3, 1), Attribute.tv(4, 2)),
    (Attribute.tv(1, 99), Attribute.tv(2, 2), Attribute.tv(3, 1), Attribute.tv(4, 2)),
    (Attribute.tv(1, 5), Attribute.tv(2, 9), Attribute.tv(3, 1), Attribute.tv(4, 2)),
    (Attribute.tv(1, 5), Attribute.tv(2, 2), Attribute.tv(3, 1), Attribute.tv(4, 77)),
    (Attribute.tv(1, 5), Attribute.tv(2, 2), Attribute.tv(3, 1)),
    (Attribute.tv(1, 5), Attribute.tv(1, 5), Attribute.tv(2, 2), Attribute.tv(3, 1), Attribute.tv(4, 2)),
    (Attribute.tv(1, 5), Attribute.tv(2, 2), Attribute.tv(3, 1), Attribute.tv(4, 2), Attribute.tv(12, 60)),
    (Attribute.tv(1, 5), Attribute.tv(2, 2), Attribute.tv(3, 1), Attribute.tv(4, 2), Attribute.tlv(1000, b"x")),
    (Attribute.tv(1, 5), Attribute.tlv(2, bytes(9)), Attribute.tv(3, 1), Attribute.tv(4, 2)),
])
def test_odd_phase1_transforms_are_never_chosen(attrs) -> None:
    """Unknown algorithms, bad key lengths (CVE-2024-3652 class), unknown groups, missing or
    repeated attributes, a duration without a type: refused with NO-PROPOSAL-CHOSEN."""
    ours = [p1(cipher="3des", group=2), p1(cipher="aes-cbc", key_bits=128, group=14)]
    with pytest.raises(ProtocolError) as err:
        select_phase1(odd(Transform(), *attrs), ours)
    assert err.value.notify == NotifyType.NO_PROPOSAL_CHOSEN


# --- phase 2 -----------------------------------------------------------------------------------


def test_phase2_offer_layout_bundle_shares_a_number_ah_first() -> None:
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24", Phase2Proposal(transforms=(esp("aes-gcm-16", None, 256),)),
                 Phase2Proposal(transforms=(esp(), ah("hmac-sha2-256-128")), lifetime_kb=None), pfs_group=19)
    sa = phase2_sa(cfg, spis=SPIS, encapsulation=EncapsulationMode.UDP_ENCAPSULATED_TUNNEL)
    assert [(p.number, p.protocol_id, p.spi) for p in sa.proposals] == [
        (1, ProtocolId.IPSEC_ESP, SPIS["esp"]), (2, ProtocolId.IPSEC_AH, SPIS["ah"]), (2, ProtocolId.IPSEC_ESP, SPIS["esp"])]
    gcm = sa.proposals[0].transforms[0]
    assert gcm.transform_id == 20 and gcm.attribute(IpsecAttr.KEY_LENGTH) == 256
    assert gcm.attribute(IpsecAttr.AUTHENTICATION_ALGORITHM) is None and gcm.attribute(IpsecAttr.GROUP_DESCRIPTION) == 19
    assert gcm.attribute(IpsecAttr.ENCAPSULATION_MODE) == 3
    ah_t = sa.proposals[1].transforms[0]
    assert (ah_t.transform_id, ah_t.attribute(IpsecAttr.AUTHENTICATION_ALGORITHM)) == (5, 5)
    life = [(a.type, a.int_value) for a in ah_t.attributes if a.type in (1, 2)]
    assert life == [(1, 1), (2, 3600)]
    assert len(phase2_sa(cfg, spis=SPIS, encapsulation=3, allow_ah=False).proposals) == 1


def test_strongswan_quick_mode_offer_and_answer(golden) -> None:
    """strongSwan's QM1 (one ESP proposal, AES-128/SHA-1 then 3DES/SHA-1, UDP tunnel, no lifetimes)
    is chosen from our policy; its QM2 answer (lifetime attributes added) is accepted."""
    offer = sa_of(strongswan_payloads(golden, 6))
    ours = phase2("10.2.0.0/16", "10.1.0.0/16", Phase2Proposal(transforms=(esp("3des-cbc", "hmac-sha1-96", None),)),
                  Phase2Proposal(transforms=(esp(),)))
    c = select_phase2(offer, ours, mode="tunnel", udp=True, allow_ah=False)
    assert (c.children[0].cipher.name, c.children[0].transform.number, c.encapsulation) == ("3des-cbc", 2, 3)
    assert (c.lifetime_s, c.lifetime_kb, c.notify_lifetime) == (3600, 100_000, True)
    with pytest.raises(ProtocolError):
        select_phase2(offer, ours, mode="tunnel", udp=False, allow_ah=False)  # the offer says UDP
    answer = sa_of(strongswan_payloads(golden, 7))
    mine = phase2("10.1.0.0/16", "10.2.0.0/16", Phase2Proposal(transforms=(esp(),), lifetime_s=3600))
    got = accept_phase2(answer, mine, mode="tunnel", udp=True)
    assert got.children[0].peer_spi == answer.proposals[0].spi and got.lifetime_s == 3600


def test_responder_answer_echoes_the_chosen_transform_with_its_own_spi() -> None:
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24", Phase2Proposal(transforms=(esp(), ah())))
    offer = phase2_sa(cfg, spis=SPIS, encapsulation=1)
    c = select_phase2(offer, mirror(cfg), mode="tunnel", udp=False, allow_ah=True)
    answer = responder_sa(c, {"esp": b"\x99\x99\x99\x99", "ah": b"\x98\x98\x98\x98"})
    assert [p.transforms[0] for p in answer.proposals] == [p.transforms[0] for p in offer.proposals]
    got = accept_phase2(answer, cfg, mode="tunnel", udp=False)
    assert [ch.peer_spi for ch in got.children] == [b"\x98\x98\x98\x98", b"\x99\x99\x99\x99"]


def test_initiator_refuses_an_answer_with_changed_algorithms_or_mode() -> None:
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    other = phase2("10.1.0.0/24", "10.2.0.0/24", Phase2Proposal(transforms=(esp("3des-cbc", key_bits=None),)))
    with pytest.raises(ProtocolError):
        accept_phase2(phase2_sa(other, spis=SPIS, encapsulation=1), cfg, mode="tunnel", udp=False)
    with pytest.raises(ProtocolError):
        accept_phase2(phase2_sa(cfg, spis=SPIS, encapsulation=2), cfg, mode="tunnel", udp=False)


def test_bundle_must_match_protocol_for_protocol() -> None:
    """An AH+ESP offer is not an ESP policy and vice versa (RFC 2408 §4.2: AND-ed proposals)."""
    bundle = phase2("10.1.0.0/24", "10.2.0.0/24", Phase2Proposal(transforms=(esp(), ah())))
    esp_only = phase2("10.2.0.0/24", "10.1.0.0/24")
    with pytest.raises(ProtocolError):
        select_phase2(phase2_sa(bundle, spis=SPIS, encapsulation=1), esp_only, mode="tunnel", udp=False, allow_ah=True)
    with pytest.raises(ProtocolError):
        select_phase2(phase2_sa(esp_only, spis=SPIS, encapsulation=1), mirror(bundle), mode="tunnel", udp=False,
                      allow_ah=True)


@pytest.mark.parametrize("attrs", [
    (Attribute.tv(4, 1), Attribute.tv(5, 2), Attribute.tv(6, 100)),  # AES key length 100
    (Attribute.tv(4, 1), Attribute.tv(5, 2)),  # AES without a key length
    (Attribute.tv(4, 1), Attribute.tv(5, 99), Attribute.tv(6, 128)),  # unknown integrity
    (Attribute.tv(4, 9), Attribute.tv(5, 2), Attribute.tv(6, 128)),  # unknown mode
    (Attribute.tv(4, 1), Attribute.tv(5, 2), Attribute.tv(6, 128), Attribute.tv(11, 1)),  # ESN
    (Attribute.tv(4, 1), Attribute.tv(5, 2), Attribute.tv(6, 128), Attribute.tv(3, 99)),  # unknown group
    (Attribute.tv(4, 1), Attribute.tv(5, 2), Attribute.tv(6, 128), Attribute.tv(2, 60)),  # duration alone
    (Attribute.tv(4, 1), Attribute.tv(4, 1), Attribute.tv(5, 2), Attribute.tv(6, 128)),  # repeated
])
def test_odd_phase2_transforms_are_never_chosen(attrs) -> None:
    offer = SaPayload.ipsec([Proposal.ipsec(ProtocolId.IPSEC_ESP, SPIS["esp"], [Transform(transform_id=12,
                                                                                         attributes=attrs)])])
    with pytest.raises(ProtocolError) as err:
        select_phase2(offer, phase2("10.2.0.0/24", "10.1.0.0/24"), mode="tunnel", udp=False, allow_ah=True)
    assert err.value.notify == NotifyType.NO_PROPOSAL_CHOSEN


def test_responder_lifetime_notify_data_round_trips() -> None:
    assert parse_responder_lifetime(responder_lifetime_data(900, 5000)) == (900, 5000)
    assert parse_responder_lifetime(responder_lifetime_data(100_000, None)) == (100_000, None)
    with pytest.raises(ProtocolError):
        parse_responder_lifetime(Attribute.tv(5, 2).type.to_bytes(2, "big") + b"\x00\x02")


_MENU = [esp("aes-cbc", "hmac-sha1-96", 128), esp("aes-cbc", "hmac-sha2-256-128", 256), esp("3des-cbc", "hmac-md5-96", None),
         esp("aes-gcm-16", None, 128), ah("hmac-sha1-96")]


@given(st.permutations(range(len(_MENU))), st.sets(st.integers(0, len(_MENU) - 1), min_size=1),
       st.sets(st.integers(0, len(_MENU) - 1), min_size=1))
def test_responder_choice_is_its_first_acceptable(order, offered, accepted) -> None:
    """For any offer and any responder preference order, the choice is the responder's first
    proposal that was offered, or NO-PROPOSAL-CHOSEN when none was."""
    offer_cfg = phase2("10.1.0.0/24", "10.2.0.0/24",
                       *(Phase2Proposal(transforms=(_MENU[i],)) for i in sorted(offered)))
    ours = [i for i in order if i in accepted]
    mine = replace(mirror(offer_cfg), proposals=tuple(Phase2Proposal(transforms=(_MENU[i],)) for i in ours))
    offer = phase2_sa(offer_cfg, spis=SPIS, encapsulation=1)
    expected = next((i for i in ours if i in offered), None)
    if expected is None:
        with pytest.raises(ProtocolError):
            select_phase2(offer, mine, mode="tunnel", udp=False, allow_ah=True)
        return
    c = select_phase2(offer, mine, mode="tunnel", udp=False, allow_ah=True)
    want = _MENU[expected]
    got = c.children[0]
    assert got.protocol == want.protocol
    assert (got.integrity.name if got.integrity else None) == want.integrity
    assert c.number == sorted(offered).index(expected) + 1


def test_answer_to_an_offer_without_lifetimes_carries_ours(golden) -> None:
    """charon sends no lifetime and ignores RESPONDER-LIFETIME (interop finding ikeio-1): our
    answer adds our life attributes to the echoed transform, as charon's own responder does."""
    offer = sa_of(strongswan_payloads(golden, 6))
    ours = phase2("10.2.0.0/16", "10.1.0.0/16", Phase2Proposal(transforms=(esp(),), lifetime_s=1200, lifetime_kb=None))
    c = select_phase2(offer, ours, mode="tunnel", udp=True, allow_ah=False)
    (prop,) = responder_sa(c, SPIS).proposals
    t = prop.transforms[0]
    assert [(a.type, a.int_value) for a in t.attributes][:2] == [(1, 1), (2, 1200)]
    assert t.attributes[2:] == offer.proposals[0].transforms[0].attributes
    # An offer that names lifetimes is echoed exactly (RESPONDER-LIFETIME says ours).
    named = phase2_sa(mirror(ours), spis=SPIS, encapsulation=3)
    c = select_phase2(named, ours, mode="tunnel", udp=True, allow_ah=False)
    assert responder_sa(c, SPIS).proposals[0].transforms[0] == named.proposals[0].transforms[0]
