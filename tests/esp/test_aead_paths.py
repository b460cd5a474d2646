"""The specialised AEAD paths (``espcore.aead_paths``) against the general ones.

Properties, each for AES-GCM-16 and ChaCha20-Poly1305 in transport, IPv4 tunnel and IPv6 tunnel
mode: the bytes out are the general path's; the answer to any inbound bytes (genuine, mutated,
replayed) is the general path's, error type and message included, with the same state after.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espcore import IntegrityError, ParseError, ReplayError, SecurityAssociation, UsageError
from espcore.esp import make_engine
from espcore.transforms import cipher
from tests.esp.twins import (GENERAL, LIFETIME_IDS, LIFETIMES, MODE_IDS, MODES, SMALL,
                             check_lifetimes, check_protect, check_unprotect, outcome,
                             plain_ipv4, state, twins)

SLOW = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                deadline=None, max_examples=30)

SUITES = {"aes-gcm-16": dict(cipher="aes-gcm-16", cipher_key=bytes(range(20))),
          "chacha20-poly1305": dict(cipher="chacha20-poly1305", cipher_key=bytes(range(36)))}
CASES = [(s, m) for s in SUITES for m in range(len(MODES))]
IDS = [f"{s}-{MODE_IDS[m]}" for s, m in CASES]


def _params(suite: str, mode: int, **extra) -> dict:
    return dict(spi=0x4242, **SUITES[suite], **MODES[mode], **extra)


@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
def test_the_specialised_class_is_chosen(suite, mode):
    """GCM-16 and ChaCha20-Poly1305 without ESN get a specialised class; ESN does not."""
    sa = SecurityAssociation(**_params(suite, mode))
    assert type(sa) is not SecurityAssociation and isinstance(sa, SecurityAssociation)
    assert type(SecurityAssociation(**_params(suite, mode, esn=True))) is SecurityAssociation


@SLOW
@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
@given(packets=st.lists(plain_ipv4(), min_size=1, max_size=5))
def test_protect_is_the_general_path(suite, mode, packets):
    """protect and protect_payload give the general path's bytes, errors and state."""
    check_protect(_params(suite, mode), packets)


@SLOW
@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
@given(packet=plain_ipv4(), data=st.data())
def test_unprotect_is_the_general_path(suite, mode, packet, data):
    """For genuine, replayed and mutated packets, unprotect and unprotect_payload answer as
    the general path does (result or error type and message) and leave the same state."""
    check_unprotect(_params(suite, mode), packet, data)


@pytest.mark.parametrize("suite", SUITES)
def test_forged_and_replayed_packets_change_nothing(suite):
    """On the specialised path too: an ICV failure or a replay raises and moves nothing."""
    sender, receiver = (SecurityAssociation(**_params(suite, 0)) for _ in range(2))
    packet = SMALL
    genuine = sender.protect(packet)
    forged = genuine[:-1] + bytes((genuine[-1] ^ 1,))
    with pytest.raises(IntegrityError):
        receiver.unprotect(forged)
    assert state(receiver) == state(SecurityAssociation(**_params(suite, 0)))
    assert receiver.unprotect(genuine) == packet
    before = state(receiver)
    with pytest.raises(ReplayError):
        receiver.unprotect(genuine)
    assert state(receiver) == before


def test_in_order_packets_after_a_gap_keep_the_window_exact():
    """The full-window shortcut: after a gap the bitmap has a hole until it slides out, and
    the hole is still accepted once and only once."""
    sender, receiver = (SecurityAssociation(**_params("aes-gcm-16", 0, replay_window=32))
                        for _ in range(2))
    packet = SMALL
    out = [sender.protect(packet) for _ in range(100)]
    for i in range(40):
        receiver.unprotect(out[i])
    assert receiver.replay.bitmap == receiver.replay.mask
    for i in range(41, 60):  # seq 41 (index 40) is missing
        receiver.unprotect(out[i])
    assert not receiver.replay.seen(41) and receiver.replay.seen(60)
    assert receiver.unprotect(out[40]) == packet
    with pytest.raises(ReplayError):
        receiver.unprotect(out[40])
    for i in range(60, 100):
        receiver.unprotect(out[i])
    assert receiver.replay.bitmap == receiver.replay.mask and receiver.replay.top == 100


def _ipv4_of(total: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0, bytes(4),
                       bytes(4)) + bytes(total - 20)


@pytest.mark.parametrize("mode", [0, 1], ids=MODE_IDS[:2])
def test_the_65535_byte_limit_is_the_general_paths(mode):
    """Near 65535 bytes once protected: the same packets or the same UsageError as the general
    path (no sequence number used by a refused packet). A truncated ESP packet: its
    ParseError."""
    fast, general = twins(_params("aes-gcm-16", mode))
    refused = 0
    for total in range(0xFFFF - 60, 0xFFFF - 30):
        packet = _ipv4_of(total)
        result = outcome(lambda: fast.protect(packet))
        assert result == outcome(lambda: GENERAL.protect(general, packet))
        assert state(fast) == state(general)
        refused += isinstance(result, tuple) and result[0] is UsageError
    assert refused
    with pytest.raises(ParseError):
        fast.unprotect(bytes.fromhex("4500002400010000403200000a0000010a000002") + bytes(16))


@pytest.mark.parametrize("lifetime", LIFETIMES, ids=LIFETIME_IDS)
@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
def test_lifetimes_on_the_specialised_path(suite, mode, lifetime):
    """Soft and hard limits reached on the fast paths, both ways and at the payload level,
    raise the same events at the same packet as on the general path; after the hard limit
    both refuse with the same error."""
    check_lifetimes(_params(suite, mode, lifetime=lifetime))


@pytest.mark.parametrize("body", [bytes(range(1, 7)) + bytes((9, 17)), bytes((2, 17)),
                                  bytes((1, 2, 3, 4, 4, 17)), bytes((1, 3, 2, 17))],
                         ids=["pad-length-beyond", "pad-length-2-of-2", "good-but-4", "order"])
def test_trailers_from_a_key_holder(body):
    """Authentic packets with trailers a sender could only make on purpose: the fast path
    accepts what the general path accepts and raises its ParseError otherwise."""
    params = _params("aes-gcm-16", 0)
    engine = make_engine(cipher("aes-gcm-16"), params["cipher_key"], None, b"",
                         spi=params["spi"], esn=False)
    esp = b"".join(engine.seal(body, 1, None))
    fast, general = twins(params)
    assert outcome(lambda: fast.unprotect_payload(esp)) == outcome(
        lambda: GENERAL.unprotect_payload(general, esp))
    assert state(fast) == state(general)


def test_a_subclass_made_elsewhere_keeps_its_class():
    """Specialisation replaces only SecurityAssociation itself: a user's subclass stays."""

    class Audited(SecurityAssociation):
        __slots__ = ("seen",)

    sa = Audited(**_params("aes-gcm-16", 0))
    sa.seen = 0
    assert type(sa) is Audited and sa.unprotect(
        SecurityAssociation(**_params("aes-gcm-16", 0)).protect(SMALL)) == SMALL
