"""The IKE debug trace: every exchange step, a summary of each message's payloads, each failure's
reason, and state changes as "old -> new" (what Windows writes to oakley.log).

Owns ``IkeTrace`` (a thin layer over a structlog logger) and ``summarize`` (one short string per
payload). Secrets (SKEYID*, KEYMAT, g^xy) are written only when the trace was created with
``include_secrets=True``; pre-shared keys never are, nor are hash or signature values, only their
presence. Steps go out at debug level, failures at info level, so that structlog's own filtering
decides what is kept; the bounded file and its ``.sav`` copy are the agent's business.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

import structlog

from ikeproto.enums import CertEncoding, IdType, NotifyType, PayloadType, ProtocolId, enum_name
from ikeproto.payloads import (
    CertPayload,
    CrPayload,
    DeletePayload,
    HashPayload,
    IdPayload,
    KePayload,
    NatDPayload,
    NatOaPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SigPayload,
    VendorIdPayload,
)
from ikeproto.pki import dn_text
from ikeproto.proposals import SaPayload
from ikeproto.vendor_ids import identify

__all__ = ["IkeTrace", "summarize"]


def _id_text(p: IdPayload | NatOaPayload) -> str:
    try:
        if p.id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
            return str(ipaddress.ip_address(p.data if isinstance(p, IdPayload) else p.address))
        if isinstance(p, IdPayload) and p.id_type in (IdType.ID_IPV4_ADDR_SUBNET, IdType.ID_IPV6_ADDR_SUBNET):
            return str(p.ip_network())
    except ValueError:
        pass
    data = p.data if isinstance(p, IdPayload) else p.address
    if isinstance(p, IdPayload) and p.id_type in (IdType.ID_FQDN, IdType.ID_USER_FQDN, IdType.ID_KEY_ID):
        return p.text()[:64]
    if isinstance(p, IdPayload) and p.id_type == IdType.ID_DER_ASN1_DN:
        return dn_text(data)[:200]  # RFC 2407 §4.6.2.1: the DER of an X.500 Distinguished Name
    return f"{len(data)} octets"


def _sa_text(sa: SaPayload) -> str:
    parts = []
    for prop in sa.proposals:
        transforms = []
        for t in prop.transforms:
            attrs = ",".join(f"{a.type}={a.int_value if a.is_basic or len(a.value) <= 4 else '...'}" for a in t.attributes)  # type: ignore[arg-type]
            transforms.append(f"T{t.number} id={t.transform_id} [{attrs}]")
        spi = f" spi={prop.spi.hex()}" if prop.spi else ""
        parts.append(f"P{prop.number} {enum_name(ProtocolId, prop.protocol_id)}{spi}: {' '.join(transforms)}")
    return f"SA({'; '.join(parts)})"


def summarize_payload(p: Payload) -> str:
    """One line for one payload: types and sizes, never a key, hash or signature value."""
    if isinstance(p, SaPayload):
        return _sa_text(p)
    if isinstance(p, KePayload):
        return f"KE({len(p.data)})"
    if isinstance(p, NoncePayload):
        return f"NONCE({len(p.data)})"
    if isinstance(p, IdPayload):
        return f"ID({enum_name(IdType, p.id_type)} {_id_text(p)} proto={p.protocol} port={p.port})"
    if isinstance(p, HashPayload):
        return f"HASH({len(p.data)})"
    if isinstance(p, SigPayload):
        return f"SIG({len(p.data)})"
    if isinstance(p, CertPayload):
        return f"CERT(encoding={p.encoding}, {len(p.data)})"
    if isinstance(p, CrPayload):
        if p.authority and p.cert_type == CertEncoding.X509_SIGNATURE:
            return f"CR(type={p.cert_type} {dn_text(p.authority)[:200]})"
        return f"CR(type={p.cert_type})"
    if isinstance(p, NotifyPayload):
        spi = f" spi={p.spi.hex()}" if p.spi else ""
        return f"N({enum_name(NotifyType, p.notify_type)} {enum_name(ProtocolId, p.protocol_id)}{spi})"
    if isinstance(p, DeletePayload):
        return f"D({enum_name(ProtocolId, p.protocol_id)} {' '.join(s.hex() for s in p.spis[:8])})"
    if isinstance(p, VendorIdPayload):
        return f"VID({identify(p.data) or p.data[:8].hex()})"
    if isinstance(p, NatDPayload):
        return f"NAT-D({p.payload_type})"
    if isinstance(p, NatOaPayload):
        return f"NAT-OA({p.payload_type} {_id_text(p)})"
    return f"{enum_name(PayloadType, p.payload_type)}({len(getattr(p, 'data', b''))})"


def summarize(payloads: Iterable[Payload]) -> str:
    """The payloads of a message as one short line."""
    return " ".join(summarize_payload(p) for p in payloads)


class IkeTrace:
    """Structured trace of the exchanges. ``enabled`` False makes every call a no-op."""

    __slots__ = ("_log", "enabled", "include_secrets")

    def __init__(self, logger: Any = None, *, enabled: bool = True, include_secrets: bool = False) -> None:
        self._log = logger if logger is not None else structlog.get_logger("ikeproto")
        self.enabled = enabled
        self.include_secrets = include_secrets

    def step(self, event: str, **fields: Any) -> None:
        """One exchange step (built, processed, chose, floated, ...)."""
        if self.enabled:
            self._log.debug(event, **fields)

    def state(self, what: str, old: object, new: object, **fields: Any) -> None:
        """A lifecycle change, traced as "old -> new"."""
        if self.enabled:
            self._log.debug(f"{what} state", transition=f"{_name(old)} -> {_name(new)}", **fields)

    def message(self, direction: str, payloads: Iterable[Payload], **fields: Any) -> None:
        """A message sent or received, with its payload summary."""
        if self.enabled:
            self._log.debug(f"message {direction}", payloads=summarize(payloads), **fields)

    def failure(self, reason: str, **fields: Any) -> None:
        """Why a message was dropped or an exchange failed."""
        if self.enabled:
            self._log.info("failure", reason=reason, **fields)

    def secret(self, name: str, value: bytes, **fields: Any) -> None:
        """Key material: written only when the trace was asked to include secrets."""
        if self.enabled and self.include_secrets:
            self._log.debug("secret", name=name, value=value.hex(), **fields)


def _name(state: object) -> str:
    value = getattr(state, "value", state)
    return str(value)
