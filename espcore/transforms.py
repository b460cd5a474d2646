"""THE algorithm registry: ESP ciphers and ESP/AH integrity transforms, with their wire numbers.

This module owns the facts about each transform that both the data path and IKE's proposal code
need: canonical names, IANA numbers, key/IV/ICV/salt/block sizes, whether a cipher is a combined
(AEAD) mode and whether it gives confidentiality, and how many KEYMAT bytes IKE must derive. It
does not own the cryptography itself (``espcore.esp`` and ``espcore.ah`` build the per-SA cipher
objects from these descriptors) nor proposal matching (``ikeproto``).

Numbers, checked against the IANA "ISAKMP magic numbers" registry (RFC 2407 §4.4.3-§4.5 and later
RFCs) and the IKEv2 Transform Type 1/3 registries:

- IPsec DOI ESP transform IDs (RFC 2407 §4.4.4): ESP_DES=2, ESP_3DES=3, ESP_NULL=11,
  ESP_AES-CBC=12 (RFC 3602), ESP_AES-CTR=13 (RFC 3686), ESP_AES-GCM_8/12/16=18/19/20 (RFC 4106),
  ESP_NULL_AUTH_AES-GMAC=23 (RFC 4543 with Errata 1821; IKEv2 uses 21).
  ChaCha20-Poly1305 (RFC 7634) has **no** IKEv1 number (the IKEv1 registry stops at 23 and is
  closed); its IKEv2 number is 28, so ``esp_transform_id`` is ``None`` for it.
- IPsec DOI AH transform IDs (RFC 2407 §4.4.3): AH_MD5=2, AH_SHA=3, AH_SHA2-256/384/512=5/6/7.
- IPsec DOI "Authentication Algorithm" SA attribute (RFC 2407 §4.5): HMAC-MD5=1, HMAC-SHA=2,
  HMAC-SHA2-256/384/512=5/6/7 (RFC 4868 §2.1 truncations 128/192/256).

Naming. Canonical names are the ones of the project's issue: ``null``, ``des-cbc``, ``3des-cbc``,
``aes-cbc``, ``aes-ctr``, ``aes-gcm-8``, ``aes-gcm-12``, ``aes-gcm-16`` (alias ``aes-gcm``),
``aes-gmac``, ``chacha20-poly1305``; integrity ``hmac-md5-96``, ``hmac-sha1-96``,
``hmac-sha2-256-128``, ``hmac-sha2-384-192``, ``hmac-sha2-512-256``. A cipher with several key
sizes may be *key-qualified* by appending the size in bits: ``aes-cbc-128``, ``aes-gcm-16-256``,
``aes-gmac-192``, ``aes-ctr-128``. ``parse_cipher_name`` splits such a name into the transform and
the key size; unqualified names take the key size from the key given to the SA.

Keying material. For AES-CTR, AES-GCM, AES-GMAC and ChaCha20-Poly1305 the 4-byte salt (nonce) is
the *last* 4 bytes of the cipher's keying material (RFC 3686 §5.1, RFC 4106 §8.1, RFC 4543 §5,
RFC 7634 §4), so ``cipher_key`` = key || salt and IKE must derive key + 4 bytes. Encryption key
material comes first in KEYMAT, then the integrity key (``split_keymat``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType

from espcore.errors import UsageError


class EspTransformId(IntEnum):
    """IPsec DOI ESP transform identifiers (RFC 2407 §4.4.4 and the IANA registry)."""

    ESP_DES_IV64 = 1
    ESP_DES = 2
    ESP_3DES = 3
    ESP_RC5 = 4
    ESP_IDEA = 5
    ESP_CAST = 6
    ESP_BLOWFISH = 7
    ESP_3IDEA = 8
    ESP_DES_IV32 = 9
    ESP_RC4 = 10
    ESP_NULL = 11
    ESP_AES_CBC = 12
    ESP_AES_CTR = 13
    ESP_AES_CCM_8 = 14
    ESP_AES_CCM_12 = 15
    ESP_AES_CCM_16 = 16
    ESP_AES_GCM_8 = 18
    ESP_AES_GCM_12 = 19
    ESP_AES_GCM_16 = 20
    ESP_SEED_CBC = 21
    ESP_CAMELLIA = 22
    ESP_NULL_AUTH_AES_GMAC = 23


class AhTransformId(IntEnum):
    """IPsec DOI AH transform identifiers (RFC 2407 §4.4.3 and the IANA registry)."""

    AH_MD5 = 2
    AH_SHA = 3
    AH_DES = 4
    AH_SHA2_256 = 5
    AH_SHA2_384 = 6
    AH_SHA2_512 = 7
    AH_RIPEMD = 8
    AH_AES_XCBC_MAC = 9
    AH_RSA = 10
    AH_AES_128_GMAC = 11
    AH_AES_192_GMAC = 12
    AH_AES_256_GMAC = 13


class AuthAlgorithm(IntEnum):
    """IPsec DOI "Authentication Algorithm" SA attribute values (RFC 2407 §4.5, IANA)."""

    HMAC_MD5 = 1
    HMAC_SHA = 2
    DES_MAC = 3
    KPDK = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    HMAC_RIPEMD = 8
    AES_XCBC_MAC = 9
    SIG_RSA = 10
    AES_128_GMAC = 11
    AES_192_GMAC = 12
    AES_256_GMAC = 13


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptionTransform:
    """An ESP cipher (or combined mode). Sizes in bytes except ``key_bits``.

    ``kind`` selects the implementation family (``null``, ``cbc``, ``ctr``, ``gcm``, ``gmac``,
    ``chacha``). ``block_size`` is the cipher's padding unit: the ESP payload is padded to a
    multiple of lcm(block_size, 4) (RFC 4303 §2.4). ``is_aead`` means the transform authenticates
    by itself, so no separate integrity transform may be combined with it.
    """

    name: str
    kind: str
    esp_transform_id: int | None
    ikev2_transform_id: int | None
    key_bits: tuple[int, ...]
    block_size: int
    iv_size: int
    icv_size: int
    salt_size: int
    is_aead: bool
    is_confidential: bool
    is_weak: bool
    rfc: str

    @property
    def default_key_bits(self) -> int:
        return self.key_bits[0]

    @property
    def has_key_length_attribute(self) -> bool:
        """Whether an IKEv1 proposal carries the Key Length SA attribute (several key sizes)."""
        return len(self.key_bits) > 1

    @property
    def alignment(self) -> int:
        """Padding unit of the ESP payload: lcm(block size, 4) (RFC 4303 §2.4)."""
        return 4 if self.block_size <= 4 else self.block_size

    def key_bytes(self, key_bits: int | None = None) -> int:
        """Cipher keying material in bytes for ``key_bits``: key plus the salt, if any."""
        bits = self.default_key_bits if key_bits is None else key_bits
        if bits not in self.key_bits:
            raise UsageError(f"{self.name} takes keys of {self.key_bits} bits, not {bits}")
        return bits // 8 + self.salt_size


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrityTransform:
    """An HMAC integrity transform, usable with ESP and AH. Sizes in bytes except ``key_bits``."""

    name: str
    hash_name: str
    auth_algorithm: int
    ah_transform_id: int
    ikev2_transform_id: int
    key_bits: int
    icv_size: int
    is_weak: bool
    rfc: str

    @property
    def key_bytes(self) -> int:
        return self.key_bits // 8


def _cipher(name: str, kind: str, esp_id: int | None, v2_id: int | None, key_bits: tuple[int, ...],
            *, block: int = 1, iv: int = 8, icv: int = 0, salt: int = 0, aead: bool = False,
            confidential: bool = True, weak: bool = False, rfc: str) -> EncryptionTransform:
    return EncryptionTransform(
        name=name, kind=kind, esp_transform_id=esp_id, ikev2_transform_id=v2_id, key_bits=key_bits,
        block_size=block, iv_size=iv, icv_size=icv, salt_size=salt, is_aead=aead,
        is_confidential=confidential, is_weak=weak, rfc=rfc,
    )


_AES = (128, 192, 256)

CIPHERS: Mapping[str, EncryptionTransform] = MappingProxyType({c.name: c for c in (
    # RFC 2410: no IV, no padding beyond the 4-byte alignment of RFC 4303 §2.4.
    _cipher("null", "null", EspTransformId.ESP_NULL, 11, (0,), iv=0, confidential=False,
            rfc="RFC 2410"),
    # RFC 2405 (64-bit key with parity bits) and RFC 2451: explicit 8-byte IV, 8-byte blocks.
    _cipher("des-cbc", "cbc", EspTransformId.ESP_DES, 2, (64,), block=8, iv=8, weak=True,
            rfc="RFC 2405"),
    _cipher("3des-cbc", "cbc", EspTransformId.ESP_3DES, 3, (192,), block=8, iv=8, rfc="RFC 2451"),
    _cipher("aes-cbc", "cbc", EspTransformId.ESP_AES_CBC, 12, _AES, block=16, iv=16,
            rfc="RFC 3602"),
    _cipher("aes-ctr", "ctr", EspTransformId.ESP_AES_CTR, 13, _AES, salt=4, rfc="RFC 3686"),
    _cipher("aes-gcm-8", "gcm", EspTransformId.ESP_AES_GCM_8, 18, _AES, icv=8, salt=4, aead=True,
            rfc="RFC 4106"),
    _cipher("aes-gcm-12", "gcm", EspTransformId.ESP_AES_GCM_12, 19, _AES, icv=12, salt=4,
            aead=True, rfc="RFC 4106"),
    _cipher("aes-gcm-16", "gcm", EspTransformId.ESP_AES_GCM_16, 20, _AES, icv=16, salt=4,
            aead=True, rfc="RFC 4106"),
    # RFC 4543: authentication only; IKEv1 number per Errata 1821, IKEv2 number 21.
    _cipher("aes-gmac", "gmac", EspTransformId.ESP_NULL_AUTH_AES_GMAC, 21, _AES, icv=16, salt=4,
            aead=True, confidential=False, rfc="RFC 4543"),
    _cipher("chacha20-poly1305", "chacha", None, 28, (256,), icv=16, salt=4, aead=True,
            rfc="RFC 7634"),
)})

CIPHER_ALIASES: Mapping[str, str] = MappingProxyType({"aes-gcm": "aes-gcm-16"})

INTEGRITY: Mapping[str, IntegrityTransform] = MappingProxyType({t.name: t for t in (
    IntegrityTransform(name="hmac-md5-96", hash_name="md5", auth_algorithm=AuthAlgorithm.HMAC_MD5,
                       ah_transform_id=AhTransformId.AH_MD5, ikev2_transform_id=1, key_bits=128,
                       icv_size=12, is_weak=True, rfc="RFC 2403"),
    IntegrityTransform(name="hmac-sha1-96", hash_name="sha1", auth_algorithm=AuthAlgorithm.HMAC_SHA,
                       ah_transform_id=AhTransformId.AH_SHA, ikev2_transform_id=2, key_bits=160,
                       icv_size=12, is_weak=False, rfc="RFC 2404"),
    # RFC 4868 §2.1: key length = hash output length, ICV = half of it.
    IntegrityTransform(name="hmac-sha2-256-128", hash_name="sha256",
                       auth_algorithm=AuthAlgorithm.HMAC_SHA2_256,
                       ah_transform_id=AhTransformId.AH_SHA2_256, ikev2_transform_id=12,
                       key_bits=256, icv_size=16, is_weak=False, rfc="RFC 4868"),
    IntegrityTransform(name="hmac-sha2-384-192", hash_name="sha384",
                       auth_algorithm=AuthAlgorithm.HMAC_SHA2_384,
                       ah_transform_id=AhTransformId.AH_SHA2_384, ikev2_transform_id=13,
                       key_bits=384, icv_size=24, is_weak=False, rfc="RFC 4868"),
    IntegrityTransform(name="hmac-sha2-512-256", hash_name="sha512",
                       auth_algorithm=AuthAlgorithm.HMAC_SHA2_512,
                       ah_transform_id=AhTransformId.AH_SHA2_512, ikev2_transform_id=14,
                       key_bits=512, icv_size=32, is_weak=False, rfc="RFC 4868"),
)})


# -- lookups by name (local configuration: unknown names are a UsageError) -------------------

def parse_cipher_name(name: str) -> tuple[EncryptionTransform, int | None]:
    """Split a cipher name into its transform and the key size it names, if it names one.

    ``"aes-cbc"`` -> (aes-cbc, None); ``"aes-cbc-256"`` -> (aes-cbc, 256);
    ``"aes-gcm-16-128"`` and ``"aes-gcm-128"`` -> (aes-gcm-16, 128).
    """
    key = name.strip().lower()
    key = CIPHER_ALIASES.get(key, key)
    if key in CIPHERS:
        return CIPHERS[key], None
    base, _, bits = key.rpartition("-")
    base = CIPHER_ALIASES.get(base, base)
    if base in CIPHERS and bits.isdigit():
        transform = CIPHERS[base]
        if int(bits) in transform.key_bits:
            return transform, int(bits)
    raise UsageError(f"unknown ESP cipher {name!r}; known: {', '.join(sorted(CIPHERS))}")


def cipher(name: str | EncryptionTransform) -> EncryptionTransform:
    """The cipher called ``name`` (canonical, alias or key-qualified)."""
    if isinstance(name, EncryptionTransform):
        return name
    return parse_cipher_name(name)[0]


def integrity(name: str | IntegrityTransform) -> IntegrityTransform:
    """The integrity transform called ``name``."""
    if isinstance(name, IntegrityTransform):
        return name
    try:
        return INTEGRITY[name.strip().lower()]
    except KeyError:
        raise UsageError(
            f"unknown integrity transform {name!r}; known: {', '.join(sorted(INTEGRITY))}"
        ) from None


def qualified_name(transform: EncryptionTransform, key_bits: int) -> str:
    """The key-qualified name, e.g. ``aes-gcm-16-128``; fixed-key ciphers keep their name."""
    return transform.name if len(transform.key_bits) == 1 else f"{transform.name}-{key_bits}"


# -- lookups by wire number (peer input: unknown or unsupported gives None) ------------------

_BY_ESP_ID = {c.esp_transform_id: c for c in CIPHERS.values() if c.esp_transform_id is not None}
_BY_AH_ID = {t.ah_transform_id: t for t in INTEGRITY.values()}
_BY_AUTH_ALG = {t.auth_algorithm: t for t in INTEGRITY.values()}


def cipher_by_esp_id(transform_id: int, key_bits: int | None = None) -> EncryptionTransform | None:
    """The cipher for an IPsec DOI ESP transform ID and Key Length attribute, or ``None``.

    ``key_bits=None`` means the proposal had no Key Length attribute: accepted only for ciphers
    with a single key size (RFC 3602 §5 / RFC 4106 §8.1 make the attribute mandatory for AES).
    """
    transform = _BY_ESP_ID.get(transform_id)
    if transform is None:
        return None
    if key_bits is None:
        return None if transform.has_key_length_attribute else transform
    return transform if key_bits in transform.key_bits else None


def integrity_by_ah_id(transform_id: int) -> IntegrityTransform | None:
    """The integrity transform for an IPsec DOI AH transform ID, or ``None``."""
    return _BY_AH_ID.get(transform_id)


def integrity_by_auth_algorithm(value: int) -> IntegrityTransform | None:
    """The integrity transform for an "Authentication Algorithm" attribute value, or ``None``."""
    return _BY_AUTH_ALG.get(value)


# -- keying material --------------------------------------------------------------------------

def _resolve(cipher_: str | EncryptionTransform | None, key_bits: int | None
             ) -> tuple[EncryptionTransform | None, int | None]:
    if cipher_ is None:
        return None, None
    if isinstance(cipher_, EncryptionTransform):
        return cipher_, key_bits
    transform, named_bits = parse_cipher_name(cipher_)
    if named_bits is not None and key_bits is not None and named_bits != key_bits:
        raise UsageError(f"{cipher_} names {named_bits}-bit keys, not {key_bits}")
    return transform, named_bits if named_bits is not None else key_bits


def keymat_length(cipher_: str | EncryptionTransform | None,
                  integrity_: str | IntegrityTransform | None, *, key_bits: int | None = None) -> int:
    """KEYMAT bytes IKE must derive for one SA: cipher key + salt + integrity key.

    ``cipher_`` is ``None`` for AH; ``integrity_`` is ``None`` for combined-mode ciphers.
    """
    transform, bits = _resolve(cipher_, key_bits)
    total = transform.key_bytes(bits) if transform is not None else 0
    if integrity_ is not None:
        total += integrity(integrity_).key_bytes
    return total


def split_keymat(keymat: bytes, cipher_: str | EncryptionTransform | None,
                 integrity_: str | IntegrityTransform | None, *, key_bits: int | None = None
                 ) -> tuple[bytes, bytes]:
    """Split KEYMAT into (cipher key incl. salt, integrity key): encryption key first."""
    need = keymat_length(cipher_, integrity_, key_bits=key_bits)
    if len(keymat) < need:
        raise UsageError(f"KEYMAT has {len(keymat)} bytes, the transforms need {need}")
    transform, bits = _resolve(cipher_, key_bits)
    n = transform.key_bytes(bits) if transform is not None else 0
    return bytes(keymat[:n]), bytes(keymat[n:need])
