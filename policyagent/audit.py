"""The security audit log: Windows 2000's IPsec audit events 541-547 and soft SAs.

Owns the event records (frozen dataclasses with the fields the seed's sample event 541 shows:
mode, peer identity, peer IP address, filter, parameters), their JSON form (one JSON object per
line, written through structlog) and their text form (what Event Viewer showed), and the
``AuditLog`` that keeps recent events in memory (for tests, the monitor and the control socket)
and writes each one through an injected structlog logger (``file_logger`` makes one for a file).

Events (Windows 2000 numbering, "Audit Logon Events"):

- 541 IKE security association established (main mode or quick mode); a *soft* SA (fallback to
  clear after the peer did not answer) is a 541 with ``soft=True`` and no parameters.
- 542 IKE security association ended (quick mode: both SPIs).
- 543 IKE security association ended (main mode).
- 544 certificate trust failure: the peer's certificate (``pki.Failure`` code, reason);
  our own missing certificate is a 547 instead (a configuration problem on this computer).
- 545 Kerberos authentication failure (``GssFailure`` code, and the advice in the reason).
- 546 invalid proposal from the peer (attribute, expected, received).
- 547 negotiation failed (mode, filter, failure point me/peer, reason).

Timestamps are the agent's ``now`` (no clock is read here). Nothing here ever holds a key.
"""

from __future__ import annotations

import ipaddress
import json
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import structlog

MAIN_MODE = "Key Exchange Mode (Main Mode)"
QUICK_MODE = "Data Protection Mode (Quick Mode)"

_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 50: "ESP", 51: "AH", 58: "ICMPv6"}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    """The filter of an SA as Event Viewer shows it (addresses, masks, protocol, ports)."""

    source: str
    source_mask: str
    destination: str
    destination_mask: str
    protocol: int = 0
    source_port: int = 0
    destination_port: int = 0

    @classmethod
    def from_selectors(cls, local, remote) -> AuditFilter:
        """From a pair of ``ikeproto.config.TrafficSelector`` (ours, the peer's)."""
        return cls(source=str(local.network.network_address), source_mask=_mask(local.network),
                   destination=str(remote.network.network_address),
                   destination_mask=_mask(remote.network), protocol=local.protocol or remote.protocol,
                   source_port=local.port, destination_port=remote.port)

    @classmethod
    def hosts(cls, local: str, peer: str) -> AuditFilter:
        """Main mode filters are address pairs only (the seed: main mode uses addresses)."""
        return cls.from_selectors(_Host(local), _Host(peer))


class _Host:
    __slots__ = ("network", "protocol", "port")

    def __init__(self, address: str) -> None:
        self.network = ipaddress.ip_network(address)
        self.protocol = self.port = 0


def _mask(network) -> str:
    return str(network.netmask)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditParameters:
    """The "Parameters" block of a 541: algorithms, encapsulation, SPIs and lifetimes."""

    esp_algorithm: str = "None"
    hmac_algorithm: str = "None"
    ah_algorithm: str = "None"
    encapsulation: str = "Transport Mode"
    inbound_spi: int = 0
    outbound_spi: int = 0
    lifetime_s: int = 0
    lifetime_kb: int = 0
    dh_group: int | None = None  # main mode only
    authentication: str | None = None  # main mode only


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """Base of every audit record; ``at`` is the agent's ``now``, ``host`` our address."""

    EVENT_ID: ClassVar[int] = 0
    TITLE: ClassVar[str] = ""
    SUCCESS: ClassVar[bool] = True

    at: float
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``event_id``, ``title``, ``success`` and every field."""
        data = {"event_id": self.EVENT_ID, "title": self.title, "success": self.SUCCESS}
        data.update(asdict(self))
        return data

    @property
    def title(self) -> str:
        return self.TITLE

    def text(self) -> str:
        """The Event Viewer description of this event."""
        return render(self.to_dict())


@dataclass(frozen=True, slots=True, kw_only=True)
class SaEstablished(AuditEvent):
    """541: main mode or quick mode SA established (or a soft SA when ``soft``)."""

    EVENT_ID: ClassVar[int] = 541
    TITLE: ClassVar[str] = "IKE security association established."

    mode: str
    peer_identity: str
    peer_address: str
    filter: AuditFilter
    parameters: AuditParameters | None = None
    soft: bool = False

    @property
    def title(self) -> str:
        if self.soft:
            return ("IKE soft security association established: the peer did not respond, "
                    "communicating in clear.")
        return self.TITLE


@dataclass(frozen=True, slots=True, kw_only=True)
class SaEnded(AuditEvent):
    """542 (quick mode: SPIs given) or 543 (main mode): an IKE security association ended."""

    EVENT_ID: ClassVar[int] = 542
    TITLE: ClassVar[str] = "IKE security association ended."

    mode: str
    peer_address: str
    filter: AuditFilter
    inbound_spi: int = 0
    outbound_spi: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = AuditEvent.to_dict(self)
        data["event_id"] = 543 if self.mode == MAIN_MODE else 542
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateTrustFailed(AuditEvent):
    """544: the peer's certificate did not chain to a trusted root (certificate issue)."""

    EVENT_ID: ClassVar[int] = 544
    TITLE: ClassVar[str] = ("IKE security association establishment failed because peer could "
                            "not authenticate. The certificate trust could not be established.")
    SUCCESS: ClassVar[bool] = False

    peer_address: str
    peer_identity: str = ""
    failure_point: str = "Me"  # "Me": we refused the peer's certificate; "Peer": it refused ours
    failure: str = ""  # the ikeproto.pki.Failure value (untrusted-root, expired, revoked, ...)
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class KerberosFailed(AuditEvent):
    """545: Kerberos (GSS-API) authentication failed; ``failure`` is the ``GssFailure`` value,
    ``reason`` what the administrator can do (the engine's advice)."""

    EVENT_ID: ClassVar[int] = 545
    TITLE: ClassVar[str] = ("IKE peer authentication failed. The peer could not be "
                            "authenticated by Kerberos.")
    SUCCESS: ClassVar[bool] = False

    peer_address: str
    peer_identity: str = ""
    failure_point: str = "Me"  # "Me": the fix is on this side's report; "Peer": the peer refused
    failure: str = ""  # no-keytab, no-ticket, clock-skew, unknown-principal, refused-by-peer, ...
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidProposal(AuditEvent):
    """546: the peer's proposal could not be accepted (attribute, expected, received)."""

    EVENT_ID: ClassVar[int] = 546
    TITLE: ClassVar[str] = ("IKE security association establishment failed because peer sent "
                            "invalid proposal.")
    SUCCESS: ClassVar[bool] = False

    mode: str
    peer_address: str
    filter: AuditFilter
    attribute: str = ""
    expected: str = ""
    received: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiationFailed(AuditEvent):
    """547: an IKE negotiation failed (mode, filter, failure point, reason)."""

    EVENT_ID: ClassVar[int] = 547
    TITLE: ClassVar[str] = "IKE security association negotiation failed."
    SUCCESS: ClassVar[bool] = False

    mode: str
    peer_address: str
    filter: AuditFilter
    peer_identity: str = ""
    failure_point: str = "Me"  # "Me" or "Peer"
    reason: str = ""


# --- text rendering (works on the JSON form, so the CLI can render a log file) --------------------

_FILTER_LINES = (("Source IP Address", "source"), ("Source IP Address Mask", "source_mask"),
                 ("Destination IP Address", "destination"),
                 ("Destination IP Address Mask", "destination_mask"), ("Protocol", "protocol"),
                 ("Source Port", "source_port"), ("Destination Port", "destination_port"))


def _spi(value: int) -> str:
    return f"{value} (0x{value:08x})"


def render(event: dict[str, Any]) -> str:
    """The Event Viewer text of an event given in its JSON form."""
    lines = [event.get("title", "")]

    def put(label: str, value: object) -> None:
        lines.append(f"  {label}: {value}" if value not in (None, "") else f"  {label}:")

    if "mode" in event:
        lines.append("  Mode:")
        lines.append(f"    {event['mode']}")
    if event.get("peer_identity"):
        lines.append("  Peer Identity:")
        lines.append(f"    {event['peer_identity']}")
    if "peer_address" in event:
        put("Peer IP Address", event["peer_address"])
    if isinstance(event.get("filter"), dict):
        lines.append("  Filter:")
        for label, key in _FILTER_LINES:
            lines.append(f"    {label} {event['filter'].get(key, '')}")
    params = event.get("parameters")
    if isinstance(params, dict):
        lines.append("  Parameters:")
        if params.get("authentication"):
            lines.append(f"    Authentication {params['authentication']}")
        if params.get("dh_group") is not None:
            lines.append(f"    Diffie-Hellman Group {params['dh_group']}")
        lines.append(f"    ESP Algorithm {params.get('esp_algorithm')}")
        lines.append(f"    HMAC Algorithm {params.get('hmac_algorithm')}")
        lines.append(f"    AH Algorithm {params.get('ah_algorithm')}")
        lines.append(f"    Encapsulation {params.get('encapsulation')}")
        lines.append(f"    InboundSpi {_spi(int(params.get('inbound_spi', 0)))}")
        lines.append(f"    OutBoundSpi {_spi(int(params.get('outbound_spi', 0)))}")
        lines.append(f"    Lifetime (sec) {params.get('lifetime_s')}")
        lines.append(f"    Lifetime (kb) {params.get('lifetime_kb')}")
    if event.get("event_id") == 542:
        lines.append(f"  InboundSpi {_spi(int(event.get('inbound_spi', 0)))}")
        lines.append(f"  OutBoundSpi {_spi(int(event.get('outbound_spi', 0)))}")
    if event.get("attribute"):
        put("Attribute", event["attribute"])
        put("Expected value", event.get("expected"))
        put("Received value", event.get("received"))
    if "failure_point" in event:
        put("Failure Point", event["failure_point"])
    if event.get("failure"):
        put("Failure Code", event["failure"])
    if event.get("reason"):
        put("Failure Reason" if not event.get("success", True) else "Reason", event["reason"])
    return "\n".join(lines)


def summary(event: dict[str, Any]) -> str:
    """One line: time-independent event id, mode, peer and the gist."""
    bits = [str(event.get("event_id")), "success" if event.get("success") else "FAILURE"]
    if event.get("soft"):
        bits.append("soft SA")
    if "mode" in event:
        bits.append("main mode" if event["mode"] == MAIN_MODE else "quick mode")
    if "peer_address" in event:
        bits.append(f"peer {event['peer_address']}")
    if event.get("reason"):
        bits.append(str(event["reason"]))
    return "  ".join(bits)


# --- the log ---------------------------------------------------------------------------------------


class AuditLog:
    """Recent events in memory (``events``, at most ``keep``) and each one sent to ``logger``.

    ``logger`` is a structlog logger (``file_logger`` builds one that writes JSON lines); None
    keeps events in memory only.
    """

    def __init__(self, *, logger: Any = None, keep: int = 10_000) -> None:
        self._logger = logger
        self._events: deque[AuditEvent] = deque(maxlen=keep)
        self.counts: dict[int, int] = {}

    def record(self, event: AuditEvent) -> None:
        """Keep ``event`` and write it."""
        self._events.append(event)
        data = event.to_dict()
        self.counts[data["event_id"]] = self.counts.get(data["event_id"], 0) + 1
        if self._logger is not None:
            self._logger.info("audit", **data)

    @property
    def events(self) -> list[AuditEvent]:
        return list(self._events)

    def __iter__(self) -> Iterator[AuditEvent]:
        return iter(list(self._events))

    def __len__(self) -> int:
        return len(self._events)

    def query(self, *, event_id: int | Iterable[int] | None = None, since: float | None = None
              ) -> list[AuditEvent]:
        """Events with this id (or ids), at or after ``since``."""
        ids = {event_id} if isinstance(event_id, int) else set(event_id) if event_id else None
        return [e for e in self._events
                if (ids is None or e.to_dict()["event_id"] in ids)
                and (since is None or e.at >= since)]

    def clear(self) -> None:
        self._events.clear()


def _json_line(_logger: Any, _name: str, event_dict: dict[str, Any]) -> str:
    event_dict.pop("event", None)
    return json.dumps(event_dict, sort_keys=False, default=str)


def file_logger(stream: IO[str]) -> Any:
    """A structlog logger writing one JSON object per line to ``stream`` (flushed each line)."""
    return structlog.wrap_logger(structlog.WriteLogger(stream), processors=[_json_line],
                                 cache_logger_on_first_use=True)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The events of an audit log file (unparsable lines skipped)."""
    out = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "event_id" in data:
            out.append(data)
    return out
