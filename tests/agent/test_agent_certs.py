"""Certificates in the agent: a rule's certificate methods become rsa-sig main mode over the
machine store (``AgentConfig.cert_store``, read once per policy assignment, validated against
the wall clock by default), and the failures are audited: the peer's certificate refused (544
with the ``pki.Failure`` code and the reason, and the one-minute block on the refused side), our
own missing certificate (547, a configuration problem on this computer)."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import replace

import pytest

from policyagent import builtin
from policyagent.agent import SendResult
from policyagent.model import AuthMethod
from tests import pki
from tests.agent.helpers import Network, drain, make_agent, notices, partner_policy

ONE, TWO = "127.0.0.1", "127.0.0.2"
LAB_ROOT, OTHER_ROOT = "CN=Lab Root CA, O=Test", "CN=Other Root, O=Elsewhere"
NOW = dt.datetime.now(dt.timezone.utc)
VALID = dict(not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=365))


@pytest.fixture(scope="module")
def lab():
    lab_root = pki.root(LAB_ROOT, key_slot=1)
    other = pki.root(OTHER_ROOT, key_slot=2)
    sub = lab_root.intermediate("CN=Issuing CA, O=Test", key_slot=3, **VALID)
    return {"root": lab_root, "other": other, "sub": sub,
            "one": lab_root.issue("CN=HQ-RES-WRK-01, O=Test", key_slot=10, **VALID),
            "two": sub.issue("CN=HQ-RES-WRK-02, O=Test", key_slot=11, **VALID),
            "stranger": other.issue("CN=HQ-RES-WRK-02, O=Test", key_slot=12, **VALID)}


def put(path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    os.chmod(path, mode)


def machine_store(path, *, roots, issued, chain=()):
    """A store directory: trusted roots, our certificate (with its chain in the same file) and key."""
    path.mkdir(mode=0o700)
    put(path / "root" / "roots.pem", b"".join(r.pem() for r in roots), 0o644)
    put(path / "my" / "host.pem", issued.pem() + b"".join(c.pem() for c in chain), 0o644)
    put(path / "my" / "host.key", issued.key_pem(), 0o600)
    return path


def cert_policy(peer: str, *roots: str):
    """The seed's Partner policy (ESP, no default response rule) authenticated by certificates."""
    policy = partner_policy(peer, method=builtin.HIGH)
    rules = tuple(replace(r, authentication=tuple(AuthMethod.certificate(n) for n in roots))
                  for r in policy.rules)
    return replace(policy, rules=rules)


def agents(clock, tmp_path, lab, *, two_issued="two", two_roots=(LAB_ROOT,), two_trusts=("root",)):
    net = Network(clock)
    s1 = machine_store(tmp_path / "one", roots=[lab["root"]], issued=lab["one"])
    chain = (lab["sub"],) if two_issued == "two" else ()
    s2 = machine_store(tmp_path / "two", roots=[lab[r] for r in two_trusts], issued=lab[two_issued], chain=chain)
    one = net.add(make_agent(ONE, cert_policy(TWO, LAB_ROOT), clock, cert_store=s1))
    two = net.add(make_agent(TWO, cert_policy(ONE, *two_roots), clock, cert_store=s2))
    return net, one, two


def test_certificate_rule_negotiates_and_carries_traffic(clock, tmp_path, lab):
    """Both hosts trust the lab root; 02's certificate comes from an intermediate sent along.
    Main mode is rsa-sig (541 "Certificate based Identity" with the peer's DN), and UDP flows
    protected both ways."""
    net, one, two = agents(clock, tmp_path, lab)
    assert two.send_udp(TWO, 5000, ONE, 7, b"hello", clock.now) is SendResult.NEGOTIATING
    net.run()
    assert [(d.data, d.is_protected) for d in drain(one)] == [(b"hello", True)]
    assert one.send_udp(ONE, 7, TWO, 5000, b"reply", clock.now) is SendResult.PROTECTED
    net.run()
    assert [(d.data, d.is_protected) for d in drain(two)] == [(b"reply", True)]
    [mm_one] = [e for e in one.audit.query(event_id=541) if e.mode.startswith("Key Exchange")]
    [mm_two] = [e for e in two.audit.query(event_id=541) if e.mode.startswith("Key Exchange")]
    assert mm_one.parameters.authentication == mm_two.parameters.authentication == "Certificate"
    assert mm_one.peer_identity.startswith("Certificate based Identity:") and "HQ-RES-WRK-02" in mm_one.peer_identity
    assert "HQ-RES-WRK-01" in mm_two.peer_identity
    assert not one.audit.query(event_id=[544, 547]) and not two.audit.query(event_id=[544, 547])


def test_untrusted_root_is_a_544_with_the_reason_and_blocks_the_flow(clock, tmp_path, lab):
    """02's certificate chains to a root 01 does not trust: 01 refuses it (544 untrusted-root with
    the chain in the reason, failure point Me); 02 is refused (547, failure point Peer) and its
    flow is blocked for one minute."""
    net, one, two = agents(clock, tmp_path, lab, two_issued="stranger", two_roots=(OTHER_ROOT,),
                           two_trusts=("other",))
    start = clock.now
    two.send_udp(TWO, 5000, ONE, 7, b"hello", clock.now)
    net.advance(35, step=0.5)  # 01 reports when it gives the refused main mode up
    assert drain(one) == [] and len(one.sad) == len(two.sad) == 0
    [refused] = one.audit.query(event_id=544)
    assert (refused.failure, refused.failure_point, refused.peer_address) == ("untrusted-root", "Me", TWO)
    assert "Other Root" in refused.reason
    assert "Failure Code: untrusted-root" in refused.text()
    [failed] = two.audit.query(event_id=547)
    assert failed.failure_point == "Peer" and not two.audit.query(event_id=544)
    notices(two)
    assert two.send_udp(TWO, 5000, ONE, 7, b"again", clock.now) is SendResult.BLOCKED
    assert [n.kind for n in notices(two)] == ["blocked"]
    net.advance(failed.at + 59 - clock.now)
    assert two.send_udp(TWO, 5000, ONE, 7, b"still", clock.now) is SendResult.BLOCKED
    net.advance(2)
    assert two.send_udp(TWO, 5000, ONE, 7, b"later", clock.now) is SendResult.NEGOTIATING
    assert clock.now - start < 120


def test_no_certificate_of_ours_is_a_547_not_a_trust_failure(clock, tmp_path, lab):
    """02's rule names the lab root but its only certificate comes from another root: 02 has
    nothing to send, which is its own configuration problem (547 with the reason, no 544)."""
    net, one, two = agents(clock, tmp_path, lab, two_issued="stranger", two_trusts=("root",))
    two.send_udp(TWO, 5000, ONE, 7, b"hello", clock.now)
    net.advance(30, step=0.5)
    assert len(two.sad) == 0 and not two.audit.query(event_id=544)
    [mine] = two.audit.query(event_id=547)
    assert mine.failure_point == "Me" and mine.reason.startswith("no machine certificate")
    assert "CN=Lab Root CA, O=Test" in mine.reason
    assert not one.audit.query(event_id=544)  # nothing was sent for 01 to distrust


def test_store_is_read_once_per_policy_assignment(clock, tmp_path, lab):
    """The store is read when a certificate policy is assigned; a store whose roots do not include
    the rule's CA leaves the rule without a usable method (the packet is blocked, nothing sent)."""
    net, one, two = agents(clock, tmp_path, lab)
    first = two.ike_config.cert_store
    assert first is not None and first.path == tmp_path / "two"
    two.send_udp(TWO, 5000, ONE, 7, b"x", clock.now)
    net.run()
    assert two.ike_config.cert_store is first  # not reread per negotiation
    two.assign_policy(cert_policy(ONE, "CN=Nobody Root"), clock.now)
    assert two.ike_config.cert_store is not first
    assert two.send_udp(TWO, 5001, ONE, 7, b"y", clock.now) is SendResult.BLOCKED
    assert any("CN=Nobody Root" in p for p in two.ike_config.certificate_problems.values())
