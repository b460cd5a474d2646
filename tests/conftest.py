"""Shared test set-up: hypothesis profiles, the fake clock, and the network-namespace fixture."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.lab import NetnsPair, need_netns

# A fast, reproducible profile for every CI run (the same examples each run, so main stays green
# for the same code), a randomised "dev" profile, and a long one for fuzzing sessions
# (HYPOTHESIS_PROFILE=fuzz).
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class FakeClock:
    """A clock the test moves by hand: sans-I/O cores take ``now`` from it, nothing sleeps."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """Two fresh namespaces joined by a veth (192.0.2.1/24 <-> 192.0.2.2/24), always torn down."""
    need_netns()
    pair = NetnsPair.unique()
    try:
        pair.up()
        yield pair
    finally:
        pair.down()
