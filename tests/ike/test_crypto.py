"""ikeproto.crypto: prf/hash vectors, cipher known answers, lookups, padding, weak DES keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikeproto import crypto
from ikeproto.crypto import EncryptionAlgorithm as E
from ikeproto.crypto import HashAlgorithm as H
from ikeproto.errors import ParseError, ProtocolError, UsageError

# RFC 2202 (HMAC-MD5, HMAC-SHA-1) and RFC 4231 (HMAC-SHA-2) test cases 1 and 2.
HMAC_VECTORS = [
    (H.MD5, b"\x0b" * 16, b"Hi There", "9294727a3638bb1c13f48ef8158bfc9d"),
    (H.MD5, b"Jefe", b"what do ya want for nothing?", "750c783e6ab0b503eaa86e310a5db738"),
    (H.SHA, b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
    (H.SHA, b"Jefe", b"what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    (H.SHA2_256, b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (
        H.SHA2_256, b"Jefe", b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        H.SHA2_384, b"\x0b" * 20, b"Hi There",
        "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
    ),
    (
        H.SHA2_512, b"\x0b" * 20, b"Hi There",
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
        "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
    ),
    (
        H.SHA2_512, b"Jefe", b"what do ya want for nothing?",
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
        "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    ),
]


@pytest.mark.parametrize(("number", "key", "data", "expected"), HMAC_VECTORS)
def test_prf_is_hmac_of_the_negotiated_hash(number: int, key: bytes, data: bytes, expected: str) -> None:
    """RFC 2409 §4: without a negotiated PRF the prf is HMAC; checked against RFC 2202/4231."""
    assert crypto.hash_algorithm(number).prf(key, data).hex() == expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (H.MD5, "900150983cd24fb0d6963f7d28e17f72"),  # RFC 1321 A.5, "abc"
        (H.SHA, "a9993e364706816aba3e25717850c26c9cd0d89d"),  # FIPS 180 example "abc"
        (H.SHA2_256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ],
)
def test_plain_hash_known_answers(number: int, expected: str) -> None:
    """The plain hash (IV material, NAT-D) of "abc"."""
    suite = crypto.hash_algorithm(number)
    assert suite.digest(b"abc").hex() == expected and suite.digest_size * 2 == len(expected)


def test_hash_lookup() -> None:
    """Sizes by attribute value; Tiger and unknown values are ATTRIBUTES-NOT-SUPPORTED."""
    sizes = {n: crypto.hash_algorithm(n).digest_size for n in crypto.supported_hashes()}
    assert sizes == {1: 16, 2: 20, 4: 32, 5: 48, 6: 64}
    for number in (0, 3, 7, 65001):
        with pytest.raises(crypto.UnsupportedAlgorithm) as info:
            crypto.hash_algorithm(number)
        assert info.value.notify == 13 and isinstance(info.value, ProtocolError)


def test_aes_cbc_rfc3602_case_1_and_2() -> None:
    """RFC 3602 §4 test cases #1 (one block) and #2 (two blocks), AES-128-CBC."""
    aes = crypto.cipher(E.AES_CBC, 128)
    key, iv = bytes.fromhex("06a9214036b8a15b512e03d534120006"), bytes.fromhex("3dafba429d9eb430b422da802c9fac41")
    assert aes.encrypt(key, iv, b"Single block msg").hex() == "e353779c1079aeb82708942dbe77181a"
    key, iv = bytes.fromhex("c286696d887c9aa0611bbb3e2025a45a"), bytes.fromhex("562e17996d093d28ddb3ba695a2e6f58")
    plain = bytes(range(32))
    expected = "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1"
    assert aes.encrypt(key, iv, plain).hex() == expected
    assert aes.decrypt(key, iv, bytes.fromhex(expected)) == plain


def test_des_cbc_fips81_example() -> None:
    """FIPS 81 CBC example: key 0123456789abcdef, IV 1234567890abcdef, "Now is the time for all "."""
    des = crypto.cipher(E.DES_CBC)
    key, iv = bytes.fromhex("0123456789abcdef"), bytes.fromhex("1234567890abcdef")
    out = des.encrypt(key, iv, b"Now is the time for all ")
    assert out.hex() == "e5c7cdde872bf27c43e934008c389c0f683788499a7c05f6"
    assert des.decrypt(key, iv, out) == b"Now is the time for all "


def test_3des_sp800_67_example_first_block() -> None:
    """NIST SP 800-67 example (ECB = CBC with a zero IV for the first block)."""
    tdes = crypto.cipher(E.TRIPLE_DES_CBC)
    key = bytes.fromhex("0123456789ABCDEF23456789ABCDEF01456789ABCDEF0123")
    out = tdes.encrypt(key, bytes(8), b"The qufck brown fox jump")
    assert out[:8].hex().upper() == "A826FD8CE53B855F"


def test_cipher_lookup_and_key_lengths() -> None:
    """AES needs Key Length 128/192/256; fixed-key ciphers refuse any other Key Length."""
    assert [crypto.cipher(E.AES_CBC, b).key_size for b in (128, 192, 256)] == [16, 24, 32]
    assert crypto.cipher(E.AES_CBC, 128).block_size == 16
    assert (crypto.cipher(E.DES_CBC).key_size, crypto.cipher(E.DES_CBC).block_size) == (8, 8)
    assert (crypto.cipher(E.TRIPLE_DES_CBC).key_size, crypto.cipher(E.TRIPLE_DES_CBC).block_size) == (24, 8)
    assert crypto.cipher(E.TRIPLE_DES_CBC, 192) is crypto.cipher(E.TRIPLE_DES_CBC)
    for number, key_length in [
        (E.AES_CBC, None), (E.AES_CBC, 0), (E.AES_CBC, 64), (E.AES_CBC, 129), (E.AES_CBC, 512),
        (E.DES_CBC, 128), (E.TRIPLE_DES_CBC, 128), (E.IDEA_CBC, None), (E.CAST_CBC, 128), (0, None), (65535, None),
    ]:
        with pytest.raises(crypto.UnsupportedAlgorithm) as info:
            crypto.cipher(number, key_length)
        assert info.value.notify == 13
    for number, key_length in crypto.supported_ciphers():
        crypto.cipher(number, key_length)


@pytest.mark.parametrize(("number", "key_length"), crypto.supported_ciphers())
@given(body=st.binary(min_size=1, max_size=300), seed=st.binary(min_size=64, max_size=64))
def test_encrypt_body_round_trip(number: int, key_length: int | None, body: bytes, seed: bytes) -> None:
    """decrypt_body(encrypt_body(b)) is b plus its zero pad, and both return the last block."""
    suite = crypto.cipher(number, key_length)
    key, iv = seed[: suite.key_size], seed[32 : 32 + suite.block_size]
    ciphertext, last = crypto.encrypt_body(suite, key, iv, body)
    assert len(ciphertext) % suite.block_size == 0 and last == ciphertext[-suite.block_size :]
    plain, last2 = crypto.decrypt_body(suite, key, iv, ciphertext)
    assert plain == crypto.pad(body, suite.block_size) and last2 == last


def test_pad_is_zero_bytes_to_the_next_block() -> None:
    """RFC 2409 Appendix B: pad with 0x00 to the block size; an aligned body gets no pad."""
    assert crypto.pad(b"", 8) == b""
    assert crypto.pad(b"a", 8) == b"a" + bytes(7)
    assert crypto.pad(b"x" * 16, 16) == b"x" * 16
    assert crypto.pad(b"x" * 17, 16) == b"x" * 17 + bytes(15)
    with pytest.raises(UsageError):
        crypto.pad(b"x", 0)
    with pytest.raises(UsageError):
        crypto.encrypt_body(crypto.cipher(E.DES_CBC), bytes(8), bytes(8), b"")


def test_decrypting_bad_lengths_is_a_parse_error() -> None:
    """Ciphertext from the wire that is empty or not whole blocks is PAYLOAD-MALFORMED."""
    aes = crypto.cipher(E.AES_CBC, 128)
    for data in (b"", b"x" * 15, b"x" * 17):
        with pytest.raises(ParseError) as info:
            aes.decrypt(bytes(16), bytes(16), data)
        assert info.value.notify == 16


def test_wrong_key_or_iv_size_is_a_usage_error() -> None:
    """Local misuse never looks like a peer error."""
    aes = crypto.cipher(E.AES_CBC, 256)
    with pytest.raises(UsageError):
        aes.encrypt(bytes(16), bytes(16), bytes(16))
    with pytest.raises(UsageError):
        aes.encrypt(bytes(32), bytes(8), bytes(16))
    with pytest.raises(UsageError):
        aes.encrypt(bytes(32), bytes(16), bytes(15))


WEAK_AND_SEMI_WEAK = [
    "0101010101010101", "1F1F1F1FE0E0E0E0", "E0E0E0E01F1F1F1F", "FEFEFEFEFEFEFEFE",
    "01FE01FE01FE01FE", "1FE01FE00EF10EF1", "01E001E001F101F1", "1FFE1FFE0EFE0EFE",
    "011F011F010E010E", "E0FEE0FEF1FEF1FE", "FE01FE01FE01FE01", "E01FE01FF10EF10E",
    "E001E001F101F101", "FE1FFE1FFE0EFE0E", "1F011F010E010E01", "FEE0FEE0FEF1FEF1",
]


@pytest.mark.parametrize("key", WEAK_AND_SEMI_WEAK)
def test_rfc2409_appendix_a_keys_are_weak_whatever_the_parity(key: str) -> None:
    """Each Appendix A key is weak, and so is the same key with every parity bit flipped."""
    raw = bytes.fromhex(key)
    flipped = bytes(b ^ 1 for b in raw)
    assert crypto.is_weak_des_key(raw) and crypto.is_weak_des_key(flipped)
    assert crypto.cipher(E.DES_CBC).is_weak_key(raw)
    assert not crypto.cipher(E.TRIPLE_DES_CBC).is_weak_key(raw * 3)


def test_ordinary_des_keys_are_not_weak() -> None:
    """A normal key is accepted; a weak-key query with the wrong size is misuse."""
    assert not crypto.is_weak_des_key(bytes.fromhex("0123456789abcdef"))
    assert not crypto.is_weak_des_key(bytes.fromhex("0101010101010103"))
    with pytest.raises(UsageError):
        crypto.is_weak_des_key(bytes(7))


def test_cipher_repr_holds_no_callable_noise() -> None:
    """repr() names the algorithm and sizes only."""
    text = repr(crypto.cipher(E.AES_CBC, 128))
    assert "AES-CBC-128" in text and "_algorithm" not in text
