"""ikeproto.dh: the group constants, agreement, determinism and the checks on peer values."""

from __future__ import annotations

import hashlib
import warnings

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from ikeproto import dh
from ikeproto.errors import ProtocolError, UsageError

MODP = {1: 768, 2: 1024, 5: 1536, 14: 2048, 15: 3072, 16: 4096}
# The "+ offset" of each prime's defining formula, as printed in RFC 2409 §6.1/6.2 and RFC 3526.
OFFSETS = {768: 149686, 1024: 129093, 1536: 741804, 2048: 124476, 3072: 1690314, 4096: 240904}
# SHA-256 of each prime's hexadecimal digits as printed in RFC 2409 §6 / RFC 3526 (spaces removed),
# taken from the RFC text when this test was written: any edit to a constant shows up here.
RFC_HEX_SHA256 = {
    1: "c00532299113ee0931f7197460f65d9a837c6c19b3ad9e9b923c22653895d455",
    2: "693daceaf10c4200894cbd5696b120faebc30f7c4a242a8cd915ca3e83e141db",
    5: "0a14e50abc56277fbf3d24ae174026486e91f013263cfde280c32577dcebe636",
    14: "dcd8538e629d7b8bc0dabdcda6744e0542bfb801d50305b2f6acf823b3d4e7ba",
    15: "2b2c15e1523695d748a2f56b3b81d59d23467b300f1879585be61f0addacdc45",
    16: "2349a6f8251156cbfade78ada6bd1e0c961a56847def4d288b6fdbd740016bff",
}
ALL_GROUPS = (1, 2, 5, 14, 15, 16, 19, 20, 31)


def seeded_rng(seed: bytes):
    """A deterministic rng(n): SHA-256 in counter mode over ``seed``."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


def floor_pi_times_2_pow(bits: int) -> int:
    """floor(pi * 2^bits) by Machin's formula in integers, with guard bits."""
    guard = 64
    one = 1 << (bits + guard)

    def arctan_inv(x: int) -> int:
        total = term = one // x
        n, sign, x2 = 1, -1, x * x
        while term:
            term //= x2
            n += 2
            total += sign * (term // n)
            sign = -sign
        return total

    return (4 * (4 * arctan_inv(5) - arctan_inv(239))) >> guard


def is_probable_prime(n: int, bases: tuple[int, ...] = (2, 3, 5)) -> bool:
    """Miller-Rabin with fixed bases (the numbers tested are published constants, not adversarial)."""
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


@pytest.mark.parametrize("number", sorted(MODP))
def test_modp_prime_matches_its_rfc_formula(number: int) -> None:
    """p = 2^s - 2^(s-64) - 1 + 2^64 * (floor(2^(s-130) pi) + offset), the RFCs' own definition."""
    s = MODP[number]
    grp = dh.group(number)
    expected = 2**s - 2 ** (s - 64) - 1 + 2**64 * (floor_pi_times_2_pow(s - 130) + OFFSETS[s])
    assert grp.prime == expected
    assert grp.prime.bit_length() == s and grp.public_length == s // 8 and grp.generator == 2


@pytest.mark.parametrize("number", sorted(MODP))
def test_modp_prime_hex_matches_rfc_text_digest(number: int) -> None:
    """The constant's hex digits hash to the digest taken from the RFC text."""
    digits = format(dh.group(number).prime, "X")
    assert hashlib.sha256(digits.encode()).hexdigest() == RFC_HEX_SHA256[number]


@pytest.mark.parametrize("number", sorted(MODP))
def test_modp_prime_is_a_safe_prime(number: int) -> None:
    """p and q = (p-1)/2 pass Miller-Rabin: the 0/1/p-1 checks then cover every small subgroup."""
    p = dh.group(number).prime
    assert is_probable_prime(p) and is_probable_prime((p - 1) // 2)


@pytest.mark.parametrize(("number", "curve"), [(19, ec.SECP256R1()), (20, ec.SECP384R1())])
def test_ecp_group_order_is_the_curve_order(number: int, curve: ec.EllipticCurve) -> None:
    """cryptography accepts n-1 and refuses n as a private scalar, pinning the order constant."""
    order = dh.group(number).order
    ec.derive_private_key(order - 1, curve)
    with pytest.raises(ValueError):
        ec.derive_private_key(order, curve)


@pytest.mark.parametrize(
    ("number", "public_length", "secret_length"),
    [(1, 96, 96), (2, 128, 128), (5, 192, 192), (14, 256, 256), (15, 384, 384), (16, 512, 512),
     (19, 64, 32), (20, 96, 48), (31, 32, 32)],
)
def test_two_sides_agree(number: int, public_length: int, secret_length: int) -> None:
    """Both sides compute the same g^xy, of the RFC lengths, from each other's KE values."""
    grp = dh.group(number)
    assert (grp.number, grp.public_length, grp.secret_length) == (number, public_length, secret_length)
    a, b = grp.generate(), grp.generate()
    assert len(a.public_value) == public_length and a.public_value != b.public_value
    shared = a.compute(b.public_value)
    assert shared == b.compute(a.public_value) and len(shared) == secret_length


@pytest.mark.parametrize("number", ALL_GROUPS)
def test_injected_rng_makes_keys_deterministic(number: int) -> None:
    """The same rng stream gives the same public value; another stream gives another."""
    grp = dh.group(number)
    first = grp.generate(seeded_rng(b"one")).public_value
    assert grp.generate(seeded_rng(b"one")).public_value == first
    assert grp.generate(seeded_rng(b"two")).public_value != first


def test_short_rng_output_is_a_usage_error() -> None:
    """An rng that returns fewer bytes than asked is local misuse, not a weak key."""
    with pytest.raises(UsageError):
        dh.group(14).generate(lambda n: bytes(n - 1))


@pytest.mark.parametrize("number", sorted(MODP))
def test_modp_public_value_is_g_to_the_x(number: int) -> None:
    """Feeding the generator back as peer value gives our own public value (g^x), zero-padded."""
    grp = dh.group(number)
    mine = grp.generate(seeded_rng(b"g"))
    assert mine.compute((2).to_bytes(grp.public_length, "big")) == mine.public_value


def test_python_and_openssl_modp_paths_agree() -> None:
    """Group 14 through Python's pow() and through OpenSSL gives the same g^xy."""
    python_only = dh._ModpGroup(
        number=14, name="MODP-2048", prime_hex=dh._MODP_2048, exponent_bits=256, openssl=False
    )
    a = python_only.generate(seeded_rng(b"a"))
    b = dh.group(14).generate(seeded_rng(b"b"))
    assert a.compute(b.public_value) == b.compute(a.public_value)
    assert a.public_value == dh.group(14).generate(seeded_rng(b"a")).public_value


@given(st.integers(min_value=0, max_value=2**160 - 1))
def test_fixed_base_table_equals_pow(x: int) -> None:
    """The window table computes exactly 2^x mod p for every exponent the groups draw."""
    for number in (1, 2):
        grp = dh.group(number)
        assert grp.power_of_generator(x) == pow(2, x, grp.prime)


def test_fixed_base_falls_back_to_pow_for_long_exponents() -> None:
    """Exponents beyond the table still give the right answer."""
    grp = dh.group(2)
    x = 2**400 + 12345
    assert grp.power_of_generator(x) == pow(2, x, grp.prime)


@pytest.mark.parametrize("number", sorted(MODP))
def test_modp_rejects_unsafe_public_values(number: int) -> None:
    """Wrong length, 0, 1, p-1, p and 2^s-1 are INVALID-KEY-INFORMATION; state is unchanged."""
    grp = dh.group(number)
    mine = grp.generate(seeded_rng(b"x"))
    p, n = grp.prime, grp.public_length
    bad = [
        b"",
        (5).to_bytes(n - 1, "big"),  # RFC 2409 §5: not zero-prefixed to the group length
        (5).to_bytes(n + 1, "big"),
        bytes(n),
        (1).to_bytes(n, "big"),
        (p - 1).to_bytes(n, "big"),
        p.to_bytes(n, "big"),
        b"\xff" * n,
    ]
    for value in bad:
        with pytest.raises(dh.InvalidPublicValue) as info:
            mine.compute(value)
        assert info.value.notify == dh.INVALID_KEY_INFORMATION == 17
        assert isinstance(info.value, ProtocolError)
        with pytest.raises(dh.InvalidPublicValue):
            grp.check_public(value)
    # A valid small value still works afterwards: a refused value changed nothing.
    assert mine.compute((2).to_bytes(n, "big")) == mine.public_value
    assert mine.compute((p - 2).to_bytes(n, "big"))


def _generator_xy(curve: ec.EllipticCurve) -> bytes:
    point = ec.derive_private_key(1, curve).public_key()
    return point.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]


@pytest.mark.parametrize(("number", "curve"), [(19, ec.SECP256R1()), (20, ec.SECP384R1())])
def test_ecp_public_value_is_x_y_and_secret_is_x(number: int, curve: ec.EllipticCurve) -> None:
    """RFC 5903 §7/§9: KE = x | y (no 0x04); d*G computed against G itself gives our own x."""
    grp = dh.group(number)
    mine = grp.generate(seeded_rng(b"e"))
    assert mine.compute(_generator_xy(curve)) == mine.public_value[: grp.secret_length]


@pytest.mark.parametrize(("number", "curve"), [(19, ec.SECP256R1()), (20, ec.SECP384R1())])
def test_ecp_rejects_points_off_the_curve(number: int, curve: ec.EllipticCurve) -> None:
    """Wrong length, (0, 0), a moved y, the 0x04-prefixed form and coordinates >= p are refused."""
    grp = dh.group(number)
    mine = grp.generate(seeded_rng(b"e"))
    g = _generator_xy(curve)
    half = grp.field_length
    moved_y = g[:half] + (int.from_bytes(g[half:], "big") ^ 1).to_bytes(half, "big")
    bad = [b"", g[:-1], b"\x04" + g, bytes(2 * half), moved_y, b"\xff" * (2 * half)]
    for value in bad:
        with pytest.raises(dh.InvalidPublicValue) as info:
            mine.compute(value)
        assert info.value.notify == 17
        with pytest.raises(dh.InvalidPublicValue):
            grp.check_public(value)  # the early check the exchange layer can run on receipt
    grp.check_public(g)


def test_x25519_secret_and_low_order_points() -> None:
    """RFC 8031: 32-byte values; the base point 9 gives our own public value; zero results refused."""
    grp = dh.group(31)
    mine = grp.generate(seeded_rng(b"c"))
    assert mine.compute((9).to_bytes(32, "little")) == mine.public_value
    low_order = [bytes(32), (1).to_bytes(32, "little")]
    for value in [b"", bytes(31), bytes(33), *low_order]:
        with pytest.raises(dh.InvalidPublicValue) as info:
            mine.compute(value)
        assert info.value.notify == 17


@pytest.mark.parametrize("number", [0, 3, 4, 17, 18, 21, 24, 32, 65535])
def test_unknown_group_is_a_typed_error(number: int) -> None:
    """Groups we do not implement (EC2N 3/4, MODP 17/18, ...) raise ATTRIBUTES-NOT-SUPPORTED."""
    with pytest.raises(dh.UnsupportedGroup) as info:
        dh.group(number)
    assert info.value.notify == 13


def test_supported_groups_is_the_issue_list() -> None:
    """Exactly the groups the issue asks for."""
    assert sorted(dh.supported_groups()) == sorted(ALL_GROUPS)


def test_private_value_never_in_repr() -> None:
    """repr() shows the group only: no exponent, key or public bytes."""
    mine = dh.group(2).generate(seeded_rng(b"r"))
    text = repr(mine) + repr(mine.group)
    assert "2" in text and mine.public_value.hex()[:16] not in text and str(mine._x) not in text


def test_no_deprecation_warning_escapes() -> None:
    """cryptography's FFDH deprecation warning stays inside dh (the groups are mandated)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        a, b = dh.group(14).generate(), dh.group(14).generate()
        a.compute(b.public_value)
    assert [str(w.message) for w in seen] == []
