"""Known-answer tests against published vectors (tests/vectors/esp_published_vectors.json).

- draft-mcgrew-gcm-test-01 §4: every AES-GCM-ESP case (128/192/256-bit keys, ESN and 32-bit
  sequence numbers, the edge numbers 0xffffffff and 2^64-1) and the AES-GMAC-ESP case, as whole
  ESP packets: ours must be byte-identical and must open theirs.
- RFC 3602 §4 cases 5 (transport) and 7 (tunnel): complete IPv4 ESP packets with AES-CBC.
- RFC 7634 Appendix A: ChaCha20-Poly1305 ESP in tunnel mode.
- RFC 3686 §6: the nine AES-CTR vectors through our ESP framing (salt = nonce, counter from 1).
- RFC 2202 / RFC 4231: HMAC-MD5, -SHA1, -SHA2 and their IPsec truncations.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espcore import SecurityAssociation
from espcore.esp import Mac, make_engine
from espcore.transforms import cipher, integrity

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "esp_published_vectors.json").read_text())

GCM = VECTORS["gcm_test_01"]


def _trailer_split(plaintext: bytes) -> tuple[bytes, int]:
    pad = plaintext[-2]
    assert plaintext[-2 - pad:-2] == bytes(range(1, pad + 1)), "vector uses RFC 4303 padding"
    return plaintext[:-2 - pad], plaintext[-1]


def _gcm_sa(v: dict, *, esn: bool) -> SecurityAssociation:
    nonce = bytes.fromhex(v["nonce"])
    return SecurityAssociation(
        spi=int(v["spi"], 16), cipher=v["algorithm"],
        cipher_key=bytes.fromhex(v["key"]) + nonce[:4], esn=esn,
        initial_sequence=int(v["seq"], 16))


@pytest.mark.parametrize("v", GCM, ids=[v["name"] for v in GCM])
def test_gcm_test_01_packets(v):
    """Our ESP packet for the vector's payload, IV and sequence number is the published packet,
    and the published packet opens to the payload (ESN inferred where the seq has 8 octets)."""
    esn = len(v["seq"]) == 16
    packet = bytes.fromhex(v["packet"])
    payload, next_header = _trailer_split(bytes.fromhex(v["plaintext"]))
    iv = bytes.fromhex(v["nonce"])[4:]
    if int(v["spi"], 16) < 256:
        # SPI 0 is reserved on the wire (RFC 4303 §2.1); the SA refuses it, the engine does not.
        transform = cipher(v["algorithm"])
        key = bytes.fromhex(v["key"]) + bytes.fromhex(v["nonce"])[:4]
        engine = make_engine(transform, key, None, b"", spi=0, esn=esn)
        seq = int(v["seq"], 16)
        body = payload + bytes(range(1, -(len(payload) + 2) % 4 + 1)) + bytes(
            (-(len(payload) + 2) % 4, next_header))
        assert b"".join(engine.seal(body, seq, iv)) == packet
        assert engine.open(packet, 0, len(packet), seq) == body
        return
    sender = _gcm_sa(v, esn=esn)
    assert sender.protect_payload(payload, next_header, iv=iv) == packet
    receiver = _gcm_sa(v, esn=esn)
    assert receiver.unprotect_payload(packet) == (next_header, payload)
    assert receiver.replay.top == int(v["seq"], 16)


def test_gcm_esn_vector_needs_the_high_bits():
    """The ESN high half is authenticated but not sent: a receiver assuming other high bits
    (here a window at the start of the sequence space) rejects the published packet."""
    v = next(v for v in GCM if v["seq"] == "8765432100000007")
    nonce = bytes.fromhex(v["nonce"])
    wrong = SecurityAssociation(spi=int(v["spi"], 16), cipher="aes-gcm-16",
                                cipher_key=bytes.fromhex(v["key"]) + nonce[:4], esn=True)
    from espcore import IntegrityError
    with pytest.raises(IntegrityError):
        wrong.unprotect_payload(bytes.fromhex(v["packet"]))
    assert wrong.replay.top == 0 and wrong.packets_unprotected == 0


@pytest.mark.parametrize("v", VECTORS["rfc3602"], ids=[v["name"] for v in VECTORS["rfc3602"]])
def test_rfc3602_packets(v):
    """AES-CBC without integrity, RFC 3602 §4: the whole IPv4 packet opens to the original
    one; in transport mode our packet is byte-identical (header checksum included), in tunnel
    mode the ESP part is (the RFC's outer Identification field is its own)."""
    tunnel = "tunnel" in v["name"]
    packet, original = bytes.fromhex(v["packet"]), bytes.fromhex(v["original"])
    kwargs = dict(spi=int(v["spi"], 16), cipher="aes-cbc-128", cipher_key=bytes.fromhex(v["key"]),
                  initial_sequence=int(v["seq"], 16))
    if tunnel:
        kwargs.update(mode="tunnel", tunnel_source="192.168.123.3",
                      tunnel_destination="192.168.123.200")
    receiver = SecurityAssociation(**kwargs)
    assert receiver.unprotect(packet) == original
    ours = SecurityAssociation(**kwargs).protect(original, iv=bytes.fromhex(v["iv"]))
    if tunnel:
        assert ours[20:] == packet[20:]
        assert ours[:4] == packet[:4] and ours[8:10] == packet[8:10] and ours[12:20] == packet[12:20]
    else:
        assert ours == packet


def test_rfc7634_chacha20_poly1305():
    """RFC 7634 Appendix A: ChaCha20-Poly1305 ESP carrying an IPv4 packet in tunnel mode."""
    v = VECTORS["rfc7634"][0]
    esp = bytes.fromhex(v["spi"] + v["seq"] + v["iv"] + v["ciphertext_tag"])
    inner, next_header = _trailer_split(bytes.fromhex(v["plaintext"]))
    assert next_header == 4
    kwargs = dict(spi=int(v["spi"], 16), cipher="chacha20-poly1305",
                  cipher_key=bytes.fromhex(v["key"] + v["salt"]), initial_sequence=5,
                  mode="tunnel", tunnel_source="198.51.100.5", tunnel_destination="192.0.2.5")
    assert SecurityAssociation(**kwargs).protect_payload(
        inner, 4, iv=bytes.fromhex(v["iv"])) == esp
    assert SecurityAssociation(**kwargs).unprotect_payload(esp) == (4, inner)
    # The same vector as a whole packet through the tunnel-mode SA.
    sender = SecurityAssociation(**kwargs)
    packet = sender.protect(inner, iv=bytes.fromhex(v["iv"]))
    assert packet[20:] == esp and packet[9] == 50
    assert SecurityAssociation(**kwargs).unprotect(packet) == inner


@pytest.mark.parametrize("v", VECTORS["rfc3686"], ids=[f"rfc3686-{i + 1}" for i in range(9)])
def test_rfc3686_aes_ctr(v):
    """RFC 3686 §6: the ciphertext in our ESP packet is the published one (counter block =
    nonce || IV || 1), and the packet opens to the plaintext."""
    key = bytes.fromhex(v["key"] + v["nonce"])
    auth_key = bytes(range(20))
    plaintext, iv = bytes.fromhex(v["plaintext"]), bytes.fromhex(v["iv"])
    kwargs = dict(spi=0x1234, cipher="aes-ctr", cipher_key=key, integrity="hmac-sha1-96",
                  integrity_key=auth_key)
    esp = SecurityAssociation(**kwargs).protect_payload(plaintext, 59, iv=iv)
    assert esp[8:16] == iv
    assert esp[16:16 + len(plaintext)] == bytes.fromhex(v["ciphertext"])
    receiver = SecurityAssociation(**kwargs)
    from espcore import DummyPacket
    with pytest.raises(DummyPacket):  # Next Header 59: authentic, then dropped
        receiver.unprotect_payload(esp)
    esp = SecurityAssociation(**kwargs).protect_payload(plaintext, 17, iv=iv)
    assert SecurityAssociation(**kwargs).unprotect_payload(esp) == (17, plaintext)


_HMAC = VECTORS["hmac"]


@pytest.mark.parametrize("name,vectors", [("hmac-md5-96", _HMAC["rfc2202_md5"]),
                                          ("hmac-sha1-96", _HMAC["rfc2202_sha1"])])
def test_rfc2202_truncated_hmac(name, vectors):
    """RFC 2202 digests truncated to 96 bits (RFC 2403/2404); the key is given to the HMAC
    as is (the ESP key length check is turned off)."""
    transform = integrity(name)
    for v in vectors:
        mac = Mac(transform, bytes.fromhex(v["key"]), check_length=False)
        assert mac.compute(bytes.fromhex(v["data"])) == bytes.fromhex(v["digest"])[:12]


@pytest.mark.parametrize("name,field", [("hmac-sha2-256-128", "sha256"),
                                        ("hmac-sha2-384-192", "sha384"),
                                        ("hmac-sha2-512-256", "sha512")])
def test_rfc4231_truncated_hmac(name, field):
    """RFC 4231 test cases truncated as RFC 4868 §2.1 specifies (128/192/256 bits); case 5
    publishes only a 128-bit truncation, which is compared as far as it goes."""
    transform = integrity(name)
    for v in _HMAC["rfc4231"]:
        mac = Mac(transform, bytes.fromhex(v["key"]), check_length=False)
        icv = mac.compute(bytes.fromhex(v["data"]))
        expected = bytes.fromhex(v[field])
        assert len(icv) == transform.icv_size
        assert icv[:len(expected)] == expected[:transform.icv_size]


def test_mac_with_an_ipsec_key_length():
    """The same RFC 4231 case 2 value through the key-length-checked constructor: HMAC keys
    shorter than the block are zero-padded, so a 32-byte key 'Jefe' + zeros gives the same MAC."""
    v = _HMAC["rfc4231"][1]
    key = bytes.fromhex(v["key"]).ljust(32, b"\0")
    mac = Mac(integrity("hmac-sha2-256-128"), key)
    assert mac.compute(bytes.fromhex(v["data"])) == bytes.fromhex(v["sha256"])[:16]
