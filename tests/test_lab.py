"""The test lab itself: the fake clock and the namespace fixture."""

import subprocess

import pytest

from tests.conftest import FakeClock
from tests.lab import need_program, run


def test_fake_clock_moves_only_when_told():
    clock = FakeClock(start=10.0)
    assert clock() == 10.0
    assert clock.advance(3600) == 3610.0
    assert clock.now == 3610.0
    with pytest.raises(ValueError):
        clock.advance(-1)


@pytest.mark.root
def test_netns_pair_pings_across_veth(netns_pair):
    """The fixture's two namespaces reach each other over the veth, and only there."""
    need_program("ping", "iputils-ping")
    out = netns_pair.run(1, ["ping", "-c", "1", "-W", "2", netns_pair.addrs[0]])
    assert "1 received" in out.stdout
    listed = run(["ip", "netns", "list"]).stdout
    assert all(ns in listed for ns in netns_pair.ns)


@pytest.mark.root
def test_netns_pair_is_torn_down(request):
    """After the fixture's teardown the namespaces are gone."""
    from tests.lab import NetnsPair, need_netns

    need_netns()
    pair = NetnsPair.unique()
    pair.up()
    pair.down()
    listed = run(["ip", "netns", "list"]).stdout
    assert not any(ns in listed for ns in pair.ns)
    assert subprocess.run(["ip", "link", "show", pair.veth[0]], capture_output=True).returncode != 0
