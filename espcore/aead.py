"""The AEAD objects of the ESP data path: AES-GCM-16 and ChaCha20-Poly1305, keyed once per SA.

This module owns the choice between the two implementations of one interface:

- ``espcore._aead.Aead``, a small C binding of OpenSSL's EVP AEAD interface (``_aead.c``), built
  at install time where a C compiler and OpenSSL's headers exist. Its context is keyed once, so a
  packet pays for setting the nonce and the AEAD work only, and ``seal``/``open`` read the
  payload in place and ``seal`` writes the ESP header, ciphertext and tag into the one object it
  returns. Per 1400-byte packet this is about half the cost of a ``cryptography`` AEAD call,
  whose per-call set-up costs more than the AES-GCM work itself (``benchmarks/README.md``).
- ``CryptographyAead``, the same interface on ``cryptography``'s classes, used where the binding
  was not built (``BACKEND`` says which one is in use).

Both: ``encrypt(nonce, data, aad)`` and ``decrypt(nonce, data, aad)`` as ``cryptography``'s AEAD
classes (``decrypt`` raises ``cryptography.exceptions.InvalidTag``), ``seal(nonce, aad, head,
data, start, end, trailer)`` returns ``head || encrypt(data[start:end] || trailer)`` (ciphertext
and tag) and ``open(nonce, aad, data, start, end)`` returns ``decrypt(data[start:end])``; a range
outside ``data`` raises ``ValueError``. ``seal_esp(salt, head, data, start, end, trailer)`` and
``open_esp(salt, data, start, end)`` are the same with ESP's nonce and AAD for 32-bit sequence
numbers (RFC 4106 §4-§5, RFC 7634 §2-§3) taken from SPI || sequence number || IV: the last 16
bytes of ``head``, or the first 16 of the range (the ciphertext follows them). Nonces are
12 bytes (RFC 4106 §4, RFC 7634 §2; the binding refuses any other length, AESGCM takes 8 to
128 bytes), tags 16.

It does not own ESP's headers, trailer, ESN nonce and AAD or state (``espcore.esp``,
``espcore.aead_paths``), nor the other AEAD sizes (GCM with 8- or 12-byte ICVs and GMAC stay on
``cryptography``).
"""

from __future__ import annotations

from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from espcore.errors import UsageError

Buffer = bytes | bytearray | memoryview

try:
    from espcore._aead import OPENSSL_VERSION
    from espcore._aead import Aead as _OpenSslAead
except ImportError:  # not built: no compiler or no OpenSSL headers at install time
    _OpenSslAead = None
    OPENSSL_VERSION = None

#: "openssl" when the C binding is in use, else "cryptography".
BACKEND = "openssl" if _OpenSslAead is not None else "cryptography"

KINDS = ("aes-gcm", "chacha20-poly1305")


class Aead(Protocol):
    def encrypt(self, nonce: bytes, data: Buffer, aad: Buffer) -> bytes: ...

    def decrypt(self, nonce: bytes, data: Buffer, aad: Buffer) -> bytes: ...

    def seal(self, nonce: bytes, aad: Buffer, head: Buffer, data: Buffer, start: int, end: int,
             trailer: Buffer) -> bytes: ...

    def open(self, nonce: bytes, aad: Buffer, data: Buffer, start: int, end: int) -> bytes: ...

    def seal_esp(self, salt: bytes, head: Buffer, data: Buffer, start: int, end: int,
                 trailer: Buffer) -> bytes: ...

    def open_esp(self, salt: bytes, data: Buffer, start: int, end: int) -> bytes: ...


class CryptographyAead:
    """``Aead`` on ``cryptography``'s AESGCM or ChaCha20Poly1305 (16-byte tags)."""

    __slots__ = ("encrypt", "decrypt")

    def __init__(self, kind: str, key: bytes) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown AEAD {kind} (aes-gcm or chacha20-poly1305)")
        aead = AESGCM(key) if kind == "aes-gcm" else ChaCha20Poly1305(key)
        self.encrypt, self.decrypt = aead.encrypt, aead.decrypt

    def seal(self, nonce: bytes, aad: Buffer, head: Buffer, data: Buffer, start: int, end: int,
             trailer: Buffer) -> bytes:
        if not 0 <= start <= end <= len(data):
            raise ValueError("start and end must satisfy 0 <= start <= end <= len(data)")
        return b"".join((head, self.encrypt(nonce, b"".join((data[start:end], trailer)), aad)))

    def open(self, nonce: bytes, aad: Buffer, data: Buffer, start: int, end: int) -> bytes:
        if not 0 <= start <= end <= len(data):
            raise ValueError("start and end must satisfy 0 <= start <= end <= len(data)")
        return self.decrypt(nonce, data[start:end], aad)

    def seal_esp(self, salt: bytes, head: Buffer, data: Buffer, start: int, end: int,
                 trailer: Buffer) -> bytes:
        if len(salt) != 4 or len(head) < 16 or not 0 <= start <= end <= len(data):
            raise ValueError("a 4-byte salt, a head ending with SPI, sequence number and IV, "
                             "and 0 <= start <= end <= len(data) are needed")
        return b"".join((head, self.encrypt(salt + head[-8:], b"".join((data[start:end], trailer)),
                                            head[-16:-8])))

    def open_esp(self, salt: bytes, data: Buffer, start: int, end: int) -> bytes:
        if len(salt) != 4 or not 0 <= start <= end <= len(data):
            raise ValueError("a 4-byte salt and 0 <= start <= end <= len(data) are needed")
        if end - start < 32:  # shorter than SPI, sequence number, IV and tag
            raise InvalidTag
        return self.decrypt(salt + data[start + 8:start + 16], data[start + 16:end],
                            data[start:start + 8])


def new_aead(kind: str, key: bytes, *, backend: str | None = None) -> Aead:
    """An ``Aead`` of ``kind`` ("aes-gcm" or "chacha20-poly1305") keyed with ``key``, on
    ``backend`` ("openssl" or "cryptography"; by default this module's ``BACKEND``)."""
    backend = backend or BACKEND
    if backend == "openssl":
        if _OpenSslAead is None:
            raise UsageError("espcore._aead was not built (it needs gcc and libssl-dev at install)")
        return _OpenSslAead(kind, key)
    if backend != "cryptography":
        raise UsageError(f"unknown AEAD backend {backend!r} (openssl or cryptography)")
    return CryptographyAead(kind, key)
