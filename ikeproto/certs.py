"""Certificate authentication policy for Main Mode: which CAs we request, which certificate we
send, and whether the peer's certificate is trusted (RFC 2409 §5.1, RFC 2408 §3.9-§3.10,
RFC 4945 §3 for the CERT/CR/ID profile).

Owns ``CertificateAuthenticator``: built from a rule's ordered root CAs and the machine's
credentials (the agent builds it, ``policyagent.certstore.authenticator_for``), consulted by Main
Mode at three points:

- ``cert_requests()``: the CR payloads for messages 3/4, one per root CA in the rule's order,
  certificate type X.509 signature, authority = the DER of the CA's subject Name (RFC 2408 §3.10:
  "the Distinguished Name encoding of the Issuer Name of an X.509 certificate authority acceptable
  to the sender"; strongSwan and Windows send exactly this);
- ``select(peer_requests, now)``: our certificate chain and private key for message 5/6, chosen as
  the seed says (below);
- ``verify_peer(cert_payloads, id_payload, now)``: the peer's certificate checked against the
  rule's roots (``ikeproto.chain.validate_path``, CRL levels included) and against its ID payload;
  the public key its SIG must verify with, or a ``CertificateError`` (audit 544 text).

Selection (the seed, "Configuring Certificate Authentication for a Rule"): for each root CA in the
rule's order that the peer's CR payloads name, the first local certificate (store order) with a
valid chain to it; when the peer names none of ours (or sent no CR, or an empty authority), the
first certificate that chains to our rule's first CA (then the next CA, and so on). A certificate
without its private key is never chosen. Once certificate authentication is agreed a certificate is
always sent (RFC 2409 leaves CR optional), even when the peer requested none of ours.

Does not own: the SIG computation (``ikeproto.exchanges.auth``), files and CRL retrieval
(``policyagent``). Sans-I/O: the wall-clock time for validity checks comes from the injected
``validation_time(now)`` (the endpoint's ``now`` is monotonic); revocation goes through the injected
``RevocationChecker``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ikeproto.config import Identity
from ikeproto.enums import CertEncoding
from ikeproto.errors import UsageError
from ikeproto.payloads import CertPayload, CrPayload, IdPayload
from ikeproto.chain import ValidatedPath, validate_path
from ikeproto.pki import (
    CertificateError,
    CrlLevel,
    Failure,
    RevocationChecker,
    check_identity,
    der,
    dn_text,
    issuer_text,
    names_equal,
    subject_text,
)

__all__ = [
    "MAX_PEER_CERTIFICATES",
    "CertificateAuthenticator",
    "Credential",
    "PeerCertificates",
    "Selection",
    "VerifiedPeer",
    "cert_payloads",
    "cert_request_payloads",
    "parse_cert_payloads",
    "requested_authorities",
]

MAX_PEER_CERTIFICATES = 10  # CERT payloads looked at in one message (the rest are ignored)
_KEY_TYPES = {"rsa": rsa.RSAPublicKey, "ecdsa": ec.EllipticCurvePublicKey}


# --- payloads ------------------------------------------------------------------------------------


def cert_request_payloads(roots: Iterable[x509.Certificate]) -> list[CrPayload]:
    """One CR per root CA, in order: X.509 signature, authority = DER of the CA's subject."""
    return [CrPayload(cert_type=CertEncoding.X509_SIGNATURE, authority=r.subject.public_bytes()) for r in roots]


def requested_authorities(payloads: Iterable[CrPayload]) -> list[bytes]:
    """The authorities the peer's X.509 CRs name, in order (b"" is "any CA"; other types ignored)."""
    return [p.authority for p in payloads if p.cert_type == CertEncoding.X509_SIGNATURE]


def cert_payloads(chain: Sequence[x509.Certificate]) -> list[CertPayload]:
    """CERT payloads for a chain, end certificate first (RFC 4945 §3.2: the receiver takes the
    first as the one the signature is made with), then the CA certificates below the root."""
    return [CertPayload(encoding=CertEncoding.X509_SIGNATURE, data=der(c)) for c in chain]


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerCertificates:
    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...] = ()


def parse_cert_payloads(payloads: Sequence[CertPayload]) -> PeerCertificates:
    """The peer's X.509 certificates: the first is its end certificate, the others helpers.

    Encodings other than X.509 signature are ignored when an X.509 one is present (a CRL may ride
    along); none at all is ``CertificateError`` NO_CERTIFICATE (or UNSUPPORTED_ENCODING when the
    peer sent only other types); bytes that are not a certificate are MALFORMED.
    """
    x509_payloads = [p for p in payloads if p.encoding == CertEncoding.X509_SIGNATURE][:MAX_PEER_CERTIFICATES]
    if not x509_payloads:
        if payloads:
            kinds = ", ".join(sorted({str(p.encoding) for p in payloads}))
            raise CertificateError(Failure.UNSUPPORTED_ENCODING,
                                   f"the peer sent certificates only in unsupported encodings ({kinds})")
        raise CertificateError(Failure.NO_CERTIFICATE, "the peer sent no certificate")
    certs = []
    for i, p in enumerate(x509_payloads):
        try:
            certs.append(x509.load_der_x509_certificate(p.data))
        except (ValueError, x509.InvalidVersion):
            raise CertificateError(Failure.MALFORMED, f"CERT payload {i + 1} from the peer is not a DER "
                                   "X.509 certificate") from None
    return PeerCertificates(leaf=certs[0], intermediates=tuple(certs[1:]))


# --- our side ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """A machine certificate, its private key (None: reported, never chosen) and the CA
    certificates it may need to send (``chain``); ``label`` says where it came from."""

    certificate: x509.Certificate
    private_key: object | None = field(default=None, repr=False)
    chain: tuple[x509.Certificate, ...] = ()
    label: str = ""

    @property
    def has_private_key(self) -> bool:
        return self.private_key is not None

    @property
    def subject(self) -> str:
        return subject_text(self.certificate)


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """The certificate we send: its validated path to ``root``, and why it was chosen."""

    credential: Credential
    path: ValidatedPath
    requested: bool  # the peer's CR named this root (False: our own first CA, the fallback)

    @property
    def private_key(self) -> object:
        return self.credential.private_key

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """What to put in CERT payloads: the end certificate and the CAs below the root."""
        path = self.path.certificates
        return path[:-1] if len(path) > 1 else path

    @property
    def root(self) -> x509.Certificate:
        return self.path.root

    @property
    def identity(self) -> Identity:
        """Our Main Mode identity: ID_DER_ASN1_DN of the certificate's subject (what Windows sends)."""
        return Identity(kind="der-dn", value=self.credential.certificate.subject.public_bytes())

    def summary(self) -> str:
        why = "requested by the peer" if self.requested else "the peer requested none of our CAs"
        return f"sending {self.path.summary()}; {why}"


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedPeer:
    """The peer's certificate passed: the key its SIG must verify with, and the path found."""

    public_key: object
    path: ValidatedPath

    @property
    def subject(self) -> str:
        return subject_text(self.path.leaf)

    def summary(self) -> str:
        return "peer certificate trusted: " + self.path.summary() + "".join(f"; {n}" for n in self.path.notes)


class CertificateAuthenticator:
    """A rule's certificate authentication (see the module docstring for the three hooks).

    ``roots``: the rule's root CAs in order (duplicates dropped); ``credentials``: our machine
    certificates in store order; ``intermediates``: CA certificates known locally (used to build
    both our chain and the peer's); ``crl_level`` and ``revocation``: the seed's CRL checking;
    ``validation_time``: maps the endpoint's ``now`` to the UTC wall-clock time (required: the
    endpoint's clock is monotonic); ``key_types``: the end-certificate keys we accept ("rsa" for
    RSA signatures, "ecdsa" for RFC 4754 methods).
    """

    def __init__(
        self,
        *,
        roots: Sequence[x509.Certificate],
        credentials: Sequence[Credential],
        validation_time: Callable[[float], dt.datetime],
        intermediates: Sequence[x509.Certificate] = (),
        crl_level: CrlLevel | int = CrlLevel.OFF,
        revocation: RevocationChecker | None = None,
        key_types: Sequence[str] = ("rsa",),
    ) -> None:
        unique: dict[bytes, x509.Certificate] = {}
        for r in roots:
            unique.setdefault(der(r), r)
        if not unique:
            raise UsageError("certificate authentication needs at least one trusted root CA")
        unknown = set(key_types) - set(_KEY_TYPES)
        if unknown:
            raise UsageError(f"unknown key types {sorted(unknown)} (use rsa, ecdsa)")
        self.roots: tuple[x509.Certificate, ...] = tuple(unique.values())
        self.credentials = tuple(credentials)
        self.intermediates = tuple(intermediates)
        self.crl_level = CrlLevel(crl_level)
        self.revocation = revocation
        self.validation_time = validation_time
        self._key_classes = tuple(_KEY_TYPES[k] for k in key_types)

    # --- hook 1: what we request ---------------------------------------------------------------

    def cert_requests(self) -> list[CrPayload]:
        """CR payloads naming the rule's root CAs, in the rule's order."""
        return cert_request_payloads(self.roots)

    # --- hook 2: what we send ------------------------------------------------------------------

    def _key_check(self, cert: x509.Certificate) -> None:
        try:
            key = cert.public_key()
        except (ValueError, TypeError) as exc:
            raise CertificateError(Failure.MALFORMED, f"certificate {subject_text(cert)} has an unreadable "
                                   f"public key: {exc}", subject=subject_text(cert)) from None
        if not isinstance(key, self._key_classes):
            raise CertificateError(Failure.UNSUPPORTED_KEY, f"certificate {subject_text(cert)} has a "
                                   f"{type(key).__name__.removeprefix('_')} key; the negotiated method needs "
                                   f"{' or '.join(k.__name__ for k in self._key_classes)}",
                                   subject=subject_text(cert), issuer=issuer_text(cert))

    def _own_path(self, cred: Credential, root: x509.Certificate, at: dt.datetime) -> ValidatedPath:
        return validate_path(cred.certificate, cred.chain + self.intermediates, [root], at,
                             key_check=self._key_check)

    def select(self, peer_requests: Sequence[CrPayload], now: float) -> Selection:
        """Our certificate for this negotiation (the seed's rule); ``CertificateError``
        NO_LOCAL_CERTIFICATE, listing why each certificate was passed over, when there is none."""
        at = self.validation_time(now)
        wanted = [a for a in requested_authorities(peer_requests) if a]
        requested = [r for r in self.roots if any(names_equal(a, r.subject.public_bytes()) for a in wanted)]
        order = [(r, True) for r in requested] + [(r, False) for r in self.roots]
        reasons: dict[str, str] = {}
        tried: set[bytes] = set()
        for root, was_requested in order:
            if der(root) in tried:
                continue
            tried.add(der(root))
            for cred in self.credentials:
                where = f"{cred.subject}" + (f" ({cred.label})" if cred.label else "")
                if not cred.has_private_key:
                    reasons[where] = "You do not have a private key that corresponds to this certificate"
                    continue
                try:
                    path = self._own_path(cred, root, at)
                except CertificateError as exc:
                    if exc.failure is not Failure.UNTRUSTED_ROOT or where not in reasons:
                        reasons[where] = exc.reason
                    continue
                return Selection(credential=cred, path=path, requested=was_requested)
        roots = "; ".join(subject_text(r) for r in self.roots)
        detail = "; ".join(f"{w}: {r}" for w, r in reasons.items()) or "the machine store has no certificates"
        raise CertificateError(Failure.NO_LOCAL_CERTIFICATE,
                               f"no machine certificate with a private key and a valid chain to a root CA of "
                               f"this rule ({roots}): {detail}")

    def problems(self, now: float) -> list[str]:
        """Each machine certificate that cannot be used with this rule, and why (diagnostics)."""
        at = self.validation_time(now)
        out = []
        for cred in self.credentials:
            label = cred.subject + (f" ({cred.label})" if cred.label else "")
            if not cred.has_private_key:
                out.append(f"{label}: You do not have a private key that corresponds to this certificate")
                continue
            errors = []
            for root in self.roots:
                try:
                    self._own_path(cred, root, at)
                    break
                except CertificateError as exc:
                    errors.append(exc)
            else:
                best = next((e for e in errors if e.failure is not Failure.UNTRUSTED_ROOT), errors[0])
                out.append(f"{label}: {best.reason}")
        return out

    # --- hook 3: whom we trust -----------------------------------------------------------------

    def verify_peer(self, payloads: Sequence[CertPayload], id_payload: IdPayload, now: float) -> VerifiedPeer:
        """Check the peer's CERT payloads against the rule's roots (validity, chain, key usage,
        CRL level) and its ID payload against the certificate; the key its SIG must verify with.
        Raises ``CertificateError`` (a ``ProtocolError`` with the Notify to send)."""
        peer = parse_cert_payloads(payloads)
        at = self.validation_time(now)
        path = validate_path(peer.leaf, peer.intermediates + self.intermediates, self.roots, at,
                             crl_level=self.crl_level, revocation=self.revocation, key_check=self._key_check)
        check_identity(peer.leaf, id_payload.id_type, id_payload.data)
        return VerifiedPeer(public_key=peer.leaf.public_key(), path=path)

    def describe_requests(self, peer_requests: Sequence[CrPayload]) -> str:
        """The peer's CR payloads as text for the trace."""
        names = [dn_text(a) if a else "<any CA>" for a in requested_authorities(peer_requests)]
        others = [p for p in peer_requests if p.cert_type != CertEncoding.X509_SIGNATURE]
        text = "; ".join(names) or "none"
        return text + (f" (+{len(others)} of other types)" if others else "")

