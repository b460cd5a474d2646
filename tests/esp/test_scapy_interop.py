"""Cross-implementation tests with scapy's ``SecurityAssociation`` as the oracle (test-only).

For every transform both implementations have, in transport and tunnel mode, over IPv4 and
IPv6: our packet decrypts in scapy, and scapy's packet, made with the same IV and sequence
number, is byte-identical to ours and unprotects in ours. Then the same for AH (with IPv4
options and IPv6 extension headers), ESN, NAT-T (RFC 3948) and random packets from
``espcore.strategies``.

What scapy cannot do, and is therefore only checked against published vectors and our own
round trips: AES-GCM with 8- or 12-byte ICVs (scapy's AEAD path always appends the 16-byte
tag), ESN receive-side inference (scapy takes the high bits as an argument), anti-replay, and AH
over an IPv6 routing header (scapy rearranges the route even when Segments Left is 0, so its
sender and receiver disagree with each other).
"""

from __future__ import annotations

import os
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espcore import SecurityAssociation, udp_encap
from espcore.strategies import ipv4_packets, ipv6_packets
from espcore.transforms import CIPHERS, INTEGRITY

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from scapy.layers.inet import IP, TCP, UDP, IPOption_Router_Alert, IPOption_RR
    from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, PadN,
                                    HBHOptUnknown)
    from scapy.layers.ipsec import AH, ESP
    from scapy.layers.ipsec import SecurityAssociation as ScapySA

SCAPY_CIPHER = {"null": "NULL", "des-cbc": "DES", "3des-cbc": "3DES", "aes-cbc": "AES-CBC",
                "aes-ctr": "AES-CTR", "aes-gcm-16": "AES-GCM", "aes-gmac": "AES-NULL-GMAC",
                "chacha20-poly1305": "CHACHA20-POLY1305"}
SCAPY_AUTH = {"hmac-md5-96": "HMAC-MD5-96", "hmac-sha1-96": "HMAC-SHA1-96",
              "hmac-sha2-256-128": "SHA2-256-128", "hmac-sha2-384-192": "SHA2-384-192",
              "hmac-sha2-512-256": "SHA2-512-256"}

# Upper layers that scapy dissects and rebuilds byte for byte (its GRE, ICMP... layers add
# default fields to random bytes, which says nothing about ESP).
SCAPY_EXACT = (6, 17, 253)
# Over IPv6, scapy's decrypt mangles next header 253 (it appends a spurious header after a short
# or empty upper layer, or fails to unpack it): a scapy defect, so the oracle sticks to TCP/UDP.
SCAPY_EXACT_V6 = (6, 17)

ESP_CASES = [
    ("null", 0, "hmac-sha1-96"), ("des-cbc", 64, "hmac-md5-96"), ("3des-cbc", 192, "hmac-sha1-96"),
    ("aes-cbc", 128, "hmac-sha2-256-128"), ("aes-cbc", 192, "hmac-sha2-384-192"),
    ("aes-cbc", 256, "hmac-sha2-512-256"), ("aes-cbc", 128, None), ("aes-ctr", 128, "hmac-sha1-96"),
    ("aes-ctr", 256, "hmac-sha2-256-128"), ("aes-gcm-16", 128, None), ("aes-gcm-16", 192, None),
    ("aes-gcm-16", 256, None), ("aes-gmac", 128, None), ("aes-gmac", 256, None),
    ("chacha20-poly1305", 256, None),
]


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _packet(version: int) -> bytes:
    if version == 4:
        return bytes(IP(src="10.1.2.3", dst="10.4.5.6", tos=0xB8, id=4321, flags="DF", ttl=61)
                     / UDP(sport=5000, dport=53) / (b"query" * 30))
    return bytes(IPv6(src="2001:db8:1::1", dst="2001:db8:2::2", tc=0x28, fl=0x12345, hlim=60)
                 / TCP(sport=40000, dport=443, flags="PA") / (b"data" * 40))


def _tunnel(version: int) -> dict:
    if version == 4:
        return dict(tunnel_source="192.0.2.1", tunnel_destination="198.51.100.2")
    return dict(tunnel_source="2001:db8:a::1", tunnel_destination="2001:db8:b::2")


def _scapy_tunnel_header(outer: int, inner: bytes, seq: int):
    """The outer header our SA builds (RFC 4301 §5.1.2.1), as a scapy template."""
    inner_v4 = inner[0] >> 4 == 4
    tos = inner[1] if inner_v4 else ((inner[0] & 0x0F) << 4) | (inner[1] >> 4)
    if outer == 4:
        df = "DF" if inner_v4 and inner[6] & 0x40 else 0
        return IP(src="192.0.2.1", dst="198.51.100.2", ttl=64, tos=tos, id=seq & 0xFFFF, flags=df)
    return IPv6(src="2001:db8:a::1", dst="2001:db8:b::2", hlim=64, tc=tos, fl=0)


def _pair(cipher, bits, integrity, mode, outer, *, seq=1, esn=False):
    transform = CIPHERS[cipher]
    key = os.urandom(bits // 8 + transform.salt_size)
    auth_key = os.urandom(INTEGRITY[integrity].key_bytes) if integrity else b""
    kwargs = dict(spi=0x1234567, cipher=cipher, cipher_key=key, integrity=integrity,
                  integrity_key=auth_key, mode=mode, initial_sequence=seq, esn=esn)
    if mode == "tunnel":
        kwargs.update(_tunnel(outer))
    theirs = dict(crypt_algo=SCAPY_CIPHER[cipher], crypt_key=key if bits else None,
                  auth_algo=SCAPY_AUTH.get(integrity), auth_key=auth_key or None,
                  esn_en=esn, esn=seq >> 32)
    return kwargs, theirs


def _layer(version: int):
    return IP if version == 4 else IPv6


@pytest.mark.parametrize("mode,outer,inner", [("transport", 4, 4), ("transport", 6, 6),
                                              ("tunnel", 4, 4), ("tunnel", 6, 6),
                                              ("tunnel", 6, 4), ("tunnel", 4, 6)])
@pytest.mark.parametrize("cipher,bits,integrity", ESP_CASES,
                         ids=[f"{c}-{b}-{i}" for c, b, i in ESP_CASES])
def test_esp_both_ways_byte_exact(cipher, bits, integrity, mode, outer, inner):
    """Ours decrypts in scapy; scapy's, with our IV and sequence number, equals ours and
    unprotects in ours."""
    seq = 7
    kwargs, theirs = _pair(cipher, bits, integrity, mode, outer, seq=seq)
    packet = _packet(inner)
    iv = os.urandom(CIPHERS[cipher].iv_size) or None
    tunnel_header = _scapy_tunnel_header(outer, packet, seq) if mode == "tunnel" else None
    scapy_sa = _quiet(ScapySA, ESP, spi=0x1234567, tunnel_header=tunnel_header, **theirs)

    ours = SecurityAssociation(**kwargs).protect(packet, iv=iv)
    decrypted = _quiet(scapy_sa.decrypt, _layer(outer)(ours))
    assert bytes(decrypted) == packet

    scapy_packet = bytes(_quiet(scapy_sa.encrypt, _layer(inner)(packet), iv=iv, seq_num=seq))
    assert scapy_packet == ours
    assert SecurityAssociation(**kwargs).unprotect(scapy_packet) == packet


@pytest.mark.parametrize("cipher,bits,integrity", [("aes-gcm-16", 128, None),
                                                   ("aes-cbc", 128, "hmac-sha1-96"),
                                                   ("chacha20-poly1305", 256, None),
                                                   ("aes-gmac", 128, None)])
def test_esp_esn_against_scapy(cipher, bits, integrity):
    """With ESN the high half goes into the AAD or the ICV (RFC 4106 §5, RFC 4303 §2.2.1)
    exactly as scapy puts it; our receiver infers it from its window."""
    seq = (0x1234 << 32) | 0xFFFFFFFE
    kwargs, theirs = _pair(cipher, bits, integrity, "transport", 4, seq=seq, esn=True)
    packet = _packet(4)
    iv = os.urandom(CIPHERS[cipher].iv_size)
    scapy_sa = _quiet(ScapySA, ESP, spi=0x1234567, **theirs)
    ours = SecurityAssociation(**kwargs)
    first = ours.protect(packet, iv=iv)
    assert first == bytes(_quiet(scapy_sa.encrypt, IP(packet), iv=iv, seq_num=seq & 0xFFFFFFFF))
    receiver = SecurityAssociation(**kwargs)
    assert receiver.unprotect(first) == packet
    # Across the 2^32 boundary: the wire shows 0xffffffff, then 0, then 1.
    for step in range(1, 4):
        wire = ours.protect(packet, iv=iv)
        full = seq + step
        # scapy reads seq_num=0 as "not given", so the number goes into its constructor.
        their = _quiet(ScapySA, ESP, spi=0x1234567, seq_num=full & 0xFFFFFFFF,
                       **dict(theirs, esn=full >> 32))
        assert wire == bytes(_quiet(their.encrypt, IP(packet), iv=iv))
        assert receiver.unprotect(wire) == packet
    assert receiver.replay.top == seq + 3


def _ah_packet(version: int) -> bytes:
    if version == 4:
        return bytes(IP(src="10.9.8.7", dst="10.6.5.4", tos=0x10, ttl=33, id=99,
                        options=[IPOption_Router_Alert(), IPOption_RR(routers=["1.2.3.4"])])
                     / UDP(sport=1, dport=2) / b"immutable payload")
    hbh = IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x3E, optdata=b"chg"),
                                      HBHOptUnknown(otype=0x1E, optdata=b"fix")])
    return bytes(IPv6(src="2001:db8::7", dst="2001:db8::8", tc=3, fl=77, hlim=9) / hbh
                 / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\x00" * 4)])
                 / UDP(sport=1, dport=2) / b"payload")


@pytest.mark.parametrize("mode,outer,inner", [("transport", 4, 4), ("transport", 6, 6),
                                              ("tunnel", 4, 4), ("tunnel", 6, 6),
                                              ("tunnel", 4, 6)])
@pytest.mark.parametrize("integrity", sorted(INTEGRITY))
def test_ah_both_ways_byte_exact(integrity, mode, outer, inner):
    """AH with mutable fields zeroed for the ICV (RFC 4302 Appendix A) as scapy does it:
    IPv4 options (router alert immutable, record route mutable), IPv6 hop-by-hop options with
    and without the change bit, destination options."""
    key = os.urandom(INTEGRITY[integrity].key_bytes)
    kwargs = dict(protocol="ah", spi=0x4242, integrity=integrity, integrity_key=key, mode=mode,
                  initial_sequence=3)
    packet = _ah_packet(inner)
    tunnel_header = None
    if mode == "tunnel":
        kwargs.update(_tunnel(outer))
        tunnel_header = _scapy_tunnel_header(outer, packet, 3)
    scapy_sa = _quiet(ScapySA, AH, spi=0x4242, auth_algo=SCAPY_AUTH[integrity], auth_key=key,
                      tunnel_header=tunnel_header)
    ours = SecurityAssociation(**kwargs).protect(packet)
    assert bytes(_quiet(scapy_sa.decrypt, _layer(outer)(ours))) == packet
    theirs = bytes(_quiet(scapy_sa.encrypt, _layer(inner)(packet), seq_num=3))
    assert theirs == ours
    assert SecurityAssociation(**kwargs).unprotect(theirs) == packet


def test_nat_t_against_scapy():
    """RFC 3948: our ESP-in-UDP packet equals scapy's with a NAT-T header, and comes back."""
    kwargs, theirs = _pair("aes-gcm-16", 128, None, "transport", 4, seq=5)
    packet = _packet(4)
    iv = os.urandom(8)
    scapy_sa = _quiet(ScapySA, ESP, spi=0x1234567, nat_t_header=UDP(sport=4500, dport=4500),
                      **theirs)
    ours = udp_encap.encapsulate_packet(SecurityAssociation(**kwargs).protect(packet, iv=iv))
    assert ours == bytes(_quiet(scapy_sa.encrypt, IP(packet), iv=iv, seq_num=5))
    assert bytes(_quiet(scapy_sa.decrypt, IP(ours))) == packet
    receiver = SecurityAssociation(**kwargs)
    assert receiver.unprotect(udp_encap.decapsulate_packet(ours)) == packet


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(packet=st.one_of(ipv4_packets(max_payload=200, protocols=SCAPY_EXACT),
                        ipv6_packets(max_payload=200, protocols=SCAPY_EXACT_V6)),
       case=st.sampled_from(ESP_CASES), mode=st.sampled_from(["transport", "tunnel"]),
       seq=st.integers(1, 0xFFFFFFFF))
def test_random_packets_byte_exact_with_scapy(packet, case, mode, seq):
    """Random IPv4 (with options) and IPv6 (with extension headers) packets: scapy's ESP
    packet with our IV and sequence number is ours, and ours decrypts in scapy."""
    cipher, bits, integrity = case
    outer = packet[0] >> 4
    kwargs, theirs = _pair(cipher, bits, integrity, mode, outer, seq=seq)
    iv = os.urandom(CIPHERS[cipher].iv_size) or None
    tunnel_header = _scapy_tunnel_header(outer, packet, seq) if mode == "tunnel" else None
    scapy_sa = _quiet(ScapySA, ESP, spi=0x1234567, tunnel_header=tunnel_header, **theirs)
    ours = SecurityAssociation(**kwargs).protect(packet, iv=iv)
    assert bytes(_quiet(scapy_sa.encrypt, _layer(outer)(packet), iv=iv, seq_num=seq)) == ours
    # scapy rebuilds what it decrypts (e.g. it re-pads IPv6 options): compare like with like.
    assert bytes(_quiet(scapy_sa.decrypt, _layer(outer)(ours))) == bytes(_layer(outer)(packet))


def test_ah_esn_against_scapy():
    """AH with ESN: the high half of the sequence number is appended for the ICV only
    (RFC 4302 §2.5.1), exactly as scapy does; our receiver infers it."""
    key = os.urandom(20)
    seq = (7 << 32) | 0x10
    kwargs = dict(protocol="ah", spi=0x4343, integrity="hmac-sha1-96", integrity_key=key,
                  esn=True, initial_sequence=seq)
    packet = _ah_packet(4)
    scapy_sa = _quiet(ScapySA, AH, spi=0x4343, auth_algo="HMAC-SHA1-96", auth_key=key,
                      esn_en=True, esn=7)
    ours = SecurityAssociation(**kwargs).protect(packet)
    assert ours == bytes(_quiet(scapy_sa.encrypt, IP(packet), seq_num=0x10))
    assert SecurityAssociation(**kwargs).unprotect(ours) == packet
