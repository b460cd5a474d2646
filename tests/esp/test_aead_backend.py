"""``espcore.aead``: the OpenSSL binding (``espcore._aead``) and its ``cryptography`` fallback.

Both implementations answer as ``cryptography``'s AESGCM and ChaCha20Poly1305 do, byte for byte,
for every key size, nonce, length and range; a bad tag raises ``InvalidTag`` and nothing else;
bad arguments raise ``TypeError``/``ValueError``; SAs on either backend interoperate.
"""

from __future__ import annotations

import os
import random
import sys

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from espcore import SecurityAssociation, UsageError
from espcore import aead as backend_module
from espcore.aead import BACKEND, CryptographyAead, new_aead
from tests.esp.twins import MODE_IDS, MODES, plain_ipv4

BUILT = BACKEND == "openssl"
BACKENDS = ["openssl", "cryptography"] if BUILT else ["cryptography"]
KEYS = [("aes-gcm", 16), ("aes-gcm", 24), ("aes-gcm", 32), ("chacha20-poly1305", 32)]
KEY_IDS = [f"{kind}-{size * 8}" for kind, size in KEYS]
CASES = [(b, k) for b in BACKENDS for k in range(len(KEYS))]
CASE_IDS = [f"{b}-{KEY_IDS[k]}" for b, k in CASES]


def reference(kind: str, key: bytes):
    return AESGCM(key) if kind == "aes-gcm" else ChaCha20Poly1305(key)


def pair(backend: str, index: int, key: bytes | None = None):
    kind, size = KEYS[index]
    key = key if key is not None else bytes(range(7, 7 + size))
    return new_aead(kind, key, backend=backend), reference(kind, key)


def test_the_binding_is_built_in_ci():
    """CI installs gcc and libssl-dev: a binding that failed to build must not go unnoticed."""
    if not BUILT:
        if os.environ.get("CI"):
            pytest.fail("espcore._aead was not built in CI (gcc and libssl-dev are installed)")
        pytest.skip("espcore._aead is not built here: espcore runs on cryptography alone")
    assert backend_module.OPENSSL_VERSION.startswith("OpenSSL")


nonces = st.binary(min_size=12, max_size=12)
payloads = st.binary(max_size=600)


@pytest.mark.parametrize("backend,index", CASES, ids=CASE_IDS)
@given(nonce=nonces, data=payloads, aad=st.binary(max_size=40))
def test_encrypt_and_decrypt_are_cryptographys(backend, index, nonce, data, aad):
    ours, theirs = pair(backend, index)
    sealed = ours.encrypt(nonce, data, aad)
    assert sealed == theirs.encrypt(nonce, data, aad)
    assert ours.decrypt(nonce, sealed, aad) == data
    # Other bytes-like types give the same answers.
    assert ours.encrypt(bytearray(nonce), memoryview(data), bytearray(aad)) == sealed
    assert ours.decrypt(nonce, memoryview(sealed), memoryview(aad)) == data


@pytest.mark.parametrize("backend,index", CASES, ids=CASE_IDS)
@given(nonce=nonces, head=st.binary(max_size=40), data=payloads, aad=st.binary(max_size=16),
       trailer=st.binary(max_size=20), cut=st.tuples(st.integers(0, 600), st.integers(0, 600)))
def test_seal_and_open_are_encrypt_and_decrypt_of_a_range(backend, index, nonce, head, data, aad,
                                                          trailer, cut):
    ours, theirs = pair(backend, index)
    start, end = sorted(min(c, len(data)) for c in cut)
    sealed = ours.seal(nonce, aad, head, data, start, end, trailer)
    assert sealed == head + theirs.encrypt(nonce, data[start:end] + trailer, aad)
    framed = b"\x00" * start + sealed[len(head):] + b"\xff" * 3
    opened = ours.open(nonce, aad, framed, start, len(framed) - 3)
    assert opened == data[start:end] + trailer
    assert ours.open(nonce, aad, bytearray(framed), start, len(framed) - 3) == opened


@pytest.mark.parametrize("backend,index", CASES, ids=CASE_IDS)
@given(salt=st.binary(min_size=4, max_size=4), outer=st.binary(max_size=24),
       esp=st.binary(min_size=16, max_size=16), data=payloads, trailer=st.binary(max_size=6),
       cut=st.tuples(st.integers(0, 600), st.integers(0, 600)))
def test_the_esp_forms_take_nonce_and_aad_from_the_esp_header(backend, index, salt, outer, esp,
                                                              data, trailer, cut):
    """seal_esp/open_esp: nonce = salt || IV and AAD = SPI || sequence number (RFC 4106 §4-§5),
    from the 16 bytes SPI || sequence || IV ending ``head`` or starting the range."""
    ours, theirs = pair(backend, index)
    start, end = sorted(min(c, len(data)) for c in cut)
    head = outer + esp
    sealed = ours.seal_esp(salt, head, data, start, end, trailer)
    assert sealed == head + theirs.encrypt(salt + esp[8:], data[start:end] + trailer, esp[:8])
    assert sealed == ours.seal(salt + esp[8:], esp[:8], head, data, start, end, trailer)
    framed = sealed + b"\xee"
    assert ours.open_esp(salt, framed, len(outer), len(sealed)) == data[start:end] + trailer
    with pytest.raises(InvalidTag):  # a different SPI or sequence number is a different AAD
        ours.open_esp(salt, bytes(len(outer)) + bytes([esp[0] ^ 1]) + sealed[len(outer) + 1:],
                      len(outer), len(sealed))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_esp_forms_refuse_short_input(backend):
    ours, _ = pair(backend, 0)
    with pytest.raises(ValueError):
        ours.seal_esp(bytes(4), bytes(15), b"data", 0, 4, b"")
    for salt in (bytes(3), bytes(5)):
        with pytest.raises(ValueError):
            ours.seal_esp(salt, bytes(16), b"data", 0, 4, b"")
        for end in (10, 40):  # the salt is checked before the length
            with pytest.raises(ValueError):
                ours.open_esp(salt, bytes(40), 0, end)
    for n in range(32):  # less than an ESP header and a tag
        with pytest.raises(InvalidTag):
            ours.open_esp(bytes(4), bytes(40), 0, n)
    with pytest.raises(ValueError):
        ours.open_esp(bytes(4), bytes(40), 10, 50)


@pytest.mark.parametrize("backend,index", CASES, ids=CASE_IDS)
@given(nonce=nonces, data=payloads, aad=st.binary(max_size=16), bit=st.integers(min_value=0))
def test_any_flipped_bit_fails_the_tag(backend, index, nonce, data, aad, bit):
    ours, _ = pair(backend, index)
    sealed = bytearray(ours.encrypt(nonce, data, aad))
    where = bit % (len(sealed) * 8)
    sealed[where // 8] ^= 1 << (where % 8)
    with pytest.raises(InvalidTag):
        ours.decrypt(nonce, bytes(sealed), aad)
    with pytest.raises(InvalidTag):
        ours.open(nonce, aad, bytes(sealed), 0, len(sealed))
    with pytest.raises(InvalidTag):  # the AAD is authenticated too
        ours.decrypt(nonce, ours.encrypt(nonce, data, aad), aad + b"x")


@pytest.mark.parametrize("backend,index", CASES, ids=CASE_IDS)
def test_one_object_serves_many_packets(backend, index):
    """The context is keyed once: each call starts afresh from its own nonce, after successes
    and failures alike."""
    ours, theirs = pair(backend, index)
    rng = random.Random(index)
    for i in range(200):
        nonce, aad = rng.randbytes(12), rng.randbytes(i % 13)
        data = rng.randbytes(rng.randrange(0, 1500))
        sealed = ours.seal(nonce, aad, b"", data, 0, len(data), b"")
        assert sealed == theirs.encrypt(nonce, data, aad)
        if i % 3 == 0:
            with pytest.raises(InvalidTag):
                ours.decrypt(nonce, sealed, aad + b"!")
        assert ours.decrypt(nonce, sealed, aad) == data


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_input_fails_the_tag(backend):
    ours, _ = pair(backend, 0)
    for n in range(16):
        with pytest.raises(InvalidTag):
            ours.decrypt(bytes(12), bytes(n), b"")
        with pytest.raises(InvalidTag):
            ours.open(bytes(12), b"", bytes(20), 2, 2 + n)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments_are_refused(backend):
    ours, _ = pair(backend, 0)
    # ESP's nonces are 12 bytes; the binding takes no other length (AESGCM takes 8 to 128).
    for nonce in (b"", bytes(7), bytes(13) if backend == "openssl" else bytes(129)):
        with pytest.raises(ValueError):
            ours.encrypt(nonce, b"data", b"")
        with pytest.raises(ValueError):
            ours.seal(nonce, b"", b"", b"data", 0, 4, b"")
    for start, end in ((-1, 2), (3, 2), (0, 5), (5, 5)):
        with pytest.raises(ValueError):
            ours.seal(bytes(12), b"", b"h", b"data", start, end, b"")
        with pytest.raises(ValueError):
            ours.open(bytes(12), b"", b"data", start, end)
    with pytest.raises(TypeError):
        ours.encrypt(bytes(12), "text", b"")
    with pytest.raises(TypeError):
        ours.seal(bytes(12), b"", b"", b"data", 0, 4)  # type: ignore[call-arg]


@pytest.mark.skipif(not BUILT, reason="espcore._aead is not built here")
def test_the_binding_refuses_unknown_kinds_and_key_sizes():
    from espcore._aead import Aead
    for kind, key in (("aes-gcm", bytes(20)), ("chacha20-poly1305", bytes(16)),
                      ("aes-ccm", bytes(16))):
        with pytest.raises(ValueError):
            Aead(kind, key)
    aead = Aead("aes-gcm", bytes(16))
    with pytest.raises(TypeError):
        aead.__init__("aes-gcm", bytes(16))  # keyed once
    unkeyed = Aead.__new__(Aead)  # no __init__: refused, not a crash
    with pytest.raises(ValueError):
        unkeyed.encrypt(bytes(12), b"data", b"")
    with pytest.raises(ValueError):
        unkeyed.open_esp(bytes(4), bytes(40), 0, 40)


@pytest.mark.skipif(not BUILT, reason="espcore._aead is not built here")
def test_the_binding_keeps_no_references():
    """Inputs and outputs leave with the reference counts they came with, failures included."""
    ours, _ = pair("openssl", 0)
    nonce, aad, head, data, trailer = bytes(12), b"aad", b"head", bytes(100), b"\x01\x02"
    args = (nonce, aad, head, data, trailer)
    before = [sys.getrefcount(a) for a in args]
    for _ in range(1000):
        sealed = ours.seal(nonce, aad, head, data, 0, 100, trailer)
        ours.open(nonce, aad, sealed, 4, len(sealed))
        with pytest.raises(InvalidTag):
            ours.open(nonce, aad + b"x", sealed, 4, len(sealed))
    assert [sys.getrefcount(a) for a in args] == before
    assert sys.getrefcount(sealed) == 2  # the local and getrefcount's argument


def test_unknown_backends_are_usage_errors():
    with pytest.raises(UsageError):
        new_aead("aes-gcm", bytes(16), backend="rot13")
    with pytest.raises(ValueError):
        CryptographyAead("aes-ccm", bytes(16))
    if not BUILT:
        with pytest.raises(UsageError):
            new_aead("aes-gcm", bytes(16), backend="openssl")


SUITES = {"aes-gcm-16": dict(cipher="aes-gcm-16", cipher_key=bytes(range(20))),
          "chacha20-poly1305": dict(cipher="chacha20-poly1305", cipher_key=bytes(range(36)))}
SA_CASES = [(s, m) for s in SUITES for m in range(len(MODES))]
SA_IDS = [f"{s}-{MODE_IDS[m]}" for s, m in SA_CASES]


@pytest.mark.parametrize("suite,mode", SA_CASES, ids=SA_IDS)
@given(packets=st.lists(plain_ipv4(), min_size=1, max_size=4))
def test_sas_on_either_backend_interoperate(suite, mode, packets):
    """The same SA on each backend writes the same bytes, and each reads the other's."""
    params = dict(spi=0x5151, **SUITES[suite], **MODES[mode])
    senders = [SecurityAssociation(**params, aead_backend=b) for b in BACKENDS]
    receivers = [SecurityAssociation(**params, aead_backend=b) for b in reversed(BACKENDS)]
    for packet in packets:
        try:
            outs = [sender.protect(packet) for sender in senders]
        except UsageError:
            continue  # a packet this mode cannot carry (the twin tests cover the error)
        assert len(set(outs)) == 1
        for receiver, out in zip(receivers, outs):
            assert receiver.unprotect(out) == packet
        inner = packet[20:] if mode == 0 else packet
        payloads = [sender.protect_payload(inner, 17) for sender in senders]
        assert len(set(payloads)) == 1
        for receiver, esp in zip(receivers, payloads):
            assert receiver.unprotect_payload(esp) == (17, inner)
