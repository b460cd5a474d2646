"""Informational exchanges: Delete of IPsec and ISAKMP SAs, INITIAL-CONTACT, notifies protected by
HASH(1), DPD answers, and what happens to unauthenticated or replayed ones."""

from __future__ import annotations

import pytest

from ikeproto.enums import ExchangeType, NotifyType, ProtocolId
from ikeproto.errors import UsageError
from ikeproto.events import Phase1Deleted, Phase1Established, Phase2Deleted
from ikeproto.exchanges.informational import clear_notify, send_protected
from ikeproto.message import parse_message
from ikeproto.payloads import DeletePayload, NotifyPayload
from tests.ike.helpers import (
    A_ADDR,
    B_ADDR,
    Provider,
    endpoints,
    established,
    events,
    mirror,
    phase1,
    phase2,
    plaintext_payloads,
    reencrypt,
    sa_of,
    seeded_rng,
    transfer,
)
from ikeproto.endpoint import IkeEndpoint

CFG = phase2("10.1.0.0/24", "10.2.0.0/24")


def up(clock, seed: int = 1):
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(CFG)], seed=seed)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now)
    (ea,), (eb,) = established(events(a)), established(events(b))
    return a, b, ea, eb


def test_delete_phase2_reports_our_inbound_spis_on_both_sides(clock) -> None:
    """delete_phase2 sends a protected Delete naming our inbound SPI; each side's Phase2Deleted
    names its own inbound SPI of the pair (the peer maps the SPI to its outbound SA)."""
    a, b, ea, eb = up(clock)
    a.delete_phase2((B_ADDR, 500), ea.sas[0].spi_in, "esp", now=clock.now)
    log = transfer(a, b, clock.now)
    assert [parse_message(d.data).exchange_type for d in log] == [ExchangeType.INFORMATIONAL]
    (da,), (db,) = events(a), events(b)
    assert (da.protocol, da.spis, da.by_peer) == ("esp", (ea.sas[0].spi_in,), False)
    assert (db.protocol, db.spis, db.by_peer) == ("esp", (eb.sas[0].spi_in,), True)
    with pytest.raises(UsageError):
        a.delete_phase2((B_ADDR, 500), ea.sas[0].spi_in, "esp", now=clock.now)


def test_delete_phase1_removes_the_isakmp_sa_on_both_sides_and_keeps_ipsec_sas(clock) -> None:
    """A Delete for the ISAKMP SA (cookie pair as SPI) ends it on both sides; the IPsec SAs stay,
    and the next request runs a fresh Main Mode."""
    a, b, ea, eb = up(clock)
    a.delete_phase1((B_ADDR, 500), now=clock.now)
    transfer(a, b, clock.now)
    (da,), (db,) = events(a), events(b)
    assert isinstance(da, Phase1Deleted) and isinstance(db, Phase1Deleted)
    assert (da.by_peer, db.by_peer, da.cookies) == (False, True, ea.cookies)
    assert a.ike_sas() == b.ike_sas() == []
    b.delete_phase2((A_ADDR, 500), eb.sas[0].spi_in, "esp", now=clock.now)  # still known locally
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now)
    assert [type(e) for e in events(a)][:1] == [Phase1Established]


def test_initial_contact_from_a_restarted_peer_clears_the_old_state(clock) -> None:
    """The peer restarts (all its state gone) and negotiates again: its message 5 carries
    INITIAL-CONTACT, so we delete the old ISAKMP SA and report its IPsec SAs gone."""
    a, b, ea, eb = up(clock)
    a2 = IkeEndpoint(config=Provider(phase1()), local_address=A_ADDR, rng=seeded_rng(77), trace=False)
    a2.initiate((B_ADDR, 500), CFG, clock.now)
    seen = []

    def spy(d):
        msg = parse_message(d.data)
        if d.sender == "a" and msg.exchange_type == ExchangeType.IDENTITY_PROTECTION and msg.is_encrypted:
            seen.extend(plaintext_payloads(b, d.data))
        return d.data

    transfer(a2, b, clock.now, intercept=spy)
    assert any(isinstance(p, NotifyPayload) and p.notify_type == NotifyType.INITIAL_CONTACT for p in seen)
    evs = events(b)
    gone = [e for e in evs if isinstance(e, Phase1Deleted)]
    children = [e for e in evs if isinstance(e, Phase2Deleted)]
    assert [(g.cookies, g.reason, g.by_peer) for g in gone] == [(eb.cookies, "initial contact", True)]
    assert [(c.spis, c.reason) for c in children] == [((eb.sas[0].spi_in,), "initial contact")]
    assert len(established(evs)) == 1 and len(b.ike_sas()) == 1


def test_simultaneous_main_modes_send_no_initial_contact_and_both_complete(clock) -> None:
    """Both hosts start Main Mode at once: neither is a fresh start (each already negotiates with
    the other), so no INITIAL-CONTACT deletes the other SA, and both requests are served."""
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(CFG)], phase2_a=[CFG])
    ra = a.initiate((B_ADDR, 500), CFG, clock.now)
    rb = b.initiate((A_ADDR, 500), mirror(CFG), clock.now)
    seen = []

    def spy(d):
        msg = parse_message(d.data)
        if msg.exchange_type == ExchangeType.IDENTITY_PROTECTION and msg.is_encrypted:
            seen.extend(plaintext_payloads(b if d.sender == "a" else a, d.data))
        return d.data

    transfer(a, b, clock.now, intercept=spy)
    assert not any(isinstance(p, NotifyPayload) for p in seen)
    assert [e.request_id for e in established(events(a)) if e.is_initiator] == [ra]
    assert [e.request_id for e in established(events(b)) if e.is_initiator] == [rb]
    assert len(a.ike_sas()) == len(b.ike_sas()) == 2


def test_delete_followed_by_more_notifies_touches_nothing_after_the_delete(clock) -> None:
    """One Informational with D(ISAKMP), then notifies and a D(ESP) about the same SA: the SA is
    deleted once, the rest is ignored, and later messages on it are unknown cookies."""
    a, b, ea, eb = up(clock)
    sa = sa_of(a, ea.cookies)
    send_protected(sa, a, [
        DeletePayload.of(ProtocolId.ISAKMP, [ea.cookies[0] + ea.cookies[1]]),
        NotifyPayload(notify_type=NotifyType.INVALID_SPI, protocol_id=ProtocolId.IPSEC_ESP,
                      spi=ea.sas[0].spi_out.to_bytes(4, "big")),
        NotifyPayload(notify_type=NotifyType.INITIAL_CONTACT, spi=ea.cookies[0] + ea.cookies[1]),
        DeletePayload.of(ProtocolId.IPSEC_ESP, [ea.sas[0].spi_in.to_bytes(4, "big")]),
    ])
    send_protected(sa, a, [NotifyPayload(notify_type=NotifyType.PAYLOAD_MALFORMED)])
    transfer(a, b, clock.now)
    evs = events(b)
    assert [type(e) for e in evs] == [Phase1Deleted]
    assert b.stats.dropped["unknown cookies"] == 1
    b.delete_phase2((A_ADDR, 500), eb.sas[0].spi_in, "esp", now=clock.now)  # the pair is still ours


def test_informational_with_a_bad_hash_changes_nothing(clock) -> None:
    """A Delete whose HASH(1) does not verify is dropped; the SA and its IPsec SAs remain."""
    a, b, ea, eb = up(clock)
    a.delete_phase1((B_ADDR, 500), now=clock.now)
    events(a)

    def tamper(d):
        return reencrypt(b, d.data, lambda ps: [type(ps[0])(data=bytes(len(ps[0].data))), *ps[1:]])

    transfer(a, b, clock.now, intercept=tamper)
    assert events(b) == [] and b.stats.dropped["refused"] == 1
    assert b.ike_sa(A_ADDR) is not None


def test_replayed_informational_is_dropped(clock) -> None:
    a, b, ea, eb = up(clock)
    sa = sa_of(a, ea.cookies)
    send_protected(sa, a, [NotifyPayload(notify_type=NotifyType.R_U_THERE, spi=ea.cookies[0] + ea.cookies[1],
                                         data=(7).to_bytes(4, "big"))])
    log = transfer(a, b, clock.now, intercept=lambda d: [d.data, d.data] if d.sender == "a" else d.data)
    acks = [d for d in log if d.sender == "b"]
    assert len(acks) == 1
    (ack,) = [p for p in plaintext_payloads(a, acks[0].data) if isinstance(p, NotifyPayload)]
    assert (ack.notify_type, ack.data) == (NotifyType.R_U_THERE_ACK, (7).to_bytes(4, "big"))
    assert b.stats.dropped["unexpected protected informational"] == 1


def test_error_notify_about_an_unknown_spi_changes_nothing(clock) -> None:
    a, b, ea, eb = up(clock)
    sa = sa_of(a, ea.cookies)
    send_protected(sa, a, [NotifyPayload(notify_type=NotifyType.INVALID_SPI, protocol_id=ProtocolId.IPSEC_ESP,
                                         spi=b"\x00\x00\x12\x34")])
    transfer(a, b, clock.now)
    assert events(b) == [] and b.ike_sa(A_ADDR) is not None and b.stats.dropped == {}


def test_unauthenticated_notify_before_main_mode_completes_changes_no_state(clock) -> None:
    """A spoofed unprotected NO-PROPOSAL-CHOSEN with the initiator's cookie arrives before the
    real message 2: it is only remembered as a reason; Main Mode then completes normally."""
    a, b = endpoints(phase1(), phase1(), phase2_b=[mirror(CFG)])
    a.initiate((B_ADDR, 500), CFG, clock.now)
    (mm1, _dest, _port), = a.datagrams_to_send(clock.now)
    cky_i = mm1[:8]
    a.receive_datagram(clear_notify(cky_i, bytes(8), NotifyType.NO_PROPOSAL_CHOSEN), (B_ADDR, 500), clock.now)
    a.receive_datagram(clear_notify(cky_i, bytes(8), NotifyType.INVALID_COOKIE), ("198.51.100.1", 500), clock.now)
    assert a.stats.dropped["address does not match the SA"] == 1
    b.receive_datagram(mm1, (A_ADDR, 500), clock.now)
    transfer(a, b, clock.now)
    assert len(established(events(a))) == 1


def test_reauthentication_with_initial_contact_keeps_the_ipsec_sas(clock) -> None:
    """Interop finding ikeio-2, strongSwan's IKEv1 re-authentication: the peer deletes its ISAKMP
    SA itself, then runs a new Main Mode carrying INITIAL-CONTACT and keeps its IPsec SAs. We keep
    ours too (moved to the new ISAKMP SA); a Delete for them later still works."""
    a, b, ea, eb = up(clock)
    a.delete_phase1((B_ADDR, 500), now=clock.now)
    transfer(a, b, clock.now)
    events(a), events(b)
    clock.advance(0.01)
    a.initiate((B_ADDR, 500), CFG, clock.now)  # (the new pair is only there to run Main Mode)
    seen = []

    def spy(d):
        msg = parse_message(d.data)
        if d.sender == "a" and msg.exchange_type == ExchangeType.IDENTITY_PROTECTION and msg.is_encrypted:
            seen.extend(plaintext_payloads(b, d.data))
        return d.data

    transfer(a, b, clock.now, intercept=spy)
    assert any(isinstance(p, NotifyPayload) and p.notify_type == NotifyType.INITIAL_CONTACT for p in seen)
    assert not [e for e in events(b) if isinstance(e, (Phase1Deleted, Phase2Deleted))]
    b.delete_phase2((A_ADDR, 500), eb.sas[0].spi_in, "esp", now=clock.now)
    transfer(a, b, clock.now)
    (gone,) = [e for e in events(a) if isinstance(e, Phase2Deleted)]
    assert gone.spis == (ea.sas[0].spi_in,) and gone.by_peer


def test_initial_contact_long_after_the_peers_delete_is_a_restart(clock) -> None:
    a, b, ea, eb = up(clock)
    a.delete_phase1((B_ADDR, 500), now=clock.now)
    transfer(a, b, clock.now)
    events(a), events(b)
    clock.advance(3600)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now)
    (gone,) = [e for e in events(b) if isinstance(e, Phase2Deleted)]
    assert (gone.spis, gone.reason) == ((eb.sas[0].spi_in,), "initial contact")


def test_delete_for_an_older_pair_goes_over_the_newest_isakmp_sa(clock) -> None:
    """Interop finding ikeio-3: after a second Main Mode with the peer, a Delete for a pair
    negotiated under the first ISAKMP SA is sent protected by the newest one."""
    a, b, ea, eb = up(clock)
    first = ea.cookies
    sa_of(a, first).expired = True  # as at its lifetime with IPsec SAs alive
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now)
    second = [e for e in events(a) if isinstance(e, Phase1Established)][0].cookies
    events(b)
    a.delete_phase2((B_ADDR, 500), ea.sas[0].spi_in, "esp", now=clock.now)
    log = transfer(a, b, clock.now)
    infos = [parse_message(d.data) for d in log if d.sender == "a"]
    assert (infos[0].initiator_cookie, infos[0].responder_cookie) == second
    (gone,) = [e for e in events(b) if isinstance(e, Phase2Deleted)]
    assert gone.spis == (eb.sas[0].spi_in,)
