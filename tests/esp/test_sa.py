"""SecurityAssociation behaviour: headers, modes, counters, lifetimes, sequence numbers, errors."""

from __future__ import annotations

import hmac
import os
import struct

import pytest

from espcore import (DummyPacket, HardLifetimeReached, IntegrityError, Lifetime, LifetimeExpired,
                     ParseError, ReplayError, SaState, SecurityAssociation, SequenceExhausted,
                     SoftLifetimeReached, UnknownSpiError, UsageError)
from espcore.ip import checksum

KEY20 = bytes(range(20))


def ipv4(payload: bytes = b"x" * 100, *, proto: int = 17, tos: int = 0, flags: int = 0,
         options: bytes = b"") -> bytes:
    ihl = 20 + len(options)
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, tos, ihl + len(payload), 7,
                                   flags, 64, proto, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    header += options
    header[10:12] = checksum(header).to_bytes(2, "big")
    return bytes(header) + payload


def ipv6(payload: bytes = b"y" * 100, *, nh: int = 17, ext: bytes = b"") -> bytes:
    return struct.pack("!IHBB16s16s", (6 << 28) | (0x2A << 20) | 5, len(ext) + len(payload), nh,
                       64, b"\x20\x01" + bytes(14), b"\x20\x02" + bytes(14)) + ext + payload


def gcm(**kw) -> SecurityAssociation:
    return SecurityAssociation(spi=0x1000, cipher="aes-gcm-16", cipher_key=KEY20, **kw)


def pair(**kw):
    return gcm(**kw), gcm(**kw)


def test_transport_ipv4_header_fields():
    """Protocol 50, total length, a valid checksum, the rest of the header kept; unprotect
    restores the original packet exactly."""
    packet = ipv4(tos=0x2E, flags=0x4000)
    out = gcm().protect(packet)
    assert out[9] == 50 and int.from_bytes(out[2:4], "big") == len(out)
    assert checksum(out[:20]) == 0
    assert out[1] == 0x2E and out[4:9] == packet[4:9] and out[12:20] == packet[12:20]
    assert len(out) == 20 + 8 + 8 + 100 + 2 + 2 + 16  # header, ESP, IV, data, pad, trailer, ICV
    assert gcm().unprotect(out) == packet


def test_transport_ipv4_options_and_general_path():
    """IPv4 options stay in the header (general path, CBC+HMAC): lengths and checksum hold."""
    packet = ipv4(options=b"\x94\x04\x00\x00")
    kw = dict(spi=0x2000, cipher="aes-cbc", cipher_key=bytes(16), integrity="hmac-sha1-96",
              integrity_key=bytes(20))
    out = SecurityAssociation(**kw).protect(packet)
    assert out[:1] == b"\x46" and out[20:24] == b"\x94\x04\x00\x00" and out[9] == 50
    assert checksum(out[:24]) == 0 and (len(out) - 24 - 8 - 16 - 12) % 16 == 0
    assert SecurityAssociation(**kw).unprotect(out) == packet


def test_transport_ipv6_extension_headers():
    """ESP goes after hop-by-hop and routing headers, destination options after the routing
    header go inside (RFC 4303 §3.1.1); the Next Header chain and payload length are fixed."""
    hbh = bytes((43, 0, 1, 4, 0, 0, 0, 0))
    routing = bytes((60, 2, 0, 0, 0, 0, 0, 0)) + bytes(16)
    dest = bytes((17, 0, 1, 4, 0, 0, 0, 0))
    packet = ipv6(ext=hbh + routing + dest, nh=0)
    out = gcm().protect(packet)
    assert out[6] == 0 and out[40] == 43 and out[48] == 50  # HBH -> routing -> ESP
    assert int.from_bytes(out[4:6], "big") == len(out) - 40
    assert gcm().unprotect(out) == packet


def test_tunnel_outer_headers():
    """IPv4 outer: protocol 50, TTL 64, TOS and DF copied, Identification = low 16 bits of the
    sequence number, valid checksum. IPv6 outer around IPv4 inner: Next Header 50, traffic
    class copied."""
    inner = ipv4(tos=0xB8, flags=0x4000)
    sa = gcm(mode="tunnel", tunnel_source="192.0.2.1", tunnel_destination="192.0.2.2",
             initial_sequence=0x12345)
    out = sa.protect(inner)
    assert out[9] == 50 and out[8] == 64 and out[1] == 0xB8 and out[6] & 0x40
    assert out[4:6] == b"\x23\x45" and checksum(out[:20]) == 0 and out[12:16] == bytes([192, 0, 2, 1])
    six = gcm(mode="tunnel", tunnel_source="2001:db8::1", tunnel_destination="2001:db8::2")
    out6 = six.protect(inner)
    assert out6[0] >> 4 == 6 and out6[6] == 50 and ((out6[0] & 0xF) << 4 | out6[1] >> 4) == 0xB8
    receiver = gcm(mode="tunnel", tunnel_source="2001:db8::1", tunnel_destination="2001:db8::2")
    assert receiver.unprotect(out6) == inner


def test_padding_is_monotonic_and_aligned():
    """RFC 4303 §2.4: padding 1, 2, 3...; payload + trailer a multiple of the block size."""
    sa = SecurityAssociation(spi=0x3000, cipher="null", integrity="hmac-sha1-96",
                             integrity_key=bytes(20))
    for n in range(20, 30):
        esp = sa.protect_payload(b"a" * n, 17)
        pad = (-(n + 2)) % 4
        assert esp[8 + n:8 + n + pad] == bytes(range(1, pad + 1))
        assert esp[8 + n + pad] == pad and esp[9 + n + pad] == 17
        assert (len(esp) - 8 - 12) % 4 == 0


def _null_packet(body: bytes, seq: int = 1) -> bytes:
    """A correctly authenticated null-cipher ESP payload with an arbitrary body (to build bad
    trailers that only a key holder could send)."""
    header = struct.pack("!II", 0x3000, seq)
    return header + body + hmac.new(bytes(20), header + body, "sha1").digest()[:12]


@pytest.mark.parametrize("body", [b"abcd\x01\x03\x02\x11", b"\x05\x11", b"ab\x09\x11"],
                         ids=["non-monotonic padding", "pad length too big", "pad beyond data"])
def test_bad_trailers_are_parse_errors_without_state_change(body):
    sa = SecurityAssociation(spi=0x3000, cipher="null", integrity="hmac-sha1-96",
                             integrity_key=bytes(20))
    with pytest.raises(ParseError):
        sa.unprotect_payload(_null_packet(body))
    assert sa.replay.top == 0 and sa.packets_unprotected == 0


def test_cbc_ciphertext_not_a_block_multiple():
    kw = dict(spi=0x2000, cipher="aes-cbc", cipher_key=bytes(16), integrity="hmac-sha1-96",
              integrity_key=bytes(20))
    esp = SecurityAssociation(**kw).protect_payload(b"z" * 30, 17)
    with pytest.raises(ParseError):
        SecurityAssociation(**kw).unprotect_payload(esp[:-13] + esp[-12:])


def test_forged_packet_changes_nothing():
    """An ICV failure raises IntegrityError and moves neither the window nor the counters."""
    sender, receiver = pair()
    out = bytearray(sender.protect(ipv4()))
    out[-1] ^= 1
    with pytest.raises(IntegrityError) as info:
        receiver.unprotect(bytes(out))
    assert info.value.seq == 1
    assert (receiver.replay.top, receiver.packets_unprotected, receiver.bytes_unprotected) == (0, 0, 0)
    assert KEY20.hex() not in str(info.value) and bytes(out[-16:]).hex() not in str(info.value)


def test_replay_and_window():
    """Duplicates and packets left of the window raise ReplayError with their number."""
    sender, receiver = pair(replay_window=64)
    packets = [sender.protect(ipv4()) for _ in range(100)]
    receiver.unprotect(packets[99])
    with pytest.raises(ReplayError) as info:
        receiver.unprotect(packets[99])
    assert info.value.seq == 100
    with pytest.raises(ReplayError) as info:
        receiver.unprotect(packets[35])  # seq 36 = top - 64: left of the window
    assert info.value.seq == 36
    receiver.unprotect(packets[36])  # seq 37 is the window's left edge
    assert receiver.packets_unprotected == 2


def test_large_window():
    sender, receiver = pair(replay_window=2048)
    packets = [sender.protect_payload(b"p", 17) for _ in range(2100)]
    receiver.unprotect_payload(packets[-1])
    receiver.unprotect_payload(packets[2100 - 2048])
    with pytest.raises(ReplayError):
        receiver.unprotect_payload(packets[2100 - 2049])


def test_unknown_spi():
    out = gcm().protect(ipv4())
    other = SecurityAssociation(spi=0x1001, cipher="aes-gcm-16", cipher_key=KEY20)
    with pytest.raises(UnknownSpiError) as info:
        other.unprotect(out)
    assert info.value.spi == 0x1000


def test_dummy_packet():
    """Next Header 59 (RFC 4303 §2.6): authentic, accepted into the window, then dropped."""
    sender, receiver = pair()
    esp = sender.protect_payload(b"", 59)
    with pytest.raises(DummyPacket):
        receiver.unprotect_payload(esp)
    assert receiver.replay.top == 1 and receiver.packets_unprotected == 0


def test_counters_and_monitor_bytes():
    sender, receiver = pair()
    packet = ipv4()
    for _ in range(3):
        receiver.unprotect(sender.protect(packet))
    assert sender.packets_protected == 3 and sender.bytes_protected == 3 * len(packet)
    assert receiver.packets_unprotected == 3 and receiver.bytes_unprotected == 3 * len(packet)
    assert receiver.authenticated_bytes == receiver.confidential_bytes == 3 * len(packet)
    ah = SecurityAssociation(protocol="ah", spi=0x5000, integrity="hmac-sha1-96",
                             integrity_key=bytes(20))
    ah.protect(packet)
    assert ah.authenticated_bytes == len(packet) and ah.confidential_bytes == 0
    null = SecurityAssociation(spi=0x5001, cipher="null", integrity="hmac-sha1-96",
                               integrity_key=bytes(20))
    null.protect(packet)
    assert null.confidential_bytes == 0 and null.authenticated_bytes == len(packet)
    conf = SecurityAssociation(spi=0x5002, cipher="aes-cbc", cipher_key=bytes(16))
    conf.protect(packet)
    assert conf.authenticated_bytes == 0 and conf.confidential_bytes == len(packet)


def test_soft_and_hard_packet_lifetimes():
    sender = gcm(lifetime=Lifetime(soft_packets=2, hard_packets=3))
    sender.protect(ipv4())
    assert sender.state is SaState.ACTIVE and sender.next_event() is None
    sender.protect(ipv4())
    assert sender.is_soft_expired and sender.next_event() == SoftLifetimeReached(
        spi=0x1000, limit="packets")
    sender.protect(ipv4())
    assert sender.is_hard_expired and sender.next_event() == HardLifetimeReached(
        spi=0x1000, limit="packets")
    with pytest.raises(LifetimeExpired) as info:
        sender.protect(ipv4())
    assert info.value.limit == "packets" and sender.packets_protected == 3


def test_byte_lifetimes_inbound():
    """Inbound SAs expire on bytes too; the packet that reaches the limit is still returned."""
    sender = gcm()
    receiver = gcm(lifetime=Lifetime(soft_bytes=200, hard_bytes=300))
    packet = ipv4()  # 128 bytes
    receiver.unprotect(sender.protect(packet))
    receiver.unprotect(sender.protect(packet))
    assert receiver.state is SaState.SOFT_EXPIRED
    receiver.unprotect(sender.protect(packet))
    assert receiver.state is SaState.HARD_EXPIRED
    with pytest.raises(LifetimeExpired):
        receiver.unprotect(sender.protect(packet))
    with pytest.raises(UsageError):
        Lifetime(soft_bytes=10, hard_bytes=5)


def test_sequence_counter_never_cycles_without_esn():
    """RFC 4303 §3.3.3: after 2^32-1 the SA is done."""
    sender = gcm(initial_sequence=0xFFFFFFFF)
    receiver = gcm(initial_sequence=0xFFFFFFFF)
    assert receiver.unprotect(sender.protect(ipv4())) == ipv4()
    assert sender.is_hard_expired
    assert sender.next_event() == HardLifetimeReached(spi=0x1000, limit="sequence")
    with pytest.raises(SequenceExhausted):
        sender.protect(ipv4())


def test_esn_crosses_2_to_the_32():
    """With ESN the counter goes on; the receiver infers the high half (RFC 4303 App. A2)."""
    sender, receiver = pair(esn=True, initial_sequence=0xFFFFFFFE)
    for expected in (0xFFFFFFFE, 0xFFFFFFFF, 0x1_00000000, 0x1_00000001):
        out = sender.protect(ipv4())
        assert out[24:28] == (expected & 0xFFFFFFFF).to_bytes(4, "big")
        assert receiver.unprotect(out) == ipv4()
        assert receiver.replay.top == expected


def test_fragments_are_refused():
    with pytest.raises(UsageError):
        gcm().protect(ipv4(flags=0x2000))
    out = bytearray(gcm().protect(ipv4()))
    out[6] |= 0x20
    with pytest.raises(ParseError):
        gcm().unprotect(bytes(out))


def test_fast_path_equals_general_path():
    """The inlined IPv4 AEAD path and the general one produce the same bytes (IV = seq)."""
    for mode_kw in ({}, dict(mode="tunnel", tunnel_source="192.0.2.1",
                             tunnel_destination="192.0.2.2")):
        fast, general = gcm(**mode_kw), gcm(**mode_kw)
        for i in range(5):
            packet = ipv4(b"q" * (40 + i))
            seq = fast.next_sequence
            assert fast.protect(packet) == general.protect(packet, iv=seq.to_bytes(8, "big"))


def test_batch_equals_single():
    packets = [ipv4(b"r" * n) for n in range(30, 60)] + [ipv6(), b"junk"]
    a, b = gcm(), gcm()
    batch = a.protect_many(packets)
    single = []
    for p in packets:
        try:
            single.append(b.protect(p))
        except ParseError as exc:
            single.append(exc)
    assert batch[:-1] == single[:-1] and isinstance(batch[-1], ParseError)
    receiver = gcm()
    opened = receiver.unprotect_many(batch[:-1] + [batch[0]])
    assert opened[:-1] == packets[:-1] and isinstance(opened[-1], ReplayError)


def test_usage_errors():
    with pytest.raises(UsageError):
        SecurityAssociation(spi=0, cipher="aes-gcm-16", cipher_key=KEY20)
    with pytest.raises(UsageError):
        SecurityAssociation(spi=0x1000, cipher="aes-gcm-16", cipher_key=bytes(17))
    with pytest.raises(UsageError):
        SecurityAssociation(spi=0x1000, cipher="aes-cbc-256", cipher_key=bytes(16))
    with pytest.raises(UsageError):
        SecurityAssociation(spi=0x1000, cipher="aes-gcm-16", cipher_key=KEY20,
                            integrity="hmac-sha1-96", integrity_key=bytes(20))
    with pytest.raises(UsageError):
        SecurityAssociation(spi=0x1000, cipher="null")
    with pytest.raises(UsageError):
        SecurityAssociation(spi=0x1000, cipher="aes-gcm-16", cipher_key=KEY20, mode="tunnel")
    with pytest.raises(UsageError):
        SecurityAssociation(protocol="ah", spi=0x1000, integrity="hmac-sha1-96",
                            integrity_key=bytes(19))
    with pytest.raises(UsageError):
        gcm().protect(ipv4(), iv=b"short")
    secret = os.urandom(20)
    sa = SecurityAssociation(spi=0x1000, cipher="aes-gcm-16", cipher_key=secret)
    assert secret.hex() not in repr(sa) and "aes-gcm-16-128" in repr(sa)
