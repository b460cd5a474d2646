"""Lifetimes with the fake clock: quick-mode rekey before expiry when traffic flowed (by the
side that sent more, or initiated the last quick mode), expiry in seconds and kilobytes, idle
deletion after 5 minutes, main mode renegotiated after 8 hours, Delete handling, and the
responding client that forgets a server an hour after the last packet."""

from __future__ import annotations

from policyagent import builtin
from policyagent.agent import SendResult
from policyagent.model import SecurityMethod
from tests.agent.helpers import drain, pair_of, partner_policy

ONE, TWO = "127.0.0.1", "127.0.0.2"


def _ping(net, sender, target, seq: int) -> None:
    sender.send_echo(target.address, 5, seq, b"p" * 32, net.clock.now)
    net.run()
    got = drain(sender)
    assert got and got[-1].is_protected, got


def _esp(clock, **config):
    return pair_of(clock, partner_policy(TWO, method=builtin.HIGH), partner_policy(ONE, method=builtin.HIGH), **config)


def test_rekey_before_expiry_when_traffic_flowed(clock):
    """At 90 % of 3600 s, with pings every minute, the side that initiated the last quick mode
    (equal bytes both ways) negotiates a new pair with new SPIs; the old one is deleted after a
    short grace and traffic never stops."""
    net, one, two = _esp(clock)
    _ping(net, two, one, 0)
    [old] = list(two.sad)
    for seq in range(1, 56):
        net.advance(60)
        _ping(net, two, one, seq)
    assert two.stats.rekeys == 1 and one.stats.rekeys == 0
    assert two.stats.quick_modes == 2 and one.stats.quick_modes == 2
    net.advance(30)
    [new] = list(two.sad)
    assert new.spis_in != old.spis_in and new.spis_out != old.spis_out and new.is_initiator
    assert [p.spis_in for p in one.sad] == [new.spis_out]
    ended = one.audit.query(event_id=542) + two.audit.query(event_id=542)
    assert any(e.reason == "replaced by a new quick mode" for e in ended)
    assert {e.reason for e in ended} <= {"replaced by a new quick mode", "deleted by peer"}
    _ping(net, two, one, 99)


def test_the_side_that_sent_more_rekeys(clock):
    """The responder that sent more data initiates the rekey."""
    net, one, two = _esp(clock)
    _ping(net, two, one, 0)
    for i in range(1, 56):
        net.advance(60)
        one.send_udp(ONE, 9, TWO, 9, b"bulk" * 100, clock.now)  # 01 (responder) sends more
        _ping(net, two, one, i)
    assert one.stats.rekeys == 1 and two.stats.rekeys == 0


def test_pair_expires_in_seconds_without_recent_traffic(clock):
    """With no traffic in the last 5 minutes there is no rekey: the pair expires at 3600 s."""
    net, one, two = _esp(clock, idle_s=10_000)
    _ping(net, two, one, 0)
    net.advance(3599)
    assert len(two.sad) == 1
    net.advance(2)
    assert len(two.sad) == 0 and len(one.sad) == 0 and two.stats.rekeys == 0
    ended = one.audit.query(event_id=542) + two.audit.query(event_id=542)
    assert any(e.reason == "lifetime (seconds) expired" for e in ended)


def test_kilobyte_lifetime_rekeys_at_the_soft_limit(clock):
    """A 20 KB quick-mode lifetime: the sender crosses 90 % and negotiates the next pair;
    every datagram arrives."""
    small = SecurityMethod(esp_cipher="aes-cbc", esp_key_bits=128, esp_integrity="hmac-sha1-96",
                           lifetime_s=3600, lifetime_kb=20)
    net, one, two = pair_of(clock, partner_policy(TWO, method=small), partner_policy(ONE, method=small))
    sent = []
    for i in range(30):
        payload = bytes([i]) * 1400
        assert two.send_udp(TWO, 1, ONE, 2, payload, clock.now) in (SendResult.PROTECTED, SendResult.NEGOTIATING)
        sent.append(payload)
        net.run()
    assert [d.data for d in drain(one)] == sent
    assert two.stats.rekeys >= 1 and two.stats.quick_modes >= 2
    assert all(p.kb_used() <= 20 for p in two.sad)


def test_idle_inbound_sa_deletes_both_directions(clock):
    """After five minutes of idle time on the inbound SA, both SAs are cleaned up (with a
    Delete), and the next packet negotiates new ones."""
    net, one, two = _esp(clock)
    _ping(net, two, one, 0)
    net.advance(299)
    assert len(one.sad) == len(two.sad) == 1
    net.advance(2)
    assert len(one.sad) == len(two.sad) == 0
    assert one.audit.query(event_id=542) and two.audit.query(event_id=542)
    assert two.send_echo(ONE, 5, 1, b"p", clock.now) is SendResult.NEGOTIATING
    net.run()
    assert two.stats.quick_modes == 2


def test_delete_from_the_peer_removes_the_pair(clock):
    net, one, two = _esp(clock)
    _ping(net, two, one, 0)
    one.delete_all(clock.now, reason="administrator")
    net.run()
    assert len(two.sad) == 0
    assert [e.reason for e in two.audit.query(event_id=542)] == ["deleted by peer"]
    assert two.send_echo(ONE, 5, 1, b"p", clock.now) is SendResult.NEGOTIATING


def test_main_mode_renegotiated_after_8_hours_of_traffic(clock):
    """Main mode lives 480 minutes; with data still flowing it is negotiated again."""
    net, one, two = _esp(clock)
    _ping(net, two, one, 0)
    seq = 0
    while clock.now < 1_000_000 + 8 * 3600 + 600:
        net.advance(240)
        seq += 1
        _ping(net, two, one, seq)
    assert two.audit.query(event_id=543)
    assert two.stats.main_modes + one.stats.main_modes >= 3
    assert len(two.sad) >= 1


def test_responding_client_forgets_the_server_after_an_hour(clock):
    """Secure Server / Client: the client's SAs go idle after 5 minutes; an hour after the last
    packet it drops its main mode with the server too and is back to respond-only."""
    net, one, two = pair_of(clock, builtin.SECURE_SERVER, builtin.CLIENT)
    two.send_echo(ONE, 1, 1, b"x", clock.now)
    net.run()
    two.send_echo(ONE, 1, 2, b"x", clock.now)
    net.run()
    assert drain(two)[-1].is_protected
    net.advance(301)
    assert len(two.sad) == 0 and not two.audit.query(event_id=543)
    net.advance(3600)
    assert two.audit.query(event_id=543)
    assert two.send_echo(ONE, 1, 3, b"x", clock.now) is SendResult.CLEAR


def test_both_sides_rekeying_at_once_settle_on_one_pair(clock):
    """If both hosts renegotiate a flow at the same moment (packets in flight made each think it
    sent more), both keep the same new pair and traffic continues."""
    net, one, two = _esp(clock)
    _ping(net, two, one, 0)
    for seq in range(1, 6):
        net.advance(240)
        _ping(net, two, one, seq)
    [p1], [p2] = list(one.sad), list(two.sad)
    assert two.stats.rekeys == 0
    one._rekey(p1, clock.now)  # stage the race: both ask at once
    two._rekey(p2, clock.now)
    net.run()
    net.advance(30)
    [n1], [n2] = list(one.sad), list(two.sad)
    assert n1.spis_in == n2.spis_out and n1.spis_in != p1.spis_in
    _ping(net, two, one, 99)
    _ping(net, one, two, 100)
