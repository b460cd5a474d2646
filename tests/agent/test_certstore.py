"""The machine certificate store (policyagent.certstore): layout, key pairing, permissions,
passphrase-protected keys, root CA names, settings, and the authenticator built from a rule."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ikeproto.certs import cert_payloads
from ikeproto.enums import IdType
from ikeproto.payloads import IdPayload
from ikeproto.pki import CertificateError, CrlLevel, Failure
from policyagent.certstore import (
    HAS_KEY,
    NO_KEY,
    MachineStore,
    authenticator_for,
    parse_name_text,
    secure_write,
    unresolved_roots,
    write_settings,
)
from policyagent.crl import CrlChecker
from policyagent.errors import UsageError
from policyagent.model import AuthMethod
from tests import pki

NOW = 1_000_000.0


@pytest.fixture(scope="module")
def lab():
    a = pki.root("CN=SecTestCA3, O=Microsoft", key_slot=1)
    b = pki.root("CN=Lab Root B", key_slot=2)
    sub = a.intermediate("CN=Issuing CA", key_slot=3)
    return {"a": a, "b": b, "sub": sub,
            "h1": a.issue("CN=host1", key_slot=10), "h2": b.issue("CN=host2", key_slot=11),
            "h3": sub.issue("CN=host3", key_slot=12)}


def put(path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    os.chmod(path, mode)


def der_key(issued) -> bytes:
    return issued.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())


@pytest.fixture
def store(tmp_path, lab):
    s = tmp_path / "store"
    s.mkdir(mode=0o700)
    put(s / "root" / "a.pem", lab["a"].pem() + lab["b"].pem(), 0o644)
    put(s / "ca" / "sub.cer", lab["sub"].der, 0o644)
    put(s / "my" / "1-host1.crt", lab["h1"].pem(), 0o644)
    put(s / "my" / "1-host1.key", lab["h1"].key_pem())
    put(s / "my" / "2-host2.der", lab["h2"].der, 0o644)  # no key anywhere
    return s


def test_store_pairs_keys_with_certificates_by_public_key(store, lab):
    ms = MachineStore.load(store)
    assert [e.subject for e in ms.entries] == ["CN=host1", "CN=host2"]
    h1, h2 = ms.entries
    assert h1.has_private_key and h1.key_status == HAS_KEY and h1.key_path == store / "my" / "1-host1.key"
    assert not h2.has_private_key and h2.key_status == NO_KEY
    assert NO_KEY == "You do not have a private key that corresponds to this certificate."
    assert ms.roots == (lab["a"].cert, lab["b"].cert) and ms.intermediates == (lab["sub"].cert,)
    assert ms.problems == ()


def test_combined_pem_der_key_and_pkcs12(tmp_path, lab):
    s = tmp_path / "s"
    s.mkdir(mode=0o700)
    put(s / "my" / "a.pem", lab["h3"].pem() + lab["sub"].pem() + lab["h3"].key_pem())
    put(s / "my" / "b.cer", lab["h2"].der, 0o644)
    put(s / "my" / "b.key", der_key(lab["h2"]))
    p12 = pkcs12.serialize_key_and_certificates(b"h1", lab["h1"].key, lab["h1"].cert, [lab["a"].cert],
                                                serialization.NoEncryption())
    put(s / "my" / "c.p12", p12)
    ms = MachineStore.load(s)
    assert [(e.subject, e.has_private_key) for e in ms.entries] == [("CN=host3", True), ("CN=host2", True),
                                                                    ("CN=host1", True)]
    assert ms.entries[0].chain == (lab["sub"].cert,) and lab["sub"].cert in ms.intermediates
    assert ms.problems == ()


def test_key_readable_by_others_is_refused(tmp_path, lab):
    s = tmp_path / "s"
    put(s / "my" / "h1.pem", lab["h1"].pem() + lab["h1"].key_pem(), 0o640)
    ms = MachineStore.load(s)
    assert not ms.entries[0].has_private_key
    assert any("private key readable by others (mode 640)" in p for p in ms.problems)


def test_passphrase_protected_keys_cannot_be_used(tmp_path, lab):
    """The seed's strong private key protection: the service cannot prompt, so no key."""
    s = tmp_path / "s"
    put(s / "my" / "h1.crt", lab["h1"].pem(), 0o644)
    put(s / "my" / "h1.key", lab["h1"].key_pem(password=b"secret"))
    p12 = pkcs12.serialize_key_and_certificates(b"h2", lab["h2"].key, lab["h2"].cert, None,
                                                serialization.BestAvailableEncryption(b"pin"))
    put(s / "my" / "h2.pfx", p12)
    ms = MachineStore.load(s)
    assert [e.has_private_key for e in ms.entries] == [False]
    assert any("protected by a passphrase" in p for p in ms.problems)
    assert any("h2.pfx: PKCS#12 file that opens only with a passphrase" in p for p in ms.problems)
    assert not any("secret" in p or "pin" in p.split(":")[-1] for p in ms.problems)


def test_garbage_files_and_open_store_directory_are_reported(tmp_path):
    s = tmp_path / "s"
    put(s / "my" / "junk.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 0o644)
    put(s / "root" / "junk.der", b"\x30\x00", 0o644)
    put(s / "my" / "junk.bin", b"\x01\x02", 0o600)
    os.chmod(s, 0o755)
    ms = MachineStore.load(s)
    assert ms.entries == () and ms.roots == ()
    text = "\n".join(ms.problems)
    assert "store directory is accessible to others" in text and "junk.der: not a certificate" in text
    assert "junk.pem: not a certificate" in text and "junk.bin: unreadable private key" in text


def test_missing_store_is_empty():
    ms = MachineStore.load("/nonexistent/store")
    assert ms.entries == () and ms.roots == () and ms.crl_level is CrlLevel.OFF


@pytest.mark.parametrize("name", ["CN=SecTestCA3, O=Microsoft", "cn=sectestca3,o=microsoft", "SecTestCA3",
                                  " CN = SecTestCA3 ; O = Microsoft ", "2.5.4.3=SecTestCA3, O=Microsoft"])
def test_root_ca_names_as_rules_write_them(store, lab, name):
    assert MachineStore.load(store).find_roots(name) == [lab["a"].cert]


def test_root_ca_by_fingerprint_and_non_matches(store, lab):
    ms = MachineStore.load(store)
    fp = lab["b"].cert.fingerprint(hashes.SHA256()).hex()
    assert ms.find_roots(f"sha256:{fp}") == [lab["b"].cert]
    assert ms.find_roots("O=Microsoft, CN=SecTestCA3") == []  # RDN order matters
    assert ms.find_roots("CN=SecTestCA3") == []  # a DN must be complete
    assert ms.find_roots("Nobody") == []


def test_parse_name_text_escapes_and_multivalued_rdns():
    assert parse_name_text(r"CN=a\, b+OU=x, O=y") == [[("2.5.4.3", "a, b"), ("2.5.4.11", "x")], [("2.5.4.10", "y")]]
    assert parse_name_text("just a name") is None
    assert parse_name_text("XX=1") is None


def test_settings_round_trip_and_bad_settings(tmp_path):
    s = tmp_path / "s"
    write_settings(s, strong_crl_check=2, crl_timeout_s=0.5)
    ms = MachineStore.load(s)
    assert ms.crl_level is CrlLevel.STRICT and ms.crl_timeout_s == 0.5
    (s / "settings.toml").write_text("strong_crl_check = 7\n")
    ms = MachineStore.load(s)
    assert ms.crl_level is CrlLevel.OFF and any("CRL checking stays off" in p for p in ms.problems)
    with pytest.raises(ValueError):
        write_settings(s, strong_crl_check=3)


def test_secure_write_makes_existing_files_private(tmp_path):
    p = tmp_path / "k.key"
    p.write_bytes(b"old")
    os.chmod(p, 0o644)
    secure_write(p, b"new", private=True)
    assert p.read_bytes() == b"new" and (p.stat().st_mode & 0o777) == 0o600


# --- the authenticator of a rule -------------------------------------------------------------------


def test_authenticator_for_a_rule(store, lab):
    ms = MachineStore.load(store)
    methods = (AuthMethod.certificate("CN=Lab Root B"), AuthMethod.certificate("Nowhere CA"),
               AuthMethod.certificate("SecTestCA3"), AuthMethod.kerberos())
    au = authenticator_for(methods, ms, validation_time=pki.clock_at())
    assert au.roots == (lab["b"].cert, lab["a"].cert)
    assert unresolved_roots(methods, ms) == ["Nowhere CA"]
    # host2 (root B, first in the rule) has no key: never chosen; host1 chains to SecTestCA3
    s = au.select([], NOW)
    assert s.credential.certificate == lab["h1"].cert and not s.requested
    assert any(NO_KEY.rstrip(".") in p for p in au.problems(NOW))
    assert au.crl_level is CrlLevel.OFF and au.revocation is None


def test_authenticator_uses_store_intermediates_and_crl_settings(store, lab):
    put(store / "my" / "3-host3.pem", lab["h3"].pem() + lab["h3"].key_pem())
    write_settings(store, strong_crl_check=1)
    ms = MachineStore.load(store)
    au = authenticator_for((AuthMethod.certificate("CN=SecTestCA3, O=Microsoft"),), ms,
                           validation_time=pki.clock_at())
    assert au.crl_level is CrlLevel.REVOKED_ONLY and isinstance(au.revocation, CrlChecker)
    assert au.revocation.directory == store / "crl"
    # the peer sends only its end certificate: the store's CA folder completes the path
    peer_id = IdPayload(id_type=IdType.ID_DER_ASN1_DN, data=lab["h3"].cert.subject.public_bytes())
    v = au.verify_peer(cert_payloads([lab["h3"].cert]), peer_id, NOW)
    assert v.path.certificates == (lab["h3"].cert, lab["sub"].cert, lab["a"].cert)
    assert au.select([], NOW).certificates == (lab["h1"].cert,)


def test_rules_without_usable_roots(store):
    ms = MachineStore.load(store)
    assert authenticator_for((AuthMethod.kerberos(),), ms) is None
    with pytest.raises(UsageError) as info:
        authenticator_for((AuthMethod.certificate("CN=Unknown"),), ms)
    assert "none of the rule's root CAs (CN=Unknown)" in str(info.value)


def test_only_keyless_certificates_fail_with_the_seed_words(tmp_path, lab):
    s = tmp_path / "s"
    put(s / "root" / "a.pem", lab["a"].pem(), 0o644)
    put(s / "my" / "h1.crt", lab["h1"].pem(), 0o644)
    au = authenticator_for((AuthMethod.certificate("SecTestCA3"),), MachineStore.load(s),
                           validation_time=pki.clock_at())
    with pytest.raises(CertificateError) as info:
        au.select([], NOW)
    assert info.value.failure is Failure.NO_LOCAL_CERTIFICATE
    assert "You do not have a private key that corresponds to this certificate" in str(info.value)
