"""The inbound SA database: demultiplexing ESP and AH packets by SPI (RFC 4301 §4.4.2).

This module owns the map (protocol, SPI) -> inbound ``SecurityAssociation`` and the lookup of an
arriving packet in it (RFC 4303 §3.4.2: the SPI, with the protocol, selects the SA; a packet
without an SA is discarded as an auditable event, here ``UnknownSpiError``). Demultiplexing is
part of the sans-I/O core (house rule 1). It does not own policy checks on the inner packet, SA
creation or expiry (the agent's) nor outbound SA selection (the SPD's).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from espcore.errors import ParseError, UnknownSpiError, UsageError
from espcore.ip import IPPROTO_AH, find_ipsec_header
from espcore.sa import SecurityAssociation

_SPI = struct.Struct("!I")


class SaDatabase:
    """Inbound SAs keyed by (protocol, SPI); ``unprotect`` finds the SA and runs it."""

    def __init__(self) -> None:
        self._sas: dict[tuple[str, int], SecurityAssociation] = {}

    def add(self, sa: SecurityAssociation) -> None:
        """Register an inbound SA. Its (protocol, SPI) must be free."""
        key = (sa.protocol, sa.spi)
        if key in self._sas:
            raise UsageError(f"an {sa.protocol.upper()} SA with SPI 0x{sa.spi:08x} exists")
        self._sas[key] = sa

    def remove(self, spi: int, protocol: str = "esp") -> SecurityAssociation | None:
        """Forget an SA; return it, or ``None`` if there was none."""
        return self._sas.pop((protocol, spi), None)

    def get(self, spi: int, protocol: str = "esp") -> SecurityAssociation | None:
        return self._sas.get((protocol, spi))

    def __len__(self) -> int:
        return len(self._sas)

    def __iter__(self) -> Iterator[SecurityAssociation]:
        return iter(list(self._sas.values()))

    def __contains__(self, key: object) -> bool:
        return key in self._sas

    def lookup(self, packet: bytes | bytearray | memoryview) -> SecurityAssociation:
        """The SA an inbound IP packet carrying ESP or AH belongs to."""
        proto, start, end, _ = find_ipsec_header(packet)
        offset = start + (4 if proto == IPPROTO_AH else 0)
        if end - offset < 4:
            raise ParseError("IPsec header truncated before its SPI", offset=offset)
        spi = _SPI.unpack_from(packet, offset)[0]
        protocol = "ah" if proto == IPPROTO_AH else "esp"
        sa = self._sas.get((protocol, spi))
        if sa is None:
            raise UnknownSpiError(spi, protocol=protocol)
        return sa

    def unprotect(self, packet: bytes | bytearray | memoryview
                  ) -> tuple[SecurityAssociation, bytes]:
        """Find the packet's SA and unprotect it: (the SA, the original/inner packet)."""
        sa = self.lookup(packet)
        return sa, sa.unprotect(packet)

    def unprotect_payload(self, esp: bytes | bytearray | memoryview
                          ) -> tuple[SecurityAssociation, int, bytes]:
        """For ESP received without an IP header (UDP encapsulation, RFC 3948): (SA, Next
        Header, payload)."""
        if len(esp) < 8:
            raise ParseError(f"ESP packet of {len(esp)} bytes is too short", offset=0)
        spi = _SPI.unpack_from(esp, 0)[0]
        sa = self._sas.get(("esp", spi))
        if sa is None:
            raise UnknownSpiError(spi)
        next_header, payload = sa.unprotect_payload(esp)
        return sa, next_header, payload
