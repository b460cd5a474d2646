"""ESP framing and cryptography below the IP layer (RFC 4303 §2, §3.3.2-§3.3.4, §3.4.4).

This module owns the part of an ESP packet from the SPI to the ICV: the header, the IV, padding
(RFC 4303 §2.4: bytes 1, 2, 3... up to the cipher's alignment, at least 4), Pad Length, Next
Header, encryption and the ICV, for every cipher of ``espcore.transforms``. An engine is built
once per SA by ``make_engine`` and keeps its cipher objects (house rule: reuse cipher objects per
SA). It does not own sequence numbers, the replay window, counters or IP headers
(``espcore.sa``).

Per cipher family:

- AES-GCM (RFC 4106 §3-§5) and ChaCha20-Poly1305 (RFC 7634 §2-§3): nonce = salt || IV, AAD =
  SPI || seq (SPI || seq_hi || seq_lo with ESN, RFC 4106 §5). Truncated GCM ICVs (8, 12 bytes)
  are verified with the streaming GCM API, which accepts short tags.
- AES-GMAC (RFC 4543 §3): nothing encrypted; AAD = SPI || seq (|| ESN) || IV || payload+trailer.
- AES-CTR (RFC 3686 §4): counter block = salt || IV || 0x00000001.
- CBC (RFC 3602, RFC 2405, RFC 2451): one encryptor/decryptor per SA is kept. Outbound, a fresh
  random block is run through the chaining encryptor first: its output, E(R xor previous block),
  is the packet's IV, unpredictable as RFC 3602 §2.4 requires (the "encrypted nonce" IV of NIST
  SP 800-38A App. C). Inbound, the received IV is fed to the chaining decryptor before the
  ciphertext, which makes the chain start from it.
- Integrity for non-AEAD ciphers: HMAC over SPI..Next Header (|| seq_hi with ESN, RFC 4303
  §2.2.1), truncated (RFC 2403/2404/4868), compared with ``hmac.compare_digest``.

IVs of the counter-based modes (GCM, GMAC, CTR, ChaCha20) are the 64-bit sequence number, unique
per key as RFC 4106 §3.1 / RFC 3686 §3.1 / RFC 7634 §2 require; an explicit ``iv`` overrides it for
deterministic tests and known-answer vectors.

The engines work on whole packets by offset and return byte strings: in CPython, one ``encrypt``
call and one ``join`` cost less than filling a preallocated buffer through memoryviews.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from espcore.aead import Aead, new_aead
from espcore.errors import IntegrityError, ParseError, UsageError
from espcore.transforms import EncryptionTransform, IntegrityTransform

_MASK32 = 0xFFFFFFFF
_HEADER = struct.Struct("!II")
_HEADER_IV = struct.Struct("!IIQ")
_AAD_ESN = struct.Struct("!III")
_SEQ_HI = struct.Struct("!I")
_COUNTER_ONE = b"\x00\x00\x00\x01"

#: ``PADDING[n]`` = the n monotonic padding bytes 1..n followed by the Pad Length byte n.
PADDING = tuple(bytes(range(1, n + 1)) + bytes((n,)) for n in range(256))

Rng = Callable[[int], bytes]
Buffer = bytes | bytearray | memoryview


_HASHES = {"md5": hashes.MD5, "sha1": hashes.SHA1, "sha256": hashes.SHA256,
           "sha384": hashes.SHA384, "sha512": hashes.SHA512}


class Mac:
    """A truncated HMAC with its keyed state computed once (RFC 2104 inner/outer pads).

    ``copy`` is the bound ``copy`` of the keyed ``cryptography`` HMAC: a fresh context per
    packet for the specialised paths, without the key schedule.
    """

    __slots__ = ("icv_size", "copy", "_template")

    def __init__(self, transform: IntegrityTransform, key: bytes, *,
                 check_length: bool = True) -> None:
        """``check_length=False`` takes a key of any length, for published HMAC vectors."""
        if check_length and len(key) != transform.key_bytes:
            raise UsageError(f"{transform.name} takes a {transform.key_bytes}-byte key, "
                             f"not {len(key)} bytes")
        self.icv_size = transform.icv_size
        self._template = crypto_hmac.HMAC(bytes(key), _HASHES[transform.hash_name]())
        self.copy = self._template.copy

    def compute(self, *parts: Buffer) -> bytes:
        """The truncated MAC of the concatenation of ``parts`` (no copy of them is made)."""
        h = self.copy()
        for part in parts:
            h.update(part)
        return h.finalize()[:self.icv_size]


class EspEngine:
    """Per-SA ESP cryptography. ``seal`` builds the bytes SPI..ICV, ``open`` checks and decrypts.

    ``seal(plaintext, seq, iv)`` takes payload || padding || Pad Length || Next Header and
    returns the ESP packet as a tuple of byte strings to be joined. ``open(packet, start, end,
    seq)`` verifies the ESP packet at ``packet[start:end]`` and returns the decrypted payload and
    trailer. Neither changes state a failed packet could be seen in (only CBC chaining registers,
    which each packet resets through its IV).
    """

    kind = ""

    def __init__(self, transform: EncryptionTransform, key: bytes, salt: bytes,
                 mac: Mac | None, *, spi: int, esn: bool, rng: Rng) -> None:
        self.transform = transform
        self.key_bits = len(key) * 8
        self.spi = spi
        self.esn = esn
        self.mac = mac
        self.iv_size = transform.iv_size
        self.align_mask = transform.alignment - 1
        self.icv_size = transform.icv_size if transform.is_aead else (
            mac.icv_size if mac is not None else 0)
        self.overhead = 8 + self.iv_size + self.icv_size
        self.min_length = self.overhead + max(2, transform.alignment)
        self.has_integrity = transform.is_aead or mac is not None
        self.is_confidential = transform.is_confidential
        self._salt = salt
        self._rng = rng

    def _check_iv(self, iv: bytes) -> None:
        if len(iv) != self.iv_size:
            raise UsageError(f"{self.transform.name} takes a {self.iv_size}-byte IV, "
                             f"not {len(iv)}")

    def _aad(self, seq: int) -> bytes:
        return _AAD_ESN.pack(self.spi, seq >> 32, seq & _MASK32)

    def _tail(self, seq: int) -> bytes:
        # RFC 4303 §2.2.1: with ESN the high-order 32 bits follow the packet in the ICV input.
        return _SEQ_HI.pack(seq >> 32) if self.esn else b""

    def _verify_mac(self, packet: Buffer, start: int, ct_end: int, end: int, seq: int) -> None:
        view = memoryview(packet)
        expected = self.mac.compute(view[start:ct_end], self._tail(seq))
        if not hmac.compare_digest(expected, view[ct_end:end]):
            raise IntegrityError(self.spi, seq)

    def seal(self, plaintext: Buffer, seq: int, iv: bytes | None) -> tuple[bytes, ...]:
        raise NotImplementedError

    def open(self, packet: Buffer, start: int, end: int, seq: int) -> bytes:
        raise NotImplementedError


class _AeadEngine(EspEngine):
    """AES-GCM with a 16-byte ICV and ChaCha20-Poly1305: one AEAD call each way."""

    kind = "aead"

    def __init__(self, *args: object, aead: Aead | AESGCM, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._aead = aead

    def seal(self, plaintext: Buffer, seq: int, iv: bytes | None) -> tuple[bytes, ...]:
        if iv is None:
            header = _HEADER_IV.pack(self.spi, seq & _MASK32, seq)
            nonce = self._salt + header[8:]
            aad = header[:8] if not self.esn else self._aad(seq)
            return header, self._aead.encrypt(nonce, plaintext, aad)
        self._check_iv(iv)
        header = _HEADER.pack(self.spi, seq & _MASK32)
        aad = header if not self.esn else self._aad(seq)
        return header, iv, self._aead.encrypt(self._salt + iv, plaintext, aad)

    def open(self, packet: Buffer, start: int, end: int, seq: int) -> bytes:
        aad = packet[start:start + 8] if not self.esn else self._aad(seq)
        try:
            return self._aead.decrypt(self._salt + packet[start + 8:start + 16],
                                      packet[start + 16:end], aad)
        except InvalidTag:
            raise IntegrityError(self.spi, seq) from None


class _GcmShortEngine(_AeadEngine):
    """AES-GCM with an 8- or 12-byte ICV (RFC 4106 §6): the tag truncated to its first bytes."""

    kind = "gcm-short"

    def __init__(self, *args: object, algorithm: algorithms.AES, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._algorithm = algorithm

    def seal(self, plaintext: Buffer, seq: int, iv: bytes | None) -> tuple[bytes, ...]:
        *head, sealed = super().seal(plaintext, seq, iv)
        return (*head, sealed[:len(sealed) - 16 + self.icv_size])

    def open(self, packet: Buffer, start: int, end: int, seq: int) -> bytes:
        aad = packet[start:start + 8] if not self.esn else self._aad(seq)
        ct_end = end - self.icv_size
        decryptor = Cipher(self._algorithm, modes.GCM(
            self._salt + packet[start + 8:start + 16], bytes(packet[ct_end:end]),
            min_tag_length=self.icv_size)).decryptor()
        decryptor.authenticate_additional_data(aad)
        plaintext = decryptor.update(packet[start + 16:ct_end])
        try:
            decryptor.finalize()
        except InvalidTag:
            raise IntegrityError(self.spi, seq) from None
        return plaintext


class _GmacEngine(_AeadEngine):
    """AES-GMAC (RFC 4543 §3.3): the payload is authenticated, not encrypted."""

    kind = "gmac"

    def seal(self, plaintext: Buffer, seq: int, iv: bytes | None) -> tuple[bytes, ...]:
        if iv is None:
            iv = seq.to_bytes(8, "big")
        self._check_iv(iv)
        header = _HEADER.pack(self.spi, seq & _MASK32)
        first = header if not self.esn else self._aad(seq)
        tag = self._aead.encrypt(self._salt + iv, b"", b"".join((first, iv, plaintext)))
        return header, iv, bytes(plaintext), tag

    def open(self, packet: Buffer, start: int, end: int, seq: int) -> bytes:
        view = memoryview(packet)
        ct_end = end - 16
        aad = (bytes(view[start:ct_end]) if not self.esn
               else self._aad(seq) + view[start + 8:ct_end])
        try:
            self._aead.decrypt(self._salt + view[start + 8:start + 16], view[ct_end:end], aad)
        except InvalidTag:
            raise IntegrityError(self.spi, seq) from None
        return bytes(view[start + 16:ct_end])


class _CbcEngine(EspEngine):
    """AES-CBC, 3DES-CBC and DES-CBC with persistent chaining cipher contexts."""

    kind = "cbc"

    def __init__(self, *args: object, algorithm: algorithms.AES | TripleDES,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._algorithm = algorithm
        zero_iv = modes.CBC(bytes(self.iv_size))
        self._enc = Cipher(algorithm, zero_iv).encryptor()
        self._dec = Cipher(algorithm, zero_iv).decryptor()

    def seal(self, plaintext: Buffer, seq: int, iv: bytes | None) -> tuple[bytes, ...]:
        header = _HEADER.pack(self.spi, seq & _MASK32)
        if iv is None:
            iv = self._enc.update(self._rng(self.iv_size))
            ciphertext = self._enc.update(plaintext)
        else:
            self._check_iv(iv)
            ciphertext = Cipher(self._algorithm, modes.CBC(iv)).encryptor().update(plaintext)
        if self.mac is None:
            return header, iv, ciphertext
        return header, iv, ciphertext, self.mac.compute(header, iv, ciphertext, self._tail(seq))

    def open(self, packet: Buffer, start: int, end: int, seq: int) -> bytes:
        ct_end = end - self.icv_size
        ct_start = start + 8 + self.iv_size
        if (ct_end - ct_start) & self.align_mask:
            raise ParseError(f"ESP ciphertext of {ct_end - ct_start} bytes is not a multiple of "
                             f"the {self.align_mask + 1}-byte block", offset=ct_start)
        if self.mac is not None:
            self._verify_mac(packet, start, ct_end, end, seq)
        self._dec.update(packet[start + 8:ct_start])
        return self._dec.update(packet[ct_start:ct_end])


class _CtrEngine(EspEngine):
    """AES-CTR (RFC 3686): a counter-mode context per packet from the salt, IV and 1."""

    kind = "ctr"

    def __init__(self, *args: object, algorithm: algorithms.AES, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._algorithm = algorithm

    def seal(self, plaintext: Buffer, seq: int, iv: bytes | None) -> tuple[bytes, ...]:
        if iv is None:
            iv = seq.to_bytes(8, "big")
        self._check_iv(iv)
        header = _HEADER.pack(self.spi, seq & _MASK32)
        block = modes.CTR(self._salt + iv + _COUNTER_ONE)
        ciphertext = Cipher(self._algorithm, block).encryptor().update(plaintext)
        if self.mac is None:
            return header, iv, ciphertext
        return header, iv, ciphertext, self.mac.compute(header, iv, ciphertext, self._tail(seq))

    def open(self, packet: Buffer, start: int, end: int, seq: int) -> bytes:
        ct_end = end - self.icv_size
        if self.mac is not None:
            self._verify_mac(packet, start, ct_end, end, seq)
        block = modes.CTR(self._salt + packet[start + 8:start + 16] + _COUNTER_ONE)
        return Cipher(self._algorithm, block).decryptor().update(packet[start + 16:ct_end])


class _NullEngine(EspEngine):
    """ESP_NULL (RFC 2410) with an integrity transform: the payload travels in clear."""

    kind = "null"

    def seal(self, plaintext: Buffer, seq: int, iv: bytes | None) -> tuple[bytes, ...]:
        if iv:
            raise UsageError("the null cipher has no IV")
        header = _HEADER.pack(self.spi, seq & _MASK32)
        return header, bytes(plaintext), self.mac.compute(header, plaintext, self._tail(seq))

    def open(self, packet: Buffer, start: int, end: int, seq: int) -> bytes:
        ct_end = end - self.icv_size
        self._verify_mac(packet, start, ct_end, end, seq)
        return bytes(packet[start + 8:ct_end])


def make_engine(transform: EncryptionTransform, cipher_key: bytes,
                integrity: IntegrityTransform | None, integrity_key: bytes, *, spi: int,
                esn: bool, rng: Rng = os.urandom, aead_backend: str | None = None) -> EspEngine:
    """The ESP engine for ``transform`` keyed with ``cipher_key`` (key || salt); AES-GCM-16 and
    ChaCha20-Poly1305 run on ``aead_backend`` (``espcore.aead.new_aead``)."""
    key_len = len(cipher_key) - transform.salt_size
    if key_len * 8 not in transform.key_bits:
        raise UsageError(
            f"{transform.name} takes {', '.join(str(b) for b in transform.key_bits)}-bit keys"
            + (f" plus a {transform.salt_size}-byte salt" if transform.salt_size else "")
            + f"; got {len(cipher_key)} bytes")
    if transform.is_aead and integrity is not None:
        raise UsageError(f"{transform.name} is a combined mode: no integrity transform allowed")
    if not transform.is_confidential and not transform.is_aead and integrity is None:
        raise UsageError("ESP needs confidentiality, integrity or both (RFC 4303 §3.2)")
    key, salt = bytes(cipher_key[:key_len]), bytes(cipher_key[key_len:])
    mac = Mac(integrity, integrity_key) if integrity is not None else None
    common = dict(spi=spi, esn=esn, rng=rng)
    kind = transform.kind
    if kind == "gcm":
        if transform.icv_size == 16:
            aead = new_aead("aes-gcm", key, backend=aead_backend)
            return _AeadEngine(transform, key, salt, mac, aead=aead, **common)
        return _GcmShortEngine(transform, key, salt, mac, aead=AESGCM(key),
                               algorithm=algorithms.AES(key), **common)
    if kind == "chacha":
        aead = new_aead("chacha20-poly1305", key, backend=aead_backend)
        return _AeadEngine(transform, key, salt, mac, aead=aead, **common)
    if kind == "gmac":
        return _GmacEngine(transform, key, salt, mac, aead=AESGCM(key), **common)
    if kind == "cbc":
        # Single DES is 3DES with K1 = K2 = K3 (RFC 2405 keys are 8 bytes with parity bits).
        algorithm = (algorithms.AES(key) if transform.block_size == 16
                     else TripleDES(key * 3 if len(key) == 8 else key))
        return _CbcEngine(transform, key, salt, mac, algorithm=algorithm, **common)
    if kind == "ctr":
        return _CtrEngine(transform, key, salt, mac, algorithm=algorithms.AES(key), **common)
    return _NullEngine(transform, key, salt, mac, **common)
