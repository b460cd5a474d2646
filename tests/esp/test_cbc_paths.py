"""The specialised CBC + HMAC paths (``espcore.cbc_paths``) against the general ones.

Properties, each for AES-CBC, 3DES-CBC and DES-CBC with HMACs of several sizes in transport,
IPv4 tunnel and IPv6 tunnel mode, with the same deterministic randomness on both sides: the
bytes out are the general path's (same IVs, same chaining); the answer to any inbound bytes
(genuine, mutated, replayed) is the general path's, with the same state after.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espcore import IntegrityError, ParseError, SecurityAssociation
from espcore.cbc_paths import trailers
from espcore.esp import make_engine
from espcore.transforms import cipher, integrity
from tests.esp.twins import (LIFETIME_IDS, LIFETIMES, MODE_IDS, MODES, SMALL, check_lifetimes,
                             check_protect, check_unprotect, plain_ipv4, state)

SLOW = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                deadline=None, max_examples=25)

SUITES = {
    "aes-cbc+sha1": dict(cipher="aes-cbc", cipher_key=bytes(range(16)), integrity="hmac-sha1-96",
                         integrity_key=bytes(range(20))),
    "aes-cbc-256+sha256": dict(cipher="aes-cbc-256", cipher_key=bytes(range(32)),
                               integrity="hmac-sha2-256-128", integrity_key=bytes(range(32))),
    "3des+sha512": dict(cipher="3des-cbc", cipher_key=bytes(range(1, 25)),
                        integrity="hmac-sha2-512-256", integrity_key=bytes(range(64))),
    "des+md5": dict(cipher="des-cbc", cipher_key=bytes(range(8, 16)),
                    integrity="hmac-md5-96", integrity_key=bytes(range(16))),
}
CASES = [(s, m) for s in SUITES for m in range(len(MODES))]
IDS = [f"{s}-{MODE_IDS[m]}" for s, m in CASES]


def _params(suite: str, mode: int, **extra) -> dict:
    return dict(spi=0x5151, **SUITES[suite], **MODES[mode], **extra)


@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
def test_the_specialised_class_is_chosen(suite, mode):
    """A CBC cipher with an HMAC, without ESN, gets a specialised class; without integrity or
    with ESN it does not."""
    assert type(SecurityAssociation(**_params(suite, mode))) is not SecurityAssociation
    assert type(SecurityAssociation(**_params(suite, mode, esn=True))) is SecurityAssociation
    bare = {k: v for k, v in _params(suite, mode).items() if not k.startswith("integrity")}
    assert type(SecurityAssociation(**bare)) is SecurityAssociation


@SLOW
@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
@given(packets=st.lists(plain_ipv4(), min_size=1, max_size=4))
def test_protect_is_the_general_path(suite, mode, packets):
    """protect and protect_payload give the general path's bytes (IV from the same random
    block and chain), errors and state."""
    check_protect(_params(suite, mode), packets)


@SLOW
@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
@given(packet=plain_ipv4(), data=st.data())
def test_unprotect_is_the_general_path(suite, mode, packet, data):
    """For genuine, replayed and mutated packets, unprotect and unprotect_payload answer as
    the general path does (result or error type and message) and leave the same state."""
    check_unprotect(_params(suite, mode), packet, data)


@pytest.mark.parametrize("lifetime", LIFETIMES, ids=LIFETIME_IDS)
@pytest.mark.parametrize("suite", ["aes-cbc+sha1", "3des+sha512"])
@pytest.mark.parametrize("mode", [0, 1], ids=MODE_IDS[:2])
def test_lifetimes_on_the_specialised_path(suite, mode, lifetime):
    """Soft and hard limits give the general path's events at the same packet, both ways."""
    check_lifetimes(_params(suite, mode, lifetime=lifetime))


def test_chaining_survives_forged_packets():
    """A forged packet is refused before decryption, so the decrypting context's chain is
    untouched and the next genuine packet opens; the receiver's state does not move."""
    sender, receiver = (SecurityAssociation(**_params("aes-cbc+sha1", 0)) for _ in range(2))
    first, second = sender.protect(SMALL), sender.protect(SMALL)
    forged = first[:40] + bytes((first[40] ^ 0x80,)) + first[41:]
    before = state(receiver)
    with pytest.raises(IntegrityError):
        receiver.unprotect(forged)
    assert state(receiver) == before
    assert receiver.unprotect(second) == SMALL and receiver.unprotect(first) == SMALL


def test_misaligned_ciphertext_is_the_general_parse_error():
    """A ciphertext that is not a whole number of blocks: ParseError, as on the general path."""
    sender, receiver = (SecurityAssociation(**_params("aes-cbc+sha1", 0)) for _ in range(2))
    esp = sender.protect_payload(b"z" * 30, 17)
    with pytest.raises(ParseError):
        receiver.unprotect_payload(esp[:-13] + esp[-12:])


@pytest.mark.parametrize("block", [8, 16])
def test_trailer_tables(block):
    """Each entry is RFC 4303 §2.4's trailer: payload + trailer fill whole blocks, padding is
    1, 2, 3..., then Pad Length and Next Header; the offset table indexes by length + 20."""
    shift = block.bit_length() - 1
    for table, offset in ((trailers(block), 0), (trailers(block, 20), 20)):
        for length in range(3 * block):
            for next_header in (0, 4, 17, 255):
                trailer = table[(next_header << shift) | ((length + offset) % block)]
                pad = len(trailer) - 2
                assert (length + len(trailer)) % block == 0 and pad < block
                assert trailer == bytes(range(1, pad + 1)) + bytes((pad, next_header))


def test_pad_length_beyond_the_payload_from_a_key_holder():
    """A correctly authenticated packet whose Pad Length exceeds its payload is a ParseError
    (RFC 4303 §2.4), even when the decrypted bytes before it happen to look like padding: the
    IV is chosen so that the discarded first output block ends in 1, and the block says
    2, 3, ... 15, Pad Length 15."""
    params = _params("aes-cbc+sha1", 0)
    key = params["cipher_key"]
    iv = Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(bytes(15) + b"\x01")
    engine = make_engine(cipher("aes-cbc"), key, integrity("hmac-sha1-96"),
                         params["integrity_key"], spi=params["spi"], esn=False)
    esp = b"".join(engine.seal(bytes(range(2, 16)) + bytes((15, 17)), 1, iv))
    for receiver in (SecurityAssociation(**params), SecurityAssociation(**params)):
        with pytest.raises(ParseError):
            receiver.unprotect_payload(esp)
        assert receiver.replay.top == 0 and receiver.packets_unprotected == 0
