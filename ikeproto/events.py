"""Events an ``IkeEndpoint`` queues for its user (``next_event()``), named as facts in the past.

They carry everything the policy agent needs: to build ``espcore.SecurityAssociation`` objects
from a ``Phase2Established`` (both SPIs, keys for both directions, algorithms, mode and
encapsulation, lifetimes, peer identity), and to audit (the Windows events 541-547).
Keys are ``repr=False`` so that no log line carries them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ikeproto.config import Address, Identity, Mode, TrafficSelector

Encapsulation = Literal["none", "udp"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every endpoint event; ``at`` is the ``now`` of the call that produced it."""

    at: float
    peer: Address


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase1Established(Event):
    """Main Mode completed: an ISAKMP SA exists with ``peer`` (audit 541, main mode)."""

    cookies: tuple[bytes, bytes]  # (CKY-I, CKY-R)
    is_initiator: bool
    local_id: Identity
    peer_id: Identity
    cipher: str
    key_bits: int | None
    hash: str
    dh_group: int
    auth: str
    lifetime_s: int
    nat_detected: bool  # a NAT (or a peer faking one) was seen: IPsec SAs use UDP encapsulation


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildSa:
    """One IPsec protocol of a Quick Mode result (ESP or AH), both directions.

    ``spi_in`` is the SPI we chose (the peer sends to it), ``spi_out`` the peer's. Keys are the
    KEYMAT (RFC 2409 §5.5) split for espcore: ``enc_key_*`` includes any salt/nonce bytes that
    the cipher needs (AES-GCM, AES-CTR, ChaCha20-Poly1305), ``auth_key_*`` is the integrity key.
    """

    protocol: Literal["esp", "ah"]
    spi_in: int
    spi_out: int
    cipher: str | None
    key_bits: int | None
    integrity: str | None
    enc_key_in: bytes = field(default=b"", repr=False)
    auth_key_in: bytes = field(default=b"", repr=False)
    enc_key_out: bytes = field(default=b"", repr=False)
    auth_key_out: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase2Established(Event):
    """Quick Mode completed: a pair of IPsec SAs per protocol (audit 541, quick mode)."""

    cookies: tuple[bytes, bytes]
    message_id: int
    is_initiator: bool
    request_id: int | None  # the id ``initiate`` returned, None on the responder
    peer_id: Identity
    mode: Mode
    encapsulation: Encapsulation
    local_ts: TrafficSelector
    remote_ts: TrafficSelector
    sas: tuple[ChildSa, ...]  # AH before ESP when both (the AH+ESP bundle)
    lifetime_s: int | None
    lifetime_kb: int | None
    pfs_group: int | None
    local_port: int  # the UDP ports IKE ended on (4500 after a NAT-T float): ESP-in-UDP uses them
    peer_port: int
    local_address: str | None = None  # our IP as the peer's IDs and tunnel endpoints name it
    # RFC 3947 §5.2 NAT-OA: the peer's original address (transport mode through a NAT), for the
    # checksum fix-up of RFC 3948 §3.1.2; None when not sent.
    peer_original_address: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiationFailed(Event):
    """A negotiation ended without SAs (audit 547; 546 when ``notify`` is NO-PROPOSAL-CHOSEN).

    ``failure_point`` is "me" when we refused the peer's message, "peer" when the peer sent an
    error notify or refused ours; ``timed_out`` when the peer never answered (no response from
    peer: the agent may fall back to clear text where its action allows).

    ``auth_failure`` is set when Kerberos authentication failed (audit 545): the
    ``ikeproto.gss.GssFailure`` value (``no-keytab``, ``no-ticket``, ``clock-skew``,
    ``unknown-principal``, ``kdc-unreachable``, ``invalid-token``, ``wrong-peer``, ``bad-hash``,
    ``refused-by-peer``, ...), with what the administrator can do in ``reason``. A responder
    queues one for a refused message 3 as well, while it keeps waiting for the genuine one
    (``phase`` 1, ``request_id`` None): it may be followed by ``Phase1Established``.

    ``certificate_failure`` is set when a certificate made us refuse the negotiation (failure
    point "me"): the ``ikeproto.pki.Failure`` value (``untrusted-root``, ``expired``, ``revoked``,
    ``no-certificate`` (the peer sent none), ``no-local-certificate``, ...); audit 544 unless it is
    ``no-local-certificate`` (we had nothing to send), with the details in ``reason``.
    """

    phase: Literal[1, 2]
    request_id: int | None
    reason: str
    notify: int | None = None
    failure_point: Literal["me", "peer"] = "me"
    timed_out: bool = False
    auth_failure: str | None = None
    certificate_failure: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase1Deleted(Event):
    """The ISAKMP SA is gone: expired, deleted by us or by the peer (audit 543)."""

    cookies: tuple[bytes, bytes]
    by_peer: bool
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase2Deleted(Event):
    """IPsec SAs are gone (audit 542). ``spis`` are always our inbound SPIs (``ChildSa.spi_in``): a
    peer's Delete names its own inbound SPIs (our outbound ones), which the endpoint maps back."""

    protocol: Literal["esp", "ah"]
    spis: tuple[int, ...]  # our inbound SPIs (spi_in of the ChildSa)
    by_peer: bool
    reason: str
