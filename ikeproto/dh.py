"""Diffie-Hellman groups for IKEv1, by their IANA Group Description number.

Owns: the group registry (``group(number)``), key generation from an injected ``rng``, the
KE-payload encoding of public values, the checks on a peer's public value, and the shared secret
g^xy as RFC 2409 and RFC 5903 feed it to the prf.

- MODP groups 1, 2 (RFC 2409 §6.1, §6.2) and 5, 14, 15, 16 (RFC 3526 §2-§5), generator 2. The
  public value and g^xy are big-endian and zero-padded to the prime's length: RFC 2409 §5 "The
  Diffie-Hellman public value passed in a KE payload ... MUST be the length of the negotiated
  Diffie-Hellman group enforced, if necessary, by pre-pending the value with zeros."
- ECP groups 19 (P-256) and 20 (P-384), RFC 5903 §7: the KE payload is x | y without the point
  format byte; RFC 5903 §9: g^xy is the x coordinate only.
- Group 31 (Curve25519), RFC 8031 §2: 32-byte public value and secret; an all-zero secret MUST be
  refused (RFC 8031 §2.3, low-order points).

A bad peer value raises ``InvalidPublicValue`` (Notify INVALID-KEY-INFORMATION, RFC 2408 §3.14.1);
an unknown group raises ``UnsupportedGroup`` (ATTRIBUTES-NOT-SUPPORTED).

Cost (measured with cryptography 50 / OpenSSL 3): building a ``cryptography`` DH key for a prime
OpenSSL does not know as a named group (groups 1 and 2) runs OpenSSL's prime checks every time,
20-40 ms per public or private key, whichever way it is loaded (numbers, DER, PKCS#8). Groups 1
and 2 therefore run in Python: g^x from a fixed-base window table, y^x with ``pow()``. OpenSSL
knows the RFC 3526 primes as named groups, so groups 5-16 go through ``cryptography`` with keys
loaded from DER built here (no prime checks), falling back to Python if that backend is ever
missing. Private exponents: RFC 3526 §1 asks for "double the entropy of the strength" of the group.
Groups 1 and 2 are "approximately as strong as a symmetric key of 70-80 bits" (RFC 3526 §1): 160
bits. Groups 5-16: twice the NIST SP 800-56A strength, never under 256 bits (256, 256, 256, 304),
as OpenSSL does for its named groups. Timing is not constant (neither is ``pow``).

Does not own: the KE payload codec, which group a proposal may use, and key derivation.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cryptography.exceptions import UnsupportedAlgorithm as _BackendUnsupported
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.utils import CryptographyDeprecationWarning

from ikeproto.crypto import UnsupportedAlgorithm
from ikeproto.errors import ProtocolError, UsageError

try:
    from cryptography.hazmat.primitives.asymmetric import dh as _crypto_dh
except ImportError:  # pragma: no cover - FFDH is deprecated in cryptography and may go away
    _crypto_dh = None

__all__ = [
    "INVALID_KEY_INFORMATION",
    "DhGroup",
    "DhPrivate",
    "InvalidPublicValue",
    "Rng",
    "UnsupportedGroup",
    "group",
    "supported_groups",
]

Rng = Callable[[int], bytes]

INVALID_KEY_INFORMATION = 17  # RFC 2408 §3.14.1


class InvalidPublicValue(ProtocolError):
    """A peer's KE value is malformed or unsafe (wrong length, 0, 1, p-1, >= p, off the curve)."""

    notify = INVALID_KEY_INFORMATION


class UnsupportedGroup(UnsupportedAlgorithm):
    """A Group Description this implementation does not offer."""


def _draw(rng: Rng, n: int) -> bytes:
    data = rng(n)
    if not isinstance(data, bytes | bytearray) or len(data) != n:
        raise UsageError(f"rng({n}) must return exactly {n} bytes")
    return bytes(data)


class DhGroup(ABC):
    """One Diffie-Hellman group: ``number`` (IANA), ``public_length`` (KE payload bytes)."""

    __slots__ = ("name", "number", "public_length", "secret_length")

    def __init__(self, *, number: int, name: str, public_length: int, secret_length: int) -> None:
        self.number = number
        self.name = name
        self.public_length = public_length
        self.secret_length = secret_length

    def __repr__(self) -> str:
        return f"<DhGroup {self.number} {self.name}>"

    @abstractmethod
    def generate(self, rng: Rng | None = None) -> DhPrivate:
        """A fresh key pair drawn from ``rng(n) -> bytes`` (``os.urandom`` by default)."""

    def check_public(self, peer_public: bytes) -> None:
        """Raise ``InvalidPublicValue`` unless ``peer_public`` is a valid KE value of this group.

        MODP: length, then not 0, 1, p-1 or >= p. ECP: length, then on the curve. Curve25519:
        length only; ``compute`` refuses the low-order points by their all-zero result.
        """
        if len(peer_public) != self.public_length:
            # RFC 2409 §5: the KE value MUST be the length of the group (zero-prefixed).
            raise InvalidPublicValue(
                f"group {self.number}: KE value is {len(peer_public)} bytes, expected {self.public_length}"
            )


class DhPrivate(ABC):
    """Our half of one exchange: ``public_value`` goes in the KE payload; ``compute`` gives g^xy."""

    __slots__ = ("group", "public_value")

    def __init__(self, group: DhGroup, public_value: bytes) -> None:
        self.group = group
        self.public_value = public_value

    def __repr__(self) -> str:  # never show the private part
        return f"<DhPrivate group {self.group.number}>"

    @abstractmethod
    def compute(self, peer_public: bytes) -> bytes:
        """g^xy from the peer's KE value, after ``check_public``; bad values raise typed errors."""


# --- MODP ------------------------------------------------------------------------------------


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


@contextmanager
def _quiet_ffdh() -> Iterator[None]:
    # cryptography >= 46 warns on every finite-field DH call; the groups are mandated by IKEv1.
    # (catch_warnings costs about 2.5 us and is process-global: the core runs on one thread.)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        yield


_OID_DH_KEY_AGREEMENT = bytes.fromhex("06092a864886f70d010301")  # 1.2.840.113549.1.3.1 (PKCS #3)
_WINDOW = 4  # bits per digit of the fixed-base table (group 2: 40 rows of 16 values, 80 KB)


class _ModpGroup(DhGroup):
    __slots__ = ("exponent_bits", "generator", "prime", "_algorithm_id", "_table", "_use_openssl")

    def __init__(self, *, number: int, name: str, prime_hex: str, exponent_bits: int, openssl: bool) -> None:
        prime = int("".join(prime_hex.split()), 16)
        length = (prime.bit_length() + 7) // 8
        super().__init__(number=number, name=name, public_length=length, secret_length=length)
        self.prime = prime
        self.generator = 2
        self.exponent_bits = exponent_bits
        # PKCS #3 AlgorithmIdentifier, reused for every PKCS #8 private and SPKI public key.
        self._algorithm_id = _der(0x30, _OID_DH_KEY_AGREEMENT + _der(0x30, _der_int(prime) + _der_int(2)))
        self._use_openssl = openssl and _crypto_dh is not None
        self._table: list[list[int]] | None = None

    def generate(self, rng: Rng | None = None) -> DhPrivate:
        draw = rng or os.urandom
        nbytes = self.exponent_bits // 8
        while True:  # x uniform in [2, 2^bits - 1]; 0 and 1 would give public values 1 and 2^0
            x = int.from_bytes(_draw(draw, nbytes), "big")
            if x > 1:
                break
        if self._use_openssl:
            try:
                return self._generate_openssl(x)
            except (ValueError, TypeError, _BackendUnsupported):  # pragma: no cover - no FFDH backend
                self._use_openssl = False
        return _ModpPrivate(self, x, self.power_of_generator(x).to_bytes(self.public_length, "big"), None)

    def power_of_generator(self, x: int) -> int:
        """g^x mod p with a fixed-base window table (about 3.5x faster than ``pow(2, x, p)``).

        Row i of the table holds g^(d * 2^(w*i)) for every w-bit digit d, so g^x is one modular
        multiplication per non-zero digit of x. Built on first use: 2^w * ceil(bits / w) values.
        """
        if x.bit_length() > self.exponent_bits:
            return pow(self.generator, x, self.prime)
        table = self._table
        if table is None:
            table = self._table = self._build_table()
        acc, row, mask, p = 1, 0, (1 << _WINDOW) - 1, self.prime
        while x:
            digit = x & mask
            if digit:
                acc = acc * table[row][digit] % p
            x >>= _WINDOW
            row += 1
        return acc

    def _build_table(self) -> list[list[int]]:
        table, base, p = [], self.generator, self.prime
        for _ in range(-(-self.exponent_bits // _WINDOW)):
            powers = [1]
            for _ in range((1 << _WINDOW) - 1):
                powers.append(powers[-1] * base % p)
            table.append(powers)
            base = powers[-1] * base % p  # g^(2^(w*(i+1)))
        return table

    def _generate_openssl(self, x: int) -> DhPrivate:
        pkcs8 = _der(0x30, _der_int(0) + self._algorithm_id + _der(0x04, _der_int(x)))
        with _quiet_ffdh():
            key = serialization.load_der_private_key(pkcs8, password=None)
            y = key.public_key().public_numbers().y  # type: ignore[union-attr]
        return _ModpPrivate(self, x, y.to_bytes(self.public_length, "big"), key)

    def check_public(self, peer_public: bytes) -> None:
        super().check_public(peer_public)
        y = int.from_bytes(peer_public, "big")
        # 0 and >= p are not group elements; 1 and p-1 generate the subgroups of order 1 and 2,
        # the only small subgroups of a safe prime (p = 2q + 1), so g^xy would be guessable.
        if y <= 1 or y >= self.prime - 1:
            raise InvalidPublicValue(f"group {self.number}: KE value is 0, 1, p-1 or not below p")

    def public_key_der(self, y: int) -> bytes:
        """SubjectPublicKeyInfo DER for ``y`` (lets OpenSSL load a peer value without checks)."""
        return _der(0x30, self._algorithm_id + _der(0x03, b"\x00" + _der_int(y)))


class _ModpPrivate(DhPrivate):
    __slots__ = ("_key", "_x")

    def __init__(self, group: _ModpGroup, x: int, public_value: bytes, key: object | None) -> None:
        super().__init__(group, public_value)
        self._x = x
        self._key = key

    def compute(self, peer_public: bytes) -> bytes:
        grp = self.group
        assert isinstance(grp, _ModpGroup)
        grp.check_public(peer_public)
        y = int.from_bytes(peer_public, "big")
        if self._key is not None:
            try:
                with _quiet_ffdh():
                    peer = serialization.load_der_public_key(grp.public_key_der(y))
                    secret = self._key.exchange(peer)  # type: ignore[attr-defined]
            except ValueError as exc:
                raise InvalidPublicValue(f"group {grp.number}: KE value refused by the DH backend") from exc
            return secret.rjust(grp.secret_length, b"\x00")
        return pow(y, self._x, grp.prime).to_bytes(grp.secret_length, "big")


# --- ECP (RFC 5903) and Curve25519 (RFC 8031) ------------------------------------------------


class _EcpGroup(DhGroup):
    __slots__ = ("curve", "order", "field_length")

    def __init__(self, *, number: int, name: str, curve: ec.EllipticCurve, order: int) -> None:
        field_length = (curve.key_size + 7) // 8
        super().__init__(number=number, name=name, public_length=2 * field_length, secret_length=field_length)
        self.curve = curve
        self.order = order
        self.field_length = field_length

    def generate(self, rng: Rng | None = None) -> DhPrivate:
        draw = rng or os.urandom
        # FIPS 186-4 B.4.1: 64 extra random bits, then reduce into [1, n-1] with negligible bias.
        d = int.from_bytes(_draw(draw, self.field_length + 8), "big") % (self.order - 1) + 1
        key = ec.derive_private_key(d, self.curve)
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return _EcpPrivate(self, point[1:], key)  # RFC 5903 §7: x | y, no 0x04 format octet

    def check_public(self, peer_public: bytes) -> None:
        self.load_public(peer_public)

    def load_public(self, peer_public: bytes) -> ec.EllipticCurvePublicKey:
        """The peer's point, refused unless it has the right length and lies on the curve."""
        DhGroup.check_public(self, peer_public)
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(self.curve, b"\x04" + peer_public)
        except ValueError as exc:
            raise InvalidPublicValue(f"group {self.number}: KE value is not a point on {self.name}") from exc


class _EcpPrivate(DhPrivate):
    __slots__ = ("_key",)

    def __init__(self, group: _EcpGroup, public_value: bytes, key: ec.EllipticCurvePrivateKey) -> None:
        super().__init__(group, public_value)
        self._key = key

    def compute(self, peer_public: bytes) -> bytes:
        grp = self.group
        assert isinstance(grp, _EcpGroup)
        peer = grp.load_public(peer_public)
        try:
            return self._key.exchange(ec.ECDH(), peer)  # RFC 5903 §9: the x coordinate only
        except ValueError as exc:  # pragma: no cover - a validated point never fails here
            raise InvalidPublicValue(f"group {grp.number}: ECDH failed") from exc


class _X25519Group(DhGroup):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(number=31, name="Curve25519", public_length=32, secret_length=32)

    def generate(self, rng: Rng | None = None) -> DhPrivate:
        key = x25519.X25519PrivateKey.from_private_bytes(_draw(rng or os.urandom, 32))  # clamped inside
        return _X25519Private(self, key.public_key().public_bytes_raw(), key)


class _X25519Private(DhPrivate):
    __slots__ = ("_key",)

    def __init__(self, group: _X25519Group, public_value: bytes, key: x25519.X25519PrivateKey) -> None:
        super().__init__(group, public_value)
        self._key = key

    def compute(self, peer_public: bytes) -> bytes:
        self.group.check_public(peer_public)
        try:
            secret = self._key.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # OpenSSL refuses an all-zero result itself
            raise InvalidPublicValue("group 31: X25519 result is all zero (low-order point)") from exc
        if not any(secret):  # RFC 8031 §2.3: MUST check for the all-zero value and abort
            raise InvalidPublicValue("group 31: X25519 result is all zero (low-order point)")
        return secret


# --- the registry ----------------------------------------------------------------------------

# RFC 2409 §6.1 (2^768 - 2^704 - 1 + 2^64 * { [2^638 pi] + 149686 })
_MODP_768 = """
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A63A3620 FFFFFFFF FFFFFFFF"""
# RFC 2409 §6.2 (2^1024 - 2^960 - 1 + 2^64 * { [2^894 pi] + 129093 })
_MODP_1024 = """
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE65381
    FFFFFFFF FFFFFFFF"""
# RFC 3526 §2 (2^1536 - 2^1472 - 1 + 2^64 * { [2^1406 pi] + 741804 })
_MODP_1536 = """
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA237327 FFFFFFFF FFFFFFFF"""
# RFC 3526 §3 (2^2048 - 2^1984 - 1 + 2^64 * { [2^1918 pi] + 124476 })
_MODP_2048 = """
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B
    E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9
    DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
    15728E5A 8AACAA68 FFFFFFFF FFFFFFFF"""
# RFC 3526 §4 (2^3072 - 2^3008 - 1 + 2^64 * { [2^2942 pi] + 1690314 })
_MODP_3072 = """
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B
    E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9
    DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
    15728E5A 8AAAC42D AD33170D 04507A33 A85521AB DF1CBA64
    ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7
    ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B
    F12FFA06 D98A0864 D8760273 3EC86A64 521F2B18 177B200C
    BBE11757 7A615D6C 770988C0 BAD946E2 08E24FA0 74E5AB31
    43DB5BFC E0FD108E 4B82D120 A93AD2CA FFFFFFFF FFFFFFFF"""
# RFC 3526 §5 (2^4096 - 2^4032 - 1 + 2^64 * { [2^3966 pi] + 240904 })
_MODP_4096 = """
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B
    E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9
    DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
    15728E5A 8AAAC42D AD33170D 04507A33 A85521AB DF1CBA64
    ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7
    ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B
    F12FFA06 D98A0864 D8760273 3EC86A64 521F2B18 177B200C
    BBE11757 7A615D6C 770988C0 BAD946E2 08E24FA0 74E5AB31
    43DB5BFC E0FD108E 4B82D120 A9210801 1A723C12 A787E6D7
    88719A10 BDBA5B26 99C32718 6AF4E23C 1A946834 B6150BDA
    2583E9CA 2AD44CE8 DBBBC2DB 04DE8EF9 2E8EFC14 1FBECAA6
    287C5947 4E6BC05D 99B2964F A090C3A2 233BA186 515BE7ED
    1F612970 CEE2D7AF B81BDD76 2170481C D0069127 D5B05AA9
    93B4EA98 8D8FDDC1 86FFB7DC 90A6C08F 4DF435C9 34063199
    FFFFFFFF FFFFFFFF"""

# Group orders n (SEC 2 / FIPS 186-4 D.1.2.3, D.1.2.4); used only to draw d in [1, n-1].
_P256_ORDER = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
_P384_ORDER = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
)

_GROUPS: dict[int, DhGroup] = {
    g.number: g
    for g in (
        _ModpGroup(number=1, name="MODP-768", prime_hex=_MODP_768, exponent_bits=160, openssl=False),
        _ModpGroup(number=2, name="MODP-1024", prime_hex=_MODP_1024, exponent_bits=160, openssl=False),
        _ModpGroup(number=5, name="MODP-1536", prime_hex=_MODP_1536, exponent_bits=256, openssl=True),
        _ModpGroup(number=14, name="MODP-2048", prime_hex=_MODP_2048, exponent_bits=256, openssl=True),
        _ModpGroup(number=15, name="MODP-3072", prime_hex=_MODP_3072, exponent_bits=256, openssl=True),
        _ModpGroup(number=16, name="MODP-4096", prime_hex=_MODP_4096, exponent_bits=304, openssl=True),
        _EcpGroup(number=19, name="ECP-256", curve=ec.SECP256R1(), order=_P256_ORDER),
        _EcpGroup(number=20, name="ECP-384", curve=ec.SECP384R1(), order=_P384_ORDER),
        _X25519Group(),
    )
}


def group(number: int) -> DhGroup:
    """The group for a Group Description value, or ``UnsupportedGroup``."""
    found = _GROUPS.get(number)
    if found is None:
        raise UnsupportedGroup(f"Diffie-Hellman group {number} is not supported")
    return found


def supported_groups() -> tuple[int, ...]:
    """The Group Description values this module implements."""
    return tuple(_GROUPS)
