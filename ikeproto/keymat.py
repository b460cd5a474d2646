"""IKEv1 key material: SKEYID and its derivatives, the phase-1 and phase-2 hashes, KEYMAT, NAT-D.

Owns the formulas of RFC 2409 §5 (SKEYID, SKEYID_d/a/e, HASH_I/HASH_R), Appendix B (the
encryption key Ka from SKEYID_e, the DES weak-key rule), §5.5 (Quick Mode HASH(1..3), KEYMAT),
§5.7 (Informational HASH(1)) and RFC 3947 §3.2 (the NAT-D hash), plus ``Phase1Keys``, the one
object the exchange layer carries for an ISAKMP SA.

Notation (RFC 2409 §3.2): ``prf`` is the negotiated prf, which for us is always HMAC with the
negotiated hash (``Hash.prf``); ``*_b`` is a payload *body*, without the 4-byte generic payload
header; cookies are the 8-byte CKY-I / CKY-R of the ISAKMP header; M-ID is the 32-bit message ID
in network order. Ni_b / Nr_b are always initiator's then responder's, whichever side computes.

Does not own: the ciphers and hashes (``crypto``), IV chains (``iv``), DH (``dh``), and which
payload bytes go into a hash (the exchange layer slices them out of the message).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ikeproto.enums import ProtocolId  # noqa: F401  (re-exported: the KEYMAT protocol octet)

from ikeproto.crypto import Cipher, Hash, decrypt_body, encrypt_body
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.iv import IvManager

__all__ = [
    "Phase1Keys",
    "Prf",
    "ProtocolId",
    "derive_skeyids",
    "encryption_key",
    "expand_key",
    "hash_i",
    "hash_r",
    "informational_hash",
    "keymat",
    "natd_hash",
    "qm_hash1",
    "qm_hash2",
    "qm_hash3",
    "skeyid_psk",
    "skeyid_sig",
]

Prf = Callable[[bytes, bytes], bytes]




def _mid(message_id: int) -> bytes:
    if not 0 <= message_id <= 0xFFFFFFFF:
        raise UsageError(f"message ID {message_id} is not a 32-bit unsigned number")
    return message_id.to_bytes(4, "big")


def _cookies(cky_i: bytes, cky_r: bytes) -> bytes:
    if len(cky_i) != 8 or len(cky_r) != 8:
        raise UsageError("ISAKMP cookies are 8 bytes each")
    return cky_i + cky_r


# --- phase 1 ---------------------------------------------------------------------------------


def skeyid_psk(prf: Prf, psk: bytes, ni_b: bytes, nr_b: bytes) -> bytes:
    """RFC 2409 §5: for pre-shared keys, SKEYID = prf(pre-shared-key, Ni_b | Nr_b)."""
    if not psk:
        raise UsageError("an empty pre-shared key is refused")
    return prf(psk, ni_b + nr_b)


def skeyid_sig(prf: Prf, ni_b: bytes, nr_b: bytes, g_xy: bytes) -> bytes:
    """RFC 2409 §5: for signatures, SKEYID = prf(Ni_b | Nr_b, g^xy); GSS-API auth uses it too."""
    return prf(ni_b + nr_b, g_xy)


def derive_skeyids(
    prf: Prf, skeyid: bytes, g_xy: bytes, cky_i: bytes, cky_r: bytes
) -> tuple[bytes, bytes, bytes]:
    """RFC 2409 §5: (SKEYID_d, SKEYID_a, SKEYID_e); the 0, 1, 2 are single octets.

    SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0)
    SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1)
    SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2)
    """
    tail = g_xy + _cookies(cky_i, cky_r)
    d = prf(skeyid, tail + b"\x00")
    a = prf(skeyid, d + tail + b"\x01")
    e = prf(skeyid, a + tail + b"\x02")
    return d, a, e


def _feedback(prf: Prf, key: bytes) -> Iterator[bytes]:
    block = prf(key, b"\x00")  # K1 = prf(SKEYID_e, 0), 0 as a single octet
    while True:
        yield block
        block = prf(key, block)  # Kn = prf(SKEYID_e, Kn-1)


def expand_key(prf: Prf, key: bytes, length: int) -> bytes:
    """RFC 2409 Appendix B: the first ``length`` bytes of Ka = K1 | K2 | ..., K1 = prf(key, 0)."""
    out = b""
    for block in _feedback(prf, key):
        if len(out) >= length:
            break
        out += block
    return out[:length]


_MAX_DES_CANDIDATES = 64


def encryption_key(prf: Prf, skeyid_e: bytes, suite: Cipher) -> bytes:
    """The cipher key Ka from SKEYID_e (RFC 2409 Appendix B).

    SKEYID_e itself when it is long enough (its first ``key_size`` bytes), otherwise the first
    bytes of the feedback expansion Ka = K1 | K2 | ... (3DES with any hash up to SHA-1, AES-192/256
    with short hashes). AES uses the negotiated Key Length, which ``suite.key_size`` carries.

    DES: "The key for DES-CBC is derived from the first eight (8) non-weak and non-semi-weak (see
    Appendix A) bytes of SKEYID_e." We read that as the first 8-byte slice of SKEYID_e (then of
    its expansion) that is not an Appendix A key, skipping whole slices as proposed on the IPsec
    list when the rule was drafted; SSH's toolkit slides one byte instead, strongSwan and racoon do
    not check. The two readings differ only with probability about 2^-52.
    """
    size = suite.key_size
    if not suite.has_weak_keys:
        if len(skeyid_e) >= size:
            return skeyid_e[:size]
        return expand_key(prf, skeyid_e, size)
    material = skeyid_e
    stream = _feedback(prf, skeyid_e)
    for index in range(_MAX_DES_CANDIDATES):
        while len(material) < (index + 1) * size:
            material += next(stream)
        candidate = material[index * size : (index + 1) * size]
        if not suite.is_weak_key(candidate):
            return candidate
    raise ProtocolError("no DES key outside the weak and semi-weak keys", notify=13)  # pragma: no cover


def hash_i(
    prf: Prf, skeyid: bytes, *, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sai_b: bytes, idii_b: bytes
) -> bytes:
    """RFC 2409 §5: HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b).

    SAi_b is the initiator's whole SA payload body as sent in message 1 (DOI, situation, every
    proposal and transform), IDii_b the initiator's ID payload body (ID type, protocol, port and
    data; "the entire ID payload ... excluding the generic header").
    """
    return prf(skeyid, g_xi + g_xr + _cookies(cky_i, cky_r) + sai_b + idii_b)


def hash_r(
    prf: Prf, skeyid: bytes, *, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sai_b: bytes, idir_b: bytes
) -> bytes:
    """RFC 2409 §5: HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b).

    Everything mirrored except SAi_b, which is still the *initiator's* SA body.
    """
    return prf(skeyid, g_xr + g_xi + _cookies(cky_r, cky_i) + sai_b + idir_b)


# --- phase 2 ---------------------------------------------------------------------------------


def qm_hash1(prf: Prf, skeyid_a: bytes, message_id: int, rest: bytes) -> bytes:
    """RFC 2409 §5.5: HASH(1) = prf(SKEYID_a, M-ID | rest).

    ``rest`` is the entire message after the HASH payload, "including all payload headers, but
    excluding any padding added for encryption" (SA, Ni [, KE] [, IDci, IDcr] as sent).
    """
    return prf(skeyid_a, _mid(message_id) + rest)


def qm_hash2(prf: Prf, skeyid_a: bytes, message_id: int, ni_b: bytes, rest: bytes) -> bytes:
    """RFC 2409 §5.5: HASH(2) = prf(SKEYID_a, M-ID | Ni_b | rest), Ni_b without its header."""
    return prf(skeyid_a, _mid(message_id) + ni_b + rest)


def qm_hash3(prf: Prf, skeyid_a: bytes, message_id: int, ni_b: bytes, nr_b: bytes) -> bytes:
    """RFC 2409 §5.5: HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b), 0 as a single octet."""
    return prf(skeyid_a, b"\x00" + _mid(message_id) + ni_b + nr_b)


def informational_hash(prf: Prf, skeyid_a: bytes, message_id: int, rest: bytes) -> bytes:
    """RFC 2409 §5.7: HASH(1) = prf(SKEYID_a, M-ID | N/D), N/D being the payloads after HASH.

    The M-ID is the Informational exchange's own, never that of the exchange that caused it.
    """
    return prf(skeyid_a, _mid(message_id) + rest)


def keymat(
    prf: Prf,
    skeyid_d: bytes,
    *,
    protocol: int,
    spi: bytes,
    ni_b: bytes,
    nr_b: bytes,
    length: int,
    g_qm_xy: bytes | None = None,
) -> bytes:
    """RFC 2409 §5.5: ``length`` bytes of KEYMAT = K1 | K2 | ... for one SA (one direction).

    K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b), Kn = prf(SKEYID_d, Kn-1 | same).
    ``protocol`` (one octet, ``ProtocolId``) and ``spi`` (as sent, 4 bytes for AH/ESP) come from
    the accepted Proposal payload. "The SPI chosen by the destination of the SA is used to derive
    KEYMAT for that SA": our inbound SA uses the SPI *we* chose, our outbound SA the peer's SPI
    (see ``Phase1Keys.child_keymat``). ``g_qm_xy`` is the Quick Mode DH secret when PFS was used.
    For ESP the encryption key is taken first, then the integrity key (RFC 4301 order).
    """
    if not 0 <= protocol <= 0xFF:
        raise UsageError(f"protocol {protocol} is not one octet")
    if length < 0:
        raise UsageError("KEYMAT length must not be negative")
    seed = (g_qm_xy or b"") + bytes([protocol]) + spi + ni_b + nr_b
    out = block = prf(skeyid_d, seed)
    while len(out) < length:
        block = prf(skeyid_d, block + seed)
        out += block
    return out[:length]


def natd_hash(
    hash_alg: Hash,
    cky_i: bytes,
    cky_r: bytes,
    address: str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
) -> bytes:
    """RFC 3947 §3.2: HASH(CKY-I | CKY-R | IP | Port) with the negotiated *hash* (not the prf).

    IP is 4 or 16 bytes, Port two bytes in network order.
    """
    if isinstance(address, bytes):
        if len(address) not in (4, 16):
            raise UsageError("an IP address is 4 or 16 bytes")
        packed = address
    else:
        packed = ipaddress.ip_address(address).packed
    if not 0 <= port <= 0xFFFF:
        raise UsageError(f"port {port} out of range")
    return hash_alg.digest(_cookies(cky_i, cky_r) + packed + port.to_bytes(2, "big"))


# --- the ISAKMP SA's key object --------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase1Keys:
    """Everything Main Mode derives, and the operations the later exchanges need from it.

    Secrets are kept out of ``repr``. Build it with ``from_psk`` / ``from_signature`` (or
    ``derive`` from a SKEYID computed elsewhere).
    """

    hash_alg: Hash
    cipher: Cipher
    skeyid: bytes = field(repr=False)
    skeyid_d: bytes = field(repr=False)
    skeyid_a: bytes = field(repr=False)
    skeyid_e: bytes = field(repr=False)
    enc_key: bytes = field(repr=False)

    @classmethod
    def derive(
        cls, *, hash_alg: Hash, cipher: Cipher, skeyid: bytes, g_xy: bytes, cky_i: bytes, cky_r: bytes
    ) -> Phase1Keys:
        """SKEYID_d/a/e and the encryption key from an already computed SKEYID."""
        d, a, e = derive_skeyids(hash_alg.prf, skeyid, g_xy, cky_i, cky_r)
        return cls(
            hash_alg=hash_alg, cipher=cipher, skeyid=skeyid, skeyid_d=d, skeyid_a=a, skeyid_e=e,
            enc_key=encryption_key(hash_alg.prf, e, cipher),
        )

    @classmethod
    def from_psk(
        cls, *, hash_alg: Hash, cipher: Cipher, psk: bytes, ni_b: bytes, nr_b: bytes, g_xy: bytes,
        cky_i: bytes, cky_r: bytes,
    ) -> Phase1Keys:
        """Keys for pre-shared-key authentication."""
        skeyid = skeyid_psk(hash_alg.prf, psk, ni_b, nr_b)
        return cls.derive(hash_alg=hash_alg, cipher=cipher, skeyid=skeyid, g_xy=g_xy, cky_i=cky_i, cky_r=cky_r)

    @classmethod
    def from_signature(
        cls, *, hash_alg: Hash, cipher: Cipher, ni_b: bytes, nr_b: bytes, g_xy: bytes, cky_i: bytes, cky_r: bytes
    ) -> Phase1Keys:
        """Keys for signature (certificate) and GSS-API (Kerberos) authentication."""
        skeyid = skeyid_sig(hash_alg.prf, ni_b, nr_b, g_xy)
        return cls.derive(hash_alg=hash_alg, cipher=cipher, skeyid=skeyid, g_xy=g_xy, cky_i=cky_i, cky_r=cky_r)

    def prf(self, key: bytes, data: bytes) -> bytes:
        """The negotiated prf (HMAC with the negotiated hash)."""
        return self.hash_alg.prf(key, data)

    def hash_i(
        self, *, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sai_b: bytes, idii_b: bytes
    ) -> bytes:
        """HASH_I under this SA's SKEYID (see the module function)."""
        return hash_i(
            self.hash_alg.prf, self.skeyid, g_xi=g_xi, g_xr=g_xr, cky_i=cky_i, cky_r=cky_r, sai_b=sai_b, idii_b=idii_b
        )

    def hash_r(
        self, *, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sai_b: bytes, idir_b: bytes
    ) -> bytes:
        """HASH_R under this SA's SKEYID (see the module function)."""
        return hash_r(
            self.hash_alg.prf, self.skeyid, g_xi=g_xi, g_xr=g_xr, cky_i=cky_i, cky_r=cky_r, sai_b=sai_b, idir_b=idir_b
        )

    def qm_hash1(self, message_id: int, rest: bytes) -> bytes:
        """Quick Mode HASH(1) under SKEYID_a."""
        return qm_hash1(self.hash_alg.prf, self.skeyid_a, message_id, rest)

    def qm_hash2(self, message_id: int, ni_b: bytes, rest: bytes) -> bytes:
        """Quick Mode HASH(2) under SKEYID_a."""
        return qm_hash2(self.hash_alg.prf, self.skeyid_a, message_id, ni_b, rest)

    def qm_hash3(self, message_id: int, ni_b: bytes, nr_b: bytes) -> bytes:
        """Quick Mode HASH(3) under SKEYID_a."""
        return qm_hash3(self.hash_alg.prf, self.skeyid_a, message_id, ni_b, nr_b)

    def informational_hash(self, message_id: int, rest: bytes) -> bytes:
        """Informational HASH(1) under SKEYID_a."""
        return informational_hash(self.hash_alg.prf, self.skeyid_a, message_id, rest)

    def keymat(
        self, *, protocol: int, spi: bytes, ni_b: bytes, nr_b: bytes, length: int, g_qm_xy: bytes | None = None
    ) -> bytes:
        """KEYMAT for the one SA whose destination chose ``spi``."""
        return keymat(
            self.hash_alg.prf, self.skeyid_d, protocol=protocol, spi=spi, ni_b=ni_b, nr_b=nr_b, length=length,
            g_qm_xy=g_qm_xy,
        )

    def child_keymat(
        self, *, protocol: int, spi_in: bytes, spi_out: bytes, ni_b: bytes, nr_b: bytes, length: int,
        g_qm_xy: bytes | None = None,
    ) -> tuple[bytes, bytes]:
        """(inbound, outbound) KEYMAT of one Quick Mode SA pair, from either side's point of view.

        ``spi_in`` is the SPI we chose (in our SA payload): packets sent *to us* carry it, so it
        keys our inbound SA. ``spi_out`` is the SPI the peer chose: it keys our outbound SA. The
        nonces keep their initiator-then-responder order on both sides, so the initiator's
        outbound key equals the responder's inbound key.
        """
        kwargs = {"protocol": protocol, "ni_b": ni_b, "nr_b": nr_b, "length": length, "g_qm_xy": g_qm_xy}
        return self.keymat(spi=spi_in, **kwargs), self.keymat(spi=spi_out, **kwargs)  # type: ignore[arg-type]

    def iv_manager(self, *, g_xi: bytes, g_xr: bytes, max_exchanges: int = 16) -> IvManager:
        """A fresh IV manager for this SA, seeded with hash(g^xi | g^xr)."""
        return IvManager(
            hash_alg=self.hash_alg,
            block_size=self.cipher.block_size,
            g_xi=g_xi,
            g_xr=g_xr,
            max_exchanges=max_exchanges,
        )

    def encrypt(self, iv: bytes, body: bytes) -> tuple[bytes, bytes]:
        """Pad and encrypt a body with Ka: (ciphertext, last block for ``IvManager.advance``)."""
        return encrypt_body(self.cipher, self.enc_key, iv, body)

    def decrypt(self, iv: bytes, ciphertext: bytes) -> tuple[bytes, bytes]:
        """Decrypt a message body with Ka: (plaintext with pad, last block to advance after auth)."""
        return decrypt_body(self.cipher, self.enc_key, iv, ciphertext)
