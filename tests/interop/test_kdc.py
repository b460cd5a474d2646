"""Kerberos against a real MIT KDC (realm RESKIT.COM in a temp dir, per test).

First the GSS-API authenticator alone: machine 02 (initiator) authenticates to machine 01
(responder) from their keytabs, as Main Mode carries it (the AP-REQ in message 3, the AP-REP in
message 4, then HASH_I / HASH_R over the tokens, each wrapped by the context), and each failure an
administrator must be able to act on, with its audit-545 reason. Then the same through two
``IkeEndpoint``s (``ikeproto.exchanges.gss_auth``): Main Mode with auth 65001 carrying ESP
traffic, and the failures as the engine reports them (``NegotiationFailed.auth_failure``): a host
unknown to the KDC, a tampered token (refused by Kerberos, or passed by Kerberos and caught by
HASH_I), clock skew beyond the allowance, a responder without its key, an unreachable KDC.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os

import pytest

from ikeproto import vendor_ids
from ikeproto.config import Identity
from ikeproto.enums import NotifyType, PayloadType
from ikeproto.events import NegotiationFailed, Phase1Established
from ikeproto.gss import GSS_ID_ATTRIBUTE, GssAuthenticator, GssFailure, GssState, KerberosAuthError, decode_gss_id
from ikeproto.krb5 import KerberosCredentials
from ikeproto.message import parse_message, serialize_message
from ikeproto.payloads import GssPayload
import policyagent.kdc as kdc_module
from policyagent.kdc import KdcError, ThrowawayKdc
from tests.ike.helpers import (
    B_ADDR,
    carry_traffic,
    endpoints,
    established,
    events,
    mirror,
    p1,
    phase1,
    phase2,
    run_timers,
    transfer,
)
from tests.kdc import H1, H2, kdc, kdc_factory, need_faketime, need_gssapi  # noqa: F401 (fixtures)

pytestmark = pytest.mark.interop

SKEYID = bytes(range(20))
COMMON = dict(g_xi=b"\x01" * 128, g_xr=b"\x02" * 128, cky_i=b"I" * 8, cky_r=b"R" * 8, sai_b=b"SA" * 20)
IDII_B, IDIR_B = b"\x01\x11\x00\x00\x7f\x00\x00\x02", b"\x01\x11\x00\x00\x7f\x00\x00\x01"


def prf(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()


def pair(kdc: ThrowawayKdc, *, initiator: str = H2, responder: str = H1, expect_r: str | None = None,
         expect_i: str | None = None) -> tuple[GssAuthenticator, GssAuthenticator]:
    need_gssapi()
    ini = GssAuthenticator(KerberosCredentials(keytab=kdc.keytab(initiator), principal=kdc.principal(initiator)),
                           is_initiator=True, expected_peer=expect_r)
    res = GssAuthenticator(KerberosCredentials(keytab=kdc.keytab(responder), principal=kdc.principal(responder)),
                           is_initiator=False, expected_peer=expect_i)
    ids = dict(initiator=kdc.principal(initiator), responder=kdc.principal(responder))
    ini.set_identities(**ids)
    res.set_identities(**ids)
    return ini, res


def finish(ini: GssAuthenticator, res: GssAuthenticator) -> None:
    """Messages 5/6: HASH_I wrapped by the initiator and checked by the responder, then HASH_R."""
    h_i = ini.hash_i(prf, SKEYID, idii_b=IDII_B, **COMMON)
    res.verify_hash(ini.hash_payload(h_i), res.hash_i(prf, SKEYID, idii_b=IDII_B, **COMMON), name="HASH_I")
    h_r = res.hash_r(prf, SKEYID, idir_b=IDIR_B, **COMMON)
    ini.verify_hash(res.hash_payload(h_r), ini.hash_r(prf, SKEYID, idir_b=IDIR_B, **COMMON), name="HASH_R")


def test_two_hosts_authenticate_in_one_round_trip(kdc):
    """AP-REQ (message 3), AP-REP (message 4): both complete, mutually authenticated, hashes agree."""
    ini, res = pair(kdc, expect_r=kdc.principal(H1), expect_i=kdc.principal(H2))
    ap_req = ini.initiator_token()
    ap_rep = res.accept_token(ap_req)
    assert ap_req[:1] == b"\x60" and ap_rep is not None and ap_rep[:1] == b"\x60"  # RFC 2743 §3.1 framing
    assert res.is_complete and not ini.is_complete
    assert ini.accept_token(ap_rep) is None and ini.is_complete
    assert (ini.peer_name, res.peer_name) == (kdc.principal(H1), kdc.principal(H2))
    assert ini.tokens_sent == res.tokens_received == [ap_req] and res.tokens_sent == ini.tokens_received == [ap_rep]
    finish(ini, res)
    assert ini.state is res.state is GssState.COMPLETE


def test_credentials_are_kept_for_the_next_negotiation(kdc):
    """A second Main Mode with the same credentials works (tickets come from the MEMORY cache)."""
    ini, res = pair(kdc)
    res.accept_token(ini.initiator_token())
    for _ in range(2):
        again_i = GssAuthenticator(ini.mechanism, is_initiator=True, expected_peer=kdc.principal(H1))
        again_r = GssAuthenticator(res.mechanism, is_initiator=False, expected_peer=kdc.principal(H2))
        again_i.accept_token(again_r.accept_token(again_i.initiator_token()))
        finish(again_i, again_r)


def test_host_unknown_to_the_kdc_as_initiator(kdc):
    """A host whose principal the KDC does not know cannot start: unknown-principal, fixed here."""
    kdc.remove_host(H2)
    ini, _ = pair(kdc)
    with pytest.raises(KerberosAuthError) as e:
        ini.initiator_token()
    err = e.value
    assert err.reason is GssFailure.UNKNOWN_PRINCIPAL and "not found in Kerberos database" in (err.detail or "")
    assert kdc.principal(H2) in str(err) and "addprinc" in str(err) and ini.state is GssState.FAILED


def test_peer_unknown_to_the_kdc(kdc):
    """Asking a ticket for a responder the KDC does not know: unknown-principal naming the peer."""
    kdc.remove_host(H1)
    ini, _ = pair(kdc)
    with pytest.raises(KerberosAuthError) as e:
        ini.initiator_token()
    assert e.value.reason is GssFailure.UNKNOWN_PRINCIPAL and kdc.principal(H1) in str(e.value)


def test_tampered_ap_req_is_refused_and_the_genuine_one_still_works(kdc):
    """A bit flipped in the AP-REQ's encrypted authenticator: Kerberos refuses it (invalid-token);
    the responder is unchanged and accepts the genuine token that follows."""
    ini, res = pair(kdc)
    ap_req = ini.initiator_token()
    forged = bytearray(ap_req)
    forged[-3] ^= 0x01
    with pytest.raises(KerberosAuthError) as e:
        res.accept_token(bytes(forged))
    assert e.value.reason is GssFailure.INVALID_TOKEN and "integrity" in (e.value.detail or "")
    assert res.state is GssState.START and not res.tokens_received
    ini.accept_token(res.accept_token(ap_req))
    finish(ini, res)


def test_tampered_unauthenticated_field_is_caught_by_hash_i(kdc):
    """MIT accepts an AP-REQ whose (unauthenticated) msg-type was altered; HASH_I covers the
    tokens as sent, so the responder's HASH_I check fails: the reason the draft hashes them."""
    ini, res = pair(kdc)
    ap_req = ini.initiator_token()
    at = ap_req.index(bytes.fromhex("a10302010e"))  # [1] msg-type INTEGER 14 (AP-REQ)
    forged = bytearray(ap_req)
    forged[at + 4] ^= 0x01
    ap_rep = res.accept_token(bytes(forged))
    ini.accept_token(ap_rep)
    assert ini.is_complete and res.is_complete
    with pytest.raises(KerberosAuthError) as e:
        finish(ini, res)
    assert e.value.reason is GssFailure.BAD_HASH and "HASH_I" in str(e.value)


def test_a_wrapped_hash_that_does_not_unwrap_leaves_the_context_usable(kdc):
    """MIT's gss_unwrap refuses an altered wrap token without touching the context: the genuine
    HASH_I then verifies (why the authenticator drops such a HASH instead of failing)."""
    ini, res = pair(kdc)
    ini.accept_token(res.accept_token(ini.initiator_token()))
    h_i = ini.hash_i(prf, SKEYID, idii_b=IDII_B, **COMMON)
    wrapped = ini.hash_payload(h_i)
    forged = bytearray(wrapped)
    forged[-5] ^= 0x10
    expected = res.hash_i(prf, SKEYID, idii_b=IDII_B, **COMMON)
    with pytest.raises(KerberosAuthError) as e:
        res.verify_hash(bytes(forged), expected, name="HASH_I")
    assert e.value.reason is GssFailure.BAD_HASH and res.state is GssState.COMPLETE
    res.verify_hash(wrapped, expected, name="HASH_I")


def test_tampered_ap_rep_fails_the_initiator(kdc):
    ini, res = pair(kdc)
    ap_rep = bytearray(res.accept_token(ini.initiator_token()))
    ap_rep[-2] ^= 0x80
    with pytest.raises(KerberosAuthError) as e:
        ini.accept_token(bytes(ap_rep))
    assert e.value.reason is GssFailure.INVALID_TOKEN and ini.state is GssState.FAILED


def test_clock_skew_beyond_the_allowance(kdc_factory):
    """The KDC's clock 15 minutes behind (libfaketime), allowance 300 s: the responder refuses
    the ticket with clock-skew and says to synchronise the clocks."""
    need_faketime()
    server = kdc_factory(hosts=(H1, H2), clock_offset_s=-900, clockskew_s=300)
    ini, res = pair(server)
    token = ini.initiator_token()
    with pytest.raises(KerberosAuthError) as e:
        res.accept_token(token)
    err = e.value
    assert err.reason is GssFailure.CLOCK_SKEW and err.local and "Clock skew too great" in (err.detail or "")
    assert "NTP" in str(err)


def test_no_keytab(kdc, tmp_path):
    """Initiator or responder without a keytab file: no-keytab, with the kadmin command."""
    need_gssapi()
    missing = tmp_path / "absent.keytab"
    ini = GssAuthenticator(KerberosCredentials(keytab=missing, principal=kdc.principal(H2)), is_initiator=True,
                           expected_peer=kdc.principal(H1))
    with pytest.raises(KerberosAuthError) as e:
        ini.initiator_token()
    assert e.value.reason is GssFailure.NO_KEYTAB and e.value.local and f"ktadd -k {missing}" in str(e.value)
    good, _ = pair(kdc)
    res = GssAuthenticator(KerberosCredentials(keytab=missing, principal=kdc.principal(H1)), is_initiator=False)
    with pytest.raises(KerberosAuthError) as e:
        res.accept_token(good.initiator_token())
    assert e.value.reason is GssFailure.NO_KEYTAB and res.state is GssState.START


def test_keytab_without_our_key(kdc):
    """Responder 01 given machine 02's keytab: no key for host/01 in it (no-keytab)."""
    need_gssapi()
    ini, _ = pair(kdc)
    res = GssAuthenticator(KerberosCredentials(keytab=kdc.keytab(H2), principal=kdc.principal(H1)), is_initiator=False)
    with pytest.raises(KerberosAuthError) as e:
        res.accept_token(ini.initiator_token())
    assert e.value.reason is GssFailure.NO_KEYTAB and "No key table entry" in (e.value.detail or "")


def test_kdc_unreachable(kdc):
    """Nothing listens on the KDC's port any more: kdc-unreachable, naming the realm."""
    ini, _ = pair(kdc)
    kdc.stop()
    with pytest.raises(KerberosAuthError) as e:
        ini.initiator_token()
    assert e.value.reason is GssFailure.KDC_UNREACHABLE and "RESKIT.COM" in str(e.value) and e.value.local


def test_wrong_peer(kdc):
    """The responder authenticates the initiator, but the policy expects another principal."""
    ini, res = pair(kdc, expect_i="host/hq-res-srv-09.reskit.com@RESKIT.COM")
    with pytest.raises(KerberosAuthError) as e:
        res.accept_token(ini.initiator_token())
    assert e.value.reason is GssFailure.WRONG_PEER and kdc.principal(H2) in str(e.value)



# --- the throwaway KDC itself ---------------------------------------------------------------------


def test_throwaway_kdc_lives_in_its_directory_and_stops_by_pid(kdc, tmp_path):
    """Profiles, database, keytabs and logs under the directory; the process is krb5kdc; stop()
    ends exactly it and can be repeated."""
    pid = kdc.pid
    assert pid is not None and open(f"/proc/{pid}/comm").read().strip() == "krb5kdc"
    assert kdc.directory.is_relative_to(tmp_path)
    for path in (kdc.krb5_conf, kdc.kdc_conf, kdc.keytab(H1), kdc.keytab(H2), kdc.directory / "principal"):
        assert path.is_file() and path.is_relative_to(kdc.directory)
    env = kdc.environ()
    assert env["KRB5_CONFIG"] == str(kdc.krb5_conf) and env["KRB5RCACHEDIR"].startswith(str(kdc.directory))
    assert f"kdc = 127.0.0.1:{kdc.port}" in kdc.krb5_conf.read_text()
    kdc.stop()
    assert kdc.pid is None and not os.path.exists(f"/proc/{pid}")  # reaped: stop() waited for it
    kdc.stop()


def test_throwaway_kdc_says_what_to_install(tmp_path, monkeypatch):
    """Without the MIT programs, start() names the apt packages (the demo prints it)."""
    monkeypatch.setattr(kdc_module, "find_program", lambda name: None)
    with pytest.raises(KdcError) as e:
        ThrowawayKdc(tmp_path / "kdc").start()
    assert "apt-get install krb5-admin-server krb5-kdc" in str(e.value)


# --- Main Mode through two IkeEndpoints (02 initiates, 01 responds) -------------------------------


def kerberos_endpoints(kdc: ThrowawayKdc, *, named: bool = True, responder_keytab=None):
    """Endpoints a (machine 02) and b (machine 01) with a gssapi proposal only and their keytabs;
    ``named``: each policy names the peer's principal, else neither does (identity attributes)."""
    need_gssapi()
    creds_a = KerberosCredentials(keytab=kdc.keytab(H2), principal=kdc.principal(H2))
    creds_b = KerberosCredentials(keytab=responder_keytab or kdc.keytab(H1), principal=kdc.principal(H1))
    p1_a = phase1(p1(auth="gssapi"), psk=None, kerberos=creds_a, kerberos_peer=kdc.principal(H1) if named else None)
    p1_b = phase1(p1(auth="gssapi"), psk=None, kerberos=creds_b, kerberos_peer=kdc.principal(H2) if named else None)
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(p1_a, p1_b, phase2_b=[mirror(cfg)])
    return a, b, cfg


def types_of(data: bytes) -> list[int]:
    return [p.payload_type for p in parse_message(data).payloads]


def failures(evs) -> list[NegotiationFailed]:
    return [e for e in evs if isinstance(e, NegotiationFailed)]


def tamper_gss(change):
    """An interceptor that rewrites the GSS token of every message 3 the initiator sends."""
    def intercept(d):
        msg = parse_message(d.data)
        if d.sender != "a" or msg.is_encrypted or PayloadType.GSS not in [p.payload_type for p in msg.payloads]:
            return d.data
        payloads = tuple(GssPayload(data=change(p.data)) if p.payload_type == PayloadType.GSS else p
                         for p in msg.payloads)
        return serialize_message(dataclasses.replace(msg, payloads=payloads))
    return intercept


def flip(at: int, bit: int = 0x01):
    def change(token: bytes) -> bytes:
        b = bytearray(token)
        b[at] ^= bit
        return bytes(b)
    return change


def test_main_mode_with_kerberos_carries_traffic(kdc, clock):
    """Auth 65001 with the GSS-API vendor IDs in messages 1/2, the AP-REQ in message 3 and the
    AP-REP in message 4 (payload 129), wrapped HASH_I/HASH_R in 5/6; both sides report the
    authenticated principals and Quick Mode's ESP SAs carry packets both ways."""
    a, b, cfg = kerberos_endpoints(kdc)
    a.initiate((B_ADDR, 500), cfg, clock.now)
    log = transfer(a, b, clock.now)
    mm = [types_of(d.data) for d in log[:4]]
    assert [PayloadType.GSS in t for t in mm] == [False, False, True, True]
    for d in log[:2]:
        vids = [p.data for p in parse_message(d.data).payloads if p.payload_type == PayloadType.VID]
        assert vendor_ids.GSSAPI in vids and vendor_ids.GSSAPI_LONG in vids
        (t,) = parse_message(d.data).payloads[0].proposals[0].transforms
        assert t.attribute(3) == 65001 and GSS_ID_ATTRIBUTE not in [x.type for x in t.attributes]
    ap_req = next(p.data for p in parse_message(log[2].data).payloads if p.payload_type == PayloadType.GSS)
    assert ap_req[:1] == b"\x60"  # RFC 2743 §3.1 framing of the initial context token
    ev_a, ev_b = events(a), events(b)
    p1a, p1b = (next(e for e in ev if isinstance(e, Phase1Established)) for ev in (ev_a, ev_b))
    assert p1a.auth == p1b.auth == "gssapi"
    assert p1a.peer_id == p1b.local_id == Identity(kind="kerberos", value=kdc.principal(H1))
    assert p1b.peer_id == p1a.local_id == Identity(kind="kerberos", value=kdc.principal(H2))
    assert carry_traffic(established(ev_a)[0], established(ev_b)[0]) == 6
    assert a.stats.dropped == b.stats.dropped == {}


def test_without_named_peers_the_identity_attributes_name_the_target(kdc, clock):
    """No expected peer in either policy: the initiator announces host/02 in the GSS identity
    attribute (class 16384, UTF-16LE), the responder answers with host/01 and the initiator asks
    its ticket for that name."""
    a, b, cfg = kerberos_endpoints(kdc, named=False)
    a.initiate((B_ADDR, 500), cfg, clock.now)
    log = transfer(a, b, clock.now)
    names = []
    for d in log[:2]:
        (t,) = parse_message(d.data).payloads[0].proposals[0].transforms
        (attr,) = [x for x in t.attributes if x.type == GSS_ID_ATTRIBUTE]
        names.append(decode_gss_id(attr.value))
    assert names == [kdc.principal(H2), kdc.principal(H1)]
    ev_a, ev_b = events(a), events(b)
    assert [e.peer_id.value for e in ev_a + ev_b if isinstance(e, Phase1Established)] == [
        kdc.principal(H1), kdc.principal(H2)]
    assert carry_traffic(established(ev_a)[0], established(ev_b)[0]) == 6


def test_initiator_unknown_to_the_kdc_fails_at_once_with_its_reason(kdc, clock):
    """Machine 02's principal is gone from the KDC: no ticket, so the initiator gives up on message 2
    (no retransmissions) with unknown-principal and the kadmin command; the responder never saw
    message 3 and reports nothing."""
    kdc.remove_host(H2)
    a, b, cfg = kerberos_endpoints(kdc)
    rid = a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now)
    (failed,) = failures(events(a))
    assert (failed.request_id, failed.phase, failed.failure_point) == (rid, 1, "me")
    assert failed.auth_failure == GssFailure.UNKNOWN_PRINCIPAL == "unknown-principal"
    assert kdc.principal(H2) in failed.reason and "addprinc" in failed.reason
    assert a.ike_sas() == [] and a.get_timer() is None
    run_timers(a, b, clock, clock.now + 120)
    assert events(b) == [] and b.ike_sas() == []


def test_responder_unknown_to_the_kdc(kdc, clock):
    """No principal for the responder: the initiator cannot get a ticket for it (unknown-principal
    naming the peer)."""
    kdc.remove_host(H1)
    a, b, cfg = kerberos_endpoints(kdc)
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now)
    (failed,) = failures(events(a))
    assert failed.auth_failure == "unknown-principal" and kdc.principal(H1) in failed.reason


def test_responder_without_its_key_refuses_with_no_keytab(kdc, clock):
    """Machine 01 given machine 02's keytab: it cannot decrypt the ticket. It queues a 545 event
    (no-keytab, fixed on its side) and answers AUTHENTICATION-FAILED; the initiator gives up with
    refused-by-peer."""
    a, b, cfg = kerberos_endpoints(kdc, responder_keytab=kdc.keytab(H2))
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now)
    run_timers(a, b, clock, clock.now + 120)
    (refused,) = failures(events(b))
    assert refused.auth_failure == "no-keytab" and "ktadd" in refused.reason and refused.failure_point == "me"
    (failed,) = failures(events(a))
    assert (failed.auth_failure, failed.failure_point, failed.notify) == (
        "refused-by-peer", "peer", NotifyType.AUTHENTICATION_FAILED)
    assert "event 545" in failed.reason


def test_tampered_token_fails_the_negotiation_with_its_reason(kdc, clock):
    """The AP-REQ altered in every copy of message 3: the responder refuses it with invalid-token
    (one 545 event however many copies) and answers AUTHENTICATION-FAILED each time; the initiator
    gives up with refused-by-peer; no SA anywhere."""
    a, b, cfg = kerberos_endpoints(kdc)
    tamper = tamper_gss(flip(-3))
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now, intercept=tamper)
    run_timers(a, b, clock, clock.now + 120, intercept=tamper)
    ev_a, ev_b = events(a), events(b)
    assert not [e for e in ev_a + ev_b if isinstance(e, Phase1Established)]
    (refused,) = failures(ev_b)
    assert refused.auth_failure == "invalid-token" and refused.notify == NotifyType.AUTHENTICATION_FAILED
    assert b.stats.dropped["refused"] >= 2  # every copy refused, reported once
    (failed,) = failures(ev_a)
    assert failed.auth_failure == "refused-by-peer" and failed.failure_point == "peer"


def test_a_tampered_token_changes_nothing_and_the_genuine_one_follows(kdc, clock):
    """Only the first copy of message 3 is altered: the responder refuses it (and says so), the
    retransmitted genuine message 3 then completes Main Mode."""
    a, b, cfg = kerberos_endpoints(kdc)
    first = tamper_gss(flip(-3))
    seen = []

    def once(d):
        if d.sender == "a" and PayloadType.GSS in types_of(d.data) and not seen:
            seen.append(d)
            return first(d)
        return d.data

    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now, intercept=once)
    run_timers(a, b, clock, clock.now + 10, intercept=once)
    ev_a, ev_b = events(a), events(b)
    assert [f.auth_failure for f in failures(ev_b)] == ["invalid-token"]
    assert len(established(ev_a)) == len(established(ev_b)) == 1


def test_unauthenticated_token_field_is_caught_by_hash_i(kdc, clock):
    """MIT accepts an AP-REQ whose (unauthenticated) msg-type was altered; HASH_I covers the token
    as sent, so the responder's check of message 5 fails: bad-hash, final, INVALID-HASH-INFORMATION
    to the initiator, which reports refused-by-peer."""
    a, b, cfg = kerberos_endpoints(kdc)

    def msg_type(token: bytes) -> bytes:
        at = token.index(bytes.fromhex("a10302010e"))  # [1] msg-type INTEGER 14 (AP-REQ)
        return flip(at + 4)(token)

    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now, intercept=tamper_gss(msg_type))
    (bad,) = failures(events(b))
    assert (bad.auth_failure, bad.failure_point, bad.notify) == ("bad-hash", "me", NotifyType.INVALID_HASH_INFORMATION)
    assert "HASH_I" in bad.reason and b.ike_sas() == []
    run_timers(a, b, clock, clock.now + 120)
    (failed,) = failures(events(a))
    assert (failed.auth_failure, failed.notify) == ("refused-by-peer", NotifyType.INVALID_HASH_INFORMATION)


def test_clock_skew_fails_the_negotiation_with_its_reason(kdc_factory, clock):
    """The KDC's clock 15 minutes behind (libfaketime), allowance 300 s: the ticket is refused by
    the responder with clock-skew (fix: synchronise the clocks); the initiator's report says the
    peer refused it."""
    need_faketime()
    server = kdc_factory(hosts=(H1, H2), clock_offset_s=-900, clockskew_s=300)
    a, b, cfg = kerberos_endpoints(server)
    a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now)
    run_timers(a, b, clock, clock.now + 120)
    (refused,) = failures(events(b))  # one event: the copies of message 3 get the same refusal
    assert refused.auth_failure == "clock-skew" and "NTP" in refused.reason and "Clock skew too great" in refused.reason
    (failed,) = failures(events(a))
    assert failed.auth_failure == "refused-by-peer"


def test_kdc_unreachable_fails_the_initiator_at_once(kdc, clock):
    a, b, cfg = kerberos_endpoints(kdc)
    kdc.stop()
    rid = a.initiate((B_ADDR, 500), cfg, clock.now)
    transfer(a, b, clock.now)
    (failed,) = failures(events(a))
    assert (failed.request_id, failed.auth_failure) == (rid, "kdc-unreachable") and "RESKIT.COM" in failed.reason
