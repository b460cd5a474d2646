"""The embedded data path's packets: built as scapy (the oracle) reads them, parsed back, and
any bytes either parse or raise PacketError."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from policyagent import datapath as dp

scapy_all = pytest.importorskip("scapy.all")
IP, IPv6, UDP, ICMP = scapy_all.IP, scapy_all.IPv6, scapy_all.UDP, scapy_all.ICMP
ICMPv6EchoRequest = scapy_all.ICMPv6EchoRequest


def test_udp_ipv4_reads_like_scapy():
    """An IPv4/UDP packet has the header fields, a valid header checksum and the data."""
    raw = dp.build_udp("127.0.0.2", "127.0.0.1", 4000, 7, b"hello", ttl=33, ident=9)
    pkt = IP(raw)
    assert (pkt.src, pkt.dst, pkt.ttl, pkt.proto, pkt.id) == ("127.0.0.2", "127.0.0.1", 33, 17, 9)
    assert (pkt[UDP].sport, pkt[UDP].dport, bytes(pkt[UDP].payload)) == (4000, 7, b"hello")
    assert pkt[UDP].chksum == 0  # RFC 768: no checksum over IPv4
    rebuilt = IP(raw)
    del rebuilt.chksum
    assert IP(bytes(rebuilt)).chksum == pkt.chksum


def test_udp_ipv6_checksum_matches_scapy():
    """Over IPv6 the UDP checksum is computed (RFC 8200 §8.1) and equals scapy's."""
    raw = dp.build_udp("2001:db8::2", "2001:db8::1", 5, 6, b"data!")
    pkt = IPv6(raw)
    expected = IPv6(bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / UDP(sport=5, dport=6) / b"data!"))
    assert pkt[UDP].chksum == expected[UDP].chksum
    parsed = dp.parse(raw)
    assert (parsed.version, parsed.src, parsed.dst, parsed.sport, parsed.dport) == (6, "2001:db8::2", "2001:db8::1", 5, 6)


def test_icmp_echo_round_trip_and_scapy_checksum():
    """An echo request built here is valid for scapy, and parse_echo reads it back."""
    raw = dp.build_icmp_echo("127.0.0.2", "127.0.0.1", 0x1234, 3, b"abcdefgh" * 4)
    pkt = IP(raw)
    assert pkt[ICMP].type == 8 and pkt[ICMP].id == 0x1234 and pkt[ICMP].seq == 3
    again = IP(raw)
    del again[ICMP].chksum
    assert IP(bytes(again))[ICMP].chksum == pkt[ICMP].chksum
    parsed = dp.parse(raw)
    echo = dp.parse_echo(parsed, raw)
    assert echo == dp.Echo(False, 0x1234, 3, b"abcdefgh" * 4)
    reply = dp.build_icmp_echo("127.0.0.1", "127.0.0.2", 0x1234, 3, echo.data, reply=True)
    assert dp.parse_echo(dp.parse(reply), reply).is_reply


def test_icmpv6_echo_checksum_matches_scapy():
    raw = dp.build_icmp_echo("2001:db8::2", "2001:db8::1", 7, 1, b"x" * 10)
    ref = IPv6(bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6EchoRequest(id=7, seq=1, data=b"x" * 10)))
    assert raw[40:] == bytes(ref)[40:]
    assert dp.parse_echo(dp.parse(raw), raw) == dp.Echo(False, 7, 1, b"x" * 10)


def test_parse_refuses_a_bad_header_checksum():
    raw = bytearray(dp.build_udp("10.0.0.1", "10.0.0.2", 1, 2, b""))
    raw[10] ^= 0xFF
    with pytest.raises(dp.PacketError, match="checksum"):
        dp.parse(bytes(raw))


def test_parse_refuses_a_udp_length_past_the_packet():
    raw = bytearray(dp.build_udp("10.0.0.1", "10.0.0.2", 1, 2, b"abc"))
    raw[24:26] = (200).to_bytes(2, "big")
    with pytest.raises(dp.PacketError, match="UDP length"):
        dp.parse(bytes(raw))


def test_icmp_bad_checksum_is_refused():
    raw = bytearray(dp.build_icmp_echo("10.0.0.1", "10.0.0.2", 1, 1, b"zz"))
    raw[-1] ^= 1
    with pytest.raises(dp.PacketError, match="checksum"):
        dp.parse_echo(dp.parse(bytes(raw)), bytes(raw))


def test_carrier_kinds():
    """The embedded link tells IKE (non-ESP marker), keep-alives, IP packets and ESP apart."""
    assert dp.carrier_kind(b"\x00\x00\x00\x00" + b"x" * 28) == dp.CARRIER_IKE
    assert dp.carrier_kind(b"\xff") == dp.CARRIER_KEEPALIVE
    assert dp.carrier_kind(dp.build_udp("10.0.0.1", "10.0.0.2", 1, 2, b"x")) == dp.CARRIER_IP
    assert dp.carrier_kind(dp.build_udp("::1", "::2", 1, 2, b"x")) == dp.CARRIER_IP
    assert dp.carrier_kind(b"\x45\x00\x00\x99" + bytes(40)) == dp.CARRIER_ESP  # length disagrees
    assert dp.carrier_kind(b"\x12\x34\x56\x78" + bytes(40)) == dp.CARRIER_ESP


@given(st.binary(max_size=80))
@example(b"\x45" + bytes(19))
@example(b"\x60" + bytes(39))
def test_parse_raises_only_packet_error(data):
    """Arbitrary bytes parse or raise PacketError, nothing else."""
    try:
        parsed = dp.parse(data)
    except dp.PacketError:
        return
    if parsed.protocol in (dp.IPPROTO_ICMP, dp.IPPROTO_ICMPV6):
        try:
            dp.parse_echo(parsed, data)
        except dp.PacketError:
            pass


@given(st.binary(max_size=40))
def test_parse_udp_segment_raises_only_packet_error(data):
    """A bare UDP segment parses or raises PacketError."""
    try:
        sport, dport, payload = dp.parse_udp_segment(data)
    except dp.PacketError:
        return
    assert len(payload) <= len(data) - 8
