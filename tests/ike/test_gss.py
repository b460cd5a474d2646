"""ikeproto.gss and ikeproto.krb5 without a KDC: wire rules, hash construction, the authenticator.

The byte-level tests pin the rules written down in docs/kerberos.md (draft-ietf-ipsec-isakmp-gss-auth
as racoon and Windows 2000 implement it): vendor IDs against Wireshark's table, the GSS identity
attribute's encoding, HASH_I/HASH_R = prf(SKEYID, RFC 2409 input | [own GSS-ID] | own tokens)
recomputed here with ``hmac`` directly, SKEYID as for signatures. The authenticator's state
machine runs over a toy mechanism (``ToyMechanism``, test-only) with any number of legs; the real
one is exercised against an MIT KDC in tests/interop/test_kdc.py.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikeproto import gss, krb5, vendor_ids
from ikeproto.attributes import parse_attributes, serialize_attributes
from ikeproto.crypto import cipher, hash_algorithm
from ikeproto.enums import AuthMethod, NotifyType
from ikeproto.errors import IkeError, ProtocolError, UsageError
from ikeproto.gss import GssAuthenticator, GssFailure, GssState, KerberosAuthError
from ikeproto.keymat import Phase1Keys, hash_i, hash_r
from ikeproto.krb5 import KerberosCredentials, classify

SHA1 = hash_algorithm(2)
PRF = SHA1.prf
I_NAME = "host/hq-res-wrk-02.reskit.com@RESKIT.COM"
R_NAME = "host/hq-res-wrk-01.reskit.com@RESKIT.COM"


# --- vendor IDs and the identity attribute -------------------------------------------------------


def test_vendor_ids_are_wiresharks():
    """The GSS-API vendor IDs we send and recognise, as Wireshark's ISAKMP dissector lists them."""
    assert gss.gss_vendor_ids() == (bytes.fromhex("621b04bb09882ac1e15935fefa24aeee"),  # MD5("GSSAPI")
                                    bytes.fromhex("ad2c0dd0b9c32083ccba25b8861ec455"))  # the draft's long name
    assert gss.GSSAPI_LONG_NL == bytes.fromhex("b46d8914f3aaa3f2fedeb7c7db2943ca")
    assert vendor_ids.MS_NT5_ISAKMPOAKLEY == bytes.fromhex("1e2b516905991c7d7c96fcbfb587e461")


@pytest.mark.parametrize("vids, expected", [
    ([vendor_ids.GSSAPI], True),
    ([gss.GSSAPI_LONG_NL], True),
    ([vendor_ids.GSSAPI_LONG], True),
    ([vendor_ids.ms_nt5_vendor_id(2)], True),  # Windows 2000: MS NT5 + version 2
    ([vendor_ids.XAUTH, vendor_ids.NAT_T_RFC3947], False),  # 65001 is XAUTHInitPreShared then
    ([], False),
])
def test_65001_means_gssapi_only_with_the_vendor_ids(vids, expected):
    """Auth method 65001 is GSS-API Kerberos only when a GSS-API (or Windows) vendor ID came."""
    assert gss.AUTH_METHOD == AuthMethod.GSSAPI_KERBEROS == 65001
    assert gss.peer_speaks_gssapi(vids) is expected


def test_gss_identity_attribute_bytes():
    """Class 16384 in the variable (TLV) form, AF bit clear, the principal in UTF-16LE."""
    attr = gss.gss_id_attribute("host/a@R")
    wire = serialize_attributes([attr])
    assert wire == bytes.fromhex("4000" "0010") + "host/a@R".encode("utf-16-le")
    assert wire[4:6] == b"h\x00"
    (back,) = parse_attributes(wire)
    assert back.type == gss.GSS_ID_ATTRIBUTE == 16384 and gss.decode_gss_id(back.value) == "host/a@R"


@given(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0xD7FF), min_size=1, max_size=60))
def test_gss_identity_round_trips(name):
    """decode(encode(name)) == name for any principal text without NUL."""
    assert gss.decode_gss_id(gss.encode_gss_id(name)) == name


@given(st.binary(max_size=64))
def test_gss_identity_from_the_wire_parses_or_raises_protocol_error(value):
    """Arbitrary attribute bytes decode or raise our ProtocolError, nothing else."""
    try:
        text = gss.decode_gss_id(value)
    except ProtocolError as err:
        assert err.notify == NotifyType.ATTRIBUTES_NOT_SUPPORTED
    else:
        assert text.encode("utf-16-le") == value and "\x00" not in text


@pytest.mark.parametrize("value", [b"", b"h", b"h\x00o", b"\x00\xd8", b"h\x00\x00\x00"])
def test_gss_identity_refuses_odd_lengths_lone_surrogates_and_nul(value):
    with pytest.raises(ProtocolError):
        gss.decode_gss_id(value)


# --- HASH_I / HASH_R ------------------------------------------------------------------------------

G_XI, G_XR = bytes(range(1, 129)), bytes(range(128, 256))
CKY_I, CKY_R = bytes.fromhex("0102030405060708"), bytes.fromhex("a1a2a3a4a5a6a7a8")
SAI_B = bytes.fromhex("00000001000000010000002c01010001") + bytes(28)
IDII_B = bytes.fromhex("01110000") + bytes([127, 0, 0, 2])
IDIR_B = bytes.fromhex("01110000") + bytes([127, 0, 0, 1])
SKEYID = bytes.fromhex("5b0d0a2b0c3e4f6071829304a5b6c7d8e9fa0b1c")
T1, T2, T3 = b"\x60\x82AP-REQ...", b"\x60\x81AP-REP...", b"\x60\x10third-leg"


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()


def test_hash_i_appends_the_initiator_tokens_after_idii():
    """HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b | tokens sent by I)."""
    got = gss.gss_hash_i(PRF, SKEYID, g_xi=G_XI, g_xr=G_XR, cky_i=CKY_I, cky_r=CKY_R, sai_b=SAI_B, idii_b=IDII_B,
                         tokens_i=[T1, T3])
    assert got == _hmac(SKEYID, G_XI + G_XR + CKY_I + CKY_R + SAI_B + IDII_B + T1 + T3)
    assert got.hex() == _hmac(SKEYID, b"".join([G_XI, G_XR, CKY_I, CKY_R, SAI_B, IDII_B, T1, T3])).hex()


def test_hash_r_mirrors_and_covers_the_responder_tokens():
    """HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b | tokens sent by R)."""
    got = gss.gss_hash_r(PRF, SKEYID, g_xi=G_XI, g_xr=G_XR, cky_i=CKY_I, cky_r=CKY_R, sai_b=SAI_B, idir_b=IDIR_B,
                         tokens_r=[T2])
    assert got == _hmac(SKEYID, G_XR + G_XI + CKY_R + CKY_I + SAI_B + IDIR_B + T2)


def test_gss_identity_is_hashed_only_when_both_sides_sent_one():
    """racoon: [GSS-ID of the hashing side] goes between ID_b and the tokens iff both were announced."""
    common = dict(g_xi=G_XI, g_xr=G_XR, cky_i=CKY_I, cky_r=CKY_R, sai_b=SAI_B)
    both_i = gss.gss_hash_i(PRF, SKEYID, idii_b=IDII_B, tokens_i=[T1], gss_id_i=I_NAME, gss_id_r=R_NAME, **common)
    assert both_i == _hmac(SKEYID, G_XI + G_XR + CKY_I + CKY_R + SAI_B + IDII_B + I_NAME.encode() + T1)
    both_r = gss.gss_hash_r(PRF, SKEYID, idir_b=IDIR_B, tokens_r=[T2], gss_id_i=I_NAME, gss_id_r=R_NAME, **common)
    assert both_r == _hmac(SKEYID, G_XR + G_XI + CKY_R + CKY_I + SAI_B + IDIR_B + R_NAME.encode() + T2)
    only_i = gss.gss_hash_i(PRF, SKEYID, idii_b=IDII_B, tokens_i=[T1], gss_id_i=I_NAME, **common)
    assert only_i == _hmac(SKEYID, G_XI + G_XR + CKY_I + CKY_R + SAI_B + IDII_B + T1)


def test_without_tokens_the_hashes_are_rfc_2409s():
    """No tokens, no identities: exactly RFC 2409 §5 HASH_I / HASH_R (keymat)."""
    common = dict(g_xi=G_XI, g_xr=G_XR, cky_i=CKY_I, cky_r=CKY_R, sai_b=SAI_B)
    assert gss.gss_hash_i(PRF, SKEYID, idii_b=IDII_B, tokens_i=[], **common) == hash_i(PRF, SKEYID, idii_b=IDII_B, **common)
    assert gss.gss_hash_r(PRF, SKEYID, idir_b=IDIR_B, tokens_r=[], **common) == hash_r(PRF, SKEYID, idir_b=IDIR_B, **common)


@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=4), st.integers(0, 1000), st.integers(0, 7))
def test_any_altered_token_bit_changes_hash_i(tokens, where, bit):
    """Flipping any bit of any token the initiator sent changes HASH_I (the tokens are covered)."""
    flat = b"".join(tokens)
    pos = where % len(flat)
    altered, n = [], 0
    for t in tokens:
        b = bytearray(t)
        if n <= pos < n + len(t):
            b[pos - n] ^= 1 << bit
        altered.append(bytes(b))
        n += len(t)
    common = dict(g_xi=G_XI, g_xr=G_XR, cky_i=CKY_I, cky_r=CKY_R, sai_b=SAI_B, idii_b=IDII_B)
    assert gss.gss_hash_i(PRF, SKEYID, tokens_i=tokens, **common) != gss.gss_hash_i(PRF, SKEYID, tokens_i=altered, **common)


def test_skeyid_is_the_signature_one():
    """GSS-API: SKEYID = prf(Ni_b | Nr_b, g^xy), then SKEYID_d/a/e as RFC 2409 §5."""
    ni, nr, gxy = bytes(range(16)), bytes(range(16, 48)), bytes(range(200, 256)) * 2
    keys = Phase1Keys.from_signature(hash_alg=SHA1, cipher=cipher(7, 128), ni_b=ni, nr_b=nr, g_xy=gxy, cky_i=CKY_I, cky_r=CKY_R)
    assert keys.skeyid == _hmac(ni + nr, gxy)
    assert keys.skeyid_d == _hmac(keys.skeyid, gxy + CKY_I + CKY_R + b"\x00")


# --- a toy mechanism for the state machine ----------------------------------------------------------


@dataclass
class ToyContext:
    """``legs`` tokens in all, alternating I, A, I, ...; wrap = data + HMAC(key of all tokens)."""

    mech: ToyMechanism
    initiator: bool
    target: str | None
    seen: list[bytes] = field(default_factory=list)
    peer: str | None = None
    done: bool = False
    wraps: int = 0

    def _my_turn_token(self) -> bytes:
        n = len(self.seen)
        who = "I" if self.initiator else "A"
        return f"{who}{n}|{self.mech.principal}|{self.target or ''}".encode()

    def step(self, token: bytes | None) -> bytes | None:
        if token is not None:
            expect = "A" if self.initiator else "I"
            parts = token.decode(errors="replace").split("|")
            if not parts[0] == f"{expect}{len(self.seen)}" or len(parts) != 3:
                raise KerberosAuthError(GssFailure.INVALID_TOKEN, "toy token refused", detail=parts[0])
            if self.mech.refuse_leg == len(self.seen):
                raise KerberosAuthError(GssFailure.CLOCK_SKEW, "toy clock skew", local=True)
            self.peer = parts[1]
            self.seen.append(token)
        out = None
        if len(self.seen) < self.mech.legs:
            out = self._my_turn_token()
            self.seen.append(out)
        if self.initiator and self.peer is None and self.target is not None and len(self.seen) >= self.mech.legs:
            self.peer = self.target
        self.done = len(self.seen) >= self.mech.legs
        return out

    @property
    def is_complete(self) -> bool:
        return self.done

    def _key(self) -> bytes:
        return hashlib.sha256(b"".join(self.seen)).digest()

    def wrap(self, data: bytes) -> bytes:
        self.wraps += 1
        return b"W" + data + hmac.new(self._key(), data, hashlib.sha256).digest()[:8]

    def unwrap(self, token: bytes) -> bytes:
        data, tag = token[1:-8], token[-8:]
        if token[:1] != b"W" or not hmac.compare_digest(tag, hmac.new(self._key(), data, hashlib.sha256).digest()[:8]):
            raise KerberosAuthError(GssFailure.INVALID_TOKEN, "toy unwrap refused")
        return data

    def peer_name(self) -> str:
        assert self.peer is not None
        return self.peer


@dataclass
class ToyMechanism:
    principal: str
    legs: int = 2
    refuse_leg: int | None = None
    contexts: list[ToyContext] = field(default_factory=list)

    def initiator_context(self, target: str) -> ToyContext:
        self.contexts.append(ToyContext(self, True, target))
        return self.contexts[-1]

    def acceptor_context(self) -> ToyContext:
        self.contexts.append(ToyContext(self, False, None))
        return self.contexts[-1]


def _pair(legs=2, *, expect_r=None, expect_i=None, refuse_leg=None, announce=True):
    ini = GssAuthenticator(ToyMechanism(I_NAME, legs), is_initiator=True, expected_peer=expect_r)
    res = GssAuthenticator(ToyMechanism(R_NAME, legs, refuse_leg), is_initiator=False, expected_peer=expect_i)
    ids = dict(initiator=I_NAME, responder=R_NAME) if announce else dict(initiator=None, responder=None)
    ini.set_identities(**ids)
    res.set_identities(**ids)
    return ini, res


def _run(ini: GssAuthenticator, res: GssAuthenticator) -> int:
    """Message 3 carries the first token, then tokens ping-pong (4, 5, 6, 5, 6 ...); returns legs."""
    token: bytes | None = ini.initiator_token()
    legs = 1
    sender = res
    while token is not None:
        token = sender.accept_token(token)
        legs += token is not None
        sender = ini if sender is res else res
    return legs


@pytest.mark.parametrize("legs", [1, 2, 3, 4, 5])
def test_any_number_of_legs_completes_and_both_sides_hash_the_same(legs):
    """Both sides complete; each side's record of I's and R's tokens agrees, so do the hashes."""
    ini, res = _pair(legs)
    assert _run(ini, res) == legs
    assert ini.is_complete and res.is_complete
    assert ini.tokens_sent == res.tokens_received and res.tokens_sent == ini.tokens_received
    assert len(ini.tokens_sent) == (legs + 1) // 2 and len(res.tokens_sent) == legs // 2
    common = dict(g_xi=G_XI, g_xr=G_XR, cky_i=CKY_I, cky_r=CKY_R, sai_b=SAI_B)
    assert ini.hash_i(PRF, SKEYID, idii_b=IDII_B, **common) == res.hash_i(PRF, SKEYID, idii_b=IDII_B, **common)
    assert ini.hash_r(PRF, SKEYID, idir_b=IDIR_B, **common) == res.hash_r(PRF, SKEYID, idir_b=IDIR_B, **common)
    assert ini.hash_i(PRF, SKEYID, idii_b=IDII_B, **common) == gss.gss_hash_i(
        PRF, SKEYID, idii_b=IDII_B, tokens_i=ini.tokens_sent, gss_id_i=I_NAME, gss_id_r=R_NAME, **common)
    assert res.peer_name == I_NAME and ini.peer_name == R_NAME


def test_wrapped_hash_verifies_and_is_wrapped_once():
    """hash_payload wraps once (a retransmission resends the same bytes); the peer unwraps it."""
    ini, res = _pair()
    _run(ini, res)
    h = _hmac(SKEYID, b"HASH_I input")
    wrapped = ini.hash_payload(h)
    assert ini.hash_payload(h) == wrapped and ini.mechanism.contexts[0].wraps == 1
    res.verify_hash(wrapped, h, name="HASH_I")
    assert res.is_complete


def test_altered_wrapped_hash_or_other_value_is_bad_hash():
    """A wrap token that does not unwrap is refused and changes nothing (the genuine one then
    verifies); a hash that unwraps but differs is bad-hash and final."""
    ini, res = _pair()
    _run(ini, res)
    h = _hmac(SKEYID, b"x")
    genuine = ini.hash_payload(h)
    wrapped = bytearray(genuine)
    wrapped[3] ^= 0x40
    with pytest.raises(KerberosAuthError) as e:
        res.verify_hash(bytes(wrapped), h)
    assert e.value.reason is GssFailure.BAD_HASH and e.value.notify == NotifyType.INVALID_HASH_INFORMATION
    assert res.state is GssState.COMPLETE
    res.verify_hash(genuine, h)
    ini2, res2 = _pair()
    _run(ini2, res2)
    with pytest.raises(KerberosAuthError) as e:
        res2.verify_hash(ini2.hash_payload(h), _hmac(SKEYID, b"y"), name="HASH_I")
    assert e.value.reason is GssFailure.BAD_HASH and "HASH_I does not verify" in str(e.value)
    assert res2.state is GssState.FAILED


def test_a_refused_first_token_leaves_the_responder_ready_for_the_genuine_one():
    """Responder: a forged message 3 token changes nothing; the genuine one then completes."""
    ini, res = _pair()
    good = ini.initiator_token()
    with pytest.raises(KerberosAuthError) as e:
        res.accept_token(b"I0|forged")
    assert e.value.reason is GssFailure.INVALID_TOKEN and res.state is GssState.START and not res.tokens_received
    with pytest.raises(KerberosAuthError):
        res.accept_token(b"")
    assert res.state is GssState.START
    reply = res.accept_token(good)
    assert ini.accept_token(reply) is None and ini.is_complete and res.is_complete


def test_a_refused_later_token_kills_the_context():
    """A failure mid-context is final (GSS-API contexts do not survive an error)."""
    ini, res = _pair(legs=3, refuse_leg=2)
    t = ini.initiator_token()
    t = ini.accept_token(res.accept_token(t))
    with pytest.raises(KerberosAuthError) as e:
        res.accept_token(t)
    assert e.value.reason is GssFailure.CLOCK_SKEW and e.value.local and res.state is GssState.FAILED
    with pytest.raises(KerberosAuthError) as e:
        res.accept_token(t)
    assert e.value.reason is GssFailure.OUT_OF_ORDER


@pytest.mark.parametrize("announce", [True, False])
def test_hash_suffix_is_the_hashing_sides_identity_and_tokens(announce):
    """What each side appends after ID_b: [its own GSS identity, when both announced] then the tokens
    that side sent, the same on both sides; hash_i/hash_r are keymat's over ID_b + suffix."""
    ini, res = _pair(3, expect_r=R_NAME, announce=announce)
    _run(ini, res)
    for side in (ini, res):
        assert side.hash_suffix(of_initiator=True) == (I_NAME.encode() if announce else b"") + b"".join(ini.tokens_sent)
        assert side.hash_suffix(of_initiator=False) == (R_NAME.encode() if announce else b"") + b"".join(res.tokens_sent)
    common = dict(g_xi=G_XI, g_xr=G_XR, cky_i=CKY_I, cky_r=CKY_R, sai_b=SAI_B)
    assert ini.hash_i(PRF, SKEYID, idii_b=IDII_B, **common) == hash_i(
        PRF, SKEYID, idii_b=IDII_B + ini.hash_suffix(of_initiator=True), **common)


def test_peer_refusal_is_its_own_reason():
    err = gss.peer_refused("peer sent AUTHENTICATION-FAILED (unauthenticated)")
    assert err.reason is GssFailure.REFUSED_BY_PEER == "refused-by-peer" and not err.local
    assert "event 545" in str(err) and "AUTHENTICATION-FAILED" in str(err)


def test_out_of_order_use():
    ini, res = _pair()
    with pytest.raises(UsageError):
        res.initiator_token()
    with pytest.raises(KerberosAuthError) as e:
        ini.accept_token(b"A1|x|y")  # before our first token
    assert e.value.reason is GssFailure.OUT_OF_ORDER
    ini, res = _pair()
    ini.initiator_token()
    with pytest.raises(UsageError):
        ini.hash_payload(b"h")
    with pytest.raises(KerberosAuthError) as e:
        ini.verify_hash(b"W...", b"h")
    assert e.value.reason is GssFailure.OUT_OF_ORDER and e.value.notify == NotifyType.INVALID_HASH_INFORMATION
    ini, res = _pair()
    _run(ini, res)
    with pytest.raises(KerberosAuthError) as e:
        ini.accept_token(b"A1|late|")
    assert e.value.reason is GssFailure.OUT_OF_ORDER


@pytest.mark.parametrize("expected, ok", [(R_NAME, True), ("host/hq-res-wrk-01.reskit.com", True),
                                          ("host/evil.reskit.com@RESKIT.COM", False), ("host/evil.reskit.com", False)])
def test_responder_checks_the_initiator_principal(expected, ok):
    """The acceptor's authenticated peer must be the policy's expected peer (realm optional)."""
    ini = GssAuthenticator(ToyMechanism(R_NAME), is_initiator=True, expected_peer=None)
    ini.set_identities(initiator=None, responder=I_NAME)
    res = GssAuthenticator(ToyMechanism(I_NAME), is_initiator=False, expected_peer=expected)
    if ok:
        _run(ini, res)
        assert res.peer_name == R_NAME
    else:
        with pytest.raises(KerberosAuthError) as e:
            _run(ini, res)
        assert e.value.reason is GssFailure.WRONG_PEER and "evil" in str(e.value)


def test_initiator_target_is_the_expected_peer_else_the_announced_one():
    ini = GssAuthenticator(ToyMechanism(I_NAME), is_initiator=True, expected_peer="host/x@R")
    ini.set_identities(initiator=I_NAME, responder=R_NAME)
    assert ini.target() == "host/x@R"
    ini = GssAuthenticator(ToyMechanism(I_NAME), is_initiator=True)
    ini.set_identities(initiator=I_NAME, responder=R_NAME)
    assert ini.target() == R_NAME
    ini = GssAuthenticator(ToyMechanism(I_NAME), is_initiator=True)
    with pytest.raises(KerberosAuthError) as e:
        ini.initiator_token()
    assert e.value.reason is GssFailure.NO_PEER_NAME and "expected peer" in str(e.value)


OPS = st.lists(st.sampled_from(["init", "to_r", "to_i", "wrap_i", "wrap_r", "verify_i", "verify_r", "junk_r"]),
               max_size=12)


@given(OPS, st.integers(1, 4))
def test_any_sequence_of_calls_raises_only_our_errors_and_failed_is_final(ops, legs):
    """Whatever the order of calls, only IkeError subclasses escape; FAILED never changes."""
    ini, res = _pair(legs)
    to_r: list[bytes] = []
    to_i: list[bytes] = []
    wrapped: dict[str, bytes] = {}
    for op in ops:
        before = {ini: ini.state, res: res.state}
        try:
            if op == "init":
                to_r.append(ini.initiator_token())
            elif op == "to_r" and to_r:
                out = res.accept_token(to_r.pop(0))
                if out:
                    to_i.append(out)
            elif op == "to_i" and to_i:
                out = ini.accept_token(to_i.pop(0))
                if out:
                    to_r.append(out)
            elif op == "junk_r":
                res.accept_token(b"junk")
            elif op in ("wrap_i", "wrap_r"):
                side = ini if op == "wrap_i" else res
                wrapped[op] = side.hash_payload(b"h" * 20)
            elif op == "verify_r" and "wrap_i" in wrapped:
                res.verify_hash(wrapped["wrap_i"], b"h" * 20)
            elif op == "verify_i" and "wrap_r" in wrapped:
                ini.verify_hash(wrapped["wrap_r"], b"h" * 20)
        except IkeError:
            pass
        for side, was in before.items():
            if was is GssState.FAILED:
                assert side.state is GssState.FAILED


# --- error mapping (MIT codes) and the optional dependency ------------------------------------------


@dataclass
class FakeGssError(Exception):
    maj_code: int
    min_code: int
    text: str = "library text"

    def gen_message(self) -> str:
        return f"Major ({self.maj_code}): x, Minor ({self.min_code}): {self.text}"


@pytest.mark.parametrize("minor, reason, words", [
    (-1765328378, GssFailure.UNKNOWN_PRINCIPAL, "addprinc"),  # Client ... not found in Kerberos database
    (-1765328377, GssFailure.UNKNOWN_PRINCIPAL, "addprinc"),  # Server ... not found
    (-1765328347, GssFailure.CLOCK_SKEW, "NTP"),  # Clock skew too great
    (-1765328351, GssFailure.CLOCK_SKEW, "NTP"),  # Ticket not yet valid
    (-1765328236, GssFailure.CLOCK_SKEW, "clockskew"),  # Clock skew too great in KDC reply
    (-1765328228, GssFailure.KDC_UNREACHABLE, "KDC"),  # Cannot contact any KDC for realm
    (-1765328203, GssFailure.NO_KEYTAB, "ktadd"),  # Key table entry not found
    (-1765328154, GssFailure.NO_KEYTAB, "ktadd"),
    (2, GssFailure.NO_KEYTAB, "ktadd"),  # ENOENT: keytab file not found
    (39756033, GssFailure.NO_KEYTAB, "ktadd"),  # KG_KEYTAB_NOMATCH: no key for our name in the keytab
    (-1765328360, GssFailure.NO_TICKET, "re-export"),  # Preauthentication failed
    (-1765328240, GssFailure.WRONG_PEER, "expects"),  # Wrong principal in request
])
def test_mit_codes_map_to_actionable_reasons(minor, reason, words):
    """Each MIT failure maps to its 545 reason, signed or unsigned minor code alike."""
    for code in (minor, minor & 0xFFFFFFFF):
        err = classify(FakeGssError(0xD0000, code, "Client 'host/x@R' not found" if minor == -1765328378 else "t"),
                       principal=I_NAME, keytab="/k.keytab", peer=R_NAME, peer_token=False)
        assert err.reason is reason and words in err.advice and isinstance(err, ProtocolError)
        assert err.notify == NotifyType.AUTHENTICATION_FAILED


def test_unknown_codes_fall_back_by_context():
    bad_token = classify(FakeGssError(0xD0000, 100001), principal=I_NAME, keytab="/k", peer=None, peer_token=True)
    assert bad_token.reason is GssFailure.INVALID_TOKEN and not bad_token.local
    no_cred = classify(FakeGssError(0x70000, 12345), principal=I_NAME, keytab="/k", peer=None, peer_token=False)
    assert no_cred.reason is GssFailure.NO_TICKET and no_cred.local
    other = classify(FakeGssError(0xD0000, 12345, "odd"), principal=I_NAME, keytab="/k", peer=None, peer_token=False)
    assert other.reason is GssFailure.OTHER and other.detail == "odd"


def test_credentials_need_a_machine_principal():
    with pytest.raises(UsageError):
        KerberosCredentials(keytab="/k", principal="alice@RESKIT.COM")


def test_without_gssapi_the_kerberos_method_says_how_to_install_it(monkeypatch):
    """Importing works without gssapi; using it raises GssUnavailableError with the pip extra."""
    monkeypatch.setitem(sys.modules, "gssapi", None)  # import gssapi -> ImportError
    creds = KerberosCredentials(keytab="/nonexistent.keytab", principal=I_NAME)
    with pytest.raises(gss.GssUnavailableError) as e:
        creds.initiator_context(R_NAME)
    assert "pip install 'pyipsec[kerberos]'" in str(e.value) and isinstance(e.value, UsageError)
    assert not krb5.is_available()


def test_modules_import_without_gssapi():
    code = "import sys; sys.modules['gssapi'] = None; import ikeproto.gss, ikeproto.krb5, policyagent.kdc; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "ok", out.stderr
