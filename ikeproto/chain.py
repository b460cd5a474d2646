"""X.509 certification-path validation for IKE certificate authentication (pure, no I/O).

Owns ``validate_path``: building a path from a certificate through untrusted helper CA
certificates to one of a rule's trusted roots, checking it, and applying the seed's CRL checking
levels (``ikeproto.pki.CrlLevel``) through an injected ``RevocationChecker``. The vocabulary
(errors, reasons, names, identities) is ``ikeproto.pki``'s.

Why our own path builder and not ``cryptography.x509.verification.PolicyBuilder``: its verifiers
enforce the Web PKI profile (RFC 5280 plus CA/B Forum rules): a fixed minimum RSA modulus of 2048
bits (the seed's 1024-bit interop certificates fail), EKU rules unless every extension policy is
replaced, and failures reported as free text we could not turn into the audit-544 reasons
(expired, key usage, untrusted root, revoked). The rules here are the seed's ("any valid computer
certificate can be used", "any setting of extended key usage will be acceptable") applied with
RFC 5280 §6.1 basics: every signature on the path verifies (``verify_directly_issued_by``:
issuer name and signature, RSA PKCS#1 v1.5 / PSS, ECDSA, EdDSA), every certificate including the
root is within its validity period, every issuer is a CA (basicConstraints cA, keyCertSign when
key usage is present, pathLenConstraint), the end certificate's key usage (when present) allows
signatures (the seed: a certificate limited to key exchange will not work), and an unknown or
unprocessed critical extension (including name and policy constraints) is refused (RFC 5280
§4.2). A configured trust anchor is trusted as configured (RFC 5280 §6.1.1 (d)); its validity is
checked all the same. The search is bounded (``MAX_DEPTH``, ``MAX_PATHS``, ``MAX_WORK``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtensionOID

from ikeproto.pki import (
    CertificateError,
    CrlLevel,
    Failure,
    RevocationChecker,
    RevocationResult,
    RevocationStatus,
    der,
    issuer_text,
    subject_text,
)

__all__ = ["MAX_DEPTH", "MAX_PATHS", "MAX_WORK", "ValidatedPath", "validate_path"]

MAX_DEPTH = 8  # certificates on a path, leaf and root included
MAX_PATHS = 32  # complete candidate paths tried before giving up
MAX_WORK = 256  # signature checks plus path extensions per validation (see _candidate_paths)


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatedPath:
    """A checked path: ``certificates`` from the end certificate to the trusted root."""

    certificates: tuple[x509.Certificate, ...]
    notes: tuple[str, ...] = ()  # e.g. revocation unknown but accepted at level 1

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def root(self) -> x509.Certificate:
        return self.certificates[-1]

    def summary(self) -> str:
        """``CN=leaf <- CN=intermediate <- CN=root (trusted root)`` for the trace."""
        return " <- ".join(subject_text(c) for c in self.certificates) + " (trusted root)"


_subject, _issuer = subject_text, issuer_text


# --- path validation -----------------------------------------------------------------------------

# Extensions whose meaning we apply (or that carry no constraint): a critical one is fine.
_PROCESSED = {
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.CRL_DISTRIBUTION_POINTS, ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    ExtensionOID.CERTIFICATE_POLICIES,  # no policy processing: RFC 5280 §6.1.1 any-policy inputs
}


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _candidate_paths(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                     anchors: Sequence[x509.Certificate]) -> Iterator[list[x509.Certificate]]:
    """Signature-valid paths from ``leaf`` to an anchor, anchors tried first at each level.

    The search is bounded by ``MAX_WORK`` signature checks: a peer can send look-alike issuers
    (same names, same keys) whose paths multiply, and must not make us verify millions of them.
    """
    anchor_ders = {der(a) for a in anchors}
    leaf_der = der(leaf)
    if leaf_der in anchor_ders:  # the peer's certificate is itself a trusted one
        yield [leaf]
    pool = [(c, der(c)) for c in intermediates if c.subject != c.issuer]
    pool = [(c, d) for c, d in pool if d not in anchor_ders]
    work = [MAX_WORK, MAX_PATHS]
    memo: dict[tuple[int, int], bool] = {}

    def signed(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        k = (id(cert), id(issuer))
        if k not in memo:
            if work[0] <= 0:
                return False
            work[0] -= 1
            memo[k] = _signed_by(cert, issuer)
        return memo[k]

    def extend(path: list[x509.Certificate], used: frozenset[bytes]) -> Iterator[list[x509.Certificate]]:
        cur = path[-1]
        for a in anchors:
            if work[1] > 0 and a.subject == cur.issuer and signed(cur, a):
                work[1] -= 1
                yield path + [a]
        if len(path) + 1 >= MAX_DEPTH:
            return
        for c, d in pool:
            if work[0] <= 0 or work[1] <= 0:
                return
            if d not in used and c.subject == cur.issuer and signed(cur, c):
                work[0] -= 1  # each extension costs too, so the walk itself stays bounded
                yield from extend(path + [c], used | {d})

    yield from extend([leaf], frozenset({leaf_der}))


def _top_issuer(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate]) -> str:
    """How far the peer's chain goes without a trusted root: the issuer name at its top."""
    cur, seen = leaf, {der(leaf)}
    for _ in range(MAX_DEPTH):
        nxt = next((c for c in intermediates if c.subject == cur.issuer and der(c) not in seen
                    and _signed_by(cur, c)), None)
        if nxt is None:
            break
        cur = nxt
        seen.add(der(cur))
    return _issuer(cur)


def _fail(failure: Failure, cert: x509.Certificate, message: str) -> CertificateError:
    return CertificateError(failure, message, subject=_subject(cert), issuer=_issuer(cert))


def _check_extensions(cert: x509.Certificate) -> None:
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _PROCESSED:
            name = getattr(ext.oid, "_name", None) or ext.oid.dotted_string
            raise _fail(Failure.CRITICAL_EXTENSION, cert, f"certificate {_subject(cert)} has a critical "
                        f"extension this implementation does not process ({name}); RFC 5280 §4.2 refuses it")


def _ext(cert: x509.Certificate, cls: type) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def _check_validity(cert: x509.Certificate, at: dt.datetime, role: str) -> None:
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    if at < nb:
        raise _fail(Failure.NOT_YET_VALID, cert, f"{role} {_subject(cert)} is not valid before "
                    f"{nb:%Y-%m-%d %H:%M:%S} UTC")
    if at > na:
        raise _fail(Failure.EXPIRED, cert, f"{role} {_subject(cert)} expired on {na:%Y-%m-%d %H:%M:%S} UTC")


def _usage_text(ku: x509.KeyUsage) -> str:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign")
    return ", ".join(n.replace("_", " ") for n in names if getattr(ku, n)) or "none"


def _check_path(path: list[x509.Certificate], at: dt.datetime) -> None:
    """RFC 5280 §6.1 basics on a signature-valid path (see the module docstring)."""
    leaf = path[0]
    for i, cert in enumerate(path):
        role = "certificate" if i == 0 else ("root certificate" if i == len(path) - 1 else "CA certificate")
        _check_validity(cert, at, role)
        _check_extensions(cert)
    ku = _ext(leaf, x509.KeyUsage)
    if isinstance(ku, x509.KeyUsage) and not (ku.digital_signature or ku.content_commitment):
        raise _fail(Failure.KEY_USAGE, leaf, f"certificate {_subject(leaf)} does not allow signatures "
                    f"(key usage: {_usage_text(ku)}); a certificate limited to key exchange cannot "
                    "authenticate IKE")
    for i, ca in enumerate(path[1:], start=1):
        bc = _ext(ca, x509.BasicConstraints)
        is_anchor = i == len(path) - 1
        # A configured anchor without basicConstraints (a version-1 root) is trusted as configured.
        if (bc is None and not is_anchor) or (isinstance(bc, x509.BasicConstraints) and not bc.ca):
            raise _fail(Failure.NOT_A_CA, ca, f"{_subject(ca)} issued {_subject(path[i - 1])} but is not a "
                        "certification authority (basicConstraints)")
        below = sum(1 for c in path[1:i] if c.subject != c.issuer)
        if isinstance(bc, x509.BasicConstraints) and bc.path_length is not None and below > bc.path_length:
            raise _fail(Failure.PATH_LENGTH, ca, f"{_subject(ca)} allows {bc.path_length} CA certificate(s) "
                        f"below it, the path has {below}")
        cku = _ext(ca, x509.KeyUsage)
        if isinstance(cku, x509.KeyUsage) and not cku.key_cert_sign:
            raise _fail(Failure.NOT_A_CA, ca, f"{_subject(ca)} may not sign certificates (key usage: "
                        f"{_usage_text(cku)})")


def _check_revocation(path: list[x509.Certificate], at: dt.datetime, level: CrlLevel,
                      checker: RevocationChecker | None) -> tuple[str, ...]:
    """The seed's levels over every certificate below the root; notes for what level 1 let pass."""
    notes: list[str] = []
    for cert, issuer in zip(path, path[1:]):
        if checker is None:
            result = RevocationResult(status=RevocationStatus.UNKNOWN, reason="no CRL source is configured")
        else:
            try:
                result = checker.check(cert, issuer, at)
            except Exception as exc:  # a checker bug must not pass a certificate at level 2
                result = RevocationResult(status=RevocationStatus.UNKNOWN, reason=f"CRL check failed: {exc!r}")
        if result.status is RevocationStatus.REVOKED:
            when = f" on {result.revoked_at:%Y-%m-%d %H:%M:%S} UTC" if result.revoked_at else ""
            raise _fail(Failure.REVOKED, cert, f"certificate {_subject(cert)} (serial {cert.serial_number:#x}) "
                        f"was revoked by {_subject(issuer)}{when} (CRL checking level {int(level)})")
        if result.status is RevocationStatus.UNKNOWN:
            if level >= CrlLevel.STRICT:
                raise _fail(Failure.REVOCATION_UNKNOWN, cert, f"the revocation status of {_subject(cert)} "
                            f"could not be determined (CRL checking level 2): {result.reason}")
            notes.append(f"revocation of {_subject(cert)} unknown, accepted at level 1: {result.reason}")
    return tuple(notes)


def validate_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
    *,
    crl_level: CrlLevel = CrlLevel.OFF,
    revocation: RevocationChecker | None = None,
    key_check: Callable[[x509.Certificate], None] | None = None,
) -> ValidatedPath:
    """A path from ``leaf`` through ``intermediates`` (untrusted helpers, any order) to one of
    ``anchors`` that passes every check at ``at``; ``CertificateError`` with the reason otherwise.

    Paths are tried anchors-first; when several reach an anchor and all fail, the first one's
    failure is reported. ``key_check`` may refuse the end certificate's key (its type or size).
    """
    first_error: CertificateError | None = None
    try:
        for path in _candidate_paths(leaf, intermediates, anchors):
            try:
                _check_path(path, at)
                if key_check is not None:
                    key_check(leaf)
                notes = _check_revocation(path, at, crl_level, revocation) if crl_level > CrlLevel.OFF else ()
                return ValidatedPath(certificates=tuple(path), notes=notes)
            except CertificateError as exc:
                if exc.failure is Failure.REVOKED:
                    raise
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        trusted = "; ".join(subject_text(a) for a in anchors) or "none"
        raise _fail(Failure.UNTRUSTED_ROOT, leaf, f"certificate {_subject(leaf)} does not chain to a trusted "
                    f"root certification authority of this rule (its chain ends at {_top_issuer(leaf, intermediates)}; "
                    f"trusted: {trusted})")
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType, x509.InvalidVersion) as exc:
        # Lazily parsed fields of a peer's certificate (extensions, times) may fail only now.
        raise _fail(Failure.MALFORMED, leaf, f"certificate {_subject(leaf)} is malformed: {exc}") from None
