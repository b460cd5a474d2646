"""Kerberos (GSS-API, auth 65001) in Main Mode between two in-process endpoints, without a KDC.

The mechanism is ``ToyMechanism`` (tests/ike/test_gss.py): the ``GssMechanism`` interface of
``ikeproto.krb5.KerberosCredentials`` with any number of legs, so the repetition of messages 5/6
runs here; the real mechanism runs against an MIT KDC in tests/interop/test_kdc.py. Covered: the
wire of messages 1-6 (vendor IDs, the 65001 transform and the GSS identity attribute byte for
byte, where tokens and hashes go for 1 to 5 legs), HASH_I recomputed from the wire and SKEYID
as for signatures, the vendor-ID rule for 65001, NAT-T, and each failure with its audit-545
reason in ``NegotiationFailed.auth_failure`` (final or droppable as gss_auth's docstring says),
the (state, message) walk over the repeated 5/6 steps, and mutated messages (a property).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikeproto import vendor_ids
from ikeproto.attributes import serialize_attributes
from ikeproto.config import Identity
from ikeproto.crypto import cipher, hash_algorithm
from ikeproto.enums import ExchangeType, NotifyType, PayloadType
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.events import NegotiationFailed, Phase1Established
from ikeproto.exchanges import MessageKind, check_payloads
from ikeproto.exchanges.gss_auth import GssAuth
from ikeproto.exchanges.main_mode import TRANSITIONS, Step
from ikeproto.gss import GSS_ID_ATTRIBUTE_W2K, GssFailure, KerberosAuthError, decode_gss_id, gss_id_attribute
from ikeproto.message import parse_message, serialize_message, serialize_payload_body
from ikeproto.mutations import mutate_bytes
from ikeproto.negotiation import accept_phase1, phase1_sa, select_phase1
from ikeproto.negotiation.phase1 import with_gss_id
from ikeproto.payloads import GssPayload, HashPayload, IdPayload, KePayload, NoncePayload, VendorIdPayload
from ikeproto.proposals import Proposal, SaPayload, Transform
from tests.conftest import FakeClock
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
    reencrypt,
    run_timers,
    sa_of,
    transfer,
)
from tests.ike.test_gss import I_NAME, R_NAME, ToyMechanism

CFG = phase2("10.1.0.0/24", "10.2.0.0/24")
MM = ExchangeType.IDENTITY_PROTECTION


@dataclass
class BrokenMechanism(ToyMechanism):
    """A mechanism whose initiator cannot start (what krb5 raises without keytab, KDC, ...)."""

    error: KerberosAuthError | None = None

    def initiator_context(self, target: str):
        assert self.error is not None
        raise self.error


def kerberos(mech, *, peer: str | None, **kw):
    return phase1(p1(auth="gssapi"), psk=None, kerberos=mech, kerberos_peer=peer, **kw)


def gss_pair(legs: int = 2, *, named: bool = True, mech_a=None, mech_b=None, **kw):
    """a = machine 02 (initiator), b = machine 01 (responder), toy credentials of ``legs`` legs."""
    p1_a = kerberos(mech_a or ToyMechanism(I_NAME, legs), peer=R_NAME if named else None, **kw)
    p1_b = kerberos(mech_b or ToyMechanism(R_NAME, legs), peer=I_NAME if named else None, **kw)
    return endpoints(p1_a, p1_b, phase2_b=[mirror(CFG)])


def is_mm(data: bytes) -> bool:
    return parse_message(data).exchange_type == MM


def failures(evs) -> list[NegotiationFailed]:
    return [e for e in evs if isinstance(e, NegotiationFailed)]


def phase1_events(evs) -> list[Phase1Established]:
    return [e for e in evs if isinstance(e, Phase1Established)]


class Recorder:
    """An interceptor keeping each Main Mode message's payloads (decrypted with the receiver's
    keys at delivery, so encrypted ones can be read too)."""

    def __init__(self, a, b) -> None:
        self.eps = {"a": b, "b": a}  # the receiver of each sender
        self.messages: list[tuple[str, list]] = []
        self.raw: list[bytes] = []

    def __call__(self, d):
        msg = parse_message(d.data)
        if msg.exchange_type == MM:
            payloads = plaintext_payloads(self.eps[d.sender], d.data) if msg.is_encrypted else list(msg.payloads)
            self.messages.append((d.sender, payloads))
            self.raw.append(d.data)
        return d.data

    def layout(self, start: int = 4) -> list[list[str]]:
        keep = {PayloadType.ID: "ID", PayloadType.GSS: "GSS", PayloadType.HASH: "HASH"}
        return [[keep[p.payload_type] for p in ps if p.payload_type in keep] for _, ps in self.messages[start:]]


# --- the wire ----------------------------------------------------------------------------------


def test_message_1_offers_65001_with_the_gss_vendor_ids_byte_for_byte(clock):
    """Message 1: the transform's attributes are RFC 2409 Appendix A's with auth 65001 (0xFDE9) and,
    without a named peer, our principal in attribute 16384 (TLV, UTF-16LE) at the end; the GSS-API
    vendor IDs follow the NAT-T ones."""
    a, b = gss_pair(named=False)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    ((data, _dest, _port),) = a.datagrams_to_send(clock.now)
    msg = parse_message(data)
    (t,) = msg.payloads[0].proposals[0].transforms
    name = I_NAME.encode("utf-16-le")
    assert serialize_attributes(t.attributes) == bytes.fromhex(
        "80010007" "800e0080" "80020002" "8003fde9" "8004000e" "800b0001" "800c7080"
        "4000") + len(name).to_bytes(2, "big") + name
    vids = [p.data for p in msg.payloads if isinstance(p, VendorIdPayload)]
    assert vids[-2:] == [bytes.fromhex("621b04bb09882ac1e15935fefa24aeee"),
                         bytes.fromhex("ad2c0dd0b9c32083ccba25b8861ec455")]
    assert vendor_ids.NAT_T_RFC3947 in vids


def test_named_peer_no_identity_attribute_and_no_nat_t_vendor_ids_without_nat_t(clock):
    a, b = gss_pair(nat_traversal=False)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    ((data, _dest, _port),) = a.datagrams_to_send(clock.now)
    msg = parse_message(data)
    (t,) = msg.payloads[0].proposals[0].transforms
    assert [x.type for x in t.attributes] == [1, 14, 2, 3, 4, 11, 12]
    assert [p.data for p in msg.payloads if isinstance(p, VendorIdPayload)] == [vendor_ids.GSSAPI,
                                                                                vendor_ids.GSSAPI_LONG]


def test_responder_answers_with_its_identity_and_the_vendor_ids(clock):
    """Message 2 returns the chosen transform with the responder's principal in place of the
    initiator's, and the GSS-API vendor IDs; both sides then hash both identities."""
    a, b = gss_pair(named=False)
    rec = Recorder(a, b)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=rec)
    _, mm2 = rec.messages[1]
    (t,) = mm2[0].proposals[0].transforms
    assert decode_gss_id(t.attribute(16384)) == R_NAME
    assert {vendor_ids.GSSAPI, vendor_ids.GSSAPI_LONG} <= {p.data for p in mm2 if isinstance(p, VendorIdPayload)}
    ev = phase1_events(events(a) + events(b))
    assert [e.peer_id.value for e in ev] == [R_NAME, I_NAME]


@pytest.mark.parametrize("legs, layout", [
    (1, [["ID", "HASH"], ["ID", "HASH"]]),
    (2, [["ID", "HASH"], ["ID", "HASH"]]),
    (3, [["ID", "GSS", "HASH"], ["ID", "HASH"]]),
    (4, [["ID", "GSS"], ["ID", "GSS"], ["ID", "HASH"], ["ID", "HASH"]]),
    (5, [["ID", "GSS"], ["ID", "GSS"], ["ID", "GSS", "HASH"], ["ID", "HASH"]]),
])
def test_tokens_and_hashes_for_any_number_of_legs(clock, legs, layout):
    """The first token rides in message 3, the answer (if any) in 4; further legs repeat messages
    5 and 6 (a side sends its token whenever it has one); HASH_I goes with the first message 5
    after the initiator's context completes, HASH_R answers it. Quick Mode then carries traffic."""
    a, b = gss_pair(legs)
    rec = Recorder(a, b)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=rec)
    gss3 = [p for p in rec.messages[2][1] if isinstance(p, GssPayload)]
    gss4 = [p for p in rec.messages[3][1] if isinstance(p, GssPayload)]
    assert [len(gss3), len(gss4)] == [1, 1 if legs >= 2 else 0]
    assert rec.layout() == layout and [s for s, _ in rec.messages[4:]] == ["a", "b"] * (len(layout) // 2)
    ev_a, ev_b = events(a), events(b)
    assert [(e.auth, e.peer_id) for e in phase1_events(ev_a)] == [("gssapi", Identity(kind="kerberos", value=R_NAME))]
    assert [(e.auth, e.local_id) for e in phase1_events(ev_b)] == [("gssapi", Identity(kind="kerberos", value=R_NAME))]
    assert carry_traffic(established(ev_a)[0], established(ev_b)[0]) == 6
    assert a.stats.dropped == b.stats.dropped == {}


def test_repeated_rounds_are_step_transitions():
    """The step table has the repeat: AUTH_SENT -> AUTH_SENT (initiator), AUTH_ANSWERED (responder)."""
    assert Step.AUTH_SENT in TRANSITIONS[Step.AUTH_SENT]
    assert {Step.AUTH_ANSWERED, Step.ESTABLISHED} <= TRANSITIONS[Step.KE_ANSWERED]
    assert TRANSITIONS[Step.AUTH_ANSWERED] == {Step.AUTH_ANSWERED, Step.ESTABLISHED, Step.FAILED}


def test_four_legs_through_a_nat(clock):
    """The repeated messages 5/6 follow the NAT-T float to port 4500 and UDP-encapsulated ESP works."""
    a, b = gss_pair(4)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    log = transfer(a, b, clock.now, nat=Nat(inside=a))
    mm_ports = [(d.sender, d.dst[1]) for d in log if is_mm(d.data)]
    assert mm_ports[4:] == [("a", 4500), ("b", 4500)] * 2
    ev_a, ev_b = events(a), events(b)
    qa, qb = established(ev_a)[0], established(ev_b)[0]
    assert qa.encapsulation == qb.encapsulation == "udp" and carry_traffic(qa, qb) == 6


def _prf(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()


def test_hash_i_on_the_wire_covers_the_tokens_and_is_wrapped(clock):
    """The HASH payload of message 5 is the toy wrap of prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R |
    SAi_b | IDii_b | GSS-ID_i | token of message 3), every part taken from the wire."""
    a, b = gss_pair(named=False)
    rec = Recorder(a, b)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=rec)
    m = [ps for _, ps in rec.messages]
    head = parse_message(rec.raw[2])
    ke = [next(p.data for p in m[i] if isinstance(p, KePayload)) for i in (2, 3)]
    token = next(p.data for p in m[2] if isinstance(p, GssPayload))
    idii = next(p for p in m[4] if isinstance(p, IdPayload))
    wrapped = next(p.data for p in m[4] if isinstance(p, HashPayload))
    skeyid = sa_of(b, (head.initiator_cookie, head.responder_cookie)).keys.skeyid
    expected = _prf(skeyid, ke[0] + ke[1] + head.initiator_cookie + head.responder_cookie
                    + serialize_payload_body(m[0][0]) + serialize_payload_body(idii) + I_NAME.encode() + token)
    assert wrapped[:1] == b"W" and wrapped[1:-8] == expected


def test_skeyid_is_the_signature_one():
    """GSS-API keys: SKEYID = prf(Ni_b | Nr_b, g^xy) (RFC 2409 §5 for signatures), SKEYID_d after it."""
    offer = phase1_sa([p1(auth="gssapi", cipher="3des", key_bits=None)], gssapi=True)
    choice = accept_phase1(offer, [p1(auth="gssapi", cipher="3des", key_bits=None)])
    auth = GssAuth(kerberos(ToyMechanism(I_NAME), peer=R_NAME), choice, is_initiator=True)
    ni, nr, gxy, ci, cr = b"n" * 16, b"r" * 32, bytes(range(256)), b"I" * 8, b"R" * 8
    keys = auth.keys(ni_b=ni, nr_b=nr, g_xy=gxy, cky_i=ci, cky_r=cr)
    assert keys.skeyid == _prf(ni + nr, gxy) and keys.skeyid_d == _prf(keys.skeyid, gxy + ci + cr + b"\x00")
    assert keys.cipher == cipher(5, None) and keys.hash_alg == hash_algorithm(2)


# --- negotiation rules ---------------------------------------------------------------------------


def test_65001_without_gss_vendor_ids_is_xauth_and_not_chosen(clock):
    """Message 1 stripped of the GSS-API vendor IDs: 65001 means XAUTHInitPreShared, which this
    responder does not accept (NO-PROPOSAL-CHOSEN)."""
    a, b = gss_pair()

    def strip(d):
        msg = parse_message(d.data)
        if d.sender != "a" or msg.responder_cookie != bytes(8):
            return d.data
        keep = tuple(p for p in msg.payloads if not (isinstance(p, VendorIdPayload)
                                                      and p.data in (vendor_ids.GSSAPI, vendor_ids.GSSAPI_LONG)))
        return serialize_message(replace(msg, payloads=keep))

    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=strip)
    (refused,) = failures(events(b))
    assert refused.notify == NotifyType.NO_PROPOSAL_CHOSEN and refused.auth_failure is None


def test_windows_vendor_id_and_identity_class_32001_are_understood(clock):
    """A Windows 2000 style message 1 (MS NT5 ISAKMPOAKLEY vendor ID only, identity in class
    32001): the responder takes 65001 as Kerberos and answers in class 32001."""
    a, b = gss_pair(named=False)
    w2k = vendor_ids.ms_nt5_vendor_id(2)

    def windows(d):
        msg = parse_message(d.data)
        if d.sender != "a" or msg.responder_cookie != bytes(8):
            return d.data
        sa = msg.payloads[0]
        (t,) = sa.proposals[0].transforms
        attrs = tuple(x if x.type != 16384 else replace(x, type=GSS_ID_ATTRIBUTE_W2K) for x in t.attributes)
        prop = replace(sa.proposals[0], transforms=(replace(t, attributes=attrs),))
        vids = tuple(p for p in msg.payloads[1:] if p.data not in (vendor_ids.GSSAPI, vendor_ids.GSSAPI_LONG))
        return serialize_message(replace(msg, payloads=(replace(sa, proposals=(prop,)), *vids,
                                                        VendorIdPayload(data=w2k))))

    rec = Recorder(a, b)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=lambda d: rec(d) if d.sender == "b" else windows(d))
    (t,) = rec.messages[0][1][0].proposals[0].transforms
    assert decode_gss_id(t.attribute(GSS_ID_ATTRIBUTE_W2K)) == R_NAME and t.attribute(16384) is None
    # The initiator hashed the SA payload it sent (class 16384), the responder the one it got:
    # HASH_I covers SAi_b, so the rewritten message 1 is caught in message 5.
    assert [f.auth_failure for f in failures(events(b))] == ["bad-hash"] and phase1_events(events(a)) == []


def test_selection_needs_the_gssapi_flag_and_the_identity_never_takes_part():
    ours = [p1(auth="gssapi")]
    offer = phase1_sa(ours, gssapi=True, gss_id=I_NAME)
    with pytest.raises(ProtocolError) as e:
        select_phase1(offer, ours)
    assert e.value.notify == NotifyType.NO_PROPOSAL_CHOSEN
    choice = select_phase1(offer, ours, gssapi=True)
    assert (choice.auth, choice.peer_gss_id, choice.gss_id_type) == ("gssapi", I_NAME, 16384)
    answer = with_gss_id(choice.transform, R_NAME)
    back = accept_phase1(SaPayload.ipsec([Proposal.isakmp([answer])]), ours)
    assert back.peer_gss_id == R_NAME and back.auth == "gssapi"
    with pytest.raises(UsageError):
        phase1_sa(ours)  # 65001 is offered only by a caller that holds credentials


@pytest.mark.parametrize("attrs, ok", [
    ((gss_id_attribute(I_NAME),), True),
    ((gss_id_attribute(I_NAME), gss_id_attribute(I_NAME)), False),  # repeated
    ((replace(gss_id_attribute(I_NAME), value=b"h\x00o"),), False),  # not UTF-16
])
def test_identity_attribute_on_the_wire(attrs, ok):
    base = phase1_sa([p1(auth="gssapi")], gssapi=True).proposals[0].transforms[0]
    t = Transform(number=1, transform_id=1, attributes=(*base.attributes, *attrs))
    reply = SaPayload.ipsec([Proposal.isakmp([t])])
    if ok:
        assert accept_phase1(reply, [p1(auth="gssapi")]).peer_gss_id == I_NAME
    else:
        with pytest.raises(ProtocolError):
            accept_phase1(reply, [p1(auth="gssapi")])


def test_identity_attribute_in_a_psk_transform_is_refused():
    base = phase1_sa([p1()]).proposals[0].transforms[0]
    t = Transform(number=1, transform_id=1, attributes=(*base.attributes, gss_id_attribute(I_NAME)))
    with pytest.raises(ProtocolError) as e:
        accept_phase1(SaPayload.ipsec([Proposal.isakmp([t])]), [p1()])
    assert e.value.notify == NotifyType.ATTRIBUTES_NOT_SUPPORTED


def test_gssapi_needs_credentials_on_both_sides(clock):
    """Without credentials a gssapi proposal is neither offered (initiate refuses) nor accepted."""
    a, _ = endpoints(phase1(p1(auth="gssapi"), psk=None))
    with pytest.raises(UsageError):
        a.initiate((B_ADDR, 500), CFG, clock.now)
    a, b = endpoints(kerberos(ToyMechanism(I_NAME), peer=R_NAME), phase1(p1(auth="gssapi"), psk=None))
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now)
    (refused,) = failures(events(b))
    assert refused.notify == NotifyType.NO_PROPOSAL_CHOSEN and b.stats.dropped["refused"] == 1


def test_payload_rules_admit_gss_tokens_in_messages_3_to_6_only():
    gss, idp = GssPayload(data=b"t"), IdPayload.address(A_ADDR)
    for kind in (MessageKind.MM5, MessageKind.MM6):
        check_payloads(kind, [idp, gss])  # a leg of its own: ID + GSS, no HASH
        with pytest.raises(ProtocolError):
            check_payloads(kind, [idp])
    check_payloads(MessageKind.MM3, [KePayload(data=b"k" * 8), NoncePayload(data=b"n" * 8), gss])
    with pytest.raises(ProtocolError) as e:
        check_payloads(MessageKind.MM1, [phase1_sa([p1()]), gss])
    assert e.value.notify == NotifyType.INVALID_PAYLOAD_TYPE


def test_a_gss_token_in_a_pre_shared_key_main_mode_is_refused(clock):
    """GSS payloads belong to GSS-API authentication: in a PSK message 3 it is INVALID-PAYLOAD-TYPE
    (dropped, the genuine message still completes)."""
    a, b = endpoints(phase1(), phase2_b=[mirror(CFG)])

    def extra(d):
        msg = parse_message(d.data)
        if d.sender == "a" and any(isinstance(p, KePayload) for p in msg.payloads):
            return [serialize_message(replace(msg, payloads=(*msg.payloads, GssPayload(data=b"x")))), d.data]
        return d.data

    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=extra)
    assert b.stats.dropped["refused"] == 1 and len(established(events(b))) == 1


# --- failures and their audit reasons ------------------------------------------------------------


def test_initiator_that_cannot_start_fails_at_once_with_its_reason(clock):
    """No keytab (what krb5 raises): the initiator gives up on message 2 with no-keytab and tells
    the responder (AUTHENTICATION-FAILED); the responder, never past message 2, reports nothing."""
    err = KerberosAuthError(GssFailure.NO_KEYTAB, "no usable key for host/02 in keytab /k: export it", local=True)
    a, b = gss_pair(mech_a=BrokenMechanism(I_NAME, error=err))
    rid = a.initiate((B_ADDR, 500), CFG, clock.now)
    log = transfer(a, b, clock.now)
    (failed,) = failures(events(a))
    assert (failed.request_id, failed.failure_point, failed.auth_failure) == (rid, "me", "no-keytab")
    assert failed.reason == str(err) and failed.notify == NotifyType.AUTHENTICATION_FAILED
    assert [parse_message(d.data).exchange_type for d in log] == [MM, MM, ExchangeType.INFORMATIONAL]
    assert a.ike_sas() == [] and a.stats.dropped["refused"] == 1
    run_timers(a, b, clock, clock.now + 120)
    assert events(b) == [] and b.ike_sas() == []


def test_no_peer_name_anywhere_fails_the_initiator(clock):
    """No expected peer in our policy and none announced by the responder: nothing to ask a ticket
    for (no-peer-name, fix: name the peer in the policy)."""
    a, b = endpoints(kerberos(ToyMechanism(I_NAME), peer=None), kerberos(ToyMechanism(R_NAME), peer=I_NAME),
                     phase2_b=[mirror(CFG)])

    def no_identity(d):  # a responder that does not answer with its identity
        msg = parse_message(d.data)
        if d.sender != "b" or not isinstance(msg.payloads[0], SaPayload):
            return d.data
        sa = msg.payloads[0]
        (t,) = sa.proposals[0].transforms
        t2 = replace(t, attributes=tuple(x for x in t.attributes if x.type != 16384))
        prop = replace(sa.proposals[0], transforms=(t2,))
        return serialize_message(replace(msg, payloads=(replace(sa, proposals=(prop,)), *msg.payloads[1:])))

    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=no_identity)
    (failed,) = failures(events(a))
    assert failed.auth_failure == "no-peer-name" and "expected peer" in failed.reason


def test_responder_refusing_message_3_reports_once_and_the_initiator_learns_it(clock):
    """The responder's context refuses the first token (clock skew): it changes nothing, queues one
    545 event however many copies come, answers each with AUTHENTICATION-FAILED; the initiator
    gives up after its retransmissions with refused-by-peer, failure point the peer."""
    a, b = gss_pair(mech_b=ToyMechanism(R_NAME, 2, refuse_leg=0))
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now)
    run_timers(a, b, clock, clock.now + 120)
    (refused,) = failures(events(b))
    assert (refused.auth_failure, refused.failure_point, refused.request_id) == ("clock-skew", "me", None)
    assert b.stats.dropped["refused"] > 1
    (failed,) = failures(events(a))
    assert (failed.auth_failure, failed.failure_point, failed.notify) == (
        "refused-by-peer", "peer", NotifyType.AUTHENTICATION_FAILED)


def test_a_refused_token_changes_nothing_and_the_genuine_message_3_follows(clock):
    """A forged token in a copy of message 3 ahead of the genuine one: refused (invalid-token,
    reported), then the genuine message completes Main Mode."""
    a, b = gss_pair()

    def forged_first(d):
        msg = parse_message(d.data)
        if d.sender == "a" and any(isinstance(p, GssPayload) for p in msg.payloads):
            bad = tuple(GssPayload(data=b"I0|forged") if isinstance(p, GssPayload) else p for p in msg.payloads)
            return [serialize_message(replace(msg, payloads=bad)), d.data]
        return d.data

    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=forged_first)
    ev_a, ev_b = events(a), events(b)
    assert [f.auth_failure for f in failures(ev_b)] == ["invalid-token"]
    assert len(established(ev_a)) == len(established(ev_b)) == 1


def test_message_3_without_a_token_is_dropped(clock):
    a, b = gss_pair()

    def strip_first(d):
        msg = parse_message(d.data)
        if d.sender == "a" and any(isinstance(p, GssPayload) for p in msg.payloads):
            bare = tuple(p for p in msg.payloads if not isinstance(p, GssPayload))
            return [serialize_message(replace(msg, payloads=bare)), d.data]
        return d.data

    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=strip_first)
    assert b.stats.dropped["refused"] == 1 and failures(events(b)) == []
    assert len(established(events(a))) == 1


def test_wrong_peer_principal_fails_the_responder(clock):
    """The initiator authenticates as host/02 but the responder's policy expects another host:
    wrong-peer, final; the initiator hears AUTHENTICATION-FAILED."""
    a, b = endpoints(kerberos(ToyMechanism(I_NAME), peer=R_NAME),
                     kerberos(ToyMechanism(R_NAME), peer="host/hq-res-srv-09.reskit.com"), phase2_b=[mirror(CFG)])
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now)
    (refused,) = failures(events(b))
    assert refused.auth_failure == "wrong-peer" and I_NAME in refused.reason and b.ike_sas() == []
    run_timers(a, b, clock, clock.now + 120)
    assert [f.auth_failure for f in failures(events(a))] == ["refused-by-peer"]


def test_a_later_leg_refused_ends_both_at_once(clock):
    """Three legs, the responder's context refuses the third (in message 5): final for the
    responder (clock-skew, failure point me); the initiator hears AUTHENTICATION-FAILED."""
    a, b = gss_pair(3, mech_b=ToyMechanism(R_NAME, 3, refuse_leg=2))
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now)
    (failed_b,) = failures(events(b))
    assert (failed_b.auth_failure, failed_b.failure_point) == ("clock-skew", "me") and b.ike_sas() == []
    run_timers(a, b, clock, clock.now + 120)
    assert [f.auth_failure for f in failures(events(a))] == ["refused-by-peer"]


def _tamper_hash(payloads: list) -> list:
    return [replace(p, data=p.data[:-1] + bytes([p.data[-1] ^ 1])) if isinstance(p, HashPayload) else p
            for p in payloads]


def test_a_hash_that_does_not_unwrap_is_dropped_and_the_genuine_message_5_follows(clock):
    """Message 5 re-encrypted with the right keys but a damaged wrap token: the responder drops it
    (INVALID-HASH-INFORMATION, nothing changed), then the genuine message 5 establishes."""
    a, b = gss_pair()

    def intercept(d):
        msg = parse_message(d.data)
        if d.sender == "a" and msg.exchange_type == MM and msg.is_encrypted:
            return [reencrypt(b, d.data, _tamper_hash), d.data]
        return d.data

    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=intercept)
    assert b.stats.dropped["refused"] == 1 and failures(events(b)) == []
    assert len(established(events(a))) == 1


def test_a_hash_over_other_values_is_final_bad_hash(clock):
    """Message 5 with another ID payload (re-encrypted with the right keys): the wrapped HASH_I
    unwraps but does not match: bad-hash, final on the responder, reported on both sides."""
    a, b = gss_pair()

    def other_id(payloads: list) -> list:
        return [IdPayload.address("192.0.2.77") if isinstance(p, IdPayload) else p for p in payloads]

    def intercept(d):
        msg = parse_message(d.data)
        if d.sender == "a" and msg.exchange_type == MM and msg.is_encrypted:
            return reencrypt(b, d.data, other_id)
        return d.data

    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=intercept)
    (bad,) = failures(events(b))
    assert (bad.auth_failure, bad.notify) == ("bad-hash", NotifyType.INVALID_HASH_INFORMATION)
    run_timers(a, b, clock, clock.now + 120)
    (failed,) = failures(events(a))
    assert (failed.auth_failure, failed.notify) == ("refused-by-peer", NotifyType.INVALID_HASH_INFORMATION)


def test_pre_shared_key_failures_carry_no_auth_failure(clock):
    a, b = endpoints(phase1(), phase1(psk=b"another key"), phase2_b=[mirror(CFG)])
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now)
    run_timers(a, b, clock, clock.now + 120)
    evs = failures(events(a) + events(b))
    assert evs and all(e.auth_failure is None for e in evs)


# --- the (state, message) walk over the repeated steps --------------------------------------------


def snapshot(ep) -> list:
    out = []
    for sa in ep.table:
        mm = sa.main_mode
        gss = mm.auth.gss if mm is not None and isinstance(mm.auth, GssAuth) else None
        out.append((sa.cookies, sa.state, mm.step if mm else None, sa.ivs.phase1_iv if sa.ivs else None,
                    (gss.state, len(gss.tokens_sent), len(gss.tokens_received)) if gss else None))
    return out


WALK = 8  # four legs: messages 1-4, then 5, 6, 5, 6


@pytest.mark.parametrize("state", range(WALK))
def test_every_main_mode_message_out_of_its_place_changes_nothing(state):
    """With four legs, while the exchange waits for genuine message ``state``, every other Main Mode
    message of the same negotiation (earlier ones replayed, later ones early) sent to both
    endpoints leaves both as they were; the genuine run then completes."""
    record: list[bytes] = []

    def keep(d):
        if is_mm(d.data):
            record.append(d.data)
        return d.data

    clock = FakeClock()
    a, b = gss_pair(4)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=keep)
    assert len(record) == WALK

    count = [0]

    def evil(d):
        if not is_mm(d.data):
            return d.data
        i, count[0] = count[0], count[0] + 1
        if i == state:
            before = snapshot(a), snapshot(b)
            for j, other in enumerate(record):
                if j in (state, state + 1):
                    continue
                if j < state or j % 2 == 1:
                    a.receive_datagram(other, (B_ADDR, 500), clock.now)
                if j < state or j % 2 == 0:
                    b.receive_datagram(other, (A_ADDR, 500), clock.now)
            assert (snapshot(a), snapshot(b)) == before
            a.datagrams_to_send(clock.now), b.datagrams_to_send(clock.now)
        return d.data

    a, b = gss_pair(4)
    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=evil)
    assert len(established(events(a))) == len(established(events(b))) == 1


@pytest.mark.parametrize("index", range(6), ids=[f"MM{i + 1}" for i in range(6)])
@settings(max_examples=20)
@given(data=st.data())
def test_mutated_kerberos_messages_never_escape(index, data):
    """Property: a structurally mutated copy of Main Mode message ``index`` (Kerberos-like, two
    legs) delivered before the genuine one never makes ``receive_datagram`` raise; for messages 5
    and 6 (encrypted, carrying the wrapped hashes) it is always dropped and Main Mode completes."""
    clock = FakeClock()
    a, b = gss_pair(2)
    seen = [0]

    def intercept(d):
        if not is_mm(d.data):
            return d.data
        i, seen[0] = seen[0], seen[0] + 1
        if i != index:
            return d.data
        mutant = mutate_bytes(d.data, lambda n: data.draw(st.integers(0, max(n - 1, 0))),
                              rounds=data.draw(st.integers(1, 3)))
        return [mutant, d.data]

    a.initiate((B_ADDR, 500), CFG, clock.now)
    transfer(a, b, clock.now, intercept=intercept)
    if index >= 4:
        assert len(established(events(a))) == len(established(events(b))) == 1
