"""``policyagent cert ...`` in-process: a test CA, machine certificates into a store, revocation,
CRL publication, CRL checking levels, and verification as IKE checks a peer."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ikeproto.certs import CertificateAuthenticator
from policyagent.certstore import MachineStore, authenticator_for
from policyagent.cli import main
from policyagent.crl import load_crl
from policyagent.model import AuthMethod

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One CA and a store, built once through the command line (RSA key generation is slow)."""
    base = tmp_path_factory.mktemp("certcli")
    ca, store = base / "ca", base / "store"
    runs = [
        ["create-ca", str(ca), "--name", "CN=Lab Root CA, O=Test", "--crl-url", "http://127.0.0.1:9/lab.crl"],
        ["issue", str(ca), "--subject", "CN=host1, O=Test", "--san", "dns:host1.lab.test", "--san", "ip:192.0.2.1",
         "--store", str(store), "--out", str(base / "host1")],
        ["issue", str(ca), "--subject", "CN=host2, O=Test", "--store", str(store), "--no-key", "--usage", "signature",
         "--eku", "none"],
        ["issue", str(ca), "--subject", "CN=old, O=Test", "--bits", "1024", "--store", str(store), "--eku", "ipsec-ike",
         "--not-before", "2001-01-01T00:00:00", "--not-after", "2002-01-01T00:00:00"],
        ["issue", str(ca), "--subject", "CN=exchange, O=Test", "--usage", "exchange", "--no-install",
         "--out", str(base / "exchange")],
    ]
    for argv in runs:
        assert main(["cert", *argv]) == 0, argv
    return {"base": base, "ca": ca, "store": store}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["cert", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_ca_files_and_modes(lab):
    ca = lab["ca"]
    assert (ca / "ca.key").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((ca / "ca.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=Lab Root CA,O=Test"
    assert cert.public_key().key_size == 2048 and cert.signature_hash_algorithm.name == "sha256"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_issued_certificates_carry_what_was_asked(lab):
    store = MachineStore.load(lab["store"])
    by = {e.subject: e for e in store.entries}
    assert set(by) == {"CN=host1, O=Test", "CN=host2, O=Test", "CN=old, O=Test"}
    h1 = by["CN=host1, O=Test"].certificate
    san = h1.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["host1.lab.test"]
    cdp = h1.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == "http://127.0.0.1:9/lab.crl"
    eku = h1.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert by["CN=host1, O=Test"].has_private_key and not by["CN=host2, O=Test"].has_private_key
    assert by["CN=old, O=Test"].certificate.public_key().key_size == 1024
    assert (lab["store"] / "my" / "host1.key").stat().st_mode & 0o777 == 0o600
    assert (lab["store"] / "my").stat().st_mode & 0o777 == 0o700
    assert [name for name in os.listdir(lab["store"] / "root")] == ["Lab-Root-CA.pem"]
    # strongSwan's files
    assert (lab["base"] / "host1.pem").read_bytes() == (lab["store"] / "my" / "host1.pem").read_bytes()
    assert (lab["base"] / "host1.key").stat().st_mode & 0o777 == 0o600


def test_list_shows_the_seed_private_key_lines(lab, capsys):
    status, out, _ = run(capsys, "list", "--store", str(lab["store"]))
    assert status == 0
    assert out.count("You have a private key that corresponds to this certificate.") == 2
    assert out.count("You do not have a private key that corresponds to this certificate.") == 1
    assert "Trusted Root Certification Authorities:\n  CN=Lab Root CA, O=Test" in out
    assert "(expired)" in out and "CRL checking level 0" in out


def test_verify_trusted_expired_and_wrong_usage(lab, capsys):
    store = lab["store"]
    status, out, _ = run(capsys, "verify", str(store / "my" / "host1.pem"), "--store", str(store))
    assert status == 0 and "CN=host1, O=Test <- CN=Lab Root CA, O=Test (trusted root)" in out
    status, out, _ = run(capsys, "verify", str(store / "my" / "old.pem"), "--store", str(store))
    assert status == 1 and "NOT TRUSTED (expired)" in out
    status, out, _ = run(capsys, "verify", str(lab["base"] / "exchange.pem"), "--store", str(store))
    assert status == 1 and "NOT TRUSTED (key-usage)" in out
    status, _, err = run(capsys, "verify", str(store / "my" / "host1.pem"), "--store", str(store), "--root", "CN=Nobody")
    assert status == 1 and "no trusted root" in err


def test_rule_authenticator_from_the_cli_store(lab):
    store = MachineStore.load(lab["store"])
    au = authenticator_for((AuthMethod.certificate("Lab Root CA"),), store)
    assert isinstance(au, CertificateAuthenticator)
    chosen = au.select([], 0.0)  # real time: host1 is current, host2 has no key, old expired
    assert chosen.credential.subject == "CN=host1, O=Test"


def test_revoke_publish_and_crl_levels(lab, capsys, tmp_path):
    store, ca = lab["store"], lab["ca"]
    status, out, _ = run(capsys, "revoke", str(ca), str(lab["base"] / "host1.pem"), "--reason", "key-compromise")
    assert status == 0 and "revoked serial" in out
    status, _, err = run(capsys, "revoke", str(ca), str(lab["base"] / "host1.pem"))
    assert status == 1 and "already revoked" in err
    status, out, _ = run(capsys, "crl", str(ca), "--store", str(store), "--install")
    assert status == 0
    crl = load_crl((ca / "ca.crl").read_bytes())
    serial = x509.load_pem_x509_certificate((lab["base"] / "host1.pem").read_bytes()).serial_number
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert (store / "crl" / "Lab-Root-CA.crl").read_bytes() == (ca / "ca.crl").read_bytes()

    host1 = str(store / "my" / "host1.pem")
    assert run(capsys, "verify", host1, "--store", str(store))[0] == 0  # level 0: not checked
    status, out, _ = run(capsys, "crl-check", "1", "--store", str(store), "--timeout", "0.5")
    assert status == 0 and "StrongCrlCheck set to 1" in out
    assert "StrongCrlCheck 1: fail only when a certificate is revoked (timeout 0.5 s)" in run(
        capsys, "crl-check", "--store", str(store))[1]
    status, out, _ = run(capsys, "verify", host1, "--store", str(store))
    assert status == 1 and "NOT TRUSTED (revoked)" in out and "keyCompromise" not in out
    # host2 is not revoked: the installed CRL vouches for it at level 2 without any download
    status, out, _ = run(capsys, "verify", str(store / "my" / "host2.pem"), "--store", str(store), "--crl-level", "2")
    assert status == 0
    run(capsys, "crl-check", "0", "--store", str(store))


def test_usage_errors(lab, capsys, tmp_path):
    assert "already holds a CA" in run(capsys, "create-ca", str(lab["ca"]), "--name", "CN=x")[2]
    assert "not a CA directory" in run(capsys, "issue", str(tmp_path), "--subject", "CN=x")[2]
    assert "--san 'host'" in run(capsys, "issue", str(lab["ca"]), "--subject", "CN=x", "--san", "host",
                                 "--store", str(tmp_path / "s"))[2]
    assert "unknown extended key usage" in run(capsys, "issue", str(lab["ca"]), "--subject", "CN=x",
                                               "--eku", "bogus", "--store", str(tmp_path / "s"))[2]
    assert "fewer than 1024 bits" in run(capsys, "create-ca", str(tmp_path / "weak"), "--name", "CN=w",
                                         "--bits", "512")[2]
    assert "not a distinguished name" in run(capsys, "create-ca", str(tmp_path / "bad"), "--name", "CN=a, XX=b")[2]


def test_crl_dates_and_number(lab, tmp_path):
    assert main(["cert", "crl", str(lab["ca"]), "--out", str(tmp_path / "a.crl"), "--days", "3"]) == 0
    assert main(["cert", "crl", str(lab["ca"]), "--out", str(tmp_path / "b.crl")]) == 0
    a, b = (load_crl((tmp_path / n).read_bytes()) for n in ("a.crl", "b.crl"))
    now = dt.datetime.now(dt.timezone.utc)
    assert a.last_update_utc <= now <= a.next_update_utc <= now + dt.timedelta(days=3)
    number = lambda crl: crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number  # noqa: E731
    assert number(b) == number(a) + 1


def test_command_line_entry_point(lab):
    proc = subprocess.run([sys.executable, "-m", "policyagent", "cert", "list", "--store", str(lab["store"])],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and "Personal (machine certificates):" in proc.stdout
