"""RFC 3948 UDP encapsulation: datagram kinds on port 4500, packet conversion, checksums."""

from __future__ import annotations

import struct
import warnings

import pytest

from espcore import ParseError, SaDatabase, SecurityAssociation, UnknownSpiError, UsageError
from espcore.udp_encap import (KEEPALIVE, NON_ESP_MARKER, PayloadKind, decapsulate,
                               decapsulate_packet, encapsulate, encapsulate_ike,
                               encapsulate_packet, esp_packet, keepalive,
                               recompute_transport_checksum)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6


def test_datagram_kinds():
    """§2.3 keep-alive, §2.2 non-ESP marker then IKE, otherwise ESP (SPI never 0)."""
    assert keepalive() == KEEPALIVE == b"\xff"
    assert decapsulate(b"\xff") == (PayloadKind.KEEPALIVE, b"")
    ike = b"\x11" * 28
    assert encapsulate_ike(ike) == NON_ESP_MARKER + ike
    assert decapsulate(NON_ESP_MARKER + ike) == (PayloadKind.IKE, ike)
    esp = b"\x00\x00\x12\x34" + bytes(20)
    assert decapsulate(esp) == (PayloadKind.ESP, esp)
    for bad in (b"", b"\xfe", b"\x00\x00\x00\x00", b"\x01\x02\x03\x04\x05"):
        with pytest.raises(ParseError):
            decapsulate(bad)


def test_udp_header():
    """§2.1: ports, length, checksum zero over IPv4; over IPv6 a real checksum."""
    segment = encapsulate(b"E" * 12, sport=4500, dport=4501)
    assert struct.unpack("!HHHH", segment[:8]) == (4500, 4501, 20, 0)
    six = encapsulate(b"E" * 12, source="2001:db8::1", destination="2001:db8::2")
    built = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=4500, dport=4500)
                  / (b"E" * 12))
    assert six == built[40:]
    with pytest.raises(UsageError):
        encapsulate(b"x", sport=0)


def _sa(**kw):
    return SecurityAssociation(spi=0x6000, cipher="aes-gcm-16", cipher_key=bytes(20), **kw)


def test_packet_round_trip_through_udp():
    """§3.1.1/§3.1.2: IP|ESP -> IP|UDP|ESP -> IP|ESP, lengths and checksum right."""
    packet = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"hello")
    esp = _sa().protect(packet)
    wrapped = encapsulate_packet(esp)
    parsed = IP(wrapped)
    assert parsed.proto == 17 and parsed[UDP].dport == 4500 and parsed.len == len(wrapped)
    assert IP(bytes(parsed)).chksum == parsed.chksum
    assert decapsulate_packet(wrapped) == esp
    assert _sa().unprotect(decapsulate_packet(wrapped)) == packet
    ike = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=4500, dport=4500)
                / (NON_ESP_MARKER + b"I" * 28))
    with pytest.raises(ParseError):
        decapsulate_packet(ike)


def test_socket_path_rebuilds_the_ip_header():
    """ESP received on a UDP socket (no IP header) is wrapped back for transport mode."""
    packet = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"hello")
    esp_only = _sa().protect(packet)[20:]
    rebuilt = esp_packet(esp_only, source="10.0.0.1", destination="10.0.0.2")
    restored = _sa().unprotect(rebuilt)
    assert restored[20:] == packet[20:] and restored[9] == 17
    sad = SaDatabase()
    sad.add(_sa())
    sa, next_header, payload = sad.unprotect_payload(esp_only)
    assert (next_header, payload) == (17, packet[20:])
    with pytest.raises(UnknownSpiError):
        sad.unprotect_payload(b"\x00\x00\x99\x99" + bytes(40))


@pytest.mark.parametrize("layer", ["udp", "tcp", "udp6"])
def test_transport_checksum_fixup_after_nat(layer):
    """§3.1.2 step 4: the inner checksum was made with the peer's pre-NAT address; after the
    NAT changed the outer address, it is recomputed over the addresses now in the header."""
    if layer == "udp6":
        original = IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2) / b"abc"
        natted = IPv6(bytes(original))
        natted.src = "2001:db8::99"
    else:
        l4 = UDP(sport=1, dport=2) if layer == "udp" else TCP(sport=1, dport=2)
        original = IP(src="192.168.1.10", dst="10.0.0.2") / l4 / b"abc"
        natted = IP(bytes(original))
        natted.src = "203.0.113.7"
        del natted.chksum
    fixed = recompute_transport_checksum(bytes(natted))
    expected = natted.__class__(bytes(natted))
    expected_layer = expected[UDP] if layer != "tcp" else expected[TCP]
    del expected_layer.chksum
    assert fixed == bytes(expected.__class__(bytes(expected)))
