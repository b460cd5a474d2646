"""Certificate revocation lists for the agent: where CRLs come from and what they say.

Owns ``CrlChecker``, the agent's ``ikeproto.pki.RevocationChecker``: for a certificate and its
issuer it looks for a CRL in the configured directory (the store's ``crl/`` folder) and then at
the certificate's CRL distribution points (RFC 5280 §4.2.1.13) over HTTP with a short timeout,
and says *good* (a current CRL signed by the issuer does not list it), *revoked* (a CRL signed by
the issuer lists it: revocation is final, so even a stale CRL counts) or *unknown* with the reason
(unreachable distribution point, no CRL, stale CRL, CRL not signed by the issuer, unsupported
CRL features). The seed's levels (off / revoked only / any CRL error) are applied by
``ikeproto.chain``, not here.

Fetched CRLs are cached per URL until their nextUpdate; a failed URL is not retried for
``retry_after_s`` so that a dead distribution point costs one timeout, not one per negotiation.
The fetch is synchronous (like CAPI's URL retrieval in Windows 2000 IKE): it blocks the caller for
at most ``timeout_s`` (default 2 s) per URL; ``fetch`` is injectable. Not supported (reported as
unknown when they matter): delta CRLs, indirect CRLs (cRLIssuer), CRLs scoped by a critical
issuingDistributionPoint, LDAP and file URLs.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from ikeproto.pki import RevocationResult, RevocationStatus, name_text, names_equal

__all__ = ["CrlChecker", "distribution_points", "http_fetch", "load_crl"]

MAX_CRL_BYTES = 4 << 20
_CRITICAL_OK = {ExtensionOID.CRL_NUMBER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER}


def http_fetch(url: str, timeout_s: float) -> bytes:
    """GET ``url`` (http or https) with a timeout, at most ``MAX_CRL_BYTES``; OSError/ValueError
    when it cannot be fetched."""
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"unsupported URL scheme in {url}")
    req = urllib.request.Request(url, headers={"User-Agent": "policyagent-crl"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (scheme checked above)
        data = resp.read(MAX_CRL_BYTES + 1)
    if len(data) > MAX_CRL_BYTES:
        raise ValueError(f"CRL at {url} is larger than {MAX_CRL_BYTES} bytes")
    return data


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL in DER or PEM; ValueError when it is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def distribution_points(cert: x509.Certificate) -> list[str]:
    """The URIs of the certificate's CRL distribution points (direct CRLs only)."""
    try:
        cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [g.value for dp in cdp if dp.full_name and dp.crl_issuer is None
            for g in dp.full_name if isinstance(g, x509.UniformResourceIdentifier)]


@dataclass(slots=True)
class _Fetched:
    crl: x509.CertificateRevocationList | None
    error: str
    at: float  # monotonic time of the fetch


def _check_crl(crl: x509.CertificateRevocationList, cert: x509.Certificate, issuer: x509.Certificate,
               at: dt.datetime, source: str) -> RevocationResult | str:
    """The CRL's verdict on ``cert``, or why this CRL cannot give one (text)."""
    if not names_equal(crl.issuer.public_bytes(), issuer.subject.public_bytes()):
        return f"the CRL from {source} is issued by {name_text(crl.issuer)}, not by {name_text(issuer.subject)}"
    try:
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            return f"the CRL from {source} is not signed by {name_text(issuer.subject)}"
        for ext in crl.extensions:
            if ext.critical and ext.oid not in _CRITICAL_OK:
                return f"the CRL from {source} has a critical extension not supported here ({ext.oid.dotted_string})"
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            reason = ""
            try:
                code = entry.extensions.get_extension_for_oid(CRLEntryExtensionOID.CRL_REASON).value.reason
                reason = f" ({code.value})"
            except x509.ExtensionNotFound:
                pass
            return RevocationResult(status=RevocationStatus.REVOKED, revoked_at=entry.revocation_date_utc,
                                    reason=f"listed in the CRL from {source}{reason}")
        last, nxt = crl.last_update_utc, crl.next_update_utc
    except (ValueError, TypeError) as exc:
        return f"the CRL from {source} cannot be used: {exc}"
    if last > at:
        return f"the CRL from {source} is not valid before {last:%Y-%m-%d %H:%M:%S} UTC"
    if nxt is None or nxt < at:
        when = f"its next update was due {nxt:%Y-%m-%d %H:%M:%S} UTC" if nxt else "it has no next update time"
        return f"the CRL from {source} is stale ({when})"
    return RevocationResult(status=RevocationStatus.GOOD, reason=f"not listed in the current CRL from {source}")


class CrlChecker:
    """CRLs from ``directory`` and from distribution points (see the module docstring)."""

    def __init__(
        self,
        *,
        directory: Path | str | None = None,
        fetch: Callable[[str, float], bytes] | None = http_fetch,
        timeout_s: float = 2.0,
        retry_after_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.fetch = fetch
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.monotonic = monotonic
        self._dir_stamp: tuple[tuple[str, float], ...] | None = None
        self._dir_crls: list[tuple[x509.CertificateRevocationList, str]] = []
        self.directory_problems: list[str] = []
        self._fetched: dict[str, _Fetched] = {}
        self.stats = {"fetched": 0, "fetch_failed": 0, "cached": 0, "retry_suppressed": 0}

    # --- sources ---------------------------------------------------------------------------------

    def _scan_directory(self) -> list[tuple[x509.CertificateRevocationList, str]]:
        if self.directory is None or not self.directory.is_dir():
            return []
        files = sorted(p for p in self.directory.iterdir() if p.is_file())
        stamp = tuple((p.name, p.stat().st_mtime) for p in files)
        if stamp != self._dir_stamp:
            crls, problems = [], []
            for p in files:
                try:
                    crls.append((load_crl(p.read_bytes()), f"file {p}"))
                except (ValueError, OSError) as exc:
                    problems.append(f"{p}: not a CRL ({exc})")
            self._dir_stamp, self._dir_crls, self.directory_problems = stamp, crls, problems
        return self._dir_crls

    def _from_url(self, url: str, at: dt.datetime) -> tuple[x509.CertificateRevocationList | None, str]:
        """The CRL at ``url`` (cached while current), or None and why not."""
        now = self.monotonic()
        got = self._fetched.get(url)
        if got is not None:
            if got.crl is not None:
                nxt = got.crl.next_update_utc
                if nxt is not None and nxt >= at:
                    self.stats["cached"] += 1
                    return got.crl, ""
            elif now - got.at < self.retry_after_s:
                self.stats["retry_suppressed"] += 1
                return None, got.error
        if self.fetch is None:
            return None, f"CRL distribution point {url} not fetched (retrieval is off)"
        try:
            crl = load_crl(self.fetch(url, self.timeout_s))
        except (OSError, ValueError) as exc:
            error = f"CRL distribution point {url} unreachable or unusable: {exc}"
            self._fetched[url] = _Fetched(crl=None, error=error, at=now)
            self.stats["fetch_failed"] += 1
            return None, error
        self._fetched[url] = _Fetched(crl=crl, error="", at=now)
        self.stats["fetched"] += 1
        return crl, ""

    # --- the RevocationChecker -------------------------------------------------------------------

    def check(self, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> RevocationResult:
        """Good, revoked or unknown (with every reason found); never raises."""
        try:
            return self._check(cert, issuer, at)
        except Exception as exc:  # the verdict must stay "unknown", never an escape
            return RevocationResult(status=RevocationStatus.UNKNOWN, reason=f"CRL check failed: {exc!r}")

    def _check(self, cert: x509.Certificate, issuer: x509.Certificate, at: dt.datetime) -> RevocationResult:
        problems: list[str] = []
        good: RevocationResult | None = None
        issuer_der = issuer.subject.public_bytes()
        for crl, source in self._scan_directory():
            if not names_equal(crl.issuer.public_bytes(), issuer_der):
                continue
            verdict = _check_crl(crl, cert, issuer, at, source)
            if isinstance(verdict, str):
                problems.append(verdict)
            elif verdict.status is RevocationStatus.REVOKED:
                return verdict
            else:
                good = good or verdict
        if good is not None:
            return good
        urls = distribution_points(cert)
        for url in urls:
            crl, error = self._from_url(url, at)
            if crl is None:
                problems.append(error)
                continue
            verdict = _check_crl(crl, cert, issuer, at, url)
            if isinstance(verdict, str):
                problems.append(verdict)
            else:
                return verdict
        if not problems:
            where = f"in {self.directory}" if self.directory is not None else "in a CRL directory (none configured)"
            problems.append(f"no CRL for {name_text(issuer.subject)}: the certificate has no CRL distribution "
                            f"point and there is none {where}")
        return RevocationResult(status=RevocationStatus.UNKNOWN, reason="; ".join(problems))
