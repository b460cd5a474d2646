"""The monitor: rows for real and soft SAs (security, SPIs, lifetimes left), statistics, and
the text table."""

from __future__ import annotations

from policyagent import builtin, monitor
from tests.agent.helpers import pair_of, partner_policy

ONE, TWO = "127.0.0.1", "127.0.0.2"


def test_rows_and_statistics_follow_the_traffic(clock):
    net, one, two = pair_of(clock, partner_policy(TWO, method=builtin.HIGH), partner_policy(ONE, method=builtin.HIGH))
    two.send_udp(TWO, 1, ONE, 2, b"x" * 2000, clock.now)
    net.run()
    clock.advance(100)
    snap = monitor.snapshot(two, clock.now)
    [row] = snap["security_associations"]
    assert row["lifetime_left_s"] == 3500 and row["lifetime_left_kb"] == 100_000 - 1
    assert row["peer"] == ONE and row["policy"] == "Partner" and row["rule"] == "Partner"
    assert row["filter"] == "127.0.0.2 <-> 127.0.0.1" and row["mode"] == "transport"
    assert row["bytes_out"] == 2008 and row["packets_out"] == 1 and not row["is_soft"]
    stats = snap["statistics"]
    assert stats["confidential_bytes_sent"] == stats["authenticated_bytes_sent"] == 2008
    assert stats["main_modes"] == stats["quick_modes"] == 1 and stats["active_sas"] == 1
    text = monitor.render(snap)
    assert "IP Security Monitor - 127.0.0.2" in text and "ESP AES CBC 128 / SHA" in text
    assert f"{row['spi_out'][0]:08x}" in text and "Quick Modes" in text


def test_empty_monitor():
    from tests.conftest import FakeClock

    clock = FakeClock()
    net, one, two = pair_of(clock, None, None)
    snap = monitor.snapshot(one, clock.now)
    assert snap["security_associations"] == [] and snap["policy"] is None
    assert "(no security associations)" in monitor.render(snap)
