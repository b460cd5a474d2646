"""``policyagent cert ...``: the machine certificate store, and a small test CA for labs.

Store commands take ``--store DIR`` (default ``$POLICYAGENT_HOME/certificates``, see
``policyagent.certstore`` for its layout):

- ``list``: each machine certificate with the seed's private-key line, the trusted roots, the
  intermediate CAs, the CRL checking level and every problem found;
- ``verify CERT``: check a certificate as a peer's would be (roots by rule name, CRL level),
  printing the trusted path or the audit-544 reason (exit 1);
- ``crl-check [LEVEL]``: show or set the seed's StrongCrlCheck (0 off, 1 revoked only, 2 any
  CRL error).

Test CA commands work on a CA directory (``ca.pem``, ``ca.key`` 0600, ``ca.json`` with the next
serial number and the revocations, ``ca.crl``):

- ``create-ca DIR --name DN``: a self-signed root (RSA 2048, SHA-256; ``--bits 1024`` is the seed's
  interop size), optionally with the CRL URL it will put in every certificate;
- ``issue DIR --subject DN``: a machine certificate (key usage "signature", "exchange" or "both",
  extended key usage as asked, subjectAltNames) installed into a store with its key (and the root
  into ``root/``) and/or written to ``--out PREFIX.pem/.key`` (strongSwan's files);
  ``--no-key`` installs the certificate without its key (the seed's failed enrollment);
- ``revoke DIR SERIAL`` and ``crl DIR``: revoke, and publish the CRL (DER) for a CDP or ``crl/``.

Errors go to stderr with exit status 1. Keys are written owner-only before any byte is written
and never printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import re
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from ikeproto.certs import CertificateAuthenticator, cert_payloads
from ikeproto.enums import IdType
from ikeproto.payloads import IdPayload
from ikeproto.pki import CertificateError, CrlLevel, name_text
from policyagent.certstore import MachineStore, secure_write, system_time, write_settings
from policyagent.crl import CrlChecker
from policyagent.errors import PolicyError, UsageError
from policyagent.store import default_store_dir

EKUS = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH,
        "ipsec-ike": ObjectIdentifier("1.3.6.1.5.5.7.3.17"), "ipsec-end-system": ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
        "ipsec-tunnel": ObjectIdentifier("1.3.6.1.5.5.7.3.6"), "ipsec-user": ObjectIdentifier("1.3.6.1.5.5.7.3.7")}
USAGES = {"signature": ("digital_signature",), "exchange": ("key_encipherment",),
          "both": ("digital_signature", "key_encipherment")}
REASONS = {r.name.replace("_", "-"): r for r in x509.ReasonFlags if r not in (x509.ReasonFlags.remove_from_crl,)}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cert", help="machine certificate store; a test CA for labs")
    sub = p.add_subparsers(dest="cert_command", metavar="ACTION", required=True)
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", metavar="DIR", help="certificate store (default $POLICYAGENT_HOME/certificates)")

    def add(name, func, help, parents=()):
        q = sub.add_parser(name, parents=list(parents), help=help, description=help)
        q.set_defaults(func=lambda args: _run(func, args))
        return q

    add("list", cmd_list, "list machine certificates (with or without their private key), roots, CAs, problems", [store])
    q = add("verify", cmd_verify, "check a certificate as IKE checks a peer's (exit 1 with the reason)", [store])
    q.add_argument("cert", help="PEM or DER certificate (a PEM file may carry its chain)")
    q.add_argument("--root", action="append", metavar="NAME", help="a rule's root CA (repeat, in order); default: every trusted root")
    q.add_argument("--crl-level", type=int, choices=(0, 1, 2), help="override the store's CRL checking level")
    q = add("crl-check", cmd_crl_check, "show or set CRL checking: 0 off, 1 fail if revoked, 2 fail on any CRL error", [store])
    q.add_argument("level", nargs="?", type=int, choices=(0, 1, 2))
    q.add_argument("--timeout", type=float, default=2.0, metavar="S", help="CRL download timeout (default 2 s)")

    q = add("create-ca", cmd_create_ca, "create a test root CA in DIR")
    q.add_argument("ca", metavar="DIR")
    q.add_argument("--name", required=True, metavar="DN", help='e.g. "CN=Lab Root CA, O=Test"')
    q.add_argument("--bits", type=int, default=2048, help="RSA key size (2048; 1024 only for old interop peers)")
    q.add_argument("--days", type=int, default=3650)
    q.add_argument("--crl-url", metavar="URL", help="CRL distribution point to put in issued certificates")
    q = add("issue", cmd_issue, "issue a machine certificate from the CA in DIR", [store])
    q.add_argument("ca", metavar="DIR")
    q.add_argument("--subject", required=True, metavar="DN", help='e.g. "CN=host1, O=Test"')
    q.add_argument("--san", action="append", default=[], metavar="NAME", help="dns:NAME, ip:ADDRESS or email:ADDRESS (repeat)")
    q.add_argument("--bits", type=int, default=2048)
    q.add_argument("--days", type=int, default=365)
    q.add_argument("--not-before", metavar="ISO", help="start of validity (default now); with --not-after for expired test certificates")
    q.add_argument("--not-after", metavar="ISO")
    q.add_argument("--usage", choices=sorted(USAGES), default="both", help="key usage (signature, exchange or both)")
    q.add_argument("--eku", default="server,client", help=f"extended key usages, comma separated, or none ({', '.join(EKUS)})")
    q.add_argument("--out", metavar="PREFIX", help="also write PREFIX.pem (certificate) and PREFIX.key (key, 0600)")
    q.add_argument("--no-key", action="store_true", help="install the certificate without its private key")
    q.add_argument("--no-install", action="store_true", help="do not install into the store (with --out)")
    q = add("revoke", cmd_revoke, "revoke a certificate issued by the CA in DIR")
    q.add_argument("ca", metavar="DIR")
    q.add_argument("serial", help="serial number (decimal or 0x hex), or a certificate file")
    q.add_argument("--reason", choices=sorted(REASONS), default="unspecified")
    q = add("crl", cmd_crl, "publish the CA's CRL (DER) to DIR/ca.crl, --out FILE, and/or a store's crl/ folder", [store])
    q.add_argument("ca", metavar="DIR")
    q.add_argument("--out", metavar="FILE")
    q.add_argument("--days", type=int, default=7, help="next update in days (default 7)")
    q.add_argument("--install", action="store_true", help="also copy it into the store's crl/ folder")


def _run(func, args: argparse.Namespace) -> int:
    try:
        return int(func(args) or 0)
    except (PolicyError, CertificateError, OSError, ValueError) as exc:
        print(f"policyagent cert: error: {exc}", file=sys.stderr)
        return 1


def _store_dir(args) -> Path:
    return Path(args.store) if getattr(args, "store", None) else default_store_dir() / "certificates"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _name(text: str) -> x509.Name:
    """``CN=host1, O=Test`` (RFC 4514 order, spaces after commas allowed) or a bare common name."""
    if "=" not in text:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text.strip())])
    try:
        return x509.Name.from_rfc4514_string(",".join(p.strip() for p in re.split(r"(?<!\\),", text)))
    except ValueError:
        raise UsageError(f"not a distinguished name: {text!r} (e.g. \"CN=host1, O=Test\")") from None


def _slug(name: x509.Name) -> str:
    cn = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    text = str(cn[0].value) if cn else name.rfc4514_string()
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "certificate"


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _new_key(bits: int) -> rsa.RSAPrivateKey:
    if bits < 1024:
        raise UsageError("RSA keys of fewer than 1024 bits are refused")
    if bits < 2048:
        print(f"policyagent cert: warning: {bits}-bit RSA is weak; use it only for interop with old peers", file=sys.stderr)
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


# --- the test CA ---------------------------------------------------------------------------------


class LabCa:
    """A CA directory: certificate, key, and its state (serials, revocations, CRL URL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.cert = x509.load_pem_x509_certificate((path / "ca.pem").read_bytes())
            self.key = serialization.load_pem_private_key((path / "ca.key").read_bytes(), password=None)
            self.state = json.loads((path / "ca.json").read_text())
        except FileNotFoundError as exc:
            raise UsageError(f"{path} is not a CA directory ({exc.filename} is missing); create it with create-ca") from None

    def save(self) -> None:
        (self.path / "ca.json").write_text(json.dumps(self.state, indent=2) + "\n")

    def next_serial(self) -> int:
        serial = int(self.state["next_serial"])
        self.state["next_serial"] = serial + 1
        return serial


def cmd_create_ca(args) -> int:
    path = Path(args.ca)
    if (path / "ca.pem").exists():
        raise UsageError(f"{path} already holds a CA")
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _new_key(args.bits)
    name, now = _name(args.name), _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=args.days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    secure_write(path / "ca.key", _key_pem(key), private=True)
    secure_write(path / "ca.pem", _pem(cert), private=False)
    (path / "ca.json").write_text(json.dumps({"next_serial": 2, "crl_number": 1, "crl_url": args.crl_url,
                                              "revoked": []}, indent=2) + "\n")
    print(f"created CA {name_text(cert.subject)} in {path} (RSA {args.bits}, SHA-256)")
    return 0


def _general_name(text: str) -> x509.GeneralName:
    kind, _, value = text.partition(":")
    if kind == "dns" and value:
        return x509.DNSName(value)
    if kind == "ip" and value:
        return x509.IPAddress(ipaddress.ip_address(value))
    if kind == "email" and value:
        return x509.RFC822Name(value)
    raise UsageError(f"--san {text!r}: use dns:NAME, ip:ADDRESS or email:ADDRESS")


def _time(text: str | None, default: dt.datetime) -> dt.datetime:
    if text is None:
        return default
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def cmd_issue(args) -> int:
    ca = LabCa(Path(args.ca))
    ekus = [] if args.eku.strip().lower() == "none" else [e.strip() for e in args.eku.split(",") if e.strip()]
    unknown = [e for e in ekus if e not in EKUS]
    if unknown:
        raise UsageError(f"unknown extended key usage {', '.join(unknown)} (use {', '.join(EKUS)} or none)")
    sans = [_general_name(s) for s in args.san]
    subject = _name(args.subject)
    key = _new_key(args.bits)
    now = _now()
    not_before = _time(args.not_before, now - dt.timedelta(minutes=5))
    not_after = _time(args.not_after, not_before + dt.timedelta(days=args.days))
    usage = set(USAGES[args.usage])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.cert.subject)
         .public_key(key.public_key()).serial_number(ca.next_serial())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature="digital_signature" in usage, content_commitment=False,
                                      key_encipherment="key_encipherment" in usage, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False,
                                      decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    if ekus:
        b = b.add_extension(x509.ExtendedKeyUsage([EKUS[e] for e in ekus]), critical=False)
    if args.san:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca.state.get("crl_url"):
        b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(ca.state["crl_url"])], relative_name=None, reasons=None,
            crl_issuer=None)]), critical=False)
    cert = b.sign(ca.key, hashes.SHA256())
    ca.save()
    slug = _slug(cert.subject)
    if args.out:
        secure_write(Path(args.out + ".key"), _key_pem(key), private=True)
        secure_write(Path(args.out + ".pem"), _pem(cert), private=False)
        print(f"wrote {args.out}.pem and {args.out}.key")
    if not args.no_install:
        store = _store_dir(args)
        secure_write(store / "my" / f"{slug}.pem", _pem(cert), private=False)
        if not args.no_key:
            secure_write(store / "my" / f"{slug}.key", _key_pem(key), private=True)
        secure_write(store / "root" / f"{_slug(ca.cert.subject)}.pem", _pem(ca.cert), private=False)
        store.chmod(0o700)
        print(f"installed {name_text(cert.subject)} into {store / 'my'}" + (" WITHOUT its private key" if args.no_key else ""))
    print(f"issued {name_text(cert.subject)} serial {cert.serial_number} by {name_text(ca.cert.subject)}, "
          f"valid {not_before:%Y-%m-%d %H:%M} to {not_after:%Y-%m-%d %H:%M} UTC")
    return 0


def cmd_revoke(args) -> int:
    ca = LabCa(Path(args.ca))
    if Path(args.serial).is_file():
        data = Path(args.serial).read_bytes()
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
        serial = cert.serial_number
    else:
        serial = int(args.serial, 0)
    if any(r["serial"] == serial for r in ca.state["revoked"]):
        raise UsageError(f"serial {serial} is already revoked")
    ca.state["revoked"].append({"serial": serial, "at": _now().isoformat(), "reason": args.reason})
    ca.save()
    print(f"revoked serial {serial} ({args.reason}); publish with: policyagent cert crl {args.ca}")
    return 0


def cmd_crl(args) -> int:
    ca = LabCa(Path(args.ca))
    now = _now()
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject).last_update(now - dt.timedelta(minutes=5))
         .next_update(now + dt.timedelta(days=args.days))
         .add_extension(x509.CRLNumber(int(ca.state["crl_number"])), critical=False))
    for r in ca.state["revoked"]:
        entry = x509.RevokedCertificateBuilder().serial_number(r["serial"]).revocation_date(dt.datetime.fromisoformat(r["at"]))
        if r["reason"] != "unspecified":
            entry = entry.add_extension(x509.CRLReason(REASONS[r["reason"]]), critical=False)
        b = b.add_revoked_certificate(entry.build())
    data = b.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    ca.state["crl_number"] = int(ca.state["crl_number"]) + 1
    ca.save()
    targets = [Path(args.out) if args.out else ca.path / "ca.crl"]
    if args.install:
        targets.append(_store_dir(args) / "crl" / f"{_slug(ca.cert.subject)}.crl")
    for t in targets:
        secure_write(t, data, private=False)
    print(f"published CRL of {name_text(ca.cert.subject)} ({len(ca.state['revoked'])} revoked) to "
          + ", ".join(str(t) for t in targets))
    return 0


# --- the store -----------------------------------------------------------------------------------


def cmd_list(args) -> int:
    store = MachineStore.load(_store_dir(args))
    now = _now()
    print(f"Certificate store {store.path} (CRL checking level {int(store.crl_level)})")
    print("Personal (machine certificates):" if store.entries else "Personal (machine certificates): none")
    for e in store.entries:
        c = e.certificate
        print(f"  {e.subject}")
        print(f"    Issued by: {name_text(c.issuer)}   serial {c.serial_number}")
        state = "expired" if now > c.not_valid_after_utc else ("not yet valid" if now < c.not_valid_before_utc else "valid")
        print(f"    Valid from {c.not_valid_before_utc:%Y-%m-%d %H:%M} to {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({state})")
        print(f"    {e.key_status}")
        print(f"    File: {e.path}" + (f" (key: {e.key_path})" if e.key_path else ""))
    for title, certs in (("Trusted Root Certification Authorities", store.roots),
                         ("Intermediate Certification Authorities", store.intermediates)):
        print(f"{title}:" + ("" if certs else " none"))
        for c in certs:
            print(f"  {name_text(c.subject)}")
    for p in store.problems:
        print(f"problem: {p}")
    return 0


def cmd_verify(args) -> int:
    store = MachineStore.load(_store_dir(args))
    data = Path(args.cert).read_bytes()
    certs = x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data else [x509.load_der_x509_certificate(data)]
    if args.root:
        roots = [r for n in args.root for r in store.find_roots(n)]
        if not roots:
            raise UsageError(f"no trusted root in {store.path / 'root'} matches {', '.join(args.root)}")
    else:
        roots = list(store.roots)
        if not roots:
            raise UsageError(f"the store {store.path} trusts no root CA")
    level = CrlLevel(store.crl_level if args.crl_level is None else args.crl_level)
    checker = CrlChecker(directory=store.crl_directory, timeout_s=store.crl_timeout_s) if level else None
    au = CertificateAuthenticator(roots=roots, credentials=(), intermediates=store.intermediates, crl_level=level,
                                  revocation=checker, validation_time=system_time, key_types=("rsa", "ecdsa"))
    own_id = IdPayload(id_type=IdType.ID_DER_ASN1_DN, data=certs[0].subject.public_bytes())
    try:
        verified = au.verify_peer(cert_payloads(certs), own_id, 0.0)
    except CertificateError as exc:
        print(f"NOT TRUSTED ({exc.failure.value}): {exc}")
        return 1
    print(verified.summary())
    return 0


def cmd_crl_check(args) -> int:
    store_dir = _store_dir(args)
    if args.level is None:
        store = MachineStore.load(store_dir)
        names = {0: "off", 1: "fail only when a certificate is revoked", 2: "fail on any CRL error"}
        print(f"StrongCrlCheck {int(store.crl_level)}: {names[int(store.crl_level)]} (timeout {store.crl_timeout_s:g} s)")
        return 0
    path = write_settings(store_dir, strong_crl_check=args.level, crl_timeout_s=args.timeout)
    print(f"StrongCrlCheck set to {args.level} in {path}; restart the agent to apply it")
    return 0
