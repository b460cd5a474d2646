"""The algorithm registry: names, IANA numbers, sizes, lookups and KEYMAT lengths."""

from __future__ import annotations

import pytest

from espcore import UsageError, keymat_length, split_keymat
from espcore.transforms import (CIPHERS, INTEGRITY, AhTransformId, AuthAlgorithm, EspTransformId,
                                cipher, cipher_by_esp_id, integrity, integrity_by_ah_id,
                                integrity_by_auth_algorithm, parse_cipher_name, qualified_name)


def test_iana_numbers():
    """RFC 2407 §4.4.3-§4.5 and the IANA registry, as IKE will put them on the wire."""
    assert {c.name: c.esp_transform_id for c in CIPHERS.values()} == {
        "null": 11, "des-cbc": 2, "3des-cbc": 3, "aes-cbc": 12, "aes-ctr": 13, "aes-gcm-8": 18,
        "aes-gcm-12": 19, "aes-gcm-16": 20, "aes-gmac": 23, "chacha20-poly1305": None}
    assert CIPHERS["chacha20-poly1305"].ikev2_transform_id == 28
    assert CIPHERS["aes-gmac"].ikev2_transform_id == 21
    assert {t.name: (t.auth_algorithm, t.ah_transform_id) for t in INTEGRITY.values()} == {
        "hmac-md5-96": (1, 2), "hmac-sha1-96": (2, 3), "hmac-sha2-256-128": (5, 5),
        "hmac-sha2-384-192": (6, 6), "hmac-sha2-512-256": (7, 7)}
    assert EspTransformId.ESP_NULL_AUTH_AES_GMAC == 23 and AhTransformId.AH_SHA == 3
    assert AuthAlgorithm.HMAC_SHA2_512 == 7


def test_sizes():
    """Key, IV, ICV, salt and block sizes from the RFCs of each transform."""
    gcm = CIPHERS["aes-gcm-12"]
    assert (gcm.iv_size, gcm.icv_size, gcm.salt_size, gcm.is_aead, gcm.is_confidential) == (
        8, 12, 4, True, True)
    assert not CIPHERS["aes-gmac"].is_confidential and CIPHERS["aes-gmac"].is_aead
    assert CIPHERS["aes-cbc"].alignment == 16 and CIPHERS["3des-cbc"].alignment == 8
    assert CIPHERS["aes-ctr"].alignment == 4 and CIPHERS["null"].iv_size == 0
    assert [INTEGRITY[n].icv_size for n in sorted(INTEGRITY)] == [12, 12, 16, 24, 32]
    assert CIPHERS["des-cbc"].is_weak and INTEGRITY["hmac-md5-96"].is_weak


def test_names():
    """Canonical, alias and key-qualified names (documented in the module docstring)."""
    assert parse_cipher_name("aes-cbc") == (CIPHERS["aes-cbc"], None)
    assert parse_cipher_name("AES-CBC-256") == (CIPHERS["aes-cbc"], 256)
    assert parse_cipher_name("aes-gcm") == (CIPHERS["aes-gcm-16"], None)
    assert parse_cipher_name("aes-gcm-128") == (CIPHERS["aes-gcm-16"], 128)
    assert parse_cipher_name("aes-gcm-8-256") == (CIPHERS["aes-gcm-8"], 256)
    assert qualified_name(CIPHERS["aes-gcm-16"], 192) == "aes-gcm-16-192"
    assert qualified_name(CIPHERS["3des-cbc"], 192) == "3des-cbc"
    for bad in ("aes-cbc-100", "rot13", "aes-gcm-16-64"):
        with pytest.raises(UsageError):
            cipher(bad)
    with pytest.raises(UsageError):
        integrity("hmac-sha3")


def test_lookups_by_wire_number():
    """Peer-supplied numbers: unknown values and missing or wrong Key Length give None."""
    assert cipher_by_esp_id(12, 256) is CIPHERS["aes-cbc"]
    assert cipher_by_esp_id(12) is None  # AES needs the Key Length attribute
    assert cipher_by_esp_id(12, 64) is None
    assert cipher_by_esp_id(3) is CIPHERS["3des-cbc"]
    assert cipher_by_esp_id(20, 128) is CIPHERS["aes-gcm-16"]
    assert cipher_by_esp_id(28, 256) is None and cipher_by_esp_id(250) is None
    assert integrity_by_ah_id(5) is INTEGRITY["hmac-sha2-256-128"]
    assert integrity_by_auth_algorithm(2) is INTEGRITY["hmac-sha1-96"]
    assert integrity_by_ah_id(99) is None and integrity_by_auth_algorithm(4) is None


def test_keymat_length_and_split():
    """KEYMAT = cipher key + 4-byte salt (CTR/GCM/GMAC/ChaCha) + integrity key, key first."""
    assert keymat_length("aes-gcm-16-128", None) == 20
    assert keymat_length("aes-gcm-16", None, key_bits=256) == 36
    assert keymat_length("aes-cbc-128", "hmac-sha1-96") == 36
    assert keymat_length("3des-cbc", "hmac-md5-96") == 40
    assert keymat_length(None, "hmac-sha2-512-256") == 64
    assert keymat_length("chacha20-poly1305", None) == 36
    assert keymat_length("null", "hmac-sha2-256-128") == 32
    material = bytes(range(100))
    assert split_keymat(material, "aes-ctr-192", "hmac-sha1-96") == (material[:28],
                                                                      material[28:48])
    with pytest.raises(UsageError):
        split_keymat(bytes(10), "aes-cbc-128", None)
    with pytest.raises(UsageError):
        keymat_length("aes-cbc-128", None, key_bits=256)
