"""An ICMP echo peer on our espcore SAs, for interop tests: the far end of a peer's ESP-in-UDP tunnel.

Owns, for the test: keeping the espcore ``SecurityAssociation`` pairs of each ``Phase2Established``
(built by ``ikeproto.child_sa.espcore_sas``), receiving UDP-encapsulated ESP (RFC 3948 §2.1) from the NAT-T socket of an
``ikeproto.aio.IkeService`` (it is the service's ``esp_handler``), answering inner IPv4 ICMP echo
requests (RFC 792) through the outbound SA, and sending echo requests through a tunnel and waiting
for the peer's kernel to answer (``ping``).

Tunnel mode only (what strongSwan's libipsec installs): the inner IPv4 packet rides with Next Header
4 (RFC 4303 §2.6). Does not own sockets (the service's) or IKE.
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from dataclasses import dataclass

from espcore import SecurityAssociation
from espcore.errors import EspError
from espcore.ip import checksum, parse_address, set_ipv4_checksum
from ikeproto.child_sa import espcore_sas
from ikeproto.config import Address
from ikeproto.events import Phase2Established

IPPROTO_ICMP, IPPROTO_IPIP = 1, 4
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
_SPI = struct.Struct("!I")


def icmp_echo(source: str, destination: str, *, kind: int, ident: int, seq: int, payload: bytes,
              ttl: int = 64) -> bytes:
    """An IPv4 packet carrying an ICMP echo request (kind 8) or reply (kind 0), checksums set."""
    icmp = bytearray(struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload)
    icmp[2:4] = checksum(icmp).to_bytes(2, "big")
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq & 0xFFFF, 0, ttl,
                               IPPROTO_ICMP, 0, parse_address(source).packed,
                               parse_address(destination).packed))
    set_ipv4_checksum(ip)
    return bytes(ip + icmp)


@dataclass(frozen=True, slots=True, kw_only=True)
class Echo:
    """A parsed inner ICMP echo message."""

    source: str
    destination: str
    kind: int
    ident: int
    seq: int
    payload: bytes


def parse_icmp_echo(packet: bytes) -> Echo | None:
    """The echo request/reply in an IPv4 packet with valid checksums, else None."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != IPPROTO_ICMP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    if ihl < 20 or total > len(packet) or total < ihl + 8 or checksum(packet[:ihl]) != 0:
        return None
    icmp = packet[ihl:total]
    if checksum(icmp) != 0:
        return None
    kind, code, _, ident, seq = struct.unpack_from("!BBHHH", icmp)
    if code != 0 or kind not in (ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST):
        return None
    src, dst = (str(parse_address(packet[12:16])), str(parse_address(packet[16:20])))
    return Echo(source=src, destination=dst, kind=kind, ident=ident, seq=seq, payload=bytes(icmp[8:]))


class _Pair:
    __slots__ = ("inbound", "outbound", "peer")

    def __init__(self, inbound: SecurityAssociation, outbound: SecurityAssociation, peer: Address) -> None:
        self.inbound, self.outbound, self.peer = inbound, outbound, peer


class EspEcho:
    """Answers pings that arrive through our SAs; ``ping`` sends one through them.

    Pass ``handle`` as the service's ``esp_handler``, then ``install`` each ``Phase2Established``.
    ``stats`` counts received, answered and dropped packets (by reason); ``answered`` lists the
    echo requests we answered as (SPI, Echo).
    """

    def __init__(self) -> None:
        self.service = None  # an ikeproto.aio.IkeService; set before traffic flows
        self.stats: Counter[str] = Counter()
        self.answered: list[tuple[int, Echo]] = []
        self._pairs: dict[int, _Pair] = {}
        self._waiters: dict[tuple[int, int], asyncio.Future[Echo]] = {}

    def install(self, event: Phase2Established, *, local: str) -> list[int]:
        """Build and register the SAs of ``event``; returns our inbound SPIs."""
        if event.mode != "tunnel":
            raise ValueError("EspEcho speaks tunnel mode only")
        peer_addr = (event.peer[0], event.peer_port)
        spis = []
        for child in event.sas:
            inbound, outbound = espcore_sas(event, child, local_address=local)
            self._pairs[inbound.spi] = _Pair(inbound, outbound, peer_addr)
            spis.append(inbound.spi)
        return spis

    def remove(self, spi_in: int) -> None:
        self._pairs.pop(spi_in, None)

    def pair(self, spi_in: int) -> tuple[SecurityAssociation, SecurityAssociation]:
        p = self._pairs[spi_in]
        return p.inbound, p.outbound

    # -- the esp_handler
    def handle(self, data: bytes, addr: Address) -> None:
        self.stats["received"] += 1
        if data == b"\xff":
            self.stats["keepalive"] += 1
            return
        (spi,) = _SPI.unpack_from(data)
        pair = self._pairs.get(spi)
        if pair is None:
            self.stats["unknown_spi"] += 1
            return
        try:
            next_header, inner = pair.inbound.unprotect_payload(data)
        except EspError as exc:
            self.stats[type(exc).__name__] += 1
            return
        echo = parse_icmp_echo(inner) if next_header == IPPROTO_IPIP else None
        if echo is None:
            self.stats["not_echo"] += 1
            return
        if echo.kind == ICMP_ECHO_REQUEST:
            reply = icmp_echo(echo.destination, echo.source, kind=ICMP_ECHO_REPLY, ident=echo.ident,
                              seq=echo.seq, payload=echo.payload)
            self._send(pair, reply)
            self.answered.append((spi, echo))
            self.stats["answered"] += 1
        else:
            waiter = self._waiters.pop((echo.ident, echo.seq), None)
            self.stats["replies"] += 1
            if waiter is not None and not waiter.done():
                waiter.set_result(echo)

    def _send(self, pair: _Pair, packet: bytes) -> None:
        assert self.service is not None, "EspEcho.service must be set"
        self.service.send_esp(pair.outbound.protect_payload(packet, IPPROTO_IPIP), pair.peer)

    async def ping(self, spi_in: int, source: str, destination: str, *, ident: int = 0x4242, seq: int = 1,
                   timeout: float = 3.0) -> Echo:
        """Send an echo request ``source`` -> ``destination`` through the SA pair of ``spi_in`` and
        return the peer's echo reply (raises ``TimeoutError``)."""
        pair = self._pairs[spi_in]
        waiter: asyncio.Future[Echo] = asyncio.get_running_loop().create_future()
        self._waiters[(ident, seq)] = waiter
        payload = bytes(range(48))
        self._send(pair, icmp_echo(source, destination, kind=ICMP_ECHO_REQUEST, ident=ident, seq=seq,
                                   payload=payload))
        try:
            reply = await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.pop((ident, seq), None)
        if reply.payload != payload:
            raise AssertionError("echo reply payload differs from the request's")
        return reply
