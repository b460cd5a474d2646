"""Test PKI made at run time: keys, root and intermediate CAs, machine certificates, CRLs.

Nothing here is committed key material: every key is generated in the test process and cached
for the session (RSA-2048 generation costs tens of milliseconds; tests that only need *some*
key share one by slot number). The builder is deliberately more permissive than the
``policyagent cert`` command: it makes the broken certificates the tests need (expired, wrong
key usage, no CA flag, odd validity) that a real CA would refuse to issue.

All times are explicit ``datetime``s in UTC; ``WHEN`` is the validation time most tests use, and
``clock_at`` turns it into the ``validation_time`` mapping the authenticator takes.

``CrlServer`` is a CRL distribution point on loopback (HTTP, bytes by path, hits counted);
``silent_port`` a port that accepts and never answers (a CDP that times out), ``closed_port``
one that refuses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

UTC = dt.timezone.utc
WHEN = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # "now" for most tests
BEFORE = WHEN - dt.timedelta(days=365)
AFTER = WHEN + dt.timedelta(days=365)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_KEYS: dict[tuple[str, int, int], PrivateKey] = {}


def key(slot: int = 0, *, bits: int = 2048, kind: str = "rsa") -> PrivateKey:
    """A private key shared by everything that asks for the same (kind, bits, slot)."""
    k = (kind, bits, slot)
    if k not in _KEYS:
        if kind == "rsa":
            _KEYS[k] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        elif kind == "ec":
            curve = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}[bits]
            _KEYS[k] = ec.generate_private_key(curve)
        else:
            raise ValueError(kind)
    return _KEYS[k]


def name(text: str) -> x509.Name:
    """``CN=host1, O=Lab`` style text (RFC 4514) as a Name; a bare word is a CN."""
    if "=" not in text:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])
    return x509.Name.from_rfc4514_string(re.sub(r",\s+", ",", text))


@dataclass
class Issued:
    """A certificate with its private key (the key may be absent on purpose)."""

    cert: x509.Certificate
    key: PrivateKey | None

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: bytes | None = None) -> bytes:
        assert self.key is not None
        enc = (serialization.BestAvailableEncryption(password) if password
               else serialization.NoEncryption())
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


@dataclass
class Ca(Issued):
    """A CA: issues certificates and CRLs, remembers what it revoked."""

    revoked: dict[int, dt.datetime] = field(default_factory=dict)
    _serial: int = 1000

    def issue(
        self,
        subject: str,
        *,
        subject_key: PrivateKey | None = None,
        key_slot: int = 10,
        bits: int = 2048,
        is_ca: bool = False,
        path_length: int | None = None,
        key_usage: Iterable[str] | None = ("digital_signature", "key_encipherment"),
        key_usage_critical: bool = True,
        eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,
                                                       ExtendedKeyUsageOID.SERVER_AUTH),
        san: Sequence[str] = (),
        cdp: Sequence[str] = (),
        not_before: dt.datetime = BEFORE,
        not_after: dt.datetime = AFTER,
        basic_constraints: bool = True,
        hash_alg: hashes.HashAlgorithm | None = None,
        extra: Sequence[x509.ExtensionType | tuple[x509.ExtensionType, bool]] = (),
        serial: int | None = None,
    ) -> Ca | Issued:
        """Issue a certificate signed by this CA (a ``Ca`` when ``is_ca``)."""
        assert self.key is not None
        sk = subject_key if subject_key is not None else key(key_slot, bits=bits)
        if serial is None:
            self._serial += 1
            serial = self._serial
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(self.cert.subject)
             .public_key(sk.public_key()).serial_number(serial)
             .not_valid_before(not_before).not_valid_after(not_after))
        if basic_constraints:
            b = b.add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None),
                                critical=True)
        if key_usage is not None:
            b = b.add_extension(key_usage_ext(key_usage), critical=key_usage_critical)
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName([general_name(s) for s in san]), critical=False)
        if cdp:
            b = b.add_extension(x509.CRLDistributionPoints([
                x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(u)], relative_name=None,
                                       reasons=None, crl_issuer=None) for u in cdp]), critical=False)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(sk.public_key()), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                            critical=False)
        for ext in extra:
            e, crit = ext if isinstance(ext, tuple) else (ext, False)
            b = b.add_extension(e, critical=crit)
        cert = b.sign(self.key, _hash_for(self.key, hash_alg))
        if is_ca:
            return Ca(cert=cert, key=sk)
        return Issued(cert=cert, key=sk)

    def intermediate(self, subject: str, *, key_slot: int = 5, **kw) -> Ca:
        kw.setdefault("key_usage", ("key_cert_sign", "crl_sign", "digital_signature"))
        kw.setdefault("eku", None)
        ca = self.issue(subject, key_slot=key_slot, is_ca=True, **kw)
        assert isinstance(ca, Ca)
        return ca

    def revoke(self, cert: x509.Certificate | Issued, at: dt.datetime = BEFORE) -> None:
        c = cert.cert if isinstance(cert, Issued) else cert
        self.revoked[c.serial_number] = at

    def crl(
        self,
        *,
        this_update: dt.datetime = WHEN - dt.timedelta(days=1),
        next_update: dt.datetime = WHEN + dt.timedelta(days=7),
        revoked: dict[int, dt.datetime] | None = None,
        signer: PrivateKey | None = None,
        issuer: x509.Name | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL listing ``revoked`` (default: everything this CA revoked)."""
        assert self.key is not None
        b = (x509.CertificateRevocationListBuilder().issuer_name(issuer or self.cert.subject)
             .last_update(this_update).next_update(next_update))
        for serial, at in (self.revoked if revoked is None else revoked).items():
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at).build())
        k = signer or self.key
        return b.sign(k, _hash_for(k, None))

    def crl_der(self, **kw) -> bytes:
        return self.crl(**kw).public_bytes(serialization.Encoding.DER)


def root(
    subject: str = "CN=Lab Root CA, O=Test",
    *,
    key_slot: int = 1,
    bits: int = 2048,
    kind: str = "rsa",
    not_before: dt.datetime = BEFORE - dt.timedelta(days=3650),
    not_after: dt.datetime = AFTER + dt.timedelta(days=3650),
    key_usage: Iterable[str] | None = ("key_cert_sign", "crl_sign"),
    extensions: bool = True,
) -> Ca:
    """A self-signed root CA (``extensions=False``: a version-3 root without any extension)."""
    k = key(key_slot, bits=bits if kind == "rsa" else 256, kind=kind)
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(subject))
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after))
    if extensions:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        if key_usage is not None:
            b = b.add_extension(key_usage_ext(key_usage), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
    return Ca(cert=b.sign(k, _hash_for(k, None)), key=k)


def key_usage_ext(bits: Iterable[str]) -> x509.KeyUsage:
    names = set(bits)
    fields = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    unknown = names - set(fields)
    if unknown:
        raise ValueError(f"unknown key usage {unknown}")
    kw = {f: f in names for f in fields}
    if not kw["key_agreement"]:
        kw["encipher_only"] = kw["decipher_only"] = False
    return x509.KeyUsage(**kw)


def general_name(text: str) -> x509.GeneralName:
    """``dns:host``, ``ip:192.0.2.1``, ``email:a@b`` or ``dn:CN=x``."""
    kind, _, value = text.partition(":")
    if kind == "dns":
        return x509.DNSName(value)
    if kind == "ip":
        return x509.IPAddress(ipaddress.ip_address(value))
    if kind == "email":
        return x509.RFC822Name(value)
    if kind == "dn":
        return x509.DirectoryName(name(value))
    raise ValueError(text)


def _hash_for(k: PrivateKey, hash_alg: hashes.HashAlgorithm | None) -> hashes.HashAlgorithm:
    if hash_alg is not None:
        return hash_alg
    if isinstance(k, ec.EllipticCurvePrivateKey):
        return hashes.SHA256() if k.curve.key_size <= 256 else hashes.SHA384()
    return hashes.SHA256()


def clock_at(when: dt.datetime = WHEN) -> Callable[[float], dt.datetime]:
    """A ``validation_time`` mapping that pins the wall clock at ``when`` plus the sans-I/O ``now``
    relative to the FakeClock start (so moving the FakeClock moves certificate time too)."""
    start = 1_000_000.0

    def validation_time(now: float) -> dt.datetime:
        return when + dt.timedelta(seconds=now - start)

    return validation_time


# --- a CRL distribution point -------------------------------------------------------------------


class CrlServer:
    def __init__(self) -> None:
        self.served: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                owner.hits[self.path] += 1
                body = owner.served.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> CrlServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def closed_port() -> int:
    """A loopback port with no listener (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
