"""Certificate authentication policy: CR/CERT payloads, path validation, CRL levels, identities,
and the seed's certificate selection (ikeproto.certs, ikeproto.chain, ikeproto.pki).

Every certificate is made at run time by ``tests.pki`` (keys cached per session)."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from hypothesis import example, given
from hypothesis import strategies as st

from ikeproto import chain as chain_mod
from ikeproto.certs import (
    MAX_PEER_CERTIFICATES,
    CertificateAuthenticator,
    Credential,
    cert_payloads,
    cert_request_payloads,
    parse_cert_payloads,
    requested_authorities,
)
from ikeproto.chain import MAX_WORK, validate_path
from ikeproto.enums import CertEncoding, IdType, NotifyType, PayloadType
from ikeproto.message import parse_payloads, serialize_payloads
from ikeproto.payloads import CertPayload, CrPayload, IdPayload
from ikeproto.pki import (
    CertificateError,
    CrlLevel,
    Failure,
    RevocationResult,
    RevocationStatus,
    check_identity,
    dn_text,
    names_equal,
    parse_der_name,
)
from tests import pki

WHEN = pki.WHEN
IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")


@pytest.fixture(scope="module")
def lab():
    """Two roots (A, B), an intermediate under A, and machine certificates."""
    a = pki.root("CN=Root A, O=Lab", key_slot=1)
    b = pki.root("CN=Root B, O=Lab", key_slot=2)
    sub = a.intermediate("CN=Issuing CA, O=Lab", key_slot=3)
    return {
        "a": a, "b": b, "sub": sub,
        "host_a": a.issue("CN=host1, O=Lab", key_slot=10, san=("dns:host1.lab.test", "ip:192.0.2.1")),
        "host_b": b.issue("CN=host1, O=Lab", key_slot=11),
        "host_sub": sub.issue("CN=host2, O=Lab", key_slot=12, san=("email:ike@host2.lab.test", "ip:2001:db8::2")),
    }


def auth(roots, creds=(), **kw) -> CertificateAuthenticator:
    kw.setdefault("validation_time", pki.clock_at())
    return CertificateAuthenticator(roots=[r.cert for r in roots], credentials=creds, **kw)


def cred(issued, *chain, label="", with_key=True) -> Credential:
    return Credential(certificate=issued.cert, private_key=issued.key if with_key else None,
                      chain=tuple(c.cert for c in chain), label=label)


NOW = 1_000_000.0  # the FakeClock start: pki.clock_at maps it to WHEN


def dn_id(issued) -> IdPayload:
    return IdPayload(id_type=IdType.ID_DER_ASN1_DN, data=issued.cert.subject.public_bytes())


# --- payloads --------------------------------------------------------------------------------------


def test_cr_payloads_name_each_root_in_rule_order_by_subject_der(lab):
    """One X.509-signature CR per root, in the rule's order, authority = DER of the CA's subject."""
    crs = auth([lab["b"], lab["a"], lab["b"]]).cert_requests()
    assert [p.cert_type for p in crs] == [CertEncoding.X509_SIGNATURE] * 2
    assert [p.authority for p in crs] == [lab["b"].cert.subject.public_bytes(), lab["a"].cert.subject.public_bytes()]
    wire = serialize_payloads(crs)
    assert parse_payloads(PayloadType.CR, wire) == tuple(crs)
    assert [dn_text(a) for a in requested_authorities(crs)] == ["CN=Root B, O=Lab", "CN=Root A, O=Lab"]


def test_requested_authorities_ignore_other_certificate_types():
    crs = [CrPayload(cert_type=CertEncoding.PGP, authority=b"x"), CrPayload(cert_type=CertEncoding.X509_SIGNATURE)]
    assert requested_authorities(crs) == [b""]


def test_cert_payloads_send_end_certificate_first_and_parse_back(lab):
    payloads = cert_payloads([lab["host_sub"].cert, lab["sub"].cert])
    assert [p.encoding for p in payloads] == [CertEncoding.X509_SIGNATURE] * 2
    got = parse_cert_payloads(parse_payloads(PayloadType.CERT, serialize_payloads(payloads)))
    assert got.leaf == lab["host_sub"].cert and got.intermediates == (lab["sub"].cert,)


@pytest.mark.parametrize(("payloads", "failure", "notify"), [
    ([], Failure.NO_CERTIFICATE, NotifyType.CERTIFICATE_UNAVAILABLE),
    ([CertPayload(encoding=CertEncoding.PGP, data=b"pgp")], Failure.UNSUPPORTED_ENCODING,
     NotifyType.CERT_TYPE_UNSUPPORTED),
    ([CertPayload(encoding=CertEncoding.X509_SIGNATURE, data=b"\x30\x03\x02\x01\x00")], Failure.MALFORMED,
     NotifyType.INVALID_CERTIFICATE),
])
def test_cert_payload_problems_are_typed(payloads, failure, notify):
    with pytest.raises(CertificateError) as info:
        parse_cert_payloads(payloads)
    assert info.value.failure is failure and info.value.notify == notify


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=4))
@example([(4, b"\x30\x82\xff\xff")])
def test_any_cert_payload_bytes_parse_or_raise_certificate_error(items):
    """Property: arbitrary CERT payloads give certificates or CertificateError, nothing else."""
    try:
        parse_cert_payloads([CertPayload(encoding=e, data=d) for e, d in items])
    except CertificateError:
        pass


def test_only_the_first_certificates_are_looked_at(lab):
    good = cert_payloads([lab["host_a"].cert])
    junk = [CertPayload(encoding=CertEncoding.X509_SIGNATURE, data=b"junk")]
    got = parse_cert_payloads(good + good * (MAX_PEER_CERTIFICATES - 1) + junk)
    assert len(got.intermediates) == MAX_PEER_CERTIFICATES - 1


# --- path validation -------------------------------------------------------------------------------


def test_direct_and_intermediate_paths(lab):
    p = validate_path(lab["host_a"].cert, [], [lab["a"].cert], WHEN)
    assert p.certificates == (lab["host_a"].cert, lab["a"].cert)
    p = validate_path(lab["host_sub"].cert, [lab["sub"].cert], [lab["b"].cert, lab["a"].cert], WHEN)
    assert p.root == lab["a"].cert and "CN=host2, O=Lab <- CN=Issuing CA, O=Lab <- CN=Root A, O=Lab" in p.summary()


def test_untrusted_root_names_where_the_chain_ends_and_what_is_trusted(lab):
    with pytest.raises(CertificateError) as info:
        validate_path(lab["host_sub"].cert, [lab["sub"].cert], [lab["b"].cert], WHEN)
    e = info.value
    assert e.failure is Failure.UNTRUSTED_ROOT and e.notify == NotifyType.INVALID_CERT_AUTHORITY
    assert "chain ends at CN=Root A, O=Lab" in str(e) and "trusted: CN=Root B, O=Lab" in str(e)
    assert e.peer_identity == "Certificate based identity: CN=host2, O=Lab (issued by CN=Issuing CA, O=Lab)"


def test_missing_intermediate_is_untrusted(lab):
    with pytest.raises(CertificateError) as info:
        validate_path(lab["host_sub"].cert, [], [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.UNTRUSTED_ROOT


def test_forged_issuer_with_the_right_name_but_another_key_is_untrusted(lab):
    fake_root = pki.root("CN=Root A, O=Lab", key_slot=2)  # same name as A, B's key
    forged = fake_root.issue("CN=host1, O=Lab", key_slot=10)
    with pytest.raises(CertificateError) as info:
        validate_path(forged.cert, [fake_root.cert], [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.UNTRUSTED_ROOT


@pytest.mark.parametrize(("where", "failure", "text"), [
    ("leaf-expired", Failure.EXPIRED, "certificate CN=late expired on"),
    ("leaf-future", Failure.NOT_YET_VALID, "certificate CN=late is not valid before"),
    ("ca-expired", Failure.EXPIRED, "CA certificate CN=Old CA expired on"),
    ("root-expired", Failure.EXPIRED, "root certificate CN=Old Root expired on"),
])
def test_validity_periods_of_every_certificate(where, failure, text):
    past = WHEN - dt.timedelta(days=1)
    if where == "root-expired":
        r = pki.root("CN=Old Root", key_slot=4, not_after=past)
        leaf, inter = r.issue("CN=late"), []
    else:
        r = pki.root("CN=Root", key_slot=4)
        ca = r.intermediate("CN=Old CA", not_after=past if where == "ca-expired" else pki.AFTER)
        kw = {"not_after": past} if where == "leaf-expired" else {}
        if where == "leaf-future":
            kw = {"not_before": WHEN + dt.timedelta(seconds=1)}
        leaf, inter = ca.issue("CN=late", **kw), [ca.cert]
    with pytest.raises(CertificateError) as info:
        validate_path(leaf.cert, inter, [r.cert], WHEN)
    assert info.value.failure is failure and text in str(info.value)
    assert info.value.notify == NotifyType.INVALID_CERTIFICATE


def test_validity_edges_are_inclusive(lab):
    leaf = lab["a"].issue("CN=edge", not_before=WHEN, not_after=WHEN)
    validate_path(leaf.cert, [], [lab["a"].cert], WHEN)


@pytest.mark.parametrize("usage", [("digital_signature",), ("content_commitment",),
                                   ("digital_signature", "key_encipherment"), None])
def test_key_usage_allowing_signatures_is_accepted(lab, usage):
    leaf = lab["a"].issue("CN=ku", key_usage=usage)
    validate_path(leaf.cert, [], [lab["a"].cert], WHEN)


@pytest.mark.parametrize("usage", [("key_encipherment",), ("key_agreement",), ("data_encipherment",)])
def test_key_usage_limited_to_exchange_is_refused(lab, usage):
    """The seed: 'a certificate issued with a usage limited to exchange ... will not work'."""
    leaf = lab["a"].issue("CN=exchange only", key_usage=usage)
    with pytest.raises(CertificateError) as info:
        validate_path(leaf.cert, [], [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.KEY_USAGE and "does not allow signatures" in str(info.value)


@pytest.mark.parametrize("eku", [None, [ExtendedKeyUsageOID.SERVER_AUTH], [ExtendedKeyUsageOID.CLIENT_AUTH],
                                 [IPSEC_IKE], [ExtendedKeyUsageOID.CODE_SIGNING],
                                 [ObjectIdentifier("1.3.6.1.5.5.8.2.2")]])
def test_any_extended_key_usage_is_accepted(lab, eku):
    """The seed: 'any setting of extended key usage will be acceptable'."""
    leaf = lab["a"].issue("CN=eku", eku=eku)
    validate_path(leaf.cert, [], [lab["a"].cert], WHEN)


def test_issuer_must_be_a_ca(lab):
    not_ca = lab["a"].issue("CN=Not A CA", key_slot=5, basic_constraints=True, is_ca=False,
                            key_usage=("digital_signature", "key_cert_sign"))
    leaf = pki.Ca(cert=not_ca.cert, key=not_ca.key).issue("CN=leaf")
    with pytest.raises(CertificateError) as info:
        validate_path(leaf.cert, [not_ca.cert], [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.NOT_A_CA

    no_bc = lab["a"].intermediate("CN=No BC", basic_constraints=False)
    with pytest.raises(CertificateError) as info:
        validate_path(no_bc.issue("CN=leaf").cert, [no_bc.cert], [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.NOT_A_CA

    no_sign = lab["a"].intermediate("CN=No keyCertSign", key_usage=("digital_signature",))
    with pytest.raises(CertificateError) as info:
        validate_path(no_sign.issue("CN=leaf").cert, [no_sign.cert], [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.NOT_A_CA and "may not sign certificates" in str(info.value)


def test_path_length_constraint(lab):
    top = lab["a"].intermediate("CN=Top", path_length=0)
    below = top.intermediate("CN=Below", key_slot=6)
    leaf = below.issue("CN=deep")
    with pytest.raises(CertificateError) as info:
        validate_path(leaf.cert, [top.cert, below.cert], [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.PATH_LENGTH
    validate_path(top.issue("CN=ok").cert, [top.cert], [lab["a"].cert], WHEN)


def test_unknown_critical_extension_is_refused_and_non_critical_ignored(lab):
    ext = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    with pytest.raises(CertificateError) as info:
        validate_path(lab["a"].issue("CN=crit", extra=[(ext, True)]).cert, [], [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.CRITICAL_EXTENSION
    validate_path(lab["a"].issue("CN=noncrit", extra=[(ext, False)]).cert, [], [lab["a"].cert], WHEN)


def test_name_constraints_are_not_silently_ignored(lab):
    nc = x509.NameConstraints(permitted_subtrees=[x509.DNSName("lab.test")], excluded_subtrees=None)
    ca = lab["a"].intermediate("CN=Constrained", extra=[(nc, True)])
    with pytest.raises(CertificateError) as info:
        validate_path(ca.issue("CN=x").cert, [ca.cert], [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.CRITICAL_EXTENSION


def test_anchor_without_extensions_and_1024_bit_and_ecdsa_chains():
    """A v3 root without extensions is trusted as configured; the seed's 1024-bit keys and an
    ECDSA CA over an RSA machine certificate validate too (PolicyBuilder refuses the first two)."""
    bare = pki.root("CN=Bare Root", key_slot=7, extensions=False)
    validate_path(bare.issue("CN=x").cert, [], [bare.cert], WHEN)
    old = pki.root("CN=Old 1024", key_slot=1, bits=1024)
    validate_path(old.issue("CN=x", key_slot=2, bits=1024).cert, [], [old.cert], WHEN)
    ecr = pki.root("CN=EC Root", key_slot=1, kind="ec")
    validate_path(ecr.issue("CN=x").cert, [], [ecr.cert], WHEN)


def test_a_trusted_certificate_is_its_own_path(lab):
    """A self-signed machine certificate configured as trusted (pinned) needs no issuer; the key
    usage rule still applies to it."""
    pinned = pki.root("CN=pinned host", key_slot=9, key_usage=("digital_signature", "key_cert_sign"))
    assert validate_path(pinned.cert, [], [pinned.cert], WHEN).certificates == (pinned.cert,)
    with pytest.raises(CertificateError) as info:
        validate_path(lab["a"].cert, [], [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.KEY_USAGE


def test_look_alike_issuers_cannot_make_the_search_explode(lab, monkeypatch):
    """Many cross-issued look-alikes (two names, shared keys) cost at most MAX_WORK signature checks."""
    ka, kb = pki.key(20), pki.key(21)
    certs = []
    for i in range(8):
        for subj, issuer, subj_key, signer in (("CN=X", "CN=Y", ka, kb), ("CN=Y", "CN=X", kb, ka)):
            fake_issuer = pki.Ca(cert=pki.root(issuer, key_slot=20 if signer is ka else 21).cert, key=signer)
            certs.append(fake_issuer.issue(subj, subject_key=subj_key, is_ca=True, serial=100 + i,
                                           key_usage=("key_cert_sign",)).cert)
    leaf = pki.Ca(cert=pki.root("CN=X", key_slot=20).cert, key=ka).issue("CN=victim")
    calls = []
    real = chain_mod._signed_by
    monkeypatch.setattr(chain_mod, "_signed_by", lambda c, i: calls.append(1) or real(c, i))
    with pytest.raises(CertificateError) as info:
        validate_path(leaf.cert, certs, [lab["a"].cert], WHEN)
    assert info.value.failure is Failure.UNTRUSTED_ROOT
    assert len(calls) <= MAX_WORK + 16


# --- PolicyBuilder agrees where its profile applies -------------------------------------------------


def test_agrees_with_cryptography_policybuilder_on_2048_bit_chains(lab):
    """Oracle: cryptography's verifier (every extension policy permissive, basicConstraints
    required for CAs) accepts and refuses the same 2048-bit chains as ours."""
    from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store

    ca_policy = ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
    a, sub = lab["a"], lab["sub"]
    cases = [
        (lab["host_a"].cert, []),
        (lab["host_sub"].cert, [sub.cert]),
        (lab["host_sub"].cert, []),
        (lab["host_b"].cert, []),
        (a.issue("CN=expired", not_after=WHEN - dt.timedelta(days=1)).cert, []),
        (a.issue("CN=future", not_before=WHEN + dt.timedelta(days=1)).cert, []),
        (pki.root("CN=Root A, O=Lab", key_slot=2).issue("CN=forged").cert, []),
        (lab["a"].issue("CN=eku", eku=[ExtendedKeyUsageOID.CODE_SIGNING]).cert, []),
    ]
    verifier = (PolicyBuilder().store(Store([a.cert])).time(WHEN)
                .extension_policies(ca_policy=ca_policy, ee_policy=ExtensionPolicy.permit_all())
                .build_client_verifier())
    for leaf, inter in cases:
        try:
            verifier.verify(leaf, inter)
            theirs = True
        except Exception:
            theirs = False
        try:
            validate_path(leaf, inter, [a.cert], WHEN)
            ours = True
        except CertificateError:
            ours = False
        assert ours == theirs, leaf.subject


# --- revocation levels -----------------------------------------------------------------------------


class FakeRevocation:
    def __init__(self, results: dict[str, RevocationResult] | Exception):
        self.results = results
        self.calls: list[str] = []

    def check(self, cert, issuer, at):
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        self.calls.append(cn)
        if isinstance(self.results, Exception):
            raise self.results
        return self.results.get(cn, RevocationResult(status=RevocationStatus.GOOD))


REVOKED = RevocationResult(status=RevocationStatus.REVOKED, revoked_at=WHEN - dt.timedelta(days=2))
UNKNOWN = RevocationResult(status=RevocationStatus.UNKNOWN, reason="CRL distribution point unreachable")


@pytest.mark.parametrize(("level", "result", "failure"), [
    (CrlLevel.OFF, REVOKED, None),
    (CrlLevel.REVOKED_ONLY, REVOKED, Failure.REVOKED),
    (CrlLevel.STRICT, REVOKED, Failure.REVOKED),
    (CrlLevel.OFF, UNKNOWN, None),
    (CrlLevel.REVOKED_ONLY, UNKNOWN, None),
    (CrlLevel.STRICT, UNKNOWN, Failure.REVOCATION_UNKNOWN),
])
def test_crl_levels(lab, level, result, failure):
    """The seed's StrongCrlCheck: 0 never checks, 1 fails only on revoked, 2 on any CRL error."""
    checker = FakeRevocation({"host2": result})
    args = (lab["host_sub"].cert, [lab["sub"].cert], [lab["a"].cert], WHEN)
    if failure is None:
        path = validate_path(*args, crl_level=level, revocation=checker)
        assert checker.calls == ([] if level is CrlLevel.OFF else ["host2", "Issuing CA"])
        if level is CrlLevel.REVOKED_ONLY and result is UNKNOWN:
            assert "unreachable" in path.notes[0]
        return
    with pytest.raises(CertificateError) as info:
        validate_path(*args, crl_level=level, revocation=checker)
    assert info.value.failure is failure
    assert info.value.notify == NotifyType.INVALID_CERTIFICATE
    if failure is Failure.REVOKED:
        assert f"(serial {lab['host_sub'].cert.serial_number:#x}) was revoked by CN=Issuing CA, O=Lab" in str(info.value)
    else:
        assert "unreachable" in str(info.value) and "level 2" in str(info.value)


def test_revoked_intermediate_fails_the_path(lab):
    with pytest.raises(CertificateError) as info:
        validate_path(lab["host_sub"].cert, [lab["sub"].cert], [lab["a"].cert], WHEN,
                      crl_level=CrlLevel.REVOKED_ONLY, revocation=FakeRevocation({"Issuing CA": REVOKED}))
    assert info.value.failure is Failure.REVOKED and info.value.subject == "CN=Issuing CA, O=Lab"


def test_a_failing_checker_or_none_is_unknown(lab):
    args = (lab["host_a"].cert, [], [lab["a"].cert], WHEN)
    validate_path(*args, crl_level=CrlLevel.REVOKED_ONLY, revocation=FakeRevocation(RuntimeError("bug")))
    for checker in (FakeRevocation(RuntimeError("bug")), None):
        with pytest.raises(CertificateError) as info:
            validate_path(*args, crl_level=CrlLevel.STRICT, revocation=checker)
        assert info.value.failure is Failure.REVOCATION_UNKNOWN


# --- names and identities --------------------------------------------------------------------------


def test_der_names_compare_as_rfc5280_says():
    a = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lab"),
                   x509.NameAttribute(NameOID.COMMON_NAME, "Host  One")])
    b = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lab", _type=x509.name._ASN1Type.PrintableString),
                   x509.NameAttribute(NameOID.COMMON_NAME, "host one")])
    c = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Host One"),
                   x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lab")])
    assert a.public_bytes() != b.public_bytes() and names_equal(a.public_bytes(), b.public_bytes())
    assert not names_equal(a.public_bytes(), c.public_bytes())  # RDN order matters
    assert dn_text(a.public_bytes()) == "CN=Host  One, O=Lab"


@given(st.binary(max_size=200))
@example(b"\x30\x84\xff\xff\xff\xff")
@example(b"\x30\x05\x31\x03\x30\x01\x06")
def test_parse_der_name_never_raises(data):
    """Property: any bytes are a Name or None, and dn_text always renders."""
    parsed = parse_der_name(data)
    assert parsed is None or isinstance(parsed, tuple)
    assert isinstance(dn_text(data), str)


@given(st.lists(st.tuples(st.sampled_from([NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME,
                                           NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.DOMAIN_COMPONENT]),
                          st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                                  max_size=20)), min_size=1, max_size=5))
def test_parse_der_name_reads_what_cryptography_writes(attrs):
    """Property: our DER Name reader returns the attributes cryptography encoded, in order."""
    n = x509.Name([x509.NameAttribute(o, v) for o, v in attrs])
    assert parse_der_name(n.public_bytes()) == tuple(((o.dotted_string, v),) for o, v in attrs)


def test_identities_match_subject_or_alternative_names(lab):
    h1, h2 = lab["host_a"].cert, lab["host_sub"].cert
    check_identity(h1, IdType.ID_DER_ASN1_DN, h1.subject.public_bytes())
    check_identity(h1, IdType.ID_FQDN, b"HOST1.lab.test")
    check_identity(h1, IdType.ID_IPV4_ADDR, ipaddress.ip_address("192.0.2.1").packed)
    check_identity(h2, IdType.ID_USER_FQDN, b"ike@host2.lab.test")
    check_identity(h2, IdType.ID_IPV6_ADDR, ipaddress.ip_address("2001:db8::2").packed)
    dn_san = lab["a"].issue("CN=alt", san=("dn:CN=Alias, O=Lab",)).cert
    check_identity(dn_san, IdType.ID_DER_ASN1_DN, pki.name("CN=Alias, O=Lab").public_bytes())


@pytest.mark.parametrize(("id_type", "data"), [
    (IdType.ID_DER_ASN1_DN, pki.name("CN=host9, O=Lab").public_bytes()),
    (IdType.ID_DER_ASN1_DN, b"\x30\x80garbage"),
    (IdType.ID_FQDN, b"host2.lab.test"),
    (IdType.ID_IPV4_ADDR, ipaddress.ip_address("192.0.2.2").packed),
    (IdType.ID_KEY_ID, b"keyid"),
    (IdType.ID_USER_FQDN, b"\xff\xfe"),
])
def test_identities_not_in_the_certificate_are_refused(lab, id_type, data):
    with pytest.raises(CertificateError) as info:
        check_identity(lab["host_a"].cert, id_type, data)
    assert info.value.failure is Failure.IDENTITY_MISMATCH
    assert info.value.notify == NotifyType.INVALID_ID_INFORMATION


# --- selection (the seed's rule) -------------------------------------------------------------------


def test_selection_follows_the_rule_order_among_requested_roots(lab):
    ca, cb = cred(lab["host_a"], label="a"), cred(lab["host_b"], label="b")
    au = auth([lab["a"], lab["b"]], [cb, ca])
    crs_b = cert_request_payloads([lab["b"].cert])
    crs_ba = cert_request_payloads([lab["b"].cert, lab["a"].cert])
    assert au.select(crs_b, NOW).credential is cb
    s = au.select(crs_ba, NOW)  # both requested: our rule's first CA (A) wins, not the peer's order
    assert s.credential is ca and s.requested
    assert "requested by the peer" in s.summary()


def test_unrequested_or_absent_requests_fall_back_to_our_first_ca(lab):
    ca, cb = cred(lab["host_a"]), cred(lab["host_b"])
    au = auth([lab["b"], lab["a"]], [ca, cb])
    other = pki.root("CN=Elsewhere", key_slot=8)
    for crs in ([], cert_request_payloads([other.cert]), [CrPayload(cert_type=CertEncoding.X509_SIGNATURE)],
                [CrPayload(cert_type=CertEncoding.PGP, authority=lab["a"].cert.subject.public_bytes())]):
        s = au.select(crs, NOW)
        assert s.credential is cb and not s.requested
    # no certificate for our first CA: the next one in the rule
    assert auth([lab["b"], lab["a"]], [ca]).select([], NOW).credential is ca


def test_first_valid_certificate_in_store_order_and_never_one_without_key(lab):
    expired = lab["a"].issue("CN=old host", key_slot=13, not_after=WHEN - dt.timedelta(days=1))
    keyless = cred(lab["host_a"], label="my/keyless.crt", with_key=False)
    good = cred(lab["a"].issue("CN=host1 second", key_slot=14), label="my/second.pem")
    au = auth([lab["a"]], [keyless, cred(expired, label="my/old.pem"), good])
    assert au.select([], NOW).credential is good
    problems = au.problems(NOW)
    assert problems[0] == ("CN=host1, O=Lab (my/keyless.crt): You do not have a private key that "
                           "corresponds to this certificate")
    assert problems[1].startswith("CN=old host (my/old.pem): certificate CN=old host expired on")
    assert len(problems) == 2


def test_no_usable_certificate_says_why(lab):
    au = auth([lab["a"]], [cred(lab["host_a"], label="my/host1.crt", with_key=False), cred(lab["host_b"])])
    with pytest.raises(CertificateError) as info:
        au.select(cert_request_payloads([lab["a"].cert]), NOW)
    e = info.value
    assert e.failure is Failure.NO_LOCAL_CERTIFICATE and e.notify == NotifyType.CERTIFICATE_UNAVAILABLE
    assert "You do not have a private key that corresponds to this certificate" in str(e)
    assert "does not chain to a trusted root" in str(e)


def test_selected_chain_carries_intermediates_but_not_the_root_and_a_dn_identity(lab):
    c = cred(lab["host_sub"], lab["sub"])
    s = auth([lab["a"]], [c]).select([], NOW)
    assert s.certificates == (lab["host_sub"].cert, lab["sub"].cert)
    assert s.identity.kind == "der-dn" and s.identity.value == lab["host_sub"].cert.subject.public_bytes()
    # the intermediate may also come from the store's CA folder
    s = auth([lab["a"]], [cred(lab["host_sub"])], intermediates=[lab["sub"].cert]).select([], NOW)
    assert s.certificates == (lab["host_sub"].cert, lab["sub"].cert)


def test_key_type_must_fit_the_method(lab):
    ec_host = lab["a"].issue("CN=ec host", subject_key=pki.key(1, bits=256, kind="ec"))
    au = auth([lab["a"]], [cred(ec_host), cred(lab["host_a"])])
    assert au.select([], NOW).credential.certificate == lab["host_a"].cert
    assert auth([lab["a"]], [cred(ec_host)], key_types=("ecdsa",)).select([], NOW).credential.certificate == ec_host.cert
    with pytest.raises(CertificateError) as info:
        auth([lab["a"]]).verify_peer(cert_payloads([ec_host.cert]), dn_id(ec_host), NOW)
    assert info.value.failure is Failure.UNSUPPORTED_KEY


def test_a_rule_needs_a_root(lab):
    from ikeproto.errors import UsageError

    with pytest.raises(UsageError):
        auth([])


# --- verify_peer -----------------------------------------------------------------------------------


def test_verify_peer_returns_the_key_and_path(lab):
    au = auth([lab["b"], lab["a"]])
    v = au.verify_peer(cert_payloads([lab["host_sub"].cert, lab["sub"].cert]), dn_id(lab["host_sub"]), NOW)
    assert v.public_key == lab["host_sub"].key.public_key()
    assert v.subject == "CN=host2, O=Lab" and "trusted root" in v.summary()


def test_verify_peer_checks_the_id_against_the_certificate(lab):
    with pytest.raises(CertificateError) as info:
        auth([lab["a"]]).verify_peer(cert_payloads([lab["host_a"].cert]), dn_id(lab["host_sub"]), NOW)
    assert info.value.failure is Failure.IDENTITY_MISMATCH


def test_verify_peer_uses_the_time_mapping(lab):
    """Moving the sans-I/O clock past the certificate's end makes it expired."""
    au = auth([lab["a"]])
    payloads = cert_payloads([lab["host_a"].cert])
    au.verify_peer(payloads, dn_id(lab["host_a"]), NOW)
    with pytest.raises(CertificateError) as info:
        au.verify_peer(payloads, dn_id(lab["host_a"]), NOW + 2 * 365 * 86400)
    assert info.value.failure is Failure.EXPIRED


def test_verify_peer_with_crl_level(lab):
    au = auth([lab["a"]], crl_level=2, revocation=FakeRevocation({"host1": UNKNOWN}))
    with pytest.raises(CertificateError) as info:
        au.verify_peer(cert_payloads([lab["host_a"].cert]), dn_id(lab["host_a"]), NOW)
    assert info.value.failure is Failure.REVOCATION_UNKNOWN


def test_describe_requests_for_the_trace(lab):
    crs = cert_request_payloads([lab["a"].cert]) + [CrPayload(cert_type=CertEncoding.X509_SIGNATURE),
                                                     CrPayload(cert_type=CertEncoding.PGP)]
    assert auth([lab["a"]]).describe_requests(crs) == "CN=Root A, O=Lab; <any CA> (+1 of other types)"


# --- hostile certificates --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile():
    r = pki.root("CN=Fuzz Root", key_slot=1)
    sub = r.intermediate("CN=Fuzz CA", key_slot=3)
    leaf = sub.issue("CN=fuzz host", key_slot=10, san=("dns:fuzz.test",), cdp=("http://127.0.0.1:9/x.crl",))
    au = CertificateAuthenticator(roots=[r.cert], credentials=(), validation_time=pki.clock_at(),
                                  crl_level=CrlLevel.STRICT, revocation=FakeRevocation({}))
    return au, leaf, sub


@given(which=st.sampled_from(["leaf", "ca"]), edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)),
                                                             min_size=1, max_size=4),
       cut=st.none() | st.integers(0, 2000))
@example(which="leaf", edits=[(43, 1)], cut=None)  # an issuer Name that parses only when used
@example(which="leaf", edits=[(12, 1)], cut=None)  # version 4: x509.InvalidVersion, not a ValueError
def test_mutated_certificates_raise_only_certificate_error(hostile, which, edits, cut):
    """Property: bit-flipped or truncated certificates (leaf or CA) from the peer give a verified
    peer or CertificateError, never another exception (RFC 4945 parsers met real garbage)."""
    au, leaf, sub = hostile
    ders = {"leaf": bytearray(leaf.der), "ca": bytearray(sub.der)}
    target = ders[which]
    for pos, xor in edits:
        target[pos % len(target)] ^= xor
    if cut is not None:
        del target[cut % len(target):]
    payloads = [CertPayload(encoding=CertEncoding.X509_SIGNATURE, data=bytes(ders["leaf"])),
                CertPayload(encoding=CertEncoding.X509_SIGNATURE, data=bytes(ders["ca"]))]
    try:
        au.verify_peer(payloads, IdPayload(id_type=IdType.ID_FQDN, data=b"fuzz.test"), NOW)
    except CertificateError:
        pass
