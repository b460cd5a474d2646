"""In-process Main Mode + Quick Mode negotiations with certificate authentication: success,
untrusted root, expired certificate, wrong key usage, missing private key, revoked at CRL levels
0/1/2, unreachable CDP at levels 1/2 (CRLs served by a loopback HTTP server), multiple roots and
the seed's selection order.

Main Mode consults ``ikeproto.certs.CertificateAuthenticator`` through
``Phase1Config.certificates`` (``ikeproto.exchanges.auth.SignatureAuth``): CR payloads for our
roots in messages 3/4, the peer's CRs collected, our certificate chosen from them before message
5/6 (our identity, key and chain), and the peer's CERT/ID checked before its SIG is verified with
the certified key.
"""

from __future__ import annotations

import datetime as dt
import pytest

from ikeproto.certs import CertificateAuthenticator, Credential
from ikeproto.chain import ValidatedPath
from ikeproto.config import Phase1Config
from ikeproto.endpoint import IkeEndpoint
from ikeproto.enums import NotifyType
from ikeproto.events import NegotiationFailed, Phase1Established, Phase2Established
from ikeproto.payloads import CrPayload
from ikeproto.pki import dn_text
from policyagent.crl import CrlChecker
from tests import pki
from tests.ike.helpers import (
    A_ADDR,
    B_ADDR,
    Provider,
    carry_traffic,
    events,
    mirror,
    p1,
    phase2,
    run_timers,
    seeded_rng,
    transfer,
)

RSA_SIG = p1(auth="rsa-sig")


# --- the hook ------------------------------------------------------------------------------------


def with_certificates(au: CertificateAuthenticator) -> Phase1Config:
    """The Phase1Config a rule with certificate methods gives Main Mode."""
    return Phase1Config(proposals=(RSA_SIG,), certificates=au)


# --- set-up ----------------------------------------------------------------------------------------


class TraceLog:
    """A structlog-like logger keeping (event, fields) for assertions on the IKE trace."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict]] = []

    def debug(self, event, **kw):
        self.entries.append((event, kw))

    info = debug

    def find(self, event: str) -> list[dict]:
        return [kw for e, kw in self.entries if e == event]


@pytest.fixture(scope="module")
def lab():
    r1 = pki.root("CN=Root One, O=Lab", key_slot=1)
    r2 = pki.root("CN=Root Two, O=Lab", key_slot=2)
    other = pki.root("CN=Other Root, O=Elsewhere", key_slot=3)
    sub = r1.intermediate("CN=Issuing CA, O=Lab", key_slot=4)
    return {"r1": r1, "r2": r2, "other": other, "sub": sub,
            "a1": r1.issue("CN=hostA, O=Lab", key_slot=10, san=(f"ip:{A_ADDR}",)),
            "a2": r2.issue("CN=hostA two, O=Lab", key_slot=11),
            "b1": sub.issue("CN=hostB, O=Lab", key_slot=12),
            "b2": r2.issue("CN=hostB two, O=Lab", key_slot=13)}


def cred(issued, *chain, with_key=True):
    return Credential(certificate=issued.cert, private_key=issued.key if with_key else None,
                      chain=tuple(c.cert for c in chain))


def authenticator(roots, creds, **kw) -> CertificateAuthenticator:
    return CertificateAuthenticator(roots=[r.cert for r in roots], credentials=creds,
                                    validation_time=pki.clock_at(), **kw)


def negotiate(clock, au_a, au_b):
    """A (192.0.2.1) initiates a transport-mode Quick Mode to B; both sides' events and traces."""
    cfg = phase2(f"{A_ADDR}/32", f"{B_ADDR}/32", mode="transport")
    logs = TraceLog(), TraceLog()
    a = IkeEndpoint(config=Provider(with_certificates(au_a)), local_address=A_ADDR, rng=seeded_rng(1),
                    logger=logs[0])
    b = IkeEndpoint(config=Provider(with_certificates(au_b), [mirror(cfg)]), local_address=B_ADDR,
                    rng=seeded_rng(2), logger=logs[1])
    a.initiate((B_ADDR, 500), cfg, clock.now)
    wire = transfer(a, b, clock.now)
    ev_a, ev_b = events(a), events(b)
    if not any(isinstance(e, Phase2Established) for e in ev_a):
        run_timers(a, b, clock, clock.now + 120)
        ev_a, ev_b = ev_a + events(a), ev_b + events(b)
    return ev_a, ev_b, logs, wire


def ok(ev_a, ev_b):
    assert [type(e) for e in ev_a] == [Phase1Established, Phase2Established], ev_a
    assert [type(e) for e in ev_b] == [Phase1Established, Phase2Established], ev_b
    assert carry_traffic(ev_a[1], ev_b[1]) == 6
    return ev_a[0], ev_b[0]


def failures(evs) -> list[NegotiationFailed]:
    return [e for e in evs if isinstance(e, NegotiationFailed)]


# --- the proofs ------------------------------------------------------------------------------------


def test_certificates_success_with_chain_dn_identities_and_crs(clock, lab):
    au_a = authenticator([lab["r1"]], [cred(lab["a1"])])
    au_b = authenticator([lab["r1"]], [cred(lab["b1"], lab["sub"])])  # sends its intermediate
    ev_a, ev_b, logs, _ = negotiate(clock, au_a, au_b)
    mm_a, mm_b = ok(ev_a, ev_b)
    assert mm_a.auth == mm_b.auth == "rsa-sig"
    assert mm_a.peer_id.kind == "der-dn" and mm_a.peer_id.value == lab["b1"].cert.subject.public_bytes()
    assert mm_b.peer_id.value == lab["a1"].cert.subject.public_bytes()
    # a clear trace: what the peer requested, what we chose, the peer's trusted path
    requested = logs[0].find("certificate requests")[0]["requested"]
    assert requested == "CN=Root One, O=Lab"
    assert "CN=hostA, O=Lab <- CN=Root One, O=Lab (trusted root); requested by the peer" in \
        logs[0].find("certificate chosen")[0]["detail"]
    assert "CN=hostB, O=Lab <- CN=Issuing CA, O=Lab <- CN=Root One, O=Lab (trusted root)" in \
        logs[0].find("peer certificate")[0]["detail"]
    sent = [kw["payloads"] for e, kw in logs[1].entries if e == "message sent" and kw.get("exchange") == "main mode 6"]
    assert sent and sent[0].count("CERT(encoding=4") == 2
    assert "ID(ID_DER_ASN1_DN CN=hostB, O=Lab " in sent[0]  # the trace names DNs readably
    received = [kw["payloads"] for e, kw in logs[1].entries if e == "message received"]
    assert any("CR(type=4 CN=Root One, O=Lab)" in r for r in received)


class CarelessPeer(CertificateAuthenticator):
    """A peer that sends its certificate without checking it first (as a peer with an expired or
    unsuitable certificate does): our side must refuse what it receives."""

    def _own_path(self, cred, root, at):
        return ValidatedPath(certificates=(cred.certificate, root))


def careless(roots, creds) -> CarelessPeer:
    return CarelessPeer(roots=[r.cert for r in roots], credentials=creds, validation_time=pki.clock_at())


def expect_failure(ev_a, ev_b, *, refuser: str, notify: int, text: str, failure: str) -> NegotiationFailed:
    """The refusing side records the reason and the certificate failure code (audit 544
    material). A refused message 5 (B refuses) fails both sides; a refused message 6 (A refuses)
    leaves B with an ISAKMP SA and no Quick Mode."""
    assert not any(isinstance(e, Phase2Established) for e in ev_a + ev_b)
    me, other = (ev_b, ev_a) if refuser == "b" else (ev_a, ev_b)
    assert not any(isinstance(e, Phase1Established) for e in me)
    mine = failures(me)
    assert mine and mine[0].failure_point == "me" and mine[0].notify == notify, mine
    assert text in mine[0].reason, mine[0].reason
    assert mine[0].certificate_failure == failure
    if refuser == "b":
        assert failures(other) and failures(other)[0].phase == 1
        # the side that was refused reports the peer's refusal, not a certificate of its own
        assert all(f.certificate_failure is None for f in failures(other))
    return mine[0]


def test_untrusted_root(clock, lab):
    stranger = lab["other"].issue("CN=hostA, O=Lab", key_slot=10)
    ev_a, ev_b, logs, _ = negotiate(clock, authenticator([lab["other"]], [cred(stranger)]),
                                    authenticator([lab["r1"]], [cred(lab["b1"], lab["sub"])]))
    f = expect_failure(ev_a, ev_b, refuser="b", notify=NotifyType.INVALID_CERT_AUTHORITY,
                       text="does not chain to a trusted root certification authority of this rule", failure="untrusted-root")
    assert "chain ends at CN=Other Root, O=Elsewhere" in f.reason
    assert any(kw.get("failure") == "untrusted-root" for kw in logs[1].find("failure"))


def test_expired_certificate(clock, lab):
    old = lab["r1"].issue("CN=hostA, O=Lab", key_slot=10, not_after=pki.WHEN - dt.timedelta(days=1))
    ev_a, ev_b, _, _ = negotiate(clock, careless([lab["r1"]], [cred(old)]),
                                 authenticator([lab["r1"]], [cred(lab["b1"], lab["sub"])]))
    expect_failure(ev_a, ev_b, refuser="b", notify=NotifyType.INVALID_CERTIFICATE,
                   text="certificate CN=hostA, O=Lab expired on", failure="expired")


def test_wrong_key_usage(clock, lab):
    exchange_only = lab["r1"].issue("CN=hostB, O=Lab", key_slot=12, key_usage=("key_encipherment",))
    ev_a, ev_b, _, _ = negotiate(clock, authenticator([lab["r1"]], [cred(lab["a1"])]),
                                 careless([lab["r1"]], [cred(exchange_only)]))
    expect_failure(ev_a, ev_b, refuser="a", notify=NotifyType.INVALID_CERTIFICATE,
                   text="does not allow signatures (key usage: key encipherment)", failure="key-usage")


def test_missing_private_key(clock, lab):
    """The seed: a certificate without its private key is never chosen; with nothing else to
    send, Main Mode fails on our side with the seed's words."""
    ev_a, ev_b, _, _ = negotiate(clock, authenticator([lab["r1"]], [cred(lab["a1"], with_key=False)]),
                                 authenticator([lab["r1"]], [cred(lab["b1"], lab["sub"])]))
    f = expect_failure(ev_a, ev_b, refuser="a", notify=NotifyType.CERTIFICATE_UNAVAILABLE,
                       text="You do not have a private key that corresponds to this certificate",
                       failure="no-local-certificate")
    assert "no machine certificate with a private key" in f.reason


@pytest.fixture(scope="module")
def cdp(lab):
    """A loopback CRL distribution point; host A's certificate names it, then gets revoked."""
    with pki.CrlServer() as server:
        revoked = lab["r1"].issue("CN=hostA, O=Lab", key_slot=10, cdp=(server.url("/r1.crl"),))
        lab["r1"].revoke(revoked)
        server.served["/r1.crl"] = lab["r1"].crl_der()
        yield server, revoked


@pytest.mark.parametrize("level", [0, 1, 2])
def test_revoked_certificate_at_crl_levels(clock, lab, cdp, level):
    server, revoked = cdp
    au_b = authenticator([lab["r1"]], [cred(lab["b1"], lab["sub"])], crl_level=level,
                         revocation=CrlChecker(timeout_s=2.0))
    ev_a, ev_b, _, _ = negotiate(clock, authenticator([lab["r1"]], [cred(revoked)]), au_b)
    if level == 0:
        ok(ev_a, ev_b)
        return
    expect_failure(ev_a, ev_b, refuser="b", notify=NotifyType.INVALID_CERTIFICATE,
                   text=f"was revoked by CN=Root One, O=Lab on {pki.BEFORE:%Y-%m-%d}", failure="revoked")


@pytest.mark.parametrize("level", [1, 2])
def test_unreachable_cdp_at_crl_levels(clock, lab, level):
    url = f"http://127.0.0.1:{pki.closed_port()}/gone.crl"
    host_a = lab["r1"].issue("CN=hostA, O=Lab", key_slot=10, cdp=(url,))
    au_b = authenticator([lab["r1"]], [cred(lab["b1"], lab["sub"])], crl_level=level,
                         revocation=CrlChecker(timeout_s=0.5))
    ev_a, ev_b, logs, _ = negotiate(clock, authenticator([lab["r1"]], [cred(host_a)]), au_b)
    if level == 1:
        ok(ev_a, ev_b)
        assert "accepted at level 1" in logs[1].find("peer certificate")[0]["detail"]
        return
    expect_failure(ev_a, ev_b, refuser="b", notify=NotifyType.INVALID_CERTIFICATE,
                   text=f"could not be determined (CRL checking level 2): CRL distribution point {url} unreachable",
                   failure="revocation-unknown")


def test_multiple_roots_and_the_seed_selection_order(clock, lab):
    """A trusts Root One then Root Two and has a certificate from each; B trusts only Root Two.
    B's CR names Root Two, so A sends its Root Two certificate; B, asked for both, answers with
    the certificate of A's first CA among its own (Root One, through the Issuing CA)."""
    au_a = authenticator([lab["r1"], lab["r2"]], [cred(lab["a1"]), cred(lab["a2"])])
    au_b = authenticator([lab["r2"], lab["r1"]], [cred(lab["b2"]), cred(lab["b1"], lab["sub"])])
    ev_a, ev_b, logs, _ = negotiate(clock, au_a, au_b)
    mm_a, mm_b = ok(ev_a, ev_b)
    # B's rule order (Root Two first) decides among the roots A requested
    assert mm_a.peer_id.value == lab["b2"].cert.subject.public_bytes()
    # A was asked for Root Two then Root One: A's own rule order puts Root One first
    assert mm_b.peer_id.value == lab["a1"].cert.subject.public_bytes()
    assert logs[1].find("certificate requests")[0]["requested"] == "CN=Root One, O=Lab; CN=Root Two, O=Lab"

    au_b_only_two = authenticator([lab["r2"]], [cred(lab["b2"])])
    ev_a, ev_b, logs, _ = negotiate(clock, au_a, au_b_only_two)
    mm_a, mm_b = ok(ev_a, ev_b)
    assert mm_b.peer_id.value == lab["a2"].cert.subject.public_bytes()
    assert "requested by the peer" in logs[0].find("certificate chosen")[0]["detail"]


def test_no_common_root_sends_our_first_ca_and_fails(clock, lab):
    """The seed: a request naming none of our CAs still gets our first CA's certificate, and the
    negotiation then fails because the two computers have no common root."""
    ev_a, ev_b, logs, _ = negotiate(clock, authenticator([lab["r1"]], [cred(lab["a1"])]),
                                    authenticator([lab["r2"]], [cred(lab["b2"])]))
    expect_failure(ev_a, ev_b, refuser="b", notify=NotifyType.INVALID_CERT_AUTHORITY,
                   text="trusted: CN=Root Two, O=Lab", failure="untrusted-root")
    assert "the peer requested none of our CAs" in logs[0].find("certificate chosen")[0]["detail"]


def test_cr_payloads_on_the_wire_name_our_roots(clock, lab):
    from ikeproto.message import parse_message

    au = authenticator([lab["r2"], lab["r1"]], [cred(lab["a1"])])
    _, _, _, wire = negotiate(clock, au, authenticator([lab["r1"]], [cred(lab["b1"], lab["sub"])]))
    msg3 = parse_message(wire[2].data)
    crs = [p for p in msg3.payloads if isinstance(p, CrPayload)]
    assert [dn_text(c.authority) for c in crs] == ["CN=Root Two, O=Lab", "CN=Root One, O=Lab"]
