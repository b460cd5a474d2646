"""ikeproto.iv: the phase-1 chain, per-message-ID chains, purity of reads, the bound."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikeproto import crypto
from ikeproto.crypto import EncryptionAlgorithm as E
from ikeproto.crypto import HashAlgorithm as H
from ikeproto.errors import UsageError
from ikeproto.iv import IvManager, phase1_iv, phase2_iv
from ikeproto.keymat import Phase1Keys

SHA = crypto.hash_algorithm(H.SHA)
G_XI, G_XR = b"\x01" * 128, b"\x02" * 128


def manager(block_size: int = 8, max_exchanges: int = 16) -> IvManager:
    return IvManager(hash_alg=SHA, block_size=block_size, g_xi=G_XI, g_xr=G_XR, max_exchanges=max_exchanges)


def test_phase1_iv_is_hash_of_both_public_values() -> None:
    """RFC 2409 Appendix B: hash(g^xi | g^xr), initiator first, truncated to the block size."""
    assert manager().iv(0) == hashlib.sha1(G_XI + G_XR).digest()[:8]
    assert manager(16).phase1_iv == hashlib.sha1(G_XI + G_XR).digest()[:16]
    md5 = crypto.hash_algorithm(H.MD5)
    assert phase1_iv(md5, G_XI, G_XR, 16) == hashlib.md5(G_XI + G_XR).digest()


def test_phase1_chain_uses_the_last_cipher_block() -> None:
    """Each phase-1 message's IV is the last cipher block of the message before it."""
    ivs = manager()
    first = ivs.iv(0)
    assert ivs.iv(0) == first  # reading changes nothing
    ivs.advance(0, b"A" * 8)
    assert ivs.iv(0) == ivs.phase1_iv == b"A" * 8
    ivs.advance(0, b"B" * 8)
    assert ivs.iv(0) == b"B" * 8


def test_new_message_id_derives_from_the_last_phase1_block() -> None:
    """The first IV of a Quick Mode is hash(last phase-1 block | M-ID), M-ID in network order."""
    ivs = manager()
    ivs.advance(0, b"P" * 8)
    mid = 0x96F3_0447
    assert ivs.iv(mid) == hashlib.sha1(b"P" * 8 + mid.to_bytes(4, "big")).digest()[:8]
    assert ivs.iv(mid) == phase2_iv(SHA, b"P" * 8, mid, 8)


def test_phase2_chains_are_independent_and_never_touch_phase1() -> None:
    """A second exchange starts from the phase-1 block, not from another exchange's last block."""
    ivs = manager()
    ivs.advance(0, b"P" * 8)
    ivs.advance(7, b"Q" * 8)
    ivs.advance(7, b"R" * 8)
    assert ivs.iv(7) == b"R" * 8
    assert ivs.phase1_iv == b"P" * 8
    assert ivs.iv(9) == phase2_iv(SHA, b"P" * 8, 9, 8) != phase2_iv(SHA, b"R" * 8, 9, 8)


def test_reading_never_creates_state() -> None:
    """iv() for unknown message IDs stores nothing: a forged message cannot evict a live chain."""
    ivs = manager(max_exchanges=2)
    ivs.advance(5, b"F" * 8)
    for mid in range(100, 200):
        ivs.iv(mid)
    assert ivs.message_ids == (5,) and ivs.iv(5) == b"F" * 8


def test_only_max_exchanges_chains_are_kept_least_recent_first() -> None:
    """The bound drops the least recently advanced chain; a dropped ID restarts from phase 1."""
    ivs = manager(max_exchanges=3)
    for mid in (1, 2, 3):
        ivs.advance(mid, bytes([mid]) * 8)
    ivs.advance(1, b"\x11" * 8)  # 1 becomes the most recent
    ivs.advance(4, b"\x04" * 8)  # evicts 2
    assert ivs.message_ids == (3, 1, 4)
    assert ivs.iv(2) == phase2_iv(SHA, ivs.phase1_iv, 2, 8)
    assert ivs.iv(1) == b"\x11" * 8
    ivs.forget(1)
    ivs.forget(12345)  # unknown: nothing happens
    assert ivs.message_ids == (3, 4)


def test_usage_errors() -> None:
    """Out-of-range message IDs, wrong block sizes and silly bounds are local misuse."""
    ivs = manager()
    for bad_mid in (-1, 2**32):
        with pytest.raises(UsageError):
            ivs.iv(bad_mid)
        with pytest.raises(UsageError):
            ivs.advance(bad_mid, bytes(8))
    with pytest.raises(UsageError):
        ivs.advance(1, bytes(16))
    with pytest.raises(UsageError):
        IvManager(hash_alg=crypto.hash_algorithm(H.MD5), block_size=32, g_xi=G_XI, g_xr=G_XR)
    with pytest.raises(UsageError):
        IvManager(hash_alg=SHA, block_size=8, g_xi=G_XI, g_xr=G_XR, max_exchanges=0)
    assert "IvManager" in repr(ivs)


KEYS = Phase1Keys.derive(
    hash_alg=crypto.hash_algorithm(H.SHA2_256), cipher=crypto.cipher(E.AES_CBC, 128), skeyid=b"s" * 32,
    g_xy=b"g" * 256, cky_i=b"i" * 8, cky_r=b"r" * 8,
)

steps = st.lists(
    st.tuples(st.sampled_from([0, 1, 0xDEADBEEF, 42]), st.binary(min_size=1, max_size=40), st.booleans()),
    max_size=25,
)


@given(steps)
def test_two_peers_stay_in_sync_and_forgeries_change_nothing(script: list[tuple[int, bytes, bool]]) -> None:
    """Sender and receiver chains agree over any interleaving of exchanges; a forged message
    (random ciphertext the receiver refuses) does not move the receiver's chain."""
    sender, receiver = KEYS.iv_manager(g_xi=G_XI, g_xr=G_XR), KEYS.iv_manager(g_xi=G_XI, g_xr=G_XR)
    for mid, body, forged_first in script:
        if forged_first:
            forged = hashlib.sha256(body).digest()  # two blocks of noise
            plain, _ = KEYS.decrypt(receiver.iv(mid), forged)
            assert plain != crypto.pad(body, 16)  # the receiver would fail to authenticate it
        ciphertext, last = KEYS.encrypt(sender.iv(mid), body)
        sender.advance(mid, last)
        plain, last_seen = KEYS.decrypt(receiver.iv(mid), ciphertext)
        assert plain == crypto.pad(body, 16)
        receiver.advance(mid, last_seen)
    for mid in (0, 1, 42, 0xDEADBEEF, 99):
        assert sender.iv(mid) == receiver.iv(mid)
