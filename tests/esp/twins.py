"""Helpers for the specialised-path tests: an SA and its twin that takes the general paths.

``espcore.sa`` turns an SA into a subclass with specialised per-packet methods; the general
methods stay reachable as ``SecurityAssociation.protect(sa, ...)`` and so on. Two SAs built
from the same parameters (and, for CBC, the same deterministic randomness) must then produce
the same bytes, the same errors and the same state, one through each path.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from espcore import EspError, Lifetime, SecurityAssociation
from espcore.strategies import ipv4_packets, ipv6_packets, mutations

GENERAL = SecurityAssociation


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    """A deterministic ``rng(n)`` (CBC IVs) so that two SAs draw the same bytes."""
    source = random.Random(seed)
    return source.randbytes


def twins(params: dict[str, Any], seed: int = 7) -> tuple[SecurityAssociation, SecurityAssociation]:
    """(specialised, general twin): the same SA twice, with the same randomness.

    The twin runs AES-GCM-16 and ChaCha20-Poly1305 on ``cryptography`` (``espcore.aead``), so
    the specialised paths on the OpenSSL binding (where it is built) are checked against both
    the general paths and the other implementation of the AEAD."""
    return (SecurityAssociation(**params, rng=seeded_rng(seed)),
            SecurityAssociation(**params, rng=seeded_rng(seed), aead_backend="cryptography"))


def state(sa: SecurityAssociation) -> tuple[Any, ...]:
    """Everything a packet may change, events included (they are read without popping)."""
    return (sa.replay.top, sa.replay.bitmap, sa.next_sequence, sa.bytes_protected,
            sa.packets_unprotected, sa.bytes_unprotected, sa.state, sa.is_hard_expired,
            tuple(sa._tracker._events))


def outcome(call: Callable[[], Any]) -> Any:
    """The result, or (error type, message) for an ``EspError``."""
    try:
        return call()
    except EspError as exc:
        return type(exc), str(exc)


def plain_ipv4(max_payload: int = 300) -> st.SearchStrategy[bytes]:
    """IPv4 packets the specialised paths take (no options) and some they hand over."""
    return st.one_of(ipv4_packets(max_payload=max_payload, options=False),
                     ipv4_packets(max_payload=max_payload),
                     ipv6_packets(max_payload=max_payload))


MODES = [dict(mode="transport"),
         dict(mode="tunnel", tunnel_source="192.0.2.1", tunnel_destination="198.51.100.7"),
         dict(mode="tunnel", tunnel_source="2001:db8::1", tunnel_destination="2001:db8::2")]
MODE_IDS = ["transport", "tunnel-v4", "tunnel-v6"]

#: A 28-byte IPv4/UDP packet, and lifetimes its multiples reach exactly (and not).
SMALL = bytes.fromhex("4500001c0001400040110000c0000201c000020204d204d200080000")
LIFETIMES = [Lifetime(soft_bytes=84, hard_bytes=168), Lifetime(soft_packets=3, hard_packets=5),
             Lifetime(soft_bytes=100, hard_bytes=200)]
LIFETIME_IDS = ["bytes-exact", "packets", "bytes"]


def check_protect(params: dict[str, Any], packets: list[bytes]) -> None:
    """protect and protect_payload give the general path's bytes, errors and state."""
    fast, general = twins(params)
    for packet in packets:
        assert outcome(lambda: fast.protect(packet)) == outcome(
            lambda: GENERAL.protect(general, packet))
        assert state(fast) == state(general)
        body = packet[20:]
        assert outcome(lambda: fast.protect_payload(body, 17)) == outcome(
            lambda: GENERAL.protect_payload(general, body, 17))
        assert state(fast) == state(general)


def check_unprotect(params: dict[str, Any], packet: bytes, data: st.DataObject) -> None:
    """Genuine, replayed and mutated packets get the general path's answer and state."""
    sender = SecurityAssociation(**params)
    genuine = sender.protect(packet)
    esp = sender.protect_payload(packet, 4)
    inputs = [data.draw(mutations(genuine)), genuine, genuine, data.draw(mutations(genuine))]
    payloads = [data.draw(mutations(esp)), esp, esp]
    fast, general = twins(params)
    for item in inputs:
        assert outcome(lambda: fast.unprotect(item)) == outcome(
            lambda: GENERAL.unprotect(general, item))
        assert state(fast) == state(general)
    for item in payloads:
        assert outcome(lambda: fast.unprotect_payload(item)) == outcome(
            lambda: GENERAL.unprotect_payload(general, item))
        assert state(fast) == state(general)


def check_lifetimes(params: dict[str, Any]) -> None:
    """Limits reached on the fast paths, both ways and at the payload level, give the same
    events at the same packet as the general path; after the hard limit the same refusal."""
    sender = SecurityAssociation(**{k: v for k, v in params.items() if k != "lifetime"})
    steps = [lambda sa: sa.protect(SMALL), lambda sa: sa.protect_payload(SMALL, 4)]
    inbound = [(sender.protect, lambda sa, x: sa.unprotect(x), GENERAL.unprotect),
               (lambda p: sender.protect_payload(p, 4), lambda sa, x: sa.unprotect_payload(x),
                GENERAL.unprotect_payload)]
    for step, general_step in zip(steps, (lambda sa: GENERAL.protect(sa, SMALL),
                                          lambda sa: GENERAL.protect_payload(sa, SMALL, 4))):
        fast, general = twins(params)
        for _ in range(9):
            assert outcome(lambda: step(fast)) == outcome(lambda: general_step(general))
            assert state(fast) == state(general)
        assert fast.is_hard_expired
    for make, fast_step, general_step in inbound:
        fast, general = twins(params)
        for _ in range(9):
            item = make(SMALL)
            assert outcome(lambda: fast_step(fast, item)) == outcome(
                lambda: general_step(general, item))
            assert state(fast) == state(general)
        assert fast.is_hard_expired
