"""The anti-replay window against a reference model, and ESN inference (RFC 4303 §3.4.3, App. A)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from espcore import ReplayError, ReplayWindow, SecurityAssociation


class WindowMachine(RuleBasedStateMachine):
    """Each rule offers a sequence number near the top; the window must agree with the simplest
    model: accept iff 0 < seq, not seen, and seq > top - size. Only accepted numbers (which
    passed the ICV) are recorded, so a rejected or forged packet never changes anything."""

    @initialize(size=st.sampled_from([1, 32, 64, 100, 1024]), start=st.integers(0, 5000))
    def setup(self, size, start):
        self.window = ReplayWindow(size, top=start)
        self.size, self.top, self.seen = size, start, set()

    def _model_accepts(self, seq: int) -> bool:
        return seq > 0 and seq not in self.seen and seq > self.top - self.size

    @rule(delta=st.integers(-1100, 1100), authentic=st.booleans())
    def offer(self, delta, authentic):
        seq = max(self.top + delta, 0)
        expected = self._model_accepts(seq)
        try:
            self.window.check(seq)
            ok = True
        except ReplayError as exc:
            assert exc.seq == seq
            ok = False
        assert ok == expected
        if ok and authentic:  # the ICV verified: only now is the window updated
            self.window.accept(seq)
            self.seen.add(seq)
            self.top = max(self.top, seq)

    @precondition(lambda self: self.seen)
    @rule(data=st.data())
    def replay_something_seen(self, data):
        seq = data.draw(st.sampled_from(sorted(self.seen)))
        with pytest.raises(ReplayError):
            self.window.check(seq)

    @invariant()
    def same_top(self):
        if hasattr(self, "window"):
            assert self.window.top == self.top


TestReplayWindow = WindowMachine.TestCase


@given(size=st.sampled_from([32, 64, 1024]), top=st.integers(0, (1 << 64) - 1),
       offset=st.integers(-2000, 2000))
def test_esn_inference_recovers_numbers_near_the_window(size, top, offset):
    """Any 64-bit number in the window or up to 2^31 right of it is recovered from its low 32
    bits (RFC 4303 Appendix A2.2)."""
    seq = top + offset
    if not (max(top - size + 1, 1) <= seq < min(top + (1 << 31), 1 << 64)):
        return
    window = ReplayWindow(size, esn=True, top=top)
    assert window.infer(seq & 0xFFFFFFFF) == seq


def test_esn_inference_at_the_start_of_the_space():
    """Case B with Th = 0: a low number left of the window would need Th - 1 < 0: rejected."""
    window = ReplayWindow(64, esn=True, top=10)
    assert window.infer(5) == 5 and window.infer(0xFFFFFFF0) == -1
    with pytest.raises(ReplayError):
        window.check(window.infer(0xFFFFFFF0))


def test_sequence_zero_is_never_accepted():
    with pytest.raises(ReplayError):
        ReplayWindow(64).check(0)
    with pytest.raises(ReplayError):
        ReplayWindow(0).check(0)  # even with anti-replay off


def test_window_updated_only_after_the_icv_through_the_sa():
    """Through an SA: the forged copy of a future packet leaves the genuine one acceptable."""
    kw = dict(spi=0x9999, cipher="chacha20-poly1305", cipher_key=bytes(36), replay_window=32)
    sender, receiver = SecurityAssociation(**kw), SecurityAssociation(**kw)
    packets = [sender.protect_payload(b"data", 17) for _ in range(40)]
    forged = bytearray(packets[39])
    forged[20] ^= 1
    with pytest.raises(Exception):
        receiver.unprotect_payload(bytes(forged))
    assert receiver.replay.top == 0
    for p in packets[:39]:
        receiver.unprotect_payload(p)
    assert receiver.unprotect_payload(packets[39]) == (17, b"data")
