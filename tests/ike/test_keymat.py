"""ikeproto.keymat: a strongSwan golden run, an hmac/hashlib oracle, expansion and direction rules."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikeproto import crypto, keymat
from ikeproto.crypto import EncryptionAlgorithm as E
from ikeproto.crypto import HashAlgorithm as H
from ikeproto.errors import UsageError
from ikeproto.keymat import Phase1Keys, ProtocolId

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "keymat_strongswan.json"

# --- a minimal ISAKMP reader, enough to walk the captured messages ---------------------------

SA, KE, ID, HASH, NONCE, NATD = 1, 4, 5, 8, 10, 20


def header(message: bytes) -> dict[str, object]:
    return {
        "cky_i": message[0:8],
        "cky_r": message[8:16],
        "next": message[16],
        "exchange": message[18],
        "encrypted": bool(message[19] & 1),
        "mid": int.from_bytes(message[20:24], "big"),
        "length": int.from_bytes(message[24:28], "big"),
    }


def payloads(first: int, data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """[(type, body)] of a payload chain, and where the chain ends (the pad starts there)."""
    out, kind, pos = [], first, 0
    while kind:
        nxt, length = data[pos], int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append((kind, data[pos + 4 : pos + length]))
        kind, pos = nxt, pos + length
    return out, pos


def body_of(chain: list[tuple[int, bytes]], kind: int, index: int = 0) -> bytes:
    return [b for k, b in chain if k == kind][index]


def proposal_spi(sa_body: bytes) -> tuple[int, bytes]:
    """(protocol, SPI) of the first proposal in an SA body (DOI, situation, proposal payload)."""
    proposal = sa_body[8 + 4 :]
    protocol, spi_size = proposal[1], proposal[2]
    return protocol, proposal[4 : 4 + spi_size]


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads(VECTORS.read_text())


def logged(golden: dict, side: str, label: str, index: int = 0) -> bytes:
    return bytes.fromhex(golden[f"{side}_log"][label][index])


def test_strongswan_main_mode_and_quick_mode_end_to_end(golden: dict) -> None:
    """Re-derive a real charon-vs-charon negotiation from its capture, PSK and g^xy.

    Every value charon logged (SKEYIDs, Ka, IVs, HASH_I/R, HASH(1..3), child keys) must come out
    of our functions, and every encrypted message must decrypt and authenticate with our chain.
    """
    msgs = [bytes.fromhex(m["hex"]) for m in golden["messages"]]
    h = header(msgs[0])
    cky_i, cky_r = msgs[2][0:8], msgs[2][8:16]
    sai_b = body_of(payloads(h["next"], msgs[0][28:])[0], SA)
    mm3, _ = payloads(msgs[2][16], msgs[2][28:])
    mm4, _ = payloads(msgs[3][16], msgs[3][28:])
    g_xi, ni_b = body_of(mm3, KE), body_of(mm3, NONCE)
    g_xr, nr_b = body_of(mm4, KE), body_of(mm4, NONCE)
    g_xy = logged(golden, "initiator", "shared Diffie Hellman secret")
    assert g_xy == logged(golden, "responder", "shared Diffie Hellman secret") and len(g_xy) == 128

    # Phase 1: 3DES-CBC, SHA-1, group 2, PSK.
    sha1 = crypto.hash_algorithm(H.SHA)
    keys = Phase1Keys.from_psk(
        hash_alg=sha1, cipher=crypto.cipher(E.TRIPLE_DES_CBC), psk=golden["psk"].encode(),
        ni_b=ni_b, nr_b=nr_b, g_xy=g_xy, cky_i=cky_i, cky_r=cky_r,
    )
    for side in ("initiator", "responder"):
        assert keys.skeyid == logged(golden, side, "SKEYID")
        assert keys.skeyid_d == logged(golden, side, "SKEYID_d")
        assert keys.skeyid_a == logged(golden, side, "SKEYID_a")
        assert keys.skeyid_e == logged(golden, side, "SKEYID_e")
        assert keys.enc_key == logged(golden, side, "encryption key Ka")  # 24 bytes: expanded
    ivs = keys.iv_manager(g_xi=g_xi, g_xr=g_xr)
    assert ivs.phase1_iv == logged(golden, "initiator", "initial IV")

    # MM5 and MM6: decrypt with the phase-1 chain, check HASH_I / HASH_R.
    mm5_h = header(msgs[4])
    plain, last = keys.decrypt(ivs.iv(0), msgs[4][28 : mm5_h["length"]])
    mm5, _ = payloads(mm5_h["next"], plain)
    expected_i = keys.hash_i(g_xi=g_xi, g_xr=g_xr, cky_i=cky_i, cky_r=cky_r, sai_b=sai_b, idii_b=body_of(mm5, ID))
    assert hmac.compare_digest(expected_i, body_of(mm5, HASH))
    assert expected_i == logged(golden, "initiator", "HASH_I")
    ivs.advance(0, last)
    assert ivs.phase1_iv == logged(golden, "initiator", "next IV for MID 0", 0)
    mm6_h = header(msgs[5])
    plain, last = keys.decrypt(ivs.iv(0), msgs[5][28 : mm6_h["length"]])
    mm6, _ = payloads(mm6_h["next"], plain)
    expected_r = keys.hash_r(g_xi=g_xi, g_xr=g_xr, cky_i=cky_i, cky_r=cky_r, sai_b=sai_b, idir_b=body_of(mm6, ID))
    assert hmac.compare_digest(expected_r, body_of(mm6, HASH)) and expected_r == logged(golden, "responder", "HASH_R")
    ivs.advance(0, last)
    assert ivs.phase1_iv == logged(golden, "initiator", "next IV for MID 0", 1)

    # Quick Mode: the IV of the new message ID comes from the last phase-1 block.
    qm = [header(m) for m in msgs[6:9]]
    mid = qm[0]["mid"]
    assert mid and all(q["mid"] == mid and q["exchange"] == 32 and q["encrypted"] for q in qm)
    assert ivs.iv(mid) == sha1.digest(ivs.phase1_iv + mid.to_bytes(4, "big"))[:8]
    assert ivs.iv(mid) == logged(golden, "initiator", f"next IV for MID {mid}", 0)
    bodies = []
    for message, h_q in zip(msgs[6:9], qm, strict=True):
        plain, last = keys.decrypt(ivs.iv(mid), message[28 : h_q["length"]])
        chain, end = payloads(h_q["next"], plain)
        assert chain[0][0] == HASH and not any(plain[end:])  # zero pad after the chain
        rest = plain[4 + len(chain[0][1]) : end]  # after the HASH payload, without the pad
        bodies.append((chain, rest))
        ivs.advance(mid, last)
    (qm1, rest1), (qm2, rest2), (qm3, _) = bodies
    qi_b, qr_b = body_of(qm1, NONCE), body_of(qm2, NONCE)
    assert hmac.compare_digest(keys.qm_hash1(mid, rest1), body_of(qm1, HASH))
    assert keys.qm_hash1(mid, rest1) == logged(golden, "responder", "Hash(1)")
    assert hmac.compare_digest(keys.qm_hash2(mid, qi_b, rest2), body_of(qm2, HASH))
    assert hmac.compare_digest(keys.qm_hash3(mid, qi_b, qr_b), body_of(qm3, HASH))
    assert keys.qm_hash3(mid, qi_b, qr_b) == logged(golden, "responder", "Hash(3)")

    # KEYMAT: ESP AES-128 (16) + HMAC-SHA1 (20); the SA towards the responder uses its SPI.
    protocol, spi_i = proposal_spi(body_of(qm1, SA))
    _, spi_r = proposal_spi(body_of(qm2, SA))
    assert protocol == ProtocolId.IPSEC_ESP and len(spi_i) == len(spi_r) == 4
    assert logged(golden, "initiator", "initiator SA seed") == bytes([protocol]) + spi_r + qi_b + qr_b
    to_responder = logged(golden, "initiator", "encryption initiator key") + logged(
        golden, "initiator", "integrity initiator key"
    )
    to_initiator = logged(golden, "initiator", "encryption responder key") + logged(
        golden, "initiator", "integrity responder key"
    )
    inbound_i, outbound_i = keys.child_keymat(
        protocol=protocol, spi_in=spi_i, spi_out=spi_r, ni_b=qi_b, nr_b=qr_b, length=36
    )
    inbound_r, outbound_r = keys.child_keymat(
        protocol=protocol, spi_in=spi_r, spi_out=spi_i, ni_b=qi_b, nr_b=qr_b, length=36
    )
    assert outbound_i == inbound_r == to_responder
    assert inbound_i == outbound_r == to_initiator


def test_strongswan_natd_hashes(golden: dict) -> None:
    """RFC 3947 §3.2: our NAT-D hash of every (cookies, IP, port) charon hashed matches its hash."""
    for side in ("initiator", "responder"):
        chunks = golden[f"{side}_log"]["natd_chunk"]
        hashes = golden[f"{side}_log"]["natd_hash"]
        for chunk_hex, hash_hex in zip(chunks, hashes, strict=True):
            chunk = bytes.fromhex(chunk_hex)
            ours = keymat.natd_hash(
                crypto.hash_algorithm(H.SHA), chunk[:8], chunk[8:16], chunk[16:20], int.from_bytes(chunk[20:], "big")
            )
            assert ours.hex() == hash_hex
    # And the NAT-D payload that names the responder's address in message 3 is our hash of it.
    mm3 = bytes.fromhex(golden["messages"][2]["hex"])
    chain, _ = payloads(mm3[16], mm3[28:])
    ours = keymat.natd_hash(crypto.hash_algorithm(H.SHA), mm3[:8], mm3[8:16], "192.0.2.1", 500)
    assert ours in [b for k, b in chain if k == NATD]


# --- an independent oracle: the RFC formulas written out with hmac.new / hashlib --------------

HASH_NAMES = {H.MD5: "md5", H.SHA: "sha1", H.SHA2_256: "sha256", H.SHA2_384: "sha384", H.SHA2_512: "sha512"}


def oracle_prf(name: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, getattr(hashlib, name)).digest()


@pytest.mark.parametrize("hash_number", list(HASH_NAMES))
@pytest.mark.parametrize(("cipher_number", "key_length"), crypto.supported_ciphers())
@given(
    psk=st.binary(min_size=1, max_size=40), ni=st.binary(min_size=8, max_size=64), nr=st.binary(min_size=8, max_size=64),
    g_xy=st.binary(min_size=32, max_size=256), ckys=st.binary(min_size=16, max_size=16),
)
def test_phase1_keys_match_the_rfc_formulas(
    hash_number: int, cipher_number: int, key_length: int | None, psk: bytes, ni: bytes, nr: bytes, g_xy: bytes,
    ckys: bytes,
) -> None:
    """Phase1Keys equals a literal transcription of RFC 2409 §5 and Appendix B for every suite."""
    name = HASH_NAMES[hash_number]
    suite = crypto.cipher(cipher_number, key_length)
    cky_i, cky_r = ckys[:8], ckys[8:]
    keys = Phase1Keys.from_psk(
        hash_alg=crypto.hash_algorithm(hash_number), cipher=suite, psk=psk, ni_b=ni, nr_b=nr, g_xy=g_xy,
        cky_i=cky_i, cky_r=cky_r,
    )
    skeyid = oracle_prf(name, psk, ni + nr)
    d = oracle_prf(name, skeyid, g_xy + cky_i + cky_r + b"\0")
    a = oracle_prf(name, skeyid, d + g_xy + cky_i + cky_r + b"\1")
    e = oracle_prf(name, skeyid, a + g_xy + cky_i + cky_r + b"\2")
    ka = e
    if len(e) < suite.key_size:
        k = oracle_prf(name, e, b"\0")
        ka = k
        while len(ka) < suite.key_size:
            k = oracle_prf(name, e, k)
            ka += k
    assert (keys.skeyid, keys.skeyid_d, keys.skeyid_a, keys.skeyid_e) == (skeyid, d, a, e)
    if not crypto.is_weak_des_key(ka[:8]):
        assert keys.enc_key == ka[: suite.key_size]
    sig = Phase1Keys.from_signature(
        hash_alg=crypto.hash_algorithm(hash_number), cipher=suite, ni_b=ni, nr_b=nr, g_xy=g_xy, cky_i=cky_i, cky_r=cky_r
    )
    assert sig.skeyid == oracle_prf(name, ni + nr, g_xy)


@pytest.mark.parametrize("hash_number", list(HASH_NAMES))
@given(
    key=st.binary(min_size=1, max_size=64), mid=st.integers(0, 2**32 - 1), ni=st.binary(max_size=40),
    nr=st.binary(max_size=40), rest=st.binary(max_size=80), spi=st.binary(min_size=4, max_size=4),
    g_qm=st.none() | st.binary(min_size=1, max_size=64), length=st.integers(0, 200),
)
def test_phase2_values_match_the_rfc_formulas(
    hash_number: int, key: bytes, mid: int, ni: bytes, nr: bytes, rest: bytes, spi: bytes, g_qm: bytes | None,
    length: int,
) -> None:
    """HASH(1..3), Informational HASH(1) and KEYMAT equal RFC 2409 §5.5/§5.7 written out."""
    name, prf = HASH_NAMES[hash_number], crypto.hash_algorithm(hash_number).prf
    m = mid.to_bytes(4, "big")
    assert keymat.qm_hash1(prf, key, mid, rest) == oracle_prf(name, key, m + rest)
    assert keymat.qm_hash2(prf, key, mid, ni, rest) == oracle_prf(name, key, m + ni + rest)
    assert keymat.qm_hash3(prf, key, mid, ni, nr) == oracle_prf(name, key, b"\0" + m + ni + nr)
    assert keymat.informational_hash(prf, key, mid, rest) == oracle_prf(name, key, m + rest)
    seed = (g_qm or b"") + b"\x03" + spi + ni + nr
    blocks = [oracle_prf(name, key, seed)]
    while sum(map(len, blocks)) < length:
        blocks.append(oracle_prf(name, key, blocks[-1] + seed))
    got = keymat.keymat(prf, key, protocol=3, spi=spi, ni_b=ni, nr_b=nr, length=length, g_qm_xy=g_qm)
    assert got == b"".join(blocks)[:length] and len(got) == length


def test_hash_r_mirrors_hash_i_but_keeps_the_initiator_sa() -> None:
    """HASH_R swaps g^x and cookies but still hashes SAi_b, and differs from HASH_I."""
    prf = crypto.hash_algorithm(H.SHA).prf
    args = {"g_xi": b"I" * 8, "g_xr": b"R" * 8, "cky_i": b"i" * 8, "cky_r": b"r" * 8, "sai_b": b"SA"}
    assert keymat.hash_r(prf, b"k", idir_b=b"ID", **args) == prf(b"k", b"R" * 8 + b"I" * 8 + b"r" * 8 + b"i" * 8 + b"SAID")
    assert keymat.hash_i(prf, b"k", idii_b=b"ID", **args) == prf(b"k", b"I" * 8 + b"R" * 8 + b"i" * 8 + b"r" * 8 + b"SAID")


# --- expansion, DES weak keys, directions ----------------------------------------------------


@pytest.mark.parametrize("hash_number", list(HASH_NAMES))
@pytest.mark.parametrize(("cipher_number", "key_length"), crypto.supported_ciphers())
def test_encryption_key_length_and_expansion(hash_number: int, cipher_number: int, key_length: int | None) -> None:
    """Ka has the cipher's key size; it is SKEYID_e's prefix when that is long enough, else K1|K2."""
    suite, h = crypto.cipher(cipher_number, key_length), crypto.hash_algorithm(hash_number)
    skeyid_e = h.prf(b"seed", b"e")
    ka = keymat.encryption_key(h.prf, skeyid_e, suite)
    assert len(ka) == suite.key_size
    if h.digest_size >= suite.key_size:
        assert ka == skeyid_e[: suite.key_size]
    else:  # e.g. 3DES or AES-256 with SHA-1, AES-192/256 with MD5
        k1 = h.prf(skeyid_e, b"\x00")
        assert ka == (k1 + h.prf(skeyid_e, k1))[: suite.key_size] and ka[: len(k1)] == k1


def test_expand_key_lengths() -> None:
    """Appendix B: any length, built from whole prf blocks K1 = prf(k, 0), Kn = prf(k, Kn-1)."""
    prf = crypto.hash_algorithm(H.MD5).prf
    k1 = prf(b"k", b"\0")
    k2 = prf(b"k", k1)
    assert keymat.expand_key(prf, b"k", 0) == b""
    assert keymat.expand_key(prf, b"k", 5) == k1[:5]
    assert keymat.expand_key(prf, b"k", 20) == (k1 + k2)[:20]
    assert len(keymat.expand_key(prf, b"k", 100)) == 100


def test_des_key_skips_weak_and_semi_weak_slices() -> None:
    """RFC 2409 Appendix B: DES uses the first 8-byte slice of SKEYID_e that is not weak."""
    prf = crypto.hash_algorithm(H.MD5).prf
    des = crypto.cipher(E.DES_CBC)
    normal = bytes.fromhex("0123456789abcdef")
    assert keymat.encryption_key(prf, normal + b"\x55" * 8, des) == normal
    weak, semi = bytes.fromhex("0101010101010101"), bytes.fromhex("01FE01FE01FE01FE")
    assert keymat.encryption_key(prf, weak + normal, des) == normal
    assert keymat.encryption_key(prf, bytes.fromhex("0000000000000000") + normal, des) == normal  # parity
    both_weak = weak + semi  # a 16-byte (MD5) SKEYID_e with no usable slice: go on into K1
    assert keymat.encryption_key(prf, both_weak, des) == prf(both_weak, b"\x00")[:8]
    tdes = crypto.cipher(E.TRIPLE_DES_CBC)
    assert keymat.encryption_key(prf, weak * 3, tdes) == weak * 3  # no weak-key rule for 3DES


def test_keymat_uses_the_destination_spi() -> None:
    """RFC 2409 §5.5: each direction's KEYMAT uses the SPI its destination chose."""
    sha = crypto.hash_algorithm(H.SHA)
    keys = Phase1Keys.derive(
        hash_alg=sha, cipher=crypto.cipher(E.AES_CBC, 128), skeyid=b"s" * 20, g_xy=b"g" * 128,
        cky_i=b"i" * 8, cky_r=b"r" * 8,
    )
    ours, theirs = bytes.fromhex("c0000001"), bytes.fromhex("c0000002")
    inbound, outbound = keys.child_keymat(protocol=3, spi_in=ours, spi_out=theirs, ni_b=b"n" * 16, nr_b=b"m" * 16, length=52)
    assert len(inbound) == len(outbound) == 52 and inbound != outbound
    assert inbound == keymat.keymat(sha.prf, keys.skeyid_d, protocol=3, spi=ours, ni_b=b"n" * 16, nr_b=b"m" * 16, length=52)
    pfs = keys.keymat(protocol=3, spi=ours, ni_b=b"n" * 16, nr_b=b"m" * 16, length=52, g_qm_xy=b"q" * 256)
    assert pfs != inbound
    ah = keys.keymat(protocol=ProtocolId.IPSEC_AH, spi=ours, ni_b=b"n" * 16, nr_b=b"m" * 16, length=52)
    assert ah != inbound


def test_phase1_keys_encrypt_decrypt_with_the_iv_chain() -> None:
    """Phase1Keys.encrypt/decrypt round-trip and report the block that advances the chain."""
    keys = Phase1Keys.derive(
        hash_alg=crypto.hash_algorithm(H.SHA2_256), cipher=crypto.cipher(E.AES_CBC, 256), skeyid=b"s" * 32,
        g_xy=b"g" * 256, cky_i=b"i" * 8, cky_r=b"r" * 8,
    )
    ivs = keys.iv_manager(g_xi=b"a" * 256, g_xr=b"b" * 256)
    ciphertext, last = keys.encrypt(ivs.iv(0), b"payloads")
    assert len(ciphertext) == 16 and last == ciphertext[-16:]
    plain, last2 = keys.decrypt(ivs.iv(0), ciphertext)
    assert plain == b"payloads" + bytes(8) and last2 == last


def test_bad_arguments_are_usage_errors() -> None:
    """Wrong cookie sizes, message IDs, ports, addresses and an empty PSK are local misuse."""
    prf = crypto.hash_algorithm(H.SHA).prf
    sha = crypto.hash_algorithm(H.SHA)
    with pytest.raises(UsageError):
        keymat.derive_skeyids(prf, b"s", b"g", b"i" * 7, b"r" * 8)
    with pytest.raises(UsageError):
        keymat.qm_hash1(prf, b"a", 2**32, b"")
    with pytest.raises(UsageError):
        keymat.qm_hash3(prf, b"a", -1, b"", b"")
    with pytest.raises(UsageError):
        keymat.skeyid_psk(prf, b"", b"n", b"m")
    with pytest.raises(UsageError):
        keymat.natd_hash(sha, b"i" * 8, b"r" * 8, b"\x01\x02\x03", 500)
    with pytest.raises(UsageError):
        keymat.natd_hash(sha, b"i" * 8, b"r" * 8, "192.0.2.1", 70000)
    with pytest.raises(UsageError):
        keymat.keymat(prf, b"d", protocol=256, spi=b"1234", ni_b=b"", nr_b=b"", length=4)


def test_natd_hash_accepts_every_address_form() -> None:
    """str, bytes and ipaddress objects give the same NAT-D hash; IPv6 uses 16 bytes."""
    import ipaddress

    sha = crypto.hash_algorithm(H.SHA)
    forms = ["192.0.2.1", bytes([192, 0, 2, 1]), ipaddress.ip_address("192.0.2.1")]
    assert len({keymat.natd_hash(sha, b"i" * 8, b"r" * 8, f, 4500) for f in forms}) == 1
    v6 = keymat.natd_hash(sha, b"i" * 8, b"r" * 8, "2001:db8::1", 500)
    assert v6 == sha.digest(b"i" * 8 + b"r" * 8 + ipaddress.ip_address("2001:db8::1").packed + b"\x01\xf4")


def test_phase1_keys_repr_hides_secrets() -> None:
    """No SKEYID or key material in repr()."""
    keys = Phase1Keys.derive(
        hash_alg=crypto.hash_algorithm(H.SHA), cipher=crypto.cipher(E.TRIPLE_DES_CBC), skeyid=b"\x11" * 20,
        g_xy=b"g" * 128, cky_i=b"i" * 8, cky_r=b"r" * 8,
    )
    text = repr(keys)
    for secret in (keys.skeyid, keys.skeyid_d, keys.skeyid_a, keys.skeyid_e, keys.enc_key):
        assert secret.hex() not in text and repr(secret) not in text
    assert "3DES-CBC" in text
