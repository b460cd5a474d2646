"""What an IKE endpoint is told to negotiate: the contract between ``ikeproto`` and its user.

The policy agent (or a test, or an embedding application) describes phase 1 (Main Mode) and
phase 2 (Quick Mode) in these frozen records; the endpoint turns them into SA payloads, and
hands back what was agreed in ``ikeproto.events``. Algorithm names are the canonical names of
``espcore.transforms`` for IPsec SAs, and IKE's own names for phase 1:

- phase-1 ciphers ``des``, ``3des``, ``aes-cbc`` (with ``key_bits`` 128/192/256);
- phase-1 hashes ``md5``, ``sha1``, ``sha2-256``, ``sha2-384``, ``sha2-512`` (the PRF is the HMAC
  of the hash, RFC 2409 §4);
- phase-1 authentication ``psk``, ``rsa-sig``, ``gssapi`` (Kerberos, method 65001);
- DH groups by IANA number (1, 2, 5, 14, 15, 16, 19, 20, 31).

Responder decisions are looked up through a ``ConfigProvider``: a plain query object (no I/O,
no callbacks into the caller's event loop) that answers "what do I accept from this peer".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:  # ikeproto.gss needs no gssapi either, but config stays free of it at run time
    from ikeproto.gss import GssMechanism

Address = tuple[str, int]
Mode = Literal["transport", "tunnel"]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """An ISAKMP identity (RFC 2407 §4.6.2): ``kind`` is ``ipv4``, ``ipv6``, ``fqdn``,
    ``user-fqdn``, ``der-dn`` or ``key-id``; ``value`` is its text (or DER bytes for ``der-dn``).
    Events also use ``kerberos`` (the principal a GSS-API context authenticated), which is never
    an ID payload."""

    kind: str
    value: str | bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase1Proposal:
    """One Main Mode transform offered or accepted, in preference order within a config."""

    cipher: str
    hash: str
    dh_group: int
    auth: str = "psk"
    key_bits: int | None = None
    lifetime_s: int = 28_800  # Windows: master key 480 minutes
    lifetime_kb: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase1Config:
    """How to run Main Mode with one peer (initiator) or what to accept from it (responder)."""

    proposals: tuple[Phase1Proposal, ...]
    psk: bytes | None = field(default=None, repr=False)
    local_id: Identity | None = None  # None: our IP address (ID_IPV4_ADDR / ID_IPV6_ADDR)
    peer_id: Identity | None = None  # expected identity of the peer; None accepts its address
    nat_traversal: bool = True  # offer/accept RFC 3947 (and draft) NAT-T
    # Pretend to be behind a NAT (send a NAT-D for ourselves that cannot match), so that both
    # sides float to the NAT-T port and carry ESP in UDP: what strongSwan's `encap = yes` does,
    # and what a data path without raw sockets (no root) needs.
    force_encapsulation: bool = False
    # With a (faked) NAT, still agree AH in its plain Transport/Tunnel encapsulation mode: for a
    # data path that carries whole AH packets in UDP itself (the embedded agent). ESP-only
    # proposals keep the UDP-encapsulated modes. Never set it through a real NAT (RFC 3947 §5).
    allow_ah_with_nat: bool = False
    initial_contact: bool = True
    # RSA-signature authentication (auth "rsa-sig"; the signature mechanics of RFC 2409 §5.1,
    # certificate *policy* is a later issue). ``private_key`` is a ``cryptography`` RSA private
    # key; ``certificate`` our X.509 certificate (DER bytes or a ``cryptography`` certificate),
    # sent in a CERT payload when set. The peer is trusted when its signature verifies with
    # ``peer_public_key`` (a ``cryptography`` RSA public key), or with the key of the certificate
    # it sent when that certificate is one of ``trusted_certificates`` or directly issued by one.
    private_key: object | None = field(default=None, repr=False)
    certificate: object | None = None
    peer_public_key: object | None = None
    trusted_certificates: tuple[object, ...] = ()
    # Certificate authentication (auth "rsa-sig"): an ``ikeproto.certs.CertificateAuthenticator``
    # (the rule's root CAs, our machine certificates, CRL checking). When set, it decides the CR
    # payloads we send, the certificate, key and default ID (its subject DN) we use, and whether
    # the peer's certificate is trusted; the fields above are then not consulted.
    certificates: object | None = field(default=None, repr=False)
    # Kerberos (auth "gssapi", method 65001 with the GSS-API vendor IDs): ``kerberos`` is this
    # computer's credentials, an ``ikeproto.krb5.KerberosCredentials`` (host/<fqdn>@REALM from a
    # keytab) or any ``ikeproto.gss.GssMechanism``; a gssapi proposal is offered and accepted only
    # when it is set. ``kerberos_peer`` is the principal the peer must authenticate as (the realm
    # may be left out); None: any principal of the realm, and the initiator asks a ticket for the
    # name the responder announces in message 2 (we then announce ours in message 1).
    kerberos: GssMechanism | None = field(default=None, repr=False)
    kerberos_peer: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficSelector:
    """A Quick Mode ID (RFC 2409 §5.5): an address or subnet, IP protocol and port (0 = any)."""

    network: IpNetwork
    protocol: int = 0
    port: int = 0

    @classmethod
    def host(cls, address: str, protocol: int = 0, port: int = 0) -> "TrafficSelector":
        return cls(network=ipaddress.ip_network(address), protocol=protocol, port=port)


@dataclass(frozen=True, slots=True, kw_only=True)
class IpsecTransform:
    """One protocol of a Quick Mode proposal: ESP (cipher and optional integrity) or AH."""

    protocol: Literal["esp", "ah"]
    integrity: str | None = None  # espcore name, e.g. "hmac-sha1-96"; None for AEAD ESP
    cipher: str | None = None  # espcore name, e.g. "aes-cbc"; None for AH
    key_bits: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase2Proposal:
    """A Quick Mode proposal: one transform, or AH+ESP as a bundle; lifetimes for the pair."""

    transforms: tuple[IpsecTransform, ...]
    lifetime_s: int | None = 3_600
    lifetime_kb: int | None = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase2Config:
    """What Quick Mode negotiates for one pair of traffic selectors."""

    proposals: tuple[Phase2Proposal, ...]
    local_ts: TrafficSelector
    remote_ts: TrafficSelector
    mode: Mode = "transport"
    pfs_group: int | None = None  # session-key PFS: a fresh DH in Quick Mode


@dataclass(frozen=True, slots=True, kw_only=True)
class RetransmitPolicy:
    """When an endpoint resends a message that was not answered, and when it gives up.

    Intervals start at ``initial_s`` and grow by ``backoff`` up to ``max_interval_s``. Before the
    peer has answered anything in a negotiation (Main Mode message 1 unanswered) at most
    ``first_retransmits`` copies are resent and the negotiation is given up ``first_give_up_s``
    after the first send: the defaults (0.5 s, 1.5 s, give up at 3 s) let an agent fall back to
    clear text within 3 seconds for a peer that does not speak IKE. Once the peer has answered,
    ``retransmits`` copies are resent and the give-up comes one more interval after the last.
    """

    initial_s: float = 0.5
    backoff: float = 2.0
    max_interval_s: float = 8.0
    first_retransmits: int = 2
    first_give_up_s: float = 3.0
    retransmits: int = 5


class ConfigProvider(Protocol):
    """Answers the endpoint's questions about what to accept. Pure lookups; return None to refuse."""

    def phase1_config(self, peer: Address) -> Phase1Config | None:
        """Main Mode settings for ``peer`` (initiating to it or answering it)."""

    def phase2_config(
        self, peer: Address, local_ts: TrafficSelector, remote_ts: TrafficSelector, mode: Mode
    ) -> Phase2Config | None:
        """As responder: what we accept for a Quick Mode from ``peer`` with these selectors
        (``local_ts`` is ours, i.e. the peer's IDcr). None sends NO-PROPOSAL-CHOSEN."""
