"""ESP framing and cryptography below the IP layer (RFC 4303 §2, §3.3.2-§3.3.4, §3.4.4).

This module owns the part of an ESP packet from the SPI to the ICV: the header, the IV, padding
(RFC 4303 §2.4: bytes 1, 2, 3... up to the cipher's alignment, at least 4), Pad Length, Next
Header, encryption and the ICV, for every cipher of ``espcore.transforms``. An ``EspEngine`` is
built once per SA and keeps its cipher objects (house rule: reuse cipher objects per SA). It does
not own sequence numbers, the replay window, counters or IP headers (``espcore.sa``).

Per cipher family:

- AES-GCM (RFC 4106 §3-§5) and ChaCha20-Poly1305 (RFC 7634 §2-§3): nonce = salt || IV, AAD =
  SPI || seq (SPI || seq_hi || seq_lo with ESN). The 16-byte ICV variants encrypt in place.
- AES-GMAC (RFC 4543 §3): nothing encrypted; AAD = SPI || seq (|| ESN) || IV || payload+trailer.
- AES-CTR (RFC 3686 §4): counter block = salt || IV || 0x00000001.
- CBC (RFC 3602, RFC 2405, RFC 2451): one encryptor/decryptor per SA is kept. Outbound, a fresh
  random block is run through the chaining encryptor first: its output, E(R xor previous block),
  is the packet's IV, unpredictable as RFC 3602 §2.4 requires (NIST SP 800-38A App. C). Inbound,
  the received IV is fed to the chaining decryptor before the ciphertext.
- Integrity for non-AEAD ciphers: HMAC over SPI..Next Header (|| seq_hi with ESN, RFC 4303
  §2.2.1), truncated (RFC 2403/2404/4868), compared with ``hmac.compare_digest``.

IVs of the counter-based modes (GCM, GMAC, CTR, ChaCha20) are the 64-bit sequence number, unique
per key as RFC 4106 §3.1 / RFC 3686 §3.1 / RFC 7634 §2 require; an explicit ``iv`` overrides it for
deterministic tests and known-answer vectors.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from espcore.errors import IntegrityError, ParseError, UsageError
from espcore.transforms import EncryptionTransform, IntegrityTransform

_MASK32 = 0xFFFFFFFF
_HEADER = struct.Struct("!II")
_HEADER_IV = struct.Struct("!IIQ")
_AAD_ESN = struct.Struct("!III")
_SEQ_HI = struct.Struct("!I")

#: ``_PADDING[n]`` = the n monotonic padding bytes 1..n followed by the Pad Length byte n.
_PADDING = tuple(bytes(range(1, n + 1)) + bytes((n,)) for n in range(256))

Rng = Callable[[int], bytes]


class Mac:
    """A truncated HMAC with its keyed state computed once (RFC 2104 inner/outer pads)."""

    __slots__ = ("icv_size", "_template")

    def __init__(self, transform: IntegrityTransform, key: bytes) -> None:
        if len(key) != transform.key_bytes:
            raise UsageError(f"{transform.name} takes a {transform.key_bytes}-byte key, "
                             f"not {len(key)} bytes")
        self.icv_size = transform.icv_size
        self._template = hmac.new(bytes(key), digestmod=transform.hash_name)

    def compute(self, data: bytes | bytearray | memoryview, tail: bytes | None = None) -> bytes:
        """The truncated MAC of ``data`` (|| ``tail``, the implicit ESN high bits)."""
        h = self._template.copy()
        h.update(data)
        if tail is not None:
            h.update(tail)
        return h.digest()[:self.icv_size]

    def compute_parts(self, *parts: bytes | bytearray | memoryview) -> bytes:
        """The truncated MAC of the concatenation of ``parts`` (no copy of them is made)."""
        h = self._template.copy()
        for part in parts:
            h.update(part)
        return h.digest()[:self.icv_size]


class EspEngine:
    """The per-SA ESP cryptography: ``seal_into`` builds, ``open_into`` verifies and decrypts.

    Buffers: ``seal_into`` writes ``sealed_length(n)`` bytes at ``buf[off:]`` and may use
    ``seal_slack`` more bytes after them (the caller trims). ``open_into`` writes the decrypted
    payload and trailer at ``out[off:]``. Neither changes any state a failed packet could move.
    """

    def __init__(self, transform: EncryptionTransform, cipher_key: bytes,
                 integrity: IntegrityTransform | None, integrity_key: bytes, *, spi: int,
                 esn: bool, rng: Rng = os.urandom) -> None:
        key_len = len(cipher_key) - transform.salt_size
        if key_len * 8 not in transform.key_bits:
            raise UsageError(
                f"{transform.name} takes {', '.join(str(b) for b in transform.key_bits)}-bit keys"
                + (f" plus a {transform.salt_size}-byte salt" if transform.salt_size else "")
                + f"; got {len(cipher_key)} bytes")
        if transform.is_aead and integrity is not None:
            raise UsageError(f"{transform.name} is a combined mode: no integrity transform allowed")
        if not transform.is_confidential and integrity is None and not transform.is_aead:
            raise UsageError("ESP needs confidentiality, integrity or both (RFC 4303 §3.2)")
        self.transform = transform
        self.key_bits = key_len * 8
        self.spi = spi
        self.esn = esn
        self.kind = transform.kind
        self.iv_size = transform.iv_size
        self.align_mask = transform.alignment - 1
        self.mac = Mac(integrity, integrity_key) if integrity is not None else None
        self.icv_size = transform.icv_size if transform.is_aead else (
            integrity.icv_size if integrity is not None else 0)
        self.has_integrity = transform.is_aead or integrity is not None
        self.is_confidential = transform.is_confidential
        self.seal_slack = 16 - self.icv_size if transform.kind == "gcm" else 0
        self._rng = rng
        key = bytes(cipher_key[:key_len])
        self._salt = bytes(cipher_key[key_len:])
        self._aead: AESGCM | ChaCha20Poly1305 | None = None
        self._algorithm: algorithms.AES | TripleDES | None = None
        self._enc = self._dec = None
        if transform.kind in ("gcm", "gmac"):
            self._aead = AESGCM(key)
            self._algorithm = algorithms.AES(key)
        elif transform.kind == "chacha":
            self._aead = ChaCha20Poly1305(key)
        elif transform.kind == "ctr":
            self._algorithm = algorithms.AES(key)
        elif transform.kind == "cbc":
            # Single DES is 3DES with K1 = K2 = K3 (RFC 2405 keys are 8 bytes with parity).
            self._algorithm = (algorithms.AES(key) if transform.block_size == 16
                               else TripleDES(key * 3 if len(key) == 8 else key))
            zero_iv = modes.CBC(bytes(transform.block_size))
            self._enc = Cipher(self._algorithm, zero_iv).encryptor()
            self._dec = Cipher(self._algorithm, zero_iv).decryptor()

    # -- sizes ----------------------------------------------------------------------------------

    def sealed_length(self, payload_len: int) -> int:
        """Bytes from SPI to ICV for a payload of ``payload_len`` bytes."""
        pad = -(payload_len + 2) & self.align_mask
        return 8 + self.iv_size + payload_len + pad + 2 + self.icv_size

    def min_length(self) -> int:
        """The shortest well-formed ESP packet this SA can receive."""
        return 8 + self.iv_size + max(2, self.align_mask + 1) + self.icv_size

    # -- outbound --------------------------------------------------------------------------------

    def seal_into(self, buf: bytearray, off: int, payload: bytes | bytearray | memoryview,
                  next_header: int, seq: int, iv: bytes | None = None) -> int:
        """Write the ESP packet for ``payload`` at ``buf[off:]``; return its end offset."""
        n = len(payload)
        pad = -(n + 2) & self.align_mask
        ivs = self.iv_size
        pt_start = off + 8 + ivs
        pt_end = pt_start + n + pad + 2
        buf[pt_start:pt_start + n] = payload
        buf[pt_start + n:pt_end - 1] = _PADDING[pad]
        buf[pt_end - 1] = next_header
        kind = self.kind
        if iv is not None and len(iv) != ivs:
            raise UsageError(f"{self.transform.name} takes a {ivs}-byte IV, not {len(iv)}")
        if kind == "cbc":
            _HEADER.pack_into(buf, off, self.spi, seq & _MASK32)
            if iv is None:
                iv = self._enc.update(self._rng(ivs))
                ct = self._enc.update(memoryview(buf)[pt_start:pt_end])
            else:
                ct = Cipher(self._algorithm, modes.CBC(iv)).encryptor().update(
                    memoryview(buf)[pt_start:pt_end])
            buf[off + 8:pt_start] = iv
            buf[pt_start:pt_end] = ct
        elif kind == "null":
            _HEADER.pack_into(buf, off, self.spi, seq & _MASK32)
        else:
            if iv is None:
                _HEADER_IV.pack_into(buf, off, self.spi, seq & _MASK32, seq)
                iv = buf[off + 8:pt_start]
            else:
                _HEADER.pack_into(buf, off, self.spi, seq & _MASK32)
                buf[off + 8:pt_start] = iv
            nonce = self._salt + iv
            view = memoryview(buf)
            if kind == "gcm" or kind == "chacha":
                aad = _AAD_ESN.pack(self.spi, seq >> 32, seq & _MASK32) if self.esn \
                    else view[off:off + 8]
                self._aead.encrypt_into(nonce, view[pt_start:pt_end], aad,
                                        view[pt_start:pt_end + 16])
            elif kind == "gmac":
                aad = (_AAD_ESN.pack(self.spi, seq >> 32, seq & _MASK32) + view[off + 8:pt_end]
                       if self.esn else view[off:pt_end])
                buf[pt_end:pt_end + 16] = self._aead.encrypt(nonce, b"", aad)
            else:  # ctr
                block = modes.CTR(nonce + b"\x00\x00\x00\x01")
                buf[pt_start:pt_end] = Cipher(self._algorithm, block).encryptor().update(
                    view[pt_start:pt_end])
        if self.mac is not None:
            buf[pt_end:pt_end + self.icv_size] = self.mac.compute(
                memoryview(buf)[off:pt_end], _SEQ_HI.pack(seq >> 32) if self.esn else None)
        return pt_end + self.icv_size

    # -- inbound ---------------------------------------------------------------------------------

    def open_into(self, esp: memoryview, seq: int, out: bytearray, off: int) -> tuple[int, int]:
        """Verify and decrypt ``esp`` (SPI to ICV) into ``out[off:]``: (next header, payload length).

        ``out`` must hold ``off + len(esp) - 8 - iv_size - icv_size`` bytes. Raises
        ``IntegrityError`` or ``ParseError``; changes no state but the CBC chaining registers.
        """
        ivs, icv = self.iv_size, self.icv_size
        ct_len = len(esp) - 8 - ivs - icv
        if ct_len < 2:
            raise ParseError(f"ESP packet of {len(esp)} bytes is too short", offset=0)
        kind = self.kind
        ct_end = 8 + ivs + ct_len
        if kind == "cbc" and ct_len & self.align_mask:
            raise ParseError(f"ESP ciphertext of {ct_len} bytes is not a multiple of the "
                             f"{self.align_mask + 1}-byte block", offset=8 + ivs)
        dest = memoryview(out)[off:off + ct_len]
        try:
            if kind == "gcm" or kind == "chacha":
                nonce = self._salt + esp[8:16]
                aad = _AAD_ESN.pack(self.spi, seq >> 32, seq & _MASK32) if self.esn else esp[:8]
                if icv == 16:
                    self._aead.decrypt_into(nonce, esp[16:], aad, dest)
                else:
                    decryptor = Cipher(self._algorithm, modes.GCM(
                        nonce, bytes(esp[ct_end:]), min_tag_length=icv)).decryptor()
                    decryptor.authenticate_additional_data(aad)
                    decryptor.update_into(esp[16:ct_end], dest)
                    decryptor.finalize()
            elif kind == "gmac":
                nonce = self._salt + esp[8:16]
                aad = (_AAD_ESN.pack(self.spi, seq >> 32, seq & _MASK32) + esp[8:ct_end]
                       if self.esn else esp[:ct_end])
                self._aead.decrypt(nonce, esp[ct_end:], aad)
                dest[:] = esp[16:ct_end]
            else:
                if self.mac is not None:
                    expected = self.mac.compute(esp[:ct_end],
                                                _SEQ_HI.pack(seq >> 32) if self.esn else None)
                    if not hmac.compare_digest(expected, esp[ct_end:]):
                        raise InvalidTag()
                if kind == "cbc":
                    self._dec.update(esp[8:8 + ivs])
                    dest[:] = self._dec.update(esp[8 + ivs:ct_end])
                elif kind == "ctr":
                    block = modes.CTR(self._salt + esp[8:16] + b"\x00\x00\x00\x01")
                    dest[:] = Cipher(self._algorithm, block).decryptor().update(esp[16:ct_end])
                else:  # null
                    dest[:] = esp[8:ct_end]
        except InvalidTag:
            raise IntegrityError(self.spi, seq) from None
        pad = dest[ct_len - 2]
        if pad + 2 > ct_len:
            raise ParseError(f"Pad Length {pad} exceeds the {ct_len}-byte payload",
                             offset=ct_end - 2)
        payload_len = ct_len - 2 - pad
        # RFC 4303 §2.4: the default padding is 1, 2, 3...; the receiver checks it.
        if dest[payload_len:ct_len - 1] != _PADDING[pad]:
            raise ParseError("ESP padding is not the monotonic 1, 2, 3... sequence",
                             offset=8 + ivs + payload_len)
        return dest[ct_len - 1], payload_len
