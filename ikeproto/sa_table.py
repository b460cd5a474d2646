"""The endpoint's bookkeeping: which IKE SAs exist, how to find them, and the IPsec SA pairs
negotiated with each peer.

Owns the indexes — by cookie pair, by our initiator cookie while waiting for message 2, by peer
address — the responder cookie (RFC 2408 §2.5.3: derived from a secret, the peer's address and
CKY-I, so a retransmitted message 1 maps to the same SA and nobody can guess it), the records of
established IPsec SA pairs (for Delete and INITIAL-CONTACT, which outlive the ISAKMP SA that
negotiated them), and unused SPI and message-ID allocation. No events, no datagrams: that is the
endpoint's.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator

from ikeproto.ike_sa import ChildRecord, IkeSa, IkeSaState

__all__ = ["SaTable", "ZERO_COOKIE"]

ZERO_COOKIE = bytes(8)


class SaTable:
    """The IKE SAs of one endpoint and the IPsec SA pairs with each peer."""

    __slots__ = ("_by_cookies", "_by_peer", "_children", "_initiating", "_ours", "_rng", "_secret")

    def __init__(self, rng: Callable[[int], bytes]) -> None:
        self._rng = rng
        self._secret = rng(32)
        self._by_cookies: dict[tuple[bytes, bytes], IkeSa] = {}
        self._initiating: dict[bytes, IkeSa] = {}  # our CKY-I -> SA waiting for message 2
        self._by_peer: dict[str, list[IkeSa]] = {}
        self._children: dict[str, dict[tuple[str, int], ChildRecord]] = {}
        self._ours: set[bytes] = set()  # CKY-I of the SAs we initiated

    # --- IKE SAs -----------------------------------------------------------------------------------

    def add(self, sa: IkeSa) -> None:
        """Index a new SA (an initiator's by CKY-I until message 2 gives CKY-R)."""
        if sa.is_initiator:
            self._ours.add(sa.cky_i)
        if sa.cky_r == ZERO_COOKIE:
            self._initiating[sa.cky_i] = sa
        else:
            self._by_cookies[sa.cookies] = sa
        self._by_peer.setdefault(sa.peer_ip, []).append(sa)

    def responder_cookie_known(self, sa: IkeSa) -> None:
        """Message 2 arrived: index the initiator's SA by its full cookie pair."""
        self._initiating.pop(sa.cky_i, None)
        self._by_cookies[sa.cookies] = sa

    def remove(self, sa: IkeSa) -> None:
        if sa.is_initiator:
            self._ours.discard(sa.cky_i)
        self._by_cookies.pop(sa.cookies, None)
        if self._initiating.get(sa.cky_i) is sa:
            del self._initiating[sa.cky_i]
        peers = self._by_peer.get(sa.peer_ip)
        if peers is not None:
            if sa in peers:
                peers.remove(sa)
            if not peers:
                del self._by_peer[sa.peer_ip]

    def find(self, cky_i: bytes, cky_r: bytes) -> IkeSa | None:
        return self._by_cookies.get((cky_i, cky_r))

    def initiating(self, cky_i: bytes) -> IkeSa | None:
        """Our SA with this CKY-I that still waits for message 2."""
        return self._initiating.get(cky_i)

    def is_ours(self, cky_i: bytes) -> bool:
        """Whether we chose this CKY-I (a message 1 carrying it is our own, reflected)."""
        return cky_i in self._ours

    def new_initiator_cookie(self) -> bytes:
        while True:
            cky_i = self._rng(8)
            if cky_i != ZERO_COOKIE and cky_i not in self._ours:
                return cky_i

    def of_peer(self, peer_ip: str) -> tuple[IkeSa, ...]:
        """The SAs with a peer, oldest first."""
        return tuple(self._by_peer.get(peer_ip, ()))

    def __iter__(self) -> Iterator[IkeSa]:
        for sas in self._by_peer.values():
            yield from sas

    def established(self, peer_ip: str, *, usable: bool = True) -> IkeSa | None:
        """The newest established SA with the peer (not an expired one when ``usable``)."""
        for sa in reversed(self._by_peer.get(peer_ip, ())):
            if sa.is_established and not (usable and sa.expired):
                return sa
        return None

    def half_open(self, peer_ip: str | None = None) -> int:
        """Responder SAs still in Main Mode, with one peer or in total."""
        sas = self._by_peer.get(peer_ip, ()) if peer_ip is not None else self._by_cookies.values()
        return sum(1 for s in sas if not s.is_initiator and s.state is IkeSaState.CONNECTING)

    def responder_cookie(self, peer_ip: str, cky_i: bytes) -> bytes:
        """CKY-R = HMAC-SHA256(secret, peer IP | CKY-I)[:8]."""
        digest = hmac.digest(self._secret, peer_ip.encode() + b"|" + cky_i, hashlib.sha256)
        cookie = digest[:8]
        return cookie if cookie != ZERO_COOKIE else b"\x00" * 7 + b"\x01"

    def new_message_id(self, sa: IkeSa) -> int:
        """A random non-zero message ID not used by an exchange on ``sa`` (RFC 2408 §3.1)."""
        while True:
            mid = int.from_bytes(self._rng(4), "big")
            if mid and mid not in sa.quick_modes and mid not in sa.finished and mid not in sa.informational_seen:
                return mid

    # --- IPsec SA pairs ----------------------------------------------------------------------------

    def new_spi(self) -> bytes:
        """A random SPI >= 256 (RFC 4303 §2.1: 1-255 reserved, 0 local) not inbound already."""
        in_use = {spi for records in self._children.values() for (_p, spi) in records}
        while True:
            spi = self._rng(4)
            if int.from_bytes(spi, "big") >= 256 and int.from_bytes(spi, "big") not in in_use:
                return spi

    def add_child(self, peer_ip: str, record: ChildRecord) -> None:
        self._children.setdefault(peer_ip, {})[(record.protocol, record.spi_in)] = record

    def pop_child(self, peer_ip: str, protocol: str, spi_in: int) -> ChildRecord | None:
        """Forget the pair whose *inbound* SPI is ``spi_in``."""
        return self._children.get(peer_ip, {}).pop((protocol, spi_in), None)

    def take_child(self, peer_ip: str, protocol: str, spi_out: int) -> int | None:
        """Forget the pair whose *outbound* SPI is ``spi_out`` (what a peer's Delete names)."""
        records = self._children.get(peer_ip, {})
        for key, rec in records.items():
            if rec.protocol == protocol and rec.spi_out == spi_out:
                del records[key]
                return rec.spi_in
        return None

    def pop_children(self, peer_ip: str) -> list[ChildRecord]:
        """Forget every pair with the peer."""
        return list(self._children.pop(peer_ip, {}).values())

    def children_of(self, sa: IkeSa) -> list[ChildRecord]:
        """The live pairs ``sa`` negotiated."""
        return [c for c in self._children.get(sa.peer_ip, {}).values() if c.cookies == sa.cookies]

    def adopt_children(self, sa: IkeSa, *, keep: set[tuple[bytes, bytes]]) -> int:
        """Move the peer's pairs whose ISAKMP SA is not in ``keep`` (gone) to ``sa``; how many."""
        moved = 0
        for rec in self._children.get(sa.peer_ip, {}).values():
            if rec.cookies not in keep:
                rec.cookies = sa.cookies
                moved += 1
        return moved
