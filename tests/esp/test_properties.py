"""Hypothesis properties over every transform and mode, using ``espcore.strategies`` as users
would: round trips, and hostile input raising only ``EspError`` with no state change."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espcore import EspError, SaDatabase, udp_encap
from espcore.ip import ipv6_insert_point
from espcore.strategies import (esp_packets, ip_packets, mutations, nat_t_payloads, sa_pairs,
                                sa_parameters)

SLOW = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                deadline=None)


def _state(sa):
    return (sa.replay.top, sa.replay.bitmap, sa.packets_unprotected, sa.bytes_unprotected,
            sa.state)


@SLOW
@given(pair=sa_pairs(), packets=st.lists(ip_packets(max_payload=300), min_size=1, max_size=4))
def test_round_trip_every_transform_and_mode(pair, packets):
    """unprotect(protect(p)) == p for every transform, mode, IP version and ESN setting, and
    the counters agree on both sides."""
    sender, receiver = pair
    for packet in packets:
        assert receiver.unprotect(sender.protect(packet)) == packet
    assert sender.packets_protected == receiver.packets_unprotected == len(packets)
    assert sender.bytes_protected == receiver.bytes_unprotected == sum(map(len, packets))


@SLOW
@given(params=sa_parameters(), data=st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_esp_errors(params, data):
    """Any bytes at all: our typed error or a packet, never anything else, and no state change
    unless a packet came out."""
    from espcore import SecurityAssociation
    sa = SecurityAssociation(**params)
    before = _state(sa)
    try:
        sa.unprotect(data)
    except EspError:
        assert _state(sa) == before
    try:
        if params["protocol"] == "esp":
            sa.unprotect_payload(data)
    except EspError:
        assert _state(sa) == before


@SLOW
@given(params=sa_parameters(), packet=esp_packets())
def test_esp_shaped_garbage(params, packet):
    """Garbage behind a valid IP header and protocol 50 raises only EspError."""
    from espcore import SecurityAssociation
    sa = SecurityAssociation(**params)
    before = _state(sa)
    try:
        sa.unprotect(packet)
    except EspError:
        assert _state(sa) == before


@SLOW
@given(pair=sa_pairs(), packet=ip_packets(max_payload=200), data=st.data())
def test_mutated_packets_raise_only_esp_errors_and_change_nothing(pair, packet, data):
    """A protected packet with a bit flipped, cut, extended, overwritten or with a lying length
    is rejected with an EspError and leaves the receiver untouched, unless the change is in
    bytes the ICV does not cover (the outer header of transport mode, AH's mutable fields): then
    everything behind the IP header is intact. The genuine packet is accepted afterwards."""
    sender, receiver = pair
    genuine = sender.protect(packet)
    mutated = data.draw(mutations(genuine))
    before = _state(receiver)
    try:
        result = receiver.unprotect(mutated)
    except EspError:
        assert _state(receiver) == before
        assert receiver.unprotect(genuine) == packet
        return
    if receiver.has_integrity:
        if receiver.mode == "tunnel":
            assert result == packet
        else:
            start = (packet[0] & 0x0F) * 4 if packet[0] >> 4 == 4 else ipv6_insert_point(
                packet, len(packet))[0]
            assert len(result) == len(packet) and result[start:] == packet[start:]


@given(payload=nat_t_payloads())
def test_nat_t_classification_is_total(payload):
    """Every UDP payload on port 4500 is classified or refused with ParseError."""
    try:
        kind, body = udp_encap.decapsulate(payload)
    except EspError:
        return
    assert kind.value in ("esp", "ike", "keepalive")


@SLOW
@given(params=sa_parameters(protocol="esp"), packet=ip_packets(max_payload=100))
def test_database_demultiplexes(params, packet):
    """The SAD finds the SA by SPI and unprotects; other SPIs are UnknownSpiError."""
    from espcore import SecurityAssociation, UnknownSpiError
    sender = SecurityAssociation(**params)
    sad = SaDatabase()
    sad.add(SecurityAssociation(**params))
    sa, inner = sad.unprotect(sender.protect(packet))
    assert inner == packet and sa.spi == params["spi"]
    other = SecurityAssociation(**dict(params, spi=params["spi"] ^ 1 or 0x100))
    try:
        sad.unprotect(other.protect(packet))
    except UnknownSpiError as exc:
        assert exc.spi == other.spi
