"""What every exchange task shares: the view of a received message (``Inbound``), the endpoint
services a task may use (``Env``), and the conversions between the config records and ID payloads
(RFC 2407 §4.6.2: identities in Main Mode, traffic selectors in Quick Mode).

Does not own any exchange logic.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ikeproto.config import Address, ConfigProvider, Identity, IpNetwork, RetransmitPolicy, TrafficSelector
from ikeproto.enums import IdType, NotifyType
from ikeproto.errors import ProtocolError
from ikeproto.message import Message
from ikeproto.payloads import IdPayload, Payload
from ikeproto.trace import IkeTrace

__all__ = ["Env", "Inbound", "identity_of", "identity_payload", "selector_of", "selector_payload"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Inbound:
    """A received message after the header parse (and decryption, for an encrypted one).

    ``plaintext``/``chain_end`` are the decrypted body and where its payload chain ends (the pad
    starts there), for the hashes that cover "the rest of the message"; ``last_block`` is the
    cipher block that becomes the next IV once the message is authenticated."""

    message: Message
    payloads: tuple[Payload, ...]
    raw: bytes
    addr: Address
    local_port: int
    now: float
    plaintext: bytes | None = None
    chain_end: int = 0
    last_block: bytes | None = None

    def find(self, cls: type[Payload]) -> Any:
        for p in self.payloads:
            if type(p) is cls:
                return p
        return None

    def find_all(self, cls: type[Payload]) -> list[Any]:
        return [p for p in self.payloads if type(p) is cls]

    def of_type(self, *types: int) -> list[Any]:
        return [p for p in self.payloads if p.payload_type in types]


class Env(Protocol):
    """The endpoint as a task sees it: randomness, config, trace, and where output goes."""

    rng: Callable[[int], bytes]
    trace: IkeTrace
    provider: ConfigProvider
    local_address: str
    ike_port: int
    natt_port: int
    retransmit: RetransmitPolicy

    def send(self, sa: Any, datagrams: Sequence[bytes]) -> None:
        """Queue datagrams to ``sa.peer`` from ``sa.local_port``."""

    def emit(self, event: Any) -> None:
        """Queue an event for ``next_event``."""

    def new_message_id(self, sa: Any) -> int:
        """A random non-zero message ID not in use on ``sa``."""

    def new_spi(self) -> bytes:
        """A random 4-octet SPI not in use, >= 256 (RFC 4303 §2.1)."""

    def is_first_contact(self, sa: Any) -> bool:
        """No other established IKE SA with this peer (send INITIAL-CONTACT)."""

    def initial_contact(self, sa: Any, now: float) -> None:
        """The peer sent INITIAL-CONTACT on ``sa``: drop the older state with it."""

    def find_sa(self, cky_i: bytes, cky_r: bytes) -> Any:
        """The IKE SA with these cookies, or None."""

    def phase1_deleted(self, sa: Any, now: float, *, by_peer: bool, reason: str) -> None:
        """Remove ``sa`` (its exchanges fail) and report it."""

    def add_child(self, sa: Any, record: Any) -> None:
        """Remember an established IPsec SA pair with the peer of ``sa``."""

    def take_child(self, peer_ip: str, protocol: str, spi_out: int) -> int | None:
        """Forget the pair whose outbound SPI is ``spi_out``; its inbound SPI, or None."""

    def authenticated(self, sa: Any, inb: Inbound) -> None:
        """``inb`` passed its HASH: the SA may follow the peer's address and port (NAT-T)."""

    def abort_phase1(self, sa: Any, now: float) -> None:
        """Give up Main Mode on ``sa`` now (the peer refused it in an authenticated notify)."""


_KIND_TO_TYPE = {
    "ipv4": IdType.ID_IPV4_ADDR,
    "ipv6": IdType.ID_IPV6_ADDR,
    "fqdn": IdType.ID_FQDN,
    "user-fqdn": IdType.ID_USER_FQDN,
    "der-dn": IdType.ID_DER_ASN1_DN,
    "key-id": IdType.ID_KEY_ID,
}
_TYPE_TO_KIND = {v: k for k, v in _KIND_TO_TYPE.items()}


def address_identity(address: str) -> Identity:
    """ID_IPV4_ADDR / ID_IPV6_ADDR identity of an address."""
    a = ipaddress.ip_address(address)
    return Identity(kind="ipv4" if a.version == 4 else "ipv6", value=str(a))


def identity_payload(identity: Identity) -> IdPayload:
    """The Main Mode ID payload for ``identity`` (protocol and port 0, as strongSwan sends)."""
    id_type = _KIND_TO_TYPE.get(identity.kind)
    if id_type is None:
        raise ProtocolError(f"identity kind {identity.kind!r} unknown", notify=NotifyType.INVALID_ID_INFORMATION)
    if id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
        return IdPayload.address(str(identity.value))
    value = identity.value.encode() if isinstance(identity.value, str) else bytes(identity.value)
    return IdPayload(id_type=id_type, data=value)


def identity_of(p: IdPayload) -> Identity:
    """The identity an ID payload names (unknown types keep their octets)."""
    kind = _TYPE_TO_KIND.get(p.id_type)
    if kind in ("ipv4", "ipv6"):
        return Identity(kind=kind, value=str(p.ip_address()))
    if kind in ("fqdn", "user-fqdn"):
        return Identity(kind=kind, value=p.text())
    if kind is not None:
        return Identity(kind=kind, value=bytes(p.data))
    return Identity(kind=f"id-type-{p.id_type}", value=bytes(p.data))


def identity_matches(expected: Identity, got: Identity) -> bool:
    """Exact comparison; FQDNs case-insensitively (RFC 1035 names)."""
    if expected.kind != got.kind:
        return False
    if expected.kind in ("fqdn", "user-fqdn") and isinstance(expected.value, str) and isinstance(got.value, str):
        return expected.value.lower() == got.value.lower()
    if expected.kind in ("ipv4", "ipv6"):
        return ipaddress.ip_address(str(expected.value)) == ipaddress.ip_address(str(got.value))
    return expected.value == got.value


def selector_payload(ts: TrafficSelector) -> IdPayload:
    """RFC 2409 §5.5 client ID: a host address, or a subnet, with protocol and port."""
    net = ts.network
    if net.prefixlen == net.max_prefixlen:
        return IdPayload.address(net.network_address, protocol=ts.protocol, port=ts.port)
    return IdPayload.subnet(net, protocol=ts.protocol, port=ts.port)


def selector_of(p: IdPayload) -> TrafficSelector:
    """The traffic selector of a Quick Mode ID (address, subnet, or a range that is one subnet)."""
    try:
        if p.id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
            net = ipaddress.ip_network(p.ip_address())
        elif p.id_type in (IdType.ID_IPV4_ADDR_SUBNET, IdType.ID_IPV6_ADDR_SUBNET):
            net = _subnet(p.data)
        elif p.id_type in (IdType.ID_IPV4_ADDR_RANGE, IdType.ID_IPV6_ADDR_RANGE):
            first, last = p.ip_range()
            nets = list(ipaddress.summarize_address_range(first, last))
            if len(nets) != 1:
                raise ProtocolError("an address range that is not one subnet", notify=NotifyType.INVALID_ID_INFORMATION)
            net = nets[0]
        else:
            raise ProtocolError(f"ID type {p.id_type} is not a traffic selector", notify=NotifyType.INVALID_ID_INFORMATION)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"ID payload does not name addresses: {exc}", notify=NotifyType.INVALID_ID_INFORMATION) from None
    return TrafficSelector(network=net, protocol=p.protocol, port=p.port)


def _subnet(data: bytes) -> IpNetwork:
    """Address then mask (RFC 2407 §4.6.2.5/§4.6.2.7), IPv4 or IPv6; the mask must be contiguous.
    (``IdPayload.ip_network`` cannot read an IPv6 mask: Python parses "addr/mask" for IPv4 only.)"""
    half = len(data) // 2
    mask = int.from_bytes(data[half:], "big")
    bits = half * 8
    prefix = bits - (~mask & ((1 << bits) - 1)).bit_length()
    if mask != ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1):
        raise ProtocolError("subnet mask is not contiguous", notify=NotifyType.INVALID_ID_INFORMATION)
    return ipaddress.ip_network((ipaddress.ip_address(data[:half]), prefix), strict=False)


def host_selector(address: str) -> TrafficSelector:
    """RFC 2409 §5.5: without client IDs, the selectors are the ISAKMP peers' addresses."""
    return TrafficSelector.host(address)
