"""CRL checking (policyagent.crl): the configured directory, distribution points over HTTP from a
loopback server, caching, and the seed's levels 0/1/2 end to end through ikeproto.chain."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from ikeproto.chain import validate_path
from ikeproto.pki import CertificateError, CrlLevel, Failure, RevocationStatus
from policyagent.crl import CrlChecker, distribution_points, load_crl
from tests import pki

WHEN = pki.WHEN


@pytest.fixture(scope="module")
def server():
    with pki.CrlServer() as s:
        yield s


@pytest.fixture(scope="module")
def ca(server):
    return pki.root("CN=CRL Root, O=Lab", key_slot=1)


def host(ca, server, name="CN=host", path="/lab.crl", **kw):
    return ca.issue(name, cdp=(server.url(path),) if path else (), **kw)


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_distribution_points_lists_uris(ca, server):
    leaf = host(ca, server)
    assert distribution_points(leaf.cert) == [server.url("/lab.crl")]
    assert distribution_points(ca.cert) == []


def test_load_crl_reads_der_and_pem(ca):
    crl = ca.crl()
    from cryptography.hazmat.primitives import serialization

    assert load_crl(crl.public_bytes(serialization.Encoding.PEM)) == load_crl(crl.public_bytes(serialization.Encoding.DER))
    with pytest.raises(ValueError):
        load_crl(b"not a crl")


# --- the directory ---------------------------------------------------------------------------------


def test_directory_crl_good_and_revoked(tmp_path, ca, server):
    good, bad = host(ca, server, "CN=good", path=None), host(ca, server, "CN=bad", path=None)
    (tmp_path / "lab.crl").write_bytes(ca.crl_der(revoked={bad.cert.serial_number: WHEN - dt.timedelta(days=3)}))
    checker = CrlChecker(directory=tmp_path, fetch=None)
    assert checker.check(good.cert, ca.cert, WHEN).status is RevocationStatus.GOOD
    r = checker.check(bad.cert, ca.cert, WHEN)
    assert r.status is RevocationStatus.REVOKED and r.revoked_at == WHEN - dt.timedelta(days=3)
    assert "file " in r.reason


@pytest.mark.parametrize(("kw", "text"), [
    ({"next_update": WHEN - dt.timedelta(hours=1)}, "is stale"),
    ({"this_update": WHEN + dt.timedelta(hours=1), "next_update": WHEN + dt.timedelta(days=2)}, "not valid before"),
    ({"signer": pki.key(2)}, "not signed by CN=CRL Root, O=Lab"),
])
def test_directory_crl_that_cannot_vouch_is_unknown(tmp_path, ca, server, kw, text):
    leaf = host(ca, server, path=None)
    (tmp_path / "lab.crl").write_bytes(ca.crl_der(revoked={}, **kw))
    r = CrlChecker(directory=tmp_path, fetch=None).check(leaf.cert, ca.cert, WHEN)
    assert r.status is RevocationStatus.UNKNOWN and text in r.reason


def test_a_stale_crl_that_lists_the_certificate_still_revokes(tmp_path, ca, server):
    leaf = host(ca, server, path=None)
    (tmp_path / "old.crl").write_bytes(ca.crl_der(revoked={leaf.cert.serial_number: WHEN - dt.timedelta(days=9)},
                                                  next_update=WHEN - dt.timedelta(days=1)))
    assert CrlChecker(directory=tmp_path, fetch=None).check(leaf.cert, ca.cert, WHEN).status is RevocationStatus.REVOKED


def test_other_issuers_and_garbage_files_do_not_count(tmp_path, ca, server):
    other = pki.root("CN=Other", key_slot=2)
    (tmp_path / "other.crl").write_bytes(other.crl_der(revoked={}))
    (tmp_path / "junk.crl").write_bytes(b"junk")
    leaf = host(ca, server, path=None)
    checker = CrlChecker(directory=tmp_path, fetch=None)
    r = checker.check(leaf.cert, ca.cert, WHEN)
    assert r.status is RevocationStatus.UNKNOWN and "no CRL for CN=CRL Root, O=Lab" in r.reason
    assert any("junk.crl: not a CRL" in p for p in checker.directory_problems)


def test_directory_is_rescanned_when_it_changes(tmp_path, ca, server):
    leaf = host(ca, server, path=None)
    checker = CrlChecker(directory=tmp_path, fetch=None)
    assert checker.check(leaf.cert, ca.cert, WHEN).status is RevocationStatus.UNKNOWN
    (tmp_path / "lab.crl").write_bytes(ca.crl_der(revoked={}))
    assert checker.check(leaf.cert, ca.cert, WHEN).status is RevocationStatus.GOOD


# --- distribution points ---------------------------------------------------------------------------


def test_cdp_over_http_good_revoked_and_cached(ca, server):
    good, bad = host(ca, server, "CN=good", path="/a.crl"), host(ca, server, "CN=bad", path="/a.crl")
    server.served["/a.crl"] = ca.crl_der(revoked={bad.cert.serial_number: WHEN - dt.timedelta(days=1)})
    checker = CrlChecker(timeout_s=2.0)
    assert checker.check(good.cert, ca.cert, WHEN).status is RevocationStatus.GOOD
    assert checker.check(bad.cert, ca.cert, WHEN).status is RevocationStatus.REVOKED
    assert server.hits["/a.crl"] == 1 and checker.stats["cached"] == 1
    # once the CRL is past its next update, it is fetched again
    later = WHEN + dt.timedelta(days=30)
    checker.check(good.cert, ca.cert, later)
    assert server.hits["/a.crl"] == 2


def test_cdp_404_refused_and_timeout_are_unknown_with_the_url(ca, server):
    missing = host(ca, server, path="/missing.crl")
    refused = ca.issue("CN=refused", cdp=(f"http://127.0.0.1:{pki.closed_port()}/x.crl",))
    checker = CrlChecker(timeout_s=0.3)
    for leaf in (missing, refused):
        r = checker.check(leaf.cert, ca.cert, WHEN)
        assert r.status is RevocationStatus.UNKNOWN and "unreachable or unusable" in r.reason
        assert distribution_points(leaf.cert)[0] in r.reason
    with pki.silent_port() as port:
        silent = ca.issue("CN=silent", cdp=(f"http://127.0.0.1:{port}/x.crl",))
        r = checker.check(silent.cert, ca.cert, WHEN)
    assert r.status is RevocationStatus.UNKNOWN and "timed out" in r.reason


def test_failed_url_is_not_retried_until_retry_after(ca, server):
    leaf = host(ca, server, path="/later.crl")
    clock = FakeMonotonic()
    checker = CrlChecker(retry_after_s=60, monotonic=clock)
    assert checker.check(leaf.cert, ca.cert, WHEN).status is RevocationStatus.UNKNOWN
    server.served["/later.crl"] = ca.crl_der(revoked={})
    assert checker.check(leaf.cert, ca.cert, WHEN).status is RevocationStatus.UNKNOWN
    assert server.hits["/later.crl"] == 1 and checker.stats["retry_suppressed"] == 1
    clock.t += 61
    assert checker.check(leaf.cert, ca.cert, WHEN).status is RevocationStatus.GOOD
    assert server.hits["/later.crl"] == 2


def test_unsupported_schemes_and_failing_fetchers_are_unknown(ca):
    leaf = ca.issue("CN=ldap", cdp=("ldap://dc.lab.test/CN=CRL",))
    r = CrlChecker().check(leaf.cert, ca.cert, WHEN)
    assert r.status is RevocationStatus.UNKNOWN and "unsupported URL scheme" in r.reason

    def broken(url, timeout):
        raise RuntimeError("bug in a fetcher")

    leaf = ca.issue("CN=x", cdp=("http://127.0.0.1:9/x.crl",))
    r = CrlChecker(fetch=broken).check(leaf.cert, ca.cert, WHEN)
    assert r.status is RevocationStatus.UNKNOWN and "bug in a fetcher" in r.reason


def test_reason_code_is_reported(ca, server):
    leaf = host(ca, server, path="/reason.crl")
    b = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
         .last_update(WHEN - dt.timedelta(days=1)).next_update(WHEN + dt.timedelta(days=1))
         .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(leaf.cert.serial_number)
                                  .revocation_date(WHEN - dt.timedelta(days=1))
                                  .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
                                  .build()))
    from cryptography.hazmat.primitives import hashes, serialization

    server.served["/reason.crl"] = b.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    r = CrlChecker().check(leaf.cert, ca.cert, WHEN)
    assert r.status is RevocationStatus.REVOKED and "keyCompromise" in r.reason


# --- levels end to end -----------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "ok"), [(0, True), (1, False), (2, False)])
def test_revoked_certificate_at_each_level(ca, server, level, ok):
    leaf = host(ca, server, "CN=revoked host", path="/levels.crl")
    ca.revoke(leaf)
    server.served["/levels.crl"] = ca.crl_der()
    run = lambda: validate_path(leaf.cert, [], [ca.cert], WHEN, crl_level=CrlLevel(level),  # noqa: E731
                                revocation=CrlChecker(timeout_s=2.0))
    if ok:
        run()
        return
    with pytest.raises(CertificateError) as info:
        run()
    assert info.value.failure is Failure.REVOKED and f"level {level}" in str(info.value)


@pytest.mark.parametrize(("level", "ok"), [(0, True), (1, True), (2, False)])
def test_unreachable_cdp_at_each_level(ca, level, ok):
    leaf = ca.issue("CN=unreachable", cdp=(f"http://127.0.0.1:{pki.closed_port()}/gone.crl",))
    run = lambda: validate_path(leaf.cert, [], [ca.cert], WHEN, crl_level=CrlLevel(level),  # noqa: E731
                                revocation=CrlChecker(timeout_s=0.5))
    if ok:
        path = run()
        assert bool(path.notes) == (level == 1)
        return
    with pytest.raises(CertificateError) as info:
        run()
    assert info.value.failure is Failure.REVOCATION_UNKNOWN and "gone.crl" in str(info.value)
