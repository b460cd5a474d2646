"""The agent's value types: configuration, counters, send results, notices and deliveries.

Owns the records the sans-I/O ``PolicyAgent`` takes (``AgentConfig``: ports, modes, the
machine's Kerberos and certificate settings, the seed's timers in seconds) and gives out (``SendResult`` per outbound packet, ``SenderNotified`` for the
sender of traffic that waits or is blocked, ``Delivery`` for the application side, ``AgentStats``
for the monitor). No behaviour.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

class SendResult(enum.Enum):
    """What happened to an outbound packet."""

    PROTECTED = "protected"
    CLEAR = "clear"
    NEGOTIATING = "negotiating"  # queued while IKE negotiates ("Negotiating IP Security")
    BLOCKED = "blocked"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderNotified:
    """A notice for the application that sent traffic ``src``:``sport`` -> ``dst``:``dport``.

    ``kind`` is "negotiating" or "blocked"; ``echo`` is (identifier, sequence) for ICMP echo.
    """

    kind: str
    at: float
    src: str
    dst: str
    protocol: int
    sport: int | None
    dport: int | None
    echo: tuple[int, int] | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """Ports, modes, authentication material and the seed's timers (seconds).

    Kerberos: ``kerberos`` is this computer's credentials (an ``ikeproto.krb5.KerberosCredentials``
    or any ``ikeproto.gss.GssMechanism``), or ``kerberos_keytab`` with ``kerberos_principal``
    (``host/<fqdn>@REALM``) make one; the policy model names no Kerberos peer, so
    ``kerberos_peers`` maps a peer address to the principal it must authenticate as (a peer not
    in it may be any principal of the realm). ``kerberos_psk`` stands in for Kerberos when no
    credentials are configured (no KDC). Certificates: ``cert_store`` is the machine store
    directory (``policyagent.certstore``), read at each policy assignment; ``certificate_time``
    maps the agent's ``now`` to the validation time (default: the wall clock).
    """

    ike_port: int = 500
    natt_port: int = 4500
    force_encapsulation: bool = False  # ESP in UDP always (the embedded path, no root)
    kerberos_psk: bytes | None = field(default=None, repr=False)  # Kerberos substitute
    kerberos: Any = field(default=None, repr=False)
    kerberos_keytab: str | os.PathLike[str] | None = None
    kerberos_principal: str | None = None
    kerberos_peers: Mapping[str, str] = field(default_factory=dict)
    cert_store: str | os.PathLike[str] | None = None
    certificate_time: Callable[[float], Any] | None = None
    queue_limit: int = 16  # packets queued per negotiation
    soft_sa_after_s: float = 3.0  # IKE silence before falling back to clear
    block_s: float = 60.0  # after a failed negotiation the peer answered
    rekey_fraction: float = 0.9
    late_rekey_fraction: float = 0.95  # the side that should not rekey, if nothing came
    active_window_s: float = 300.0  # "traffic in the last 5 minutes"
    idle_s: float = 300.0  # inbound SA idle: delete the pair
    responder_forget_s: float = 3600.0  # responding client: drop state for a server
    negotiation_timeout_s: float = 60.0  # guard when IKE reports nothing at all
    responding_timeout_s: float = 30.0
    superseded_grace_s: float = 10.0  # old pair kept after a rekey for packets in flight
    notice_window_s: float = 5.0  # recent clear flows told about a peer's negotiation
    replay_window: int = 64
    echo_responder: bool = True
    ttl: int = 64

    @property
    def has_kerberos(self) -> bool:
        """Whether real Kerberos (GSS-API) credentials are configured."""
        return self.kerberos is not None or (self.kerberos_keytab is not None
                                             and self.kerberos_principal is not None)


@dataclass(slots=True)
class AgentStats:
    """The monitor's statistics (ipsecmon's, and the drops by reason)."""

    packets_out_protected: int = 0
    packets_in_protected: int = 0
    packets_out_clear: int = 0
    packets_in_clear: int = 0
    bytes_out_clear: int = 0
    bytes_in_clear: int = 0
    authenticated_bytes_sent: int = 0
    authenticated_bytes_received: int = 0
    confidential_bytes_sent: int = 0
    confidential_bytes_received: int = 0
    main_modes: int = 0
    quick_modes: int = 0
    soft_sas: int = 0
    negotiation_failures: int = 0
    acquires: int = 0
    rekeys: int = 0
    sa_deleted: int = 0
    main_mode_deleted: int = 0
    ike_in: int = 0
    ike_out: int = 0
    keepalives: int = 0
    echo_requests_answered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__ if name != "dropped"}
        out["dropped"] = dict(self.dropped)
        out["dropped_total"] = sum(self.dropped.values())
        return out


class Delivery(NamedTuple):
    """A packet for the application side. For ICMP echo messages ``sport`` is the echo
    identifier and ``dport`` the sequence number; ``data`` is the UDP data, the echo data, or
    the transport segment of other protocols."""

    src: str
    dst: str
    protocol: int
    sport: int | None
    dport: int | None
    data: bytes
    is_protected: bool
