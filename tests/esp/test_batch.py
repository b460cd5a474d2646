"""``protect_many``/``unprotect_many`` (``espcore.batch``) against the per-packet methods.

Properties, for the specialised AEAD and CBC SAs and a general one (ESN), in transport and IPv4
tunnel mode: a batch gives, packet by packet, what the per-packet method gives one by one
(bytes, or the error in the packet's place) and leaves the same state, lifetime events
included, also when a lifetime limit falls inside the batch; a batch that an unexpected
exception ends has written its state back (no sequence number is used twice).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espcore import EspError, Lifetime, SecurityAssociation
from espcore.strategies import mutations
from tests.esp.twins import MODE_IDS, MODES, SMALL, plain_ipv4, state, twins

SLOW = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                deadline=None, max_examples=25)

SUITES = {
    "aes-gcm-16": dict(cipher="aes-gcm-16", cipher_key=bytes(range(20))),
    "chacha20-poly1305": dict(cipher="chacha20-poly1305", cipher_key=bytes(range(36))),
    "aes-cbc+sha1": dict(cipher="aes-cbc", cipher_key=bytes(range(16)), integrity="hmac-sha1-96",
                         integrity_key=bytes(range(20))),
    "aes-gcm-16-esn": dict(cipher="aes-gcm-16", cipher_key=bytes(range(20)), esn=True),
}
CASES = [(s, m) for s in SUITES for m in (0, 1)]
IDS = [f"{s}-{MODE_IDS[m]}" for s, m in CASES]


def _params(suite: str, mode: int, **extra) -> dict:
    return dict(spi=0x6161, **SUITES[suite], **MODES[mode], **extra)


def _shown(results: list) -> list:
    return [(type(r), str(r)) if isinstance(r, EspError) else r for r in results]


def _one_by_one(method, items: list) -> list:
    shown = []
    for item in items:
        try:
            shown.append(method(item))
        except EspError as exc:
            shown.append((type(exc), str(exc)))
    return shown


@SLOW
@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
@given(packets=st.lists(plain_ipv4(max_payload=200), min_size=1, max_size=8),
       extras=st.lists(st.sampled_from(["junk", "view", "fragment"]), max_size=3))
def test_protect_many_is_protect_one_by_one(suite, mode, packets, extras):
    """The same bytes and errors in the same places, and the same state after."""
    odd = {"junk": b"\x45junk", "view": memoryview(SMALL),
           "fragment": SMALL[:6] + b"\x20" + SMALL[7:]}
    items = packets + [odd[e] for e in extras]
    random.Random(len(items)).shuffle(items)
    batch, single = twins(_params(suite, mode))
    assert _shown(batch.protect_many(items)) == _one_by_one(single.protect, items)
    assert state(batch) == state(single)


@SLOW
@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
@given(packets=st.lists(plain_ipv4(max_payload=200), min_size=1, max_size=6), data=st.data())
def test_unprotect_many_is_unprotect_one_by_one(suite, mode, packets, data):
    """In-order, reordered, replayed, forged and foreign packets get the same answers in the
    same places as one by one, and the receivers end in the same state."""
    sender = SecurityAssociation(**_params(suite, mode))
    genuine = [sender.protect(p) for p in packets]
    foreign = SecurityAssociation(**dict(_params(suite, mode), spi=0x7171)).protect(SMALL)
    items = list(genuine)
    items.insert(data.draw(st.integers(0, len(items))), data.draw(mutations(genuine[0])))
    items.insert(data.draw(st.integers(0, len(items))), genuine[-1])  # a replay, or early
    items.insert(data.draw(st.integers(0, len(items))), foreign)
    if data.draw(st.booleans()):
        items.reverse()
    items.append(genuine[0])
    batch, single = twins(_params(suite, mode))
    assert _shown(batch.unprotect_many(items)) == _one_by_one(single.unprotect, items)
    assert state(batch) == state(single)


@pytest.mark.parametrize("lifetime", [Lifetime(soft_bytes=84, hard_bytes=168),
                                      Lifetime(soft_packets=3, hard_packets=5),
                                      Lifetime(soft_bytes=1000, hard_bytes=1400)],
                         ids=["bytes-exact", "packets", "bytes"])
@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
def test_lifetime_limits_inside_a_batch(suite, mode, lifetime):
    """Soft and hard limits reached in the middle of a batch: the same events at the same
    packet, LifetimeExpired in the places of every later packet, both directions."""
    items = [SMALL] * 60
    batch, single = twins(_params(suite, mode, lifetime=lifetime))
    assert _shown(batch.protect_many(items)) == _one_by_one(single.protect, items)
    assert state(batch) == state(single) and batch.is_hard_expired
    sender = SecurityAssociation(**_params(suite, mode))
    protected = [sender.protect(p) for p in items]
    batch, single = twins(_params(suite, mode, lifetime=lifetime))
    assert _shown(batch.unprotect_many(protected)) == _one_by_one(single.unprotect, protected)
    assert state(batch) == state(single) and batch.is_hard_expired


@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
def test_dummy_packets_inside_a_batch(suite, mode):
    """Next Header 59 (RFC 4303 §2.6) in a batch: DummyPacket in its place, the window moved."""
    sender = SecurityAssociation(**_params(suite, mode))
    dummy_inner = bytes.fromhex("4500001400014000403b0000c0000201c0000202")
    items = [sender.protect(SMALL), sender.protect(dummy_inner), sender.protect(SMALL)]
    batch, single = twins(_params(suite, mode))
    assert _shown(batch.unprotect_many(items)) == _one_by_one(single.unprotect, items)
    assert state(batch) == state(single)


@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
def test_an_unexpected_exception_writes_the_state_back(suite, mode):
    """A non-packet object ends the batch with its TypeError, and what came before counts:
    the next protected packet takes the next sequence number, the window keeps its top."""
    sa = SecurityAssociation(**_params(suite, mode))
    with pytest.raises(TypeError):
        sa.protect_many([SMALL, SMALL, None, SMALL])
    assert sa.next_sequence == 3 and sa.bytes_protected == 2 * len(SMALL)
    receiver = SecurityAssociation(**_params(suite, mode))
    sender = SecurityAssociation(**_params(suite, mode))
    with pytest.raises(TypeError):
        receiver.unprotect_many([sender.protect(SMALL), sender.protect(SMALL), None])
    assert receiver.replay.top == 2 and receiver.packets_unprotected == 2


@pytest.mark.parametrize("suite,mode", CASES, ids=IDS)
def test_an_sa_used_both_ways_counts_both(suite, mode):
    """Lifetimes count both directions of one SA object: mixing protect and unprotect, one by
    one or in batches, reaches the soft limit at the 4th packet and the hard one at the 7th,
    whichever way each went."""
    lifetime = Lifetime(soft_packets=4, hard_packets=7)
    peer = SecurityAssociation(**_params(suite, mode))
    for batched in (False, True):
        sa = SecurityAssociation(**_params(suite, mode, lifetime=lifetime))
        expected = ["active"] * 3 + ["soft-expired"] * 3 + ["hard-expired"]
        for count, direction in enumerate("iioiioi", start=1):
            if direction == "i":
                item = peer.protect(SMALL)
                result = (sa.unprotect_many([item])[0] if batched else sa.unprotect(item))
            else:
                result = sa.protect_many([SMALL])[0] if batched else sa.protect(SMALL)
            assert isinstance(result, bytes)
            assert sa.state.value == expected[count - 1], count
        assert isinstance(sa.protect_many([SMALL])[0], EspError)
