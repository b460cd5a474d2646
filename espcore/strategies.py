"""Hypothesis strategies for testing espcore and for fuzzing *any* ESP/AH implementation.

Public, documented API (house style: strategies live next to the codec). Importing this module
needs ``hypothesis``; espcore itself does not.

Values:
- ``ipv4_packets()``, ``ipv6_packets()``, ``ip_packets()``: well-formed IP packets (bytes) with
  random header fields, IPv4 options (immutable and mutable ones, RFC 4302 Appendix A) and IPv6
  extension headers (hop-by-hop and destination options with and without the "may change"
  bit, routing headers), TCP/UDP/ICMP or opaque payloads, never fragments.
- ``sa_parameters(protocol=None, mode=None)``: keyword arguments for ``SecurityAssociation``
  covering every transform of ``espcore.transforms``, both modes and IP versions of tunnel
  endpoints, ESN and window sizes; ``sa_pairs()``: (sender, receiver) SAs built from them.

Wire bytes:
- ``esp_packets()``: IPv4/IPv6 packets carrying ESP-looking payloads (SPI, sequence number,
  random bytes), for feeding a receiver garbage that passes the first checks.
- ``nat_t_payloads()``: UDP payloads seen on port 4500 (keep-alives, non-ESP-marked IKE, ESP).

Mutations (functions returning strategies):
- ``mutations(data)``: bit flips, truncations, extensions, byte overwrites and lying IPv4/IPv6
  length fields applied to ``data``.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

from espcore.ip import checksum
from espcore.sa import SecurityAssociation
from espcore.transforms import CIPHERS, INTEGRITY

__all__ = [
    "esp_packets",
    "ip_packets",
    "ipv4_addresses",
    "ipv4_packets",
    "ipv6_addresses",
    "ipv6_packets",
    "mutations",
    "nat_t_payloads",
    "sa_pairs",
    "sa_parameters",
]


def ipv4_addresses() -> st.SearchStrategy[bytes]:
    """Packed IPv4 addresses (any value: the codec does not route)."""
    return st.binary(min_size=4, max_size=4)


def ipv6_addresses() -> st.SearchStrategy[bytes]:
    """Packed IPv6 addresses."""
    return st.binary(min_size=16, max_size=16)


def _payloads(max_size: int, protocols: tuple[int, ...] | None = None
              ) -> st.SearchStrategy[tuple[int, bytes]]:
    """(protocol, upper-layer bytes): UDP and TCP with real headers, ICMP, or anything else."""
    udp = st.tuples(st.integers(1, 0xFFFF), st.integers(1, 0xFFFF),
                    st.binary(max_size=max_size)).map(
        lambda t: (17, struct.pack("!HHHH", t[0], t[1], 8 + len(t[2]), 0) + t[2]))
    tcp = st.tuples(st.binary(min_size=20, max_size=20), st.binary(max_size=max_size)).map(
        lambda t: (6, t[0][:12] + b"\x50" + t[0][13:] + t[1]))
    icmp = st.binary(min_size=8, max_size=max_size + 8).map(lambda b: (1, b))
    other = st.tuples(st.sampled_from([47, 58, 132, 253]), st.binary(max_size=max_size))
    if protocols is None:
        return st.one_of(udp, tcp, icmp, other)
    choices = [s for p, s in ((17, udp), (6, tcp), (1, icmp)) if p in protocols]
    rest = [p for p in protocols if p not in (1, 6, 17)]
    if rest:
        choices.append(st.tuples(st.sampled_from(rest), st.binary(max_size=max_size)))
    return st.one_of(choices)


# IPv4 options: (type, data length) pairs; the data is random. RFC 4302 Appendix A.1 marks
# 0, 1, 130, 133, 134, 148, 149 immutable; 7 (record route) and 68 (timestamp) are mutable.
_IPV4_OPTIONS = st.one_of(
    st.just(b"\x01"),
    st.binary(min_size=2, max_size=2).map(lambda d: b"\x94\x04" + d),  # router alert
    st.binary(min_size=8, max_size=8).map(lambda d: b"\x07\x0b\x04" + d),  # record route
    st.binary(min_size=8, max_size=8).map(lambda d: b"\x44\x0c\x05\x00" + d),  # timestamp
    st.binary(min_size=9, max_size=9).map(lambda d: b"\x82\x0b" + d),  # security
)


@st.composite
def ipv4_packets(draw: st.DrawFn, *, max_payload: int = 600, options: bool = True,
                 protocols: tuple[int, ...] | None = None) -> bytes:
    """A well-formed, unfragmented IPv4 packet with a correct header checksum; ``protocols``
    limits the upper-layer protocols (17, 6 and 1 get real headers)."""
    opts = b""
    if options and draw(st.booleans()):
        opts = b"".join(draw(st.lists(_IPV4_OPTIONS, max_size=3)))  # at most 35 bytes
        opts += b"\x00" * (-len(opts) % 4)  # End of Option List, then padding
    proto, payload = draw(_payloads(max_payload, protocols))
    ihl = 20 + len(opts)
    flags = draw(st.sampled_from([0, 0x4000]))
    header = bytearray(struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl // 4, draw(st.integers(0, 255)), ihl + len(payload),
        draw(st.integers(0, 0xFFFF)), flags, draw(st.integers(1, 255)), proto, 0,
        draw(ipv4_addresses()), draw(ipv4_addresses())) + opts)
    header[10:12] = checksum(header).to_bytes(2, "big")
    return bytes(header) + payload


def _ipv6_options_header(draw: st.DrawFn, next_header: int) -> bytes:
    """A hop-by-hop or destination options header with PadN and experimental options, some
    with the "may change en route" bit (0x20, RFC 8200 §4.2)."""
    body = b""
    for kind in draw(st.lists(st.sampled_from([0x1E, 0x3E]), max_size=2)):
        data = draw(st.binary(max_size=6))
        body += bytes((kind, len(data))) + data
    total = 2 + len(body)
    pad = -total % 8
    if pad == 1:
        body += b"\x00"  # Pad1
    elif pad:
        body += bytes((1, pad - 2)) + bytes(pad - 2)  # PadN
    return bytes((next_header, (2 + len(body)) // 8 - 1)) + body


@st.composite
def ipv6_packets(draw: st.DrawFn, *, max_payload: int = 600, extension_headers: bool = True,
                 protocols: tuple[int, ...] | None = None) -> bytes:
    """A well-formed IPv6 packet, optionally with hop-by-hop, destination-option and type 0/2
    routing headers (segments left 0, as they arrive) before and after each other."""
    proto, payload = draw(_payloads(max_payload, protocols))
    chain: list[int] = []
    if extension_headers:
        chain = draw(st.sampled_from([[], [0], [60], [0, 60], [0, 43], [0, 43, 60], [43, 60],
                                      [60, 43, 60]]))
    next_header, ext = proto, b""
    for kind in reversed(chain):
        if kind == 43:
            addresses = draw(st.lists(ipv6_addresses(), min_size=1, max_size=2))
            header = bytes((next_header, 2 * len(addresses), draw(st.sampled_from([0, 2])), 0))
            header += bytes(4) + b"".join(addresses)
        else:
            header = _ipv6_options_header(draw, next_header)
        ext = header + ext
        next_header = kind
    first = (6 << 28) | (draw(st.integers(0, 255)) << 20) | draw(st.integers(0, 0xFFFFF))
    return struct.pack("!IHBB16s16s", first, len(ext) + len(payload), next_header,
                       draw(st.integers(1, 255)), draw(ipv6_addresses()),
                       draw(ipv6_addresses())) + ext + payload


def ip_packets(*, max_payload: int = 600) -> st.SearchStrategy[bytes]:
    """IPv4 or IPv6 packets as above."""
    return st.one_of(ipv4_packets(max_payload=max_payload), ipv6_packets(max_payload=max_payload))


@st.composite
def sa_parameters(draw: st.DrawFn, *, protocol: str | None = None, mode: str | None = None,
                  ciphers: list[str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``SecurityAssociation``, keys included."""
    protocol = protocol or draw(st.sampled_from(["esp", "esp", "ah"]))
    mode = mode or draw(st.sampled_from(["transport", "tunnel"]))
    kwargs: dict[str, Any] = dict(protocol=protocol, mode=mode,
                                  spi=draw(st.integers(256, 0xFFFFFFFF)),
                                  esn=draw(st.booleans()),
                                  replay_window=draw(st.sampled_from([32, 64, 128, 1024])))
    if mode == "tunnel":
        if draw(st.booleans()):
            kwargs.update(tunnel_source="192.0.2.1", tunnel_destination="198.51.100.7")
        else:
            kwargs.update(tunnel_source="2001:db8::1", tunnel_destination="2001:db8:ffff::2")
    if protocol == "esp":
        name = draw(st.sampled_from(ciphers or sorted(CIPHERS)))
        transform = CIPHERS[name]
        bits = draw(st.sampled_from(transform.key_bits))
        kwargs.update(cipher=name, cipher_key=draw(st.binary(
            min_size=bits // 8 + transform.salt_size, max_size=bits // 8 + transform.salt_size)))
        if not transform.is_aead:
            # Without integrity ESP is allowed with a real cipher (RFC 4303 §3.2), never null.
            choices = sorted(INTEGRITY) + ([None] if transform.is_confidential else [])
            integrity = draw(st.sampled_from(choices))
            if integrity is not None:
                kwargs.update(integrity=integrity)
    else:
        kwargs.update(integrity=draw(st.sampled_from(sorted(INTEGRITY))))
    if "integrity" in kwargs:
        size = INTEGRITY[kwargs["integrity"]].key_bytes
        kwargs["integrity_key"] = draw(st.binary(min_size=size, max_size=size))
    return kwargs


def sa_pairs(**kwargs: Any) -> st.SearchStrategy[tuple[SecurityAssociation, SecurityAssociation]]:
    """(sender, receiver): two SAs with the same parameters, as the two peers hold them."""
    return sa_parameters(**kwargs).map(
        lambda p: (SecurityAssociation(**p), SecurityAssociation(**p)))


@st.composite
def esp_packets(draw: st.DrawFn, *, spi: int | None = None) -> bytes:
    """IPv4/IPv6 packets with protocol 50 and a random ESP body behind a plausible header."""
    body = struct.pack("!II", spi if spi is not None else draw(st.integers(0, 0xFFFFFFFF)),
                       draw(st.integers(0, 0xFFFFFFFF))) + draw(st.binary(max_size=200))
    if draw(st.booleans()):
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, 50, 0,
                             draw(ipv4_addresses()), draw(ipv4_addresses()))
    else:
        header = struct.pack("!IHBB16s16s", 6 << 28, len(body), 50, 64, draw(ipv6_addresses()),
                             draw(ipv6_addresses()))
    return header + body


def nat_t_payloads() -> st.SearchStrategy[bytes]:
    """UDP payloads on port 4500: keep-alive, non-ESP marker + IKE bytes, ESP, or junk."""
    return st.one_of(
        st.just(b"\xff"),
        st.binary(min_size=1, max_size=64).map(lambda b: b"\x00\x00\x00\x00" + b),
        st.tuples(st.integers(1, 0xFFFFFFFF), st.binary(min_size=4, max_size=64)).map(
            lambda t: t[0].to_bytes(4, "big") + t[1]),
        st.binary(max_size=12),
    )


@st.composite
def _mutated(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite", "length"]))
    buf = bytearray(data)
    if kind == "flip" and buf:
        bit = draw(st.integers(0, len(buf) * 8 - 1))
        buf[bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncate":
        del buf[draw(st.integers(0, max(len(buf) - 1, 0))):]
    elif kind == "extend":
        buf += draw(st.binary(min_size=1, max_size=32))
    elif kind == "overwrite" and buf:
        at = draw(st.integers(0, len(buf) - 1))
        chunk = draw(st.binary(min_size=1, max_size=8))
        buf[at:at + len(chunk)] = chunk
    elif kind == "length" and len(buf) >= 6:
        # Lie in the IPv4 total length or the IPv6 payload length.
        at = 2 if buf[0] >> 4 == 4 else 4
        buf[at:at + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    return bytes(buf)


def mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Mutated copies of ``data`` that differ from it (bit flips, cuts, additions, lies)."""
    return _mutated(data).filter(lambda b: b != data)
