"""The GSS-API authenticator against a real MIT KDC (realm RESKIT.COM in a temp dir, per test).

Machine 02 (initiator) authenticates to machine 01 (responder) from their keytabs, as Main Mode
would carry it: the AP-REQ in message 3, the AP-REP in message 4, then HASH_I / HASH_R over
the tokens, each wrapped by the context. Then each failure an administrator must be able to
act on, with its audit-545 reason: a host unknown to the KDC, a tampered token (refused by
Kerberos, or passed by Kerberos and caught by the HASH over the tokens), clock skew beyond the
allowance, no keytab, a keytab without the key, an unreachable KDC, the wrong peer.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ikeproto.gss import GssAuthenticator, GssFailure, GssState, KerberosAuthError
from ikeproto.krb5 import KerberosCredentials
from policyagent.kdc import ThrowawayKdc
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
