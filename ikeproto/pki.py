"""The vocabulary of IKE certificate authentication (pure, no I/O): why a certificate fails,
revocation levels and results, Distinguished Names, and identities.

Owns: ``Failure`` reason codes and the typed ``CertificateError`` (a ``ProtocolError`` carrying
the Notify to send and the audit-544 text), the seed's CRL checking levels (``CrlLevel``, the
``StrongCrlCheck`` value) and the ``RevocationChecker`` protocol the agent implements, DER
Distinguished Names (decoding a peer's ID_DER_ASN1_DN for comparison and display, RFC 5280
§4.1.2.4 and §7.1), and matching an ISAKMP ID payload against a certificate (RFC 2407 §4.6.2.1,
RFC 4945 §3.1). Does not own: path validation (``ikeproto.chain``), CR/CERT payloads and the
choice of our certificate (``ikeproto.certs``), where certificates, keys and CRLs come from
(``policyagent.certstore``, ``policyagent.crl``), nor the IKE signature
(``ikeproto.exchanges.auth``).
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ikeproto.enums import IdType, NotifyType
from ikeproto.errors import ProtocolError

__all__ = [
    "CertificateError",
    "CrlLevel",
    "Failure",
    "RevocationChecker",
    "RevocationResult",
    "RevocationStatus",
    "check_identity",
    "der",
    "dn_text",
    "epoch_time",
    "issuer_text",
    "name_text",
    "names_equal",
    "parse_der_name",
    "subject_text",
]

class CrlLevel(enum.IntEnum):
    """The seed's ``StrongCrlCheck``: 0 off (default), 1 fail only on a revoked certificate,
    2 fail on any CRL error (unreachable distribution point, missing or stale CRL)."""

    OFF = 0
    REVOKED_ONLY = 1
    STRICT = 2


class Failure(enum.Enum):
    """Why a certificate was not accepted (the reason code an audit 544 carries)."""

    NO_CERTIFICATE = "no-certificate"  # the peer sent none
    MALFORMED = "malformed-certificate"
    UNSUPPORTED_ENCODING = "unsupported-encoding"
    UNTRUSTED_ROOT = "untrusted-root"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    KEY_USAGE = "key-usage"
    NOT_A_CA = "issuer-not-a-ca"
    PATH_LENGTH = "path-length"
    CRITICAL_EXTENSION = "critical-extension"
    UNSUPPORTED_KEY = "unsupported-key"
    REVOKED = "revoked"
    REVOCATION_UNKNOWN = "revocation-unknown"
    IDENTITY_MISMATCH = "identity-mismatch"
    NO_LOCAL_CERTIFICATE = "no-local-certificate"  # we have none to send for this rule


# RFC 2408 §3.14.1 Notify types each failure turns into.
_NOTIFY = {
    Failure.NO_CERTIFICATE: NotifyType.CERTIFICATE_UNAVAILABLE,
    Failure.NO_LOCAL_CERTIFICATE: NotifyType.CERTIFICATE_UNAVAILABLE,
    Failure.MALFORMED: NotifyType.INVALID_CERTIFICATE,
    Failure.UNSUPPORTED_ENCODING: NotifyType.CERT_TYPE_UNSUPPORTED,
    Failure.UNTRUSTED_ROOT: NotifyType.INVALID_CERT_AUTHORITY,
    Failure.IDENTITY_MISMATCH: NotifyType.INVALID_ID_INFORMATION,
}


class CertificateError(ProtocolError):
    """A certificate that cannot authenticate: ``failure`` says why, ``str()`` says it in words.

    ``subject``/``issuer`` name the certificate concerned (text), ``peer_identity`` what an audit
    544 shows as the peer's identity. ``notify`` is the Notify type to answer with.
    """

    def __init__(self, failure: Failure, message: str, *, subject: str = "", issuer: str = "") -> None:
        super().__init__(message, notify=_NOTIFY.get(failure, NotifyType.INVALID_CERTIFICATE))
        self.failure = failure
        self.subject = subject
        self.issuer = issuer

    @property
    def reason(self) -> str:
        """The failure reason as audit 544 and the trace show it."""
        return str(self)

    @property
    def peer_identity(self) -> str:
        """"Certificate based identity" text for audit 544 (empty when no certificate arrived)."""
        if not self.subject:
            return ""
        return f"Certificate based identity: {self.subject}" + (f" (issued by {self.issuer})" if self.issuer else "")


class RevocationStatus(enum.Enum):
    GOOD = "good"  # a valid, current CRL from the issuer does not list it
    REVOKED = "revoked"
    UNKNOWN = "unknown"  # no usable CRL: ``reason`` says why


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationResult:
    status: RevocationStatus
    reason: str = ""
    revoked_at: dt.datetime | None = None


class RevocationChecker(Protocol):
    """Says whether ``cert`` (issued by ``issuer``) is revoked at ``at``; never raises."""

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> RevocationResult: ...


def epoch_time(now: float) -> dt.datetime:
    """``now`` read as POSIX seconds: the ``validation_time`` for callers whose clock is time.time."""
    return dt.datetime.fromtimestamp(now, dt.timezone.utc)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# --- names ---------------------------------------------------------------------------------------


def name_text(name: x509.Name) -> str:
    """A Name as Windows shows it: most specific first, ``CN=host1, O=Lab`` (RFC 4514 escaping)."""
    try:
        return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns)) or "<empty name>"
    except ValueError:
        return "<undisplayable name>"


def subject_text(cert: x509.Certificate) -> str:
    """The certificate's subject as text; a placeholder when a peer's certificate has an
    unparsable one (``cryptography`` parses names lazily, so the access itself may fail)."""
    try:
        return name_text(cert.subject)
    except ValueError:
        return "<unparsable subject>"


def issuer_text(cert: x509.Certificate) -> str:
    """The certificate's issuer as text (see ``subject_text``)."""
    try:
        return name_text(cert.issuer)
    except ValueError:
        return "<unparsable issuer>"


_subject, _issuer = subject_text, issuer_text


# DirectoryString and friends; the 7-bit types are read as UTF-8 because encoders (cryptography's
# among them) put UTF-8 in IA5String, and latin-1 takes whatever is left.
_STRING_TAGS = {12: "utf-8", 19: "utf-8", 22: "utf-8", 20: "latin-1", 26: "utf-8", 30: "utf-16-be",
                28: "utf-32-be"}


def _text(tag: int, body: bytes) -> str:
    try:
        return body.decode(_STRING_TAGS[tag])
    except UnicodeDecodeError:
        if _STRING_TAGS[tag] != "utf-8":
            raise
        return body.decode("latin-1")


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``; ValueError when bad."""
    if pos + 2 > end:
        raise ValueError("truncated")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > end:
            raise ValueError("bad length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > end:
        raise ValueError("overrun")
    return tag, pos, pos + length


def _oid(body: bytes) -> str:
    if not body or body[-1] & 0x80:
        raise ValueError("bad OID")
    arcs, value = [], 0
    for b in body:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def parse_der_name(data: bytes) -> tuple[tuple[tuple[str, str], ...], ...] | None:
    """The RDNs of a DER Name (RFC 5280 §4.1.2.4) as ((oid, text), ...) per RDN, in DER order;
    None when ``data`` is not a well-formed Name (a peer's ID_DER_ASN1_DN may be garbage)."""
    try:
        tag, pos, end = _tlv(data, 0, len(data))
        if tag != 0x30 or end != len(data):
            return None
        rdns = []
        while pos < end:
            tag, spos, send = _tlv(data, pos, end)
            if tag != 0x31 or spos == send:
                return None
            attrs = []
            while spos < send:
                tag, apos, aend = _tlv(data, spos, send)
                if tag != 0x30:
                    return None
                otag, opos, oend = _tlv(data, apos, aend)
                vtag, vpos, vend = _tlv(data, oend, aend)
                if otag != 0x06 or vend != aend or vtag not in _STRING_TAGS:
                    return None
                attrs.append((_oid(data[opos:oend]), _text(vtag, data[vpos:vend])))
                spos = aend
            rdns.append(tuple(sorted(attrs)))
            pos = send
        return tuple(rdns)
    except (ValueError, UnicodeDecodeError, IndexError):
        return None


_SHORT = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
          "2.5.4.11": "OU", "0.9.2342.19200300.100.1.25": "DC", "1.2.840.113549.1.9.1": "E"}


def dn_text(data: bytes) -> str:
    """A DER Name from the wire as text for traces and audits; hex when it does not parse."""
    rdns = parse_der_name(data)
    if rdns is None:
        return "<not a DER name: " + data[:64].hex() + ("..." if len(data) > 64 else "") + ">"
    return ", ".join("+".join(f"{_SHORT.get(o, o)}={v}" for o, v in rdn) for rdn in reversed(rdns)) or "<empty name>"


def _fold(value: str) -> str:
    # RFC 5280 §7.1 (after RFC 4518): case-insensitive, insignificant spaces ignored.
    return " ".join(value.casefold().split())


def names_equal(a: bytes, b: bytes) -> bool:
    """Two DER Names name the same entity: same octets, or equal RDN by RDN after folding."""
    if a == b:
        return True
    ra, rb = parse_der_name(a), parse_der_name(b)
    if ra is None or rb is None or len(ra) != len(rb):
        return False
    return all(sorted((o, _fold(v)) for o, v in x) == sorted((o, _fold(v)) for o, v in y) for x, y in zip(ra, rb))


# --- identities ----------------------------------------------------------------------------------


def _san(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def check_identity(cert: x509.Certificate, id_type: int, data: bytes) -> None:
    """Refuse an ID payload the certificate does not vouch for (RFC 4945 §3.1: the identity must
    be the certificate's subject or one of its subjectAltNames). DER_ASN1_DN: the subject (or a
    directoryName alternative name); FQDN: a dNSName; USER_FQDN: an rfc822Name; an address: an
    iPAddress. Raises ``CertificateError`` (IDENTITY_MISMATCH)."""
    try:
        sans = _san(cert)
        if id_type == IdType.ID_DER_ASN1_DN:
            candidates = [cert.subject.public_bytes()] + [g.value.public_bytes() for g in sans
                                                          if isinstance(g, x509.DirectoryName)]
            if any(names_equal(data, c) for c in candidates):
                return
            shown = dn_text(data)
        elif id_type in (IdType.ID_FQDN, IdType.ID_USER_FQDN):
            text = data.decode("ascii", errors="replace").rstrip(".").casefold()
            kind = x509.DNSName if id_type == IdType.ID_FQDN else x509.RFC822Name
            if any(isinstance(g, kind) and g.value.rstrip(".").casefold() == text for g in sans):
                return
            shown = data.decode("ascii", errors="backslashreplace")
        elif id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR) and len(data) in (4, 16):
            addr = ipaddress.ip_address(data)
            if any(isinstance(g, x509.IPAddress) and g.value == addr for g in sans):
                return
            shown = str(addr)
        else:
            shown = f"ID type {id_type}"
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateError(Failure.MALFORMED, f"certificate {_subject(cert)} has a malformed "
                               f"subjectAltName: {exc}", subject=_subject(cert), issuer=_issuer(cert)) from None
    raise CertificateError(
        Failure.IDENTITY_MISMATCH,
        f"the peer's identity {shown} is not in its certificate {_subject(cert)} (subject and subjectAltName)",
        subject=_subject(cert), issuer=_issuer(cert))
