"""NAT traversal for IKEv1: which NAT-T dialect a peer speaks, NAT detection, the UDP modes.

Owns the decisions of RFC 3947 and of draft-ietf-ipsec-nat-t-ike-02/03, which peers still send:

- §3.1: support is announced by vendor IDs in Main Mode messages 1 and 2; both sides must send
  one. We offer RFC 3947 and the drafts; a responder answers with the best one it shares
  (RFC 3947 first), and that choice fixes the payload and attribute numbers for the IKE SA:
  NAT-D 20 / NAT-OA 21 / encapsulation modes 3-4 (RFC), or 130 / 131 / 61443-61444 (drafts).
- §3.2: NAT-D payloads in messages 3 and 4: the first hashes the *receiver's* address and port as
  the sender sees it, the others the sender's own. A NAT is detected when the receiver's hash does
  not match its own address, or when none of the sender's hashes matches the address the message
  came from. Faking a NAT (``force_encapsulation``, what strongSwan does for its user-space ESP)
  sends a random hash for ourselves, so that the peer sees a NAT in front of us.
- §4: after a NAT is detected the initiator moves to port 4500 from message 5 on (the endpoint
  does the move; the non-ESP marker is the adapter's).
- §5: the UDP-encapsulated modes in Quick Mode, and NAT-OA for transport mode.

Does not own: the NAT-D hash formula (``keymat.natd_hash``), the payload codec (``payloads``),
ESP-in-UDP itself and keep-alive bytes (``espcore.udp_encap``).
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from dataclasses import dataclass

from ikeproto.config import Mode
from ikeproto.crypto import Hash
from ikeproto.enums import EncapsulationMode, PayloadType
from ikeproto.keymat import natd_hash
from ikeproto.payloads import NatDPayload
from ikeproto.vendor_ids import NAT_T_DRAFT_02, NAT_T_DRAFT_02_N, NAT_T_DRAFT_03, NAT_T_RFC3947

__all__ = [
    "KEEPALIVE_INTERVAL_S",
    "NatDetection",
    "NatStatus",
    "NattVariant",
    "choose_variant",
    "decode_encapsulation",
    "detect_nat",
    "natd_payloads",
    "offered_vendor_ids",
    "plain_encapsulation_mode",
]

# RFC 3948 §4: keep-alives are sent by the side behind the NAT; 20 s is the common default.
KEEPALIVE_INTERVAL_S = 20.0


class NattVariant(enum.Enum):
    """The NAT-T dialect agreed through vendor IDs; the value is the vendor ID we send for it."""

    RFC3947 = NAT_T_RFC3947
    DRAFT_03 = NAT_T_DRAFT_03
    DRAFT_02_N = NAT_T_DRAFT_02_N
    DRAFT_02 = NAT_T_DRAFT_02

    @property
    def is_rfc(self) -> bool:
        return self is NattVariant.RFC3947

    @property
    def vendor_id(self) -> bytes:
        return self.value

    @property
    def natd_type(self) -> int:
        """RFC 3947 §3.2: NAT-D is payload 20; the drafts used the private value 130."""
        return PayloadType.NAT_D if self.is_rfc else PayloadType.NAT_D_DRAFT

    @property
    def natoa_type(self) -> int:
        """RFC 3947 §5.2: NAT-OA is payload 21; the drafts used 131."""
        return PayloadType.NAT_OA if self.is_rfc else PayloadType.NAT_OA_DRAFT

    def encapsulation_mode(self, mode: Mode) -> int:
        """RFC 3947 §5.1: UDP-Encapsulated-Tunnel 3 / -Transport 4; drafts 61443 / 61444."""
        if mode == "tunnel":
            return EncapsulationMode.UDP_ENCAPSULATED_TUNNEL if self.is_rfc else EncapsulationMode.UDP_ENCAPSULATED_TUNNEL_DRAFT
        return EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT if self.is_rfc else EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT_DRAFT


# Most preferred first: what an initiator sends, and the order a responder picks from.
_PREFERENCE = (NattVariant.RFC3947, NattVariant.DRAFT_03, NattVariant.DRAFT_02_N, NattVariant.DRAFT_02)

_MODES: dict[int, tuple[Mode, bool]] = {
    EncapsulationMode.TUNNEL: ("tunnel", False),
    EncapsulationMode.TRANSPORT: ("transport", False),
    EncapsulationMode.UDP_ENCAPSULATED_TUNNEL: ("tunnel", True),
    EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT: ("transport", True),
    EncapsulationMode.UDP_ENCAPSULATED_TUNNEL_DRAFT: ("tunnel", True),
    EncapsulationMode.UDP_ENCAPSULATED_TRANSPORT_DRAFT: ("transport", True),
}


def offered_vendor_ids() -> tuple[bytes, ...]:
    """The NAT-T vendor IDs an initiator sends in message 1 (RFC 3947 and the drafts)."""
    return tuple(v.vendor_id for v in _PREFERENCE)


def choose_variant(vendor_ids: Iterable[bytes]) -> NattVariant | None:
    """The best NAT-T dialect among received vendor IDs (RFC 3947 over the drafts), or None."""
    got = {bytes(v) for v in vendor_ids}
    for variant in _PREFERENCE:
        if variant.vendor_id in got:
            return variant
    return None


def plain_encapsulation_mode(mode: Mode) -> int:
    """RFC 2407 §4.5: Tunnel 1, Transport 2."""
    return EncapsulationMode.TUNNEL if mode == "tunnel" else EncapsulationMode.TRANSPORT


def decode_encapsulation(value: int) -> tuple[Mode, bool] | None:
    """(mode, UDP-encapsulated) of an Encapsulation Mode attribute, RFC or draft; None if unknown."""
    return _MODES.get(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class NatStatus:
    """What the NAT-D payloads said, from our side of the exchange."""

    local_behind_nat: bool
    peer_behind_nat: bool

    @property
    def detected(self) -> bool:
        return self.local_behind_nat or self.peer_behind_nat


def natd_payloads(
    hash_alg: Hash,
    cky_i: bytes,
    cky_r: bytes,
    *,
    remote: tuple[str, int],
    local: tuple[str, int],
    variant: NattVariant,
    fake: bool,
    rng: Callable[[int], bytes],
) -> list[NatDPayload]:
    """RFC 3947 §3.2: NAT-D for the receiver's address first, then ours (random when faking)."""
    ptype = variant.natd_type
    theirs = natd_hash(hash_alg, cky_i, cky_r, remote[0], remote[1])
    ours = rng(hash_alg.digest_size) if fake else natd_hash(hash_alg, cky_i, cky_r, local[0], local[1])
    return [NatDPayload(payload_type=ptype, data=theirs), NatDPayload(payload_type=ptype, data=ours)]


def detect_nat(
    hash_alg: Hash,
    cky_i: bytes,
    cky_r: bytes,
    received: Sequence[bytes],
    *,
    local: tuple[str, int],
    remote: tuple[str, int],
) -> NatStatus:
    """RFC 3947 §3.2: compare received NAT-D hashes (at least two) with the addresses we see.

    ``local`` is the address and port the message arrived on, ``remote`` where it came from.
    """
    mine = natd_hash(hash_alg, cky_i, cky_r, local[0], local[1])
    theirs = natd_hash(hash_alg, cky_i, cky_r, remote[0], remote[1])
    local_ok = hmac.compare_digest(received[0], mine)
    peer_ok = any(hmac.compare_digest(h, theirs) for h in received[1:])
    return NatStatus(local_behind_nat=not local_ok, peer_behind_nat=not peer_ok)


@dataclass(frozen=True, slots=True, kw_only=True)
class NatDetection:
    """RFC 3947 §3.2 for one Main Mode message 3 or 4: the agreed dialect, the negotiated hash and
    the cookies, and the addresses as we see them (``local``: where the message arrived or leaves
    from, ``remote``: the peer's). ``fake`` pretends we are behind a NAT (``force_encapsulation``)."""

    variant: NattVariant
    hash_alg: Hash
    cky_i: bytes
    cky_r: bytes
    local: tuple[str, int]
    remote: tuple[str, int]
    fake: bool = False

    def payloads(self, rng: Callable[[int], bytes]) -> list[NatDPayload]:
        """The NAT-D payloads we add to message 3 (initiator) or 4 (responder)."""
        return natd_payloads(self.hash_alg, self.cky_i, self.cky_r, remote=self.remote, local=self.local,
                             variant=self.variant, fake=self.fake, rng=rng)

    def status(self, payloads: Iterable[Any]) -> NatStatus | None:
        """What the peer's NAT-D payloads (the dialect's type) say; None when it sent fewer than
        two (it does not do NAT-T after all). Faking, we always count ourselves behind a NAT."""
        ptype = self.variant.natd_type
        hashes = [p.data for p in payloads if isinstance(p, NatDPayload) and p.payload_type == ptype]
        if len(hashes) < 2:
            return None
        nat = detect_nat(self.hash_alg, self.cky_i, self.cky_r, hashes, local=self.local, remote=self.remote)
        return NatStatus(local_behind_nat=True, peer_behind_nat=nat.peer_behind_nat) if self.fake else nat
