"""The IKEv1 phase-1 algorithms, looked up by their ISAKMP attribute values.

Owns: the Encryption Algorithm (attribute class 1) and Hash Algorithm (class 2) values that a
phase-1 proposal names (RFC 2409 Appendix A, AES-CBC = 7 from RFC 3602 / IANA, SHA2-256/384/512 =
4/5/6 from IANA); the prf, which is the HMAC version of the negotiated hash because no PRF
attribute is ever negotiated (RFC 2409 §4, Appendix B); CBC encryption and decryption of message
bodies without padding, the zero padding of RFC 2409 Appendix B, and the DES weak and semi-weak
keys of RFC 2409 Appendix A.

Does not own: key derivation (``keymat``), IV chains (``iv``), Diffie-Hellman (``dh``), and the
ESP/AH transforms, which live in ``espcore.transforms``.

Everything a peer controls (an algorithm number, a key length, a ciphertext length) fails with a
typed ``ProtocolError``; local misuse (a key or IV of the wrong size) is a ``UsageError``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from ikeproto.enums import EncryptionAlgorithm, HashAlgorithm

from cryptography.hazmat.primitives.ciphers import Cipher as _CbcCipher
from cryptography.hazmat.primitives.ciphers import CipherAlgorithm as _Algorithm
from cryptography.hazmat.primitives.ciphers import algorithms, modes

from ikeproto.errors import ParseError, ProtocolError, UsageError

try:  # cryptography >= 43 keeps 3DES among the "decrepit" algorithms
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES as _TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES as _TripleDES

__all__ = [
    "ATTRIBUTES_NOT_SUPPORTED",
    "Cipher",
    "EncryptionAlgorithm",
    "Hash",
    "HashAlgorithm",
    "UnsupportedAlgorithm",
    "cipher",
    "decrypt_body",
    "encrypt_body",
    "hash_algorithm",
    "is_weak_des_key",
    "pad",
    "supported_ciphers",
    "supported_hashes",
]

# RFC 2408 §3.14.1 Notify Message Types used here (enums.NotifyType names them too).
ATTRIBUTES_NOT_SUPPORTED = 13
PAYLOAD_MALFORMED = 16


class UnsupportedAlgorithm(ProtocolError):
    """A proposal names an algorithm, key length or group this implementation does not offer."""

    notify = ATTRIBUTES_NOT_SUPPORTED


@dataclass(frozen=True, slots=True, kw_only=True)
class Hash:
    """A negotiated phase-1 hash: ``digest`` is the plain hash, ``prf`` its HMAC (RFC 2104)."""

    number: int
    name: str  # hashlib name
    digest_size: int

    def digest(self, data: bytes) -> bytes:
        """The negotiated hash of ``data`` (phase-1/phase-2 IV material, NAT-D)."""
        return hashlib.new(self.name, data).digest()

    def prf(self, key: bytes, data: bytes) -> bytes:
        """prf(key, data): RFC 2409 §4 uses the HMAC version of the negotiated hash as the prf."""
        return hmac.digest(key, data, self.name)


_HASHES: dict[int, Hash] = {
    h.number: h
    for h in (
        Hash(number=HashAlgorithm.MD5, name="md5", digest_size=16),
        Hash(number=HashAlgorithm.SHA, name="sha1", digest_size=20),
        Hash(number=HashAlgorithm.SHA2_256, name="sha256", digest_size=32),
        Hash(number=HashAlgorithm.SHA2_384, name="sha384", digest_size=48),
        Hash(number=HashAlgorithm.SHA2_512, name="sha512", digest_size=64),
    )
}


def hash_algorithm(number: int) -> Hash:
    """The Hash for a Hash Algorithm attribute value, or ``UnsupportedAlgorithm``."""
    found = _HASHES.get(number)
    if found is None:
        raise UnsupportedAlgorithm(f"hash algorithm {number} is not supported")
    return found


def supported_hashes() -> tuple[int, ...]:
    """The Hash Algorithm values this module implements."""
    return tuple(_HASHES)


# RFC 2409 Appendix A: the DES weak and semi-weak keys (from [Sch96]), with parity bits set.
_DES_WEAK_KEYS = frozenset(
    bytes.fromhex(k)
    for k in (
        "0101010101010101", "1F1F1F1FE0E0E0E0", "E0E0E0E01F1F1F1F", "FEFEFEFEFEFEFEFE",  # weak
        "01FE01FE01FE01FE", "1FE01FE00EF10EF1", "01E001E001F101F1", "1FFE1FFE0EFE0EFE",  # semi-weak
        "011F011F010E010E", "E0FEE0FEF1FEF1FE", "FE01FE01FE01FE01", "E01FE01FF10EF10E",
        "E001E001F101F101", "FE1FFE1FFE0EFE0E", "1F011F010E010E01", "FEE0FEE0FEF1FEF1",
    )
)
_STRIP_PARITY = bytes(b & 0xFE for b in range(256))
_DES_WEAK_NO_PARITY = frozenset(k.translate(_STRIP_PARITY) for k in _DES_WEAK_KEYS)


def is_weak_des_key(key: bytes) -> bool:
    """True if ``key`` (8 bytes) is a DES weak or semi-weak key, whatever its parity bits.

    DES ignores the low bit of each key byte, so the check compares with those bits cleared.
    """
    if len(key) != 8:
        raise UsageError("a DES key is 8 bytes")
    return key.translate(_STRIP_PARITY) in _DES_WEAK_NO_PARITY


@dataclass(frozen=True, slots=True, kw_only=True)
class Cipher:
    """A negotiated phase-1 CBC cipher with its key size (bytes) fixed by the proposal."""

    number: int
    name: str
    key_size: int
    block_size: int
    has_weak_keys: bool = False  # RFC 2409 Appendix B: the DES key skips weak/semi-weak keys
    _algorithm: Callable[[bytes], _Algorithm] = field(repr=False, compare=False)

    def is_weak_key(self, key: bytes) -> bool:
        """True if ``key`` must not be used with this cipher (only DES has such keys here)."""
        return self.has_weak_keys and is_weak_des_key(key)

    def _cbc(self, key: bytes, iv: bytes) -> _CbcCipher:  # type: ignore[type-arg]
        if len(key) != self.key_size:
            raise UsageError(f"{self.name} needs a {self.key_size}-byte key, got {len(key)}")
        if len(iv) != self.block_size:
            raise UsageError(f"{self.name} needs a {self.block_size}-byte IV, got {len(iv)}")
        return _CbcCipher(self._algorithm(key), modes.CBC(iv))

    def encrypt(self, key: bytes, iv: bytes, data: bytes) -> bytes:
        """CBC-encrypt ``data``, which must already be a whole number of blocks (see ``pad``)."""
        if len(data) % self.block_size:
            raise UsageError(f"{self.name}: plaintext is not a multiple of {self.block_size} bytes")
        enc = self._cbc(key, iv).encryptor()
        return enc.update(data) + enc.finalize()

    def decrypt(self, key: bytes, iv: bytes, data: bytes) -> bytes:
        """CBC-decrypt ``data`` from the wire; a length that is not whole blocks is a ParseError."""
        if not data or len(data) % self.block_size:
            raise ParseError(
                f"{self.name}: encrypted body of {len(data)} bytes is not a whole number of "
                f"{self.block_size}-byte blocks",
                notify=PAYLOAD_MALFORMED,
            )
        dec = self._cbc(key, iv).decryptor()
        return dec.update(data) + dec.finalize()


def _des(key: bytes) -> _Algorithm:
    # Single DES is 3DES (EDE) with K1 = K2 = K3; cryptography deprecates 8-byte TripleDES keys.
    return _TripleDES(key * 3)


_FIXED_CIPHERS: dict[int, Cipher] = {
    EncryptionAlgorithm.DES_CBC: Cipher(
        number=EncryptionAlgorithm.DES_CBC, name="DES-CBC", key_size=8, block_size=8, has_weak_keys=True,
        _algorithm=_des,
    ),
    # RFC 2409 Appendix B: 3DES-CBC uses the first 24 bytes of the expanded key, EDE with the
    # first, middle and last 8 bytes; no weak-key check is specified for it.
    EncryptionAlgorithm.TRIPLE_DES_CBC: Cipher(
        number=EncryptionAlgorithm.TRIPLE_DES_CBC, name="3DES-CBC", key_size=24, block_size=8,
        _algorithm=_TripleDES,
    ),
}
_AES_CIPHERS: dict[int, Cipher] = {
    bits: Cipher(
        number=EncryptionAlgorithm.AES_CBC, name=f"AES-CBC-{bits}", key_size=bits // 8, block_size=16,
        _algorithm=algorithms.AES,
    )
    for bits in (128, 192, 256)
}


def cipher(number: int, key_length: int | None = None) -> Cipher:
    """The Cipher for an Encryption Algorithm value and its Key Length attribute (in bits).

    RFC 2409 Appendix A: Key Length names the size of a variable-length key and "MUST NOT be used"
    with a fixed-length one. AES-CBC (RFC 3602) therefore needs 128, 192 or 256; DES and 3DES
    accept only an absent Key Length (or one equal to their fixed size, which is harmless).
    Anything else raises ``UnsupportedAlgorithm`` (ATTRIBUTES-NOT-SUPPORTED).
    """
    if number == EncryptionAlgorithm.AES_CBC:
        found = _AES_CIPHERS.get(key_length) if key_length is not None else None
        if found is None:
            raise UnsupportedAlgorithm(f"AES-CBC key length {key_length} is not 128, 192 or 256")
        return found
    fixed = _FIXED_CIPHERS.get(number)
    if fixed is None:
        raise UnsupportedAlgorithm(f"encryption algorithm {number} is not supported")
    if key_length is not None and key_length != fixed.key_size * 8:
        raise UnsupportedAlgorithm(f"{fixed.name} has a fixed key; key length {key_length} refused")
    return fixed


def supported_ciphers() -> tuple[tuple[int, int | None], ...]:
    """(Encryption Algorithm, Key Length) pairs this module implements, strongest first."""
    return tuple((EncryptionAlgorithm.AES_CBC, bits) for bits in (256, 192, 128)) + (
        (EncryptionAlgorithm.TRIPLE_DES_CBC, None),
        (EncryptionAlgorithm.DES_CBC, None),
    )


def pad(body: bytes, block_size: int) -> bytes:
    """Zero-pad ``body`` to a whole number of blocks.

    RFC 2409 Appendix B: "Each message should be padded up to the nearest block size using bytes
    containing 0x00"; the ISAKMP header length MUST include the pad. A body that is already
    aligned gets no pad. The receiver never strips it: the payload chain ends by its own lengths.
    """
    if block_size <= 0:
        raise UsageError("block size must be positive")
    return body + bytes(-len(body) % block_size)


def encrypt_body(suite: Cipher, key: bytes, iv: bytes, body: bytes) -> tuple[bytes, bytes]:
    """Pad and encrypt a message body; return (ciphertext, last cipher block = the next IV)."""
    if not body:
        raise UsageError("an encrypted ISAKMP message carries at least one payload")
    ciphertext = suite.encrypt(key, iv, pad(body, suite.block_size))
    return ciphertext, ciphertext[-suite.block_size :]


def decrypt_body(suite: Cipher, key: bytes, iv: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
    """Decrypt a message body; return (plaintext with its pad, last cipher block = the next IV).

    The next IV is only a candidate: the caller commits it to the IV chain once the message has
    been authenticated (``IvManager.advance``), so a forged message changes no state.
    """
    plaintext = suite.decrypt(key, iv, ciphertext)
    return plaintext, ciphertext[-suite.block_size :]
