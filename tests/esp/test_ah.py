"""AH's ICV coverage (RFC 4302 §3.3.3, Appendix A): what routers may change, and what not."""

from __future__ import annotations

import struct

import pytest

from espcore import IntegrityError, ParseError, SecurityAssociation, UnknownSpiError
from espcore.ip import checksum

KEY = bytes(range(32))


def ah(**kw) -> SecurityAssociation:
    return SecurityAssociation(protocol="ah", spi=0x7000, integrity="hmac-sha2-256-128",
                               integrity_key=KEY, **kw)


def ipv4(options: bytes = b"", payload: bytes = b"payload!") -> bytes:
    ihl = 20 + len(options)
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ihl + len(payload), 1, 0,
                                   64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    header += options
    header[10:12] = checksum(header).to_bytes(2, "big")
    return bytes(header) + payload


def route(packet: bytes, **changes: int) -> bytes:
    """What a router may do to an IPv4 packet: TOS, flags, TTL, checksum."""
    out = bytearray(packet)
    out[1] = changes.get("tos", out[1])
    out[6] = changes.get("flags", out[6])
    out[8] = changes.get("ttl", out[8])
    out[10:12] = b"\x00\x00"
    out[10:12] = checksum(out[:(out[0] & 15) * 4]).to_bytes(2, "big")
    return bytes(out)


def test_ipv4_mutable_fields_may_change():
    original = ipv4()
    sent = ah().protect(original)
    assert sent[9] == 51 and checksum(sent[:20]) == 0
    assert sent[20] == 17 and sent[21] == (12 + 16) // 4 - 2
    arrived = route(sent, tos=0xFC, flags=0x40, ttl=3)
    restored = ah().unprotect(arrived)
    assert restored[20:] == original[20:] and restored[8] == 3 and checksum(restored[:20]) == 0


@pytest.mark.parametrize("offset", [4, 12, 19, 20 + 4, -1], ids=["id", "source", "dest",
                                                                   "spi", "payload"])
def test_ipv4_immutable_fields_are_covered(offset):
    sent = bytearray(ah().protect(ipv4()))
    sent[offset] ^= 0x80
    with pytest.raises((IntegrityError, ParseError, UnknownSpiError)):
        ah().unprotect(route(bytes(sent)))


def test_ipv4_options():
    """Record route (mutable) may change; router alert (immutable) may not."""
    options = b"\x07\x07\x04" + bytes(4) + b"\x94\x04\x00\x00" + b"\x00"  # RR, RA, EOL
    options += bytes(-len(options) % 4)
    sent = ah().protect(ipv4(options))
    changed = bytearray(sent)
    changed[23:27] = bytes([192, 0, 2, 9])  # a router recorded itself
    changed[22] = 8
    assert ah().unprotect(route(bytes(changed))).endswith(b"payload!")
    tampered = bytearray(sent)
    tampered[29] ^= 1  # router alert value
    with pytest.raises(IntegrityError):
        ah().unprotect(route(bytes(tampered)))


def test_ipv4_loose_source_route_predicts_the_destination():
    """LSRR with the route still to travel: the ICV uses the last hop as the destination, so
    the packet verifies after the route has been followed (RFC 4302 Appendix A.1)."""
    final = bytes([10, 0, 0, 99])
    lsrr = b"\x83\x07\x04" + final + b"\x00"  # pointer 4: one address left
    sent = bytearray(ah().protect(ipv4(lsrr)))
    # The hop swaps: destination := listed address, the option records the hop, pointer moves.
    sent[16:20], sent[23:27] = final, bytes([10, 0, 0, 2])
    sent[22] = 8
    assert ah().unprotect(route(bytes(sent))).endswith(b"payload!")


def ipv6(ext: bytes, nh: int) -> bytes:
    payload = b"six!"
    return struct.pack("!IHBB16s16s", (6 << 28) | (1 << 20) | 7, len(ext) + len(payload), nh, 64,
                       b"\x20\x01" + bytes(14), b"\x20\x02" + bytes(14)) + ext + payload


def test_ipv6_mutable_fields_and_options():
    """Traffic class, flow label, hop limit and options with the change bit may change; options
    without it may not; the AH header is padded to 8 bytes."""
    hbh = bytes((17, 0, 0x3E, 2, 0xAA, 0xBB, 0x1E, 0))  # changeable option, then a fixed one
    sent = ah().protect(ipv6(hbh, 0))
    assert sent[40] == 51 and sent[48 + 1] == (12 + 16 + 4) // 4 - 2  # ICV padded to 32
    moved = bytearray(sent)
    moved[0:4] = ((6 << 28) | (0x99 << 20) | 0xFFFFF).to_bytes(4, "big")
    moved[7] = 1
    moved[44:46] = b"\x00\x00"
    restored = ah().unprotect(bytes(moved))
    assert restored[6] == 0 and restored[40] == 17 and restored[7] == 1  # AH gone, as moved
    assert restored[44:46] == b"\x00\x00" and restored[48:] == b"six!"
    tampered = bytearray(sent)
    tampered[46] = 0x1F  # the fixed option's type
    with pytest.raises(IntegrityError):
        ah().unprotect(bytes(tampered))


def test_ipv6_routing_header_predicted_at_the_sender():
    """A type 0 routing header with segments left: the sender computes the ICV on the packet
    as it will arrive (RFC 4302 Appendix A.2), so it verifies after the hops."""
    hop, final = b"\x20\x01" + bytes(13) + b"\x05", b"\x20\x01" + bytes(13) + b"\x09"
    routing = bytes((17, 4, 0, 2)) + bytes(4) + hop + final
    sent = bytearray(ah().protect(ipv6(routing, 43)))
    # Hop 1 (the first destination) then the hop: each swaps in the next address.
    first = bytes(sent[24:40])
    sent[24:40], sent[48:64], sent[64:80] = final, first, hop
    sent[43] = 0
    sent[7] = 62
    assert ah().unprotect(bytes(sent))[-4:] == b"six!"
