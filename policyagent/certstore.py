"""The machine certificate store: the agent's "Certificates (Local Computer)".

Owns the store on disk, what it contains and what is wrong with it, the CRL checking setting,
and ``authenticator_for``, which turns a rule's certificate methods into an
``ikeproto.certs.CertificateAuthenticator``. Does not own validation (``ikeproto.chain``), CRLs
(``policyagent.crl``) or issuing certificates (``policyagent.commands.cert``).

Layout (all optional; the store directory and ``my/`` should be owner-only, 0700)::

    STORE/my/       machine certificates and their private keys ("Personal"): PEM (certificates,
                    keys, or both in one file, a chain after the machine certificate), DER
                    (.der/.cer/.crt certificate, .key key), PKCS#12 (.p12/.pfx, no passphrase)
    STORE/root/     trusted root CAs ("Trusted Root Certification Authorities")
    STORE/ca/       intermediate CAs ("Intermediate Certification Authorities")
    STORE/crl/      CRL files (the configured CRL directory)
    STORE/settings.toml   strong_crl_check = 0 | 1 | 2 (the seed's StrongCrlCheck), crl_timeout_s

Keys are matched to certificates by public key, never by file name. A certificate whose key is
not in the store is listed with the seed's words ("You do not have a private key that corresponds
to this certificate") and is never chosen. A private key file readable by group or others is
refused (as ssh does), and so is a key protected by a passphrase: the service cannot prompt for
it (the seed's "strong private key protection" note). Store order is file-name order, then order
within a file: "the first certificate found" of the seed's selection rule.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ikeproto.certs import CertificateAuthenticator, Credential
from ikeproto.pki import CrlLevel, RevocationChecker, der, name_text
from policyagent.errors import UsageError
from policyagent.model import AuthKind, AuthMethod

__all__ = ["HAS_KEY", "NO_KEY", "MachineStore", "StoreEntry", "authenticator_for", "parse_name_text",
           "secure_write", "system_time", "unresolved_roots", "write_settings"]

HAS_KEY = "You have a private key that corresponds to this certificate."
NO_KEY = "You do not have a private key that corresponds to this certificate."

_KEY_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.+?-----END \1-----", re.S)


def system_time(now: float) -> dt.datetime:
    """The ``validation_time`` of a running agent: the system's UTC clock (``now`` is monotonic)."""
    return dt.datetime.now(dt.timezone.utc)


def _spki(key_or_cert: object) -> bytes:
    pub = key_or_cert.public_key()  # type: ignore[attr-defined]
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreEntry:
    """One machine certificate and, when the store has it, its private key."""

    certificate: x509.Certificate
    path: Path
    private_key: object | None = field(default=None, repr=False)
    key_path: Path | None = None
    chain: tuple[x509.Certificate, ...] = ()  # CA certificates that came in the same file

    @property
    def has_private_key(self) -> bool:
        return self.private_key is not None

    @property
    def key_status(self) -> str:
        return HAS_KEY if self.has_private_key else NO_KEY

    @property
    def subject(self) -> str:
        return name_text(self.certificate.subject)

    def credential(self) -> Credential:
        return Credential(certificate=self.certificate, private_key=self.private_key, chain=self.chain,
                          label=str(self.path))


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineStore:
    """What a store directory holds (``load``); ``problems`` lists what could not be used."""

    path: Path
    entries: tuple[StoreEntry, ...] = ()
    roots: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    problems: tuple[str, ...] = ()
    crl_level: CrlLevel = CrlLevel.OFF
    crl_timeout_s: float = 2.0

    @property
    def crl_directory(self) -> Path:
        return self.path / "crl"

    @classmethod
    def load(cls, path: Path | str) -> MachineStore:
        """Read the store at ``path`` (a missing folder is an empty one)."""
        root = Path(path)
        problems: list[str] = []
        if root.is_dir() and stat.S_IMODE(root.stat().st_mode) & 0o077:
            problems.append(f"{root}: the store directory is accessible to others "
                            f"(mode {stat.S_IMODE(root.stat().st_mode):o}); use chmod 700")
        certs: list[tuple[x509.Certificate, Path, tuple[x509.Certificate, ...]]] = []
        keys: list[tuple[object, Path]] = []
        for p in _files(root / "my"):
            c, k = _read_personal(p, problems)
            certs += c
            keys += k
        by_spki: dict[bytes, tuple[object, Path]] = {}
        for k, p in keys:
            by_spki.setdefault(_spki(k), (k, p))
        entries = []
        for cert, p, chain in certs:
            try:
                found = by_spki.get(_spki(cert))
            except (ValueError, TypeError):  # a public key algorithm cryptography cannot load
                found = None
            entries.append(StoreEntry(certificate=cert, path=p, private_key=found[0] if found else None,
                                      key_path=found[1] if found else None, chain=chain))
        roots = [c for p in _files(root / "root") for c in _read_certs(p, problems)]
        cas = [c for p in _files(root / "ca") for c in _read_certs(p, problems)]
        cas += [c for _, _, chain in certs for c in chain]
        level, timeout = _settings(root / "settings.toml", problems)
        return cls(path=root, entries=tuple(entries), roots=tuple(_unique(roots)), intermediates=tuple(_unique(cas)),
                   problems=tuple(problems), crl_level=level, crl_timeout_s=timeout)

    def credentials(self) -> tuple[Credential, ...]:
        return tuple(e.credential() for e in self.entries)

    def find_roots(self, name: str) -> list[x509.Certificate]:
        """Trusted roots a rule's ``root_ca`` names: its DN (``CN=SecTestCA3, O=Microsoft``, any
        spacing and case), its common name alone, or ``sha256:<hex>`` of the certificate."""
        text = name.strip()
        if text.lower().startswith("sha256:"):
            want = text[7:].replace(":", "").lower()
            return [r for r in self.roots if r.fingerprint(_sha256()).hex() == want]
        parsed = parse_name_text(text)
        out = []
        for r in self.roots:
            rdns = [[(a.oid.dotted_string, _fold(str(a.value))) for a in rdn] for rdn in reversed(r.subject.rdns)]
            flat = [sorted(x) for x in rdns]
            if parsed is not None and flat == [sorted(x) for x in parsed]:
                out.append(r)
            elif parsed is None and any(o == "2.5.4.3" and v == _fold(text) for rdn in rdns for o, v in rdn):
                out.append(r)
        return out


def _sha256():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _fold(value: str) -> str:
    return " ".join(value.casefold().split())


_ATTRS = {"cn": "2.5.4.3", "c": "2.5.4.6", "l": "2.5.4.7", "st": "2.5.4.8", "s": "2.5.4.8", "o": "2.5.4.10",
          "ou": "2.5.4.11", "dc": "0.9.2342.19200300.100.1.25", "e": "1.2.840.113549.1.9.1",
          "email": "1.2.840.113549.1.9.1", "emailaddress": "1.2.840.113549.1.9.1", "street": "2.5.4.9",
          "serialnumber": "2.5.4.5", "uid": "0.9.2342.19200300.100.1.1"}


def parse_name_text(text: str) -> list[list[tuple[str, str]]] | None:
    """``CN=a, O=b`` (most specific first, as Windows and RFC 4514 write it; ``,`` or ``;``
    between RDNs, ``+`` inside one, ``\\`` escapes) as RDNs of (oid, folded value); None when the
    text is not a DN (a bare name)."""
    rdns: list[list[tuple[str, str]]] = []
    cur: list[tuple[str, str]] = []
    buf, i = "", 0
    parts: list[tuple[str, str]] = []  # (piece, separator after it)
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf += text[i + 1]
            i += 2
            continue
        if ch in ",;+":
            parts.append((buf, ch))
            buf = ""
        else:
            buf += ch
        i += 1
    parts.append((buf, ","))
    for piece, sep in parts:
        key, eq, value = piece.partition("=")
        oid = _ATTRS.get(key.strip().lower()) or (key.strip() if re.fullmatch(r"\d+(\.\d+)+", key.strip()) else None)
        if not eq or oid is None:
            return None
        cur.append((oid, _fold(value)))
        if sep != "+":
            rdns.append(cur)
            cur = []
    return rdns


def _unique(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[bytes] = set()
    out = []
    for c in certs:
        if der(c) not in seen:
            seen.add(der(c))
            out.append(c)
    return out


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _read_certs(p: Path, problems: list[str]) -> list[x509.Certificate]:
    try:
        data = p.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except (ValueError, OSError) as exc:
        problems.append(f"{p}: not a certificate ({exc})")
        return []


def _key_file_ok(p: Path, problems: list[str]) -> bool:
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        problems.append(f"{p}: private key readable by others (mode {mode:o}): refused; use chmod 600")
        return False
    return True


def _load_key(data: bytes, p: Path, problems: list[str], *, pem: bool) -> object | None:
    try:
        loader = serialization.load_pem_private_key if pem else serialization.load_der_private_key
        return loader(data, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        problems.append(f"{p}: the private key is protected by a passphrase; the service cannot prompt for "
                        "it (like strong private key protection), so its certificate cannot be used")
    except (ValueError, UnicodeError) as exc:
        problems.append(f"{p}: unreadable private key ({exc})")
    return None


def _read_personal(p: Path, problems: list[str]):
    """(certificates with their in-file chains, keys) of one file of ``my/``."""
    try:
        data = p.read_bytes()
    except OSError as exc:
        problems.append(f"{p}: unreadable ({exc})")
        return [], []
    suffix = p.suffix.lower()
    if suffix in (".p12", ".pfx"):
        if not _key_file_ok(p, problems):
            return [], []
        for password in (None, b""):
            try:
                key, cert, more = pkcs12.load_key_and_certificates(data, password)
                break
            except (ValueError, TypeError):
                continue
        else:
            problems.append(f"{p}: PKCS#12 file that opens only with a passphrase (or is damaged); the "
                            "service cannot prompt for it")
            return [], []
        chain = tuple(more or ())
        return ([(cert, p, chain)] if cert else []), ([(key, p)] if key else [])
    if b"-----BEGIN" in data:
        keys = []
        blocks = _KEY_BLOCK.findall(data)
        if blocks and _key_file_ok(p, problems):
            for m in _KEY_BLOCK.finditer(data):
                k = _load_key(m.group(0), p, problems, pem=True)
                if k is not None:
                    keys.append((k, p))
        if b"-----BEGIN CERTIFICATE-----" not in data:
            return [], keys
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            problems.append(f"{p}: not a certificate ({exc})")
            return [], keys
        first, rest = certs[0], certs[1:]
        chain = tuple(c for c in rest if _is_ca(c))
        return [(first, p, chain)] + [(c, p, ()) for c in rest if not _is_ca(c)], keys
    try:
        return [(x509.load_der_x509_certificate(data), p, ())], []
    except ValueError:
        pass
    if not _key_file_ok(p, problems):
        return [], []
    k = _load_key(data, p, problems, pem=False)
    return [], ([(k, p)] if k is not None else [])


def _settings(p: Path, problems: list[str]) -> tuple[CrlLevel, float]:
    if not p.is_file():
        return CrlLevel.OFF, 2.0
    try:
        data = tomllib.loads(p.read_text())
        level = CrlLevel(int(data.get("strong_crl_check", 0)))
        timeout = float(data.get("crl_timeout_s", 2.0))
        if not 0 < timeout <= 60:
            raise ValueError(f"crl_timeout_s {timeout} is outside (0, 60]")
        return level, timeout
    except (tomllib.TOMLDecodeError, ValueError, TypeError, OSError) as exc:
        problems.append(f"{p}: {exc}; CRL checking stays off")
        return CrlLevel.OFF, 2.0


def write_settings(store: Path | str, *, strong_crl_check: int, crl_timeout_s: float = 2.0) -> Path:
    """Write ``settings.toml`` (the CLI's ``cert crl-check``)."""
    level = CrlLevel(strong_crl_check)
    path = Path(store) / "settings.toml"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(f"strong_crl_check = {int(level)}\ncrl_timeout_s = {float(crl_timeout_s)}\n")
    return path


def authenticator_for(
    methods: Sequence[AuthMethod],
    store: MachineStore,
    *,
    revocation: RevocationChecker | None = None,
    crl_level: CrlLevel | int | None = None,
    validation_time: Callable[[float], dt.datetime] = system_time,
    key_types: Sequence[str] = ("rsa",),
) -> CertificateAuthenticator | None:
    """The authenticator for a rule's certificate methods (None when it has none).

    Root CAs are resolved in the rule's order; a name the store does not trust is skipped (and
    reported by ``unresolved_roots``); ``UsageError`` when none resolves. ``revocation`` defaults
    to a ``CrlChecker`` on the store's CRL folder when the store's level (or ``crl_level``) is on.
    """
    names = [m.root_ca for m in methods if m.kind is AuthKind.CERTIFICATE and m.root_ca]
    if not names:
        return None
    roots = [r for n in names for r in store.find_roots(n)]
    if not roots:
        raise UsageError(f"none of the rule's root CAs ({'; '.join(names)}) is a trusted root in {store.path / 'root'}")
    level = CrlLevel(store.crl_level if crl_level is None else crl_level)
    if revocation is None and level > CrlLevel.OFF:
        from policyagent.crl import CrlChecker

        revocation = CrlChecker(directory=store.crl_directory, timeout_s=store.crl_timeout_s)
    return CertificateAuthenticator(roots=roots, credentials=store.credentials(), intermediates=store.intermediates,
                                    crl_level=level, revocation=revocation, validation_time=validation_time,
                                    key_types=key_types)


def unresolved_roots(methods: Sequence[AuthMethod], store: MachineStore) -> list[str]:
    """The rule's root CA names that match no trusted root in the store."""
    return [m.root_ca for m in methods
            if m.kind is AuthKind.CERTIFICATE and m.root_ca and not store.find_roots(m.root_ca)]


def secure_write(path: Path, data: bytes, *, private: bool) -> None:
    """Write a store file; ``private`` files (keys) are created 0600 before any byte is written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = 0o600 if private else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # an existing file keeps its mode through O_CREAT: set it before writing
    with os.fdopen(fd, "wb") as f:
        f.write(data)
