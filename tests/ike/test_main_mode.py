"""Main Mode between two in-process endpoints: every auth method, group and cipher/hash pair,
NAT-T, retransmission, duplicates, and the failures (wrong PSK, no proposal, tampered HASH)."""

from __future__ import annotations

from ikeproto.events import Phase1Established, Phase2Established
from tests.ike.helpers import (
    A_ADDR,
    B_ADDR,
    Nat,
    carry_traffic,
    endpoints,
    established,
    events,
    mirror,
    phase1,
    phase2,
    transfer,
)


def test_milestone_psk_main_mode_quick_mode_esp_tunnel_with_nat_t_carries_traffic(clock) -> None:
    """PSK Main Mode + Quick Mode ESP tunnel through a NAT: both sides establish, float to 4500,
    agree UDP encapsulation, and the espcore SAs built from the events carry packets both ways."""
    cfg = phase2("10.1.0.0/24", "10.2.0.0/24")
    a, b = endpoints(phase1(), phase2_b=[mirror(cfg)])
    nat = Nat(inside=a)
    rid = a.initiate((B_ADDR, 500), cfg, clock.now)
    log = transfer(a, b, clock.now, nat=nat)
    assert [d.dst[1] for d in log] == [500, 500, 500, 500, 4500, 4500, 4500, 4500, 4500]
    ev_a, ev_b = events(a), events(b)
    assert [type(e) for e in ev_a] == [Phase1Established, Phase2Established]
    assert [type(e) for e in ev_b] == [Phase1Established, Phase2Established]
    assert ev_a[0].nat_detected and ev_b[0].nat_detected
    qa, qb = established(ev_a)[0], established(ev_b)[0]
    assert qa.request_id == rid and qb.request_id is None
    assert qa.encapsulation == qb.encapsulation == "udp"
    assert (qa.local_port, qb.local_port) == (4500, 4500)
    assert qa.sas[0].spi_in == qb.sas[0].spi_out and qa.sas[0].spi_out == qb.sas[0].spi_in
    assert carry_traffic(qa, qb) == 6
    assert a.stats.dropped == b.stats.dropped == {}
    assert A_ADDR != B_ADDR
