"""Kerberos in the agent against a real throwaway MIT KDC (realm RESKIT.COM, ``tests.kdc``).

The built-in policies unchanged (Kerberos V5 is their only method): Secure Server on
HQ-RES-WRK-01, Client on HQ-RES-WRK-02, each with its ``host/<fqdn>@RESKIT.COM`` keytab in
``AgentConfig``; main mode authenticates with GSS-API (auth 65001) and the pair carries traffic.
Failures become audit 545 with the engine's reason and advice, on the side that saw them (both
sides when the responder refuses), and the flow is blocked for one minute. ``policyagent demo
--kerberos`` runs Part 1 with real Kerberos. Gated like ``tests.kdc``: fails in CI, skips elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ikeproto.krb5 import KerberosCredentials
from policyagent import builtin
from policyagent.agent import SendResult
from policyagent.kdc import ThrowawayKdc
from tests.agent.helpers import drain, make_agent, Network, notices
from tests.kdc import H1, H2, kdc, kdc_factory, need_gssapi, need_kdc  # noqa: F401 (fixtures)

ONE, TWO = "127.0.0.1", "127.0.0.2"
ROOT = Path(__file__).resolve().parents[2]


def creds(server: ThrowawayKdc, host: str, *, keytab_of: str | None = None) -> KerberosCredentials:
    return KerberosCredentials(keytab=server.keytab(keytab_of or host), principal=server.principal(host))


def seed_pair(clock, server: ThrowawayKdc, *, one: KerberosCredentials | None = None,
              two: KerberosCredentials | None = None, **config):
    """Secure Server on 01, Client on 02, with their machine credentials (no stand-in key)."""
    need_gssapi()
    net = Network(clock)
    a = net.add(make_agent(ONE, builtin.SECURE_SERVER, clock, kerberos=one or creds(server, H1), **config))
    b = net.add(make_agent(TWO, builtin.CLIENT, clock, kerberos=two or creds(server, H2), **config))
    return net, a, b


def main_mode_541(agent):
    return [e for e in agent.audit.query(event_id=541) if e.mode.startswith("Key Exchange")]


def test_built_in_policies_negotiate_with_kerberos_and_carry_traffic(kdc, clock):
    """Part 1 with real Kerberos: the client's echo goes in clear, the server secures its reply
    (main mode auth Kerberos, each side's 541 naming the other's principal), then echoes are
    protected both ways."""
    net, one, two = seed_pair(clock, kdc)
    assert two.send_echo(ONE, 1, 1, b"x" * 32, clock.now) is SendResult.CLEAR
    net.run()
    [late] = drain(two)
    assert late.is_protected and late.dport == 1
    assert two.send_echo(ONE, 1, 2, b"x" * 32, clock.now) is SendResult.PROTECTED
    net.run()
    [reply] = drain(two)
    assert reply.is_protected and reply.dport == 2
    [mm_one], [mm_two] = main_mode_541(one), main_mode_541(two)
    assert mm_one.peer_identity == f"Kerberos based Identity: {kdc.principal(H2)}"
    assert mm_two.peer_identity == f"Kerberos based Identity: {kdc.principal(H1)}"
    assert mm_one.parameters.authentication == mm_two.parameters.authentication == "Kerberos"
    qm = [e for e in two.audit.query(event_id=541) if e.mode.startswith("Data")]
    assert qm and qm[0].peer_identity == f"Kerberos based Identity: {kdc.principal(H1)}"
    assert "Kerberos based Identity: host/hq-res-wrk-01.reskit.com@RESKIT.COM" in qm[0].text()
    assert not one.audit.query(event_id=[545, 547]) and not two.audit.query(event_id=[545, 547])


def test_configured_peer_principals_are_required(kdc, clock):
    """``kerberos_peers`` names the principal a peer must be: the right one negotiates; a wrong one
    fails with wrong-peer (545 on the side that expected it)."""
    good = {ONE: kdc.principal(H1), TWO: kdc.principal(H2)}
    net, one, two = seed_pair(clock, kdc, kerberos_peers=good)
    two.send_echo(ONE, 1, 1, b"x", clock.now)
    net.run()
    assert [d.is_protected for d in drain(two)] == [True]

    kdc.add_hosts(["hq-res-srv-03.reskit.com"])
    wrong = {TWO: kdc.principal("hq-res-srv-03.reskit.com")}
    net, one, two = seed_pair(clock, kdc, kerberos_peers=wrong)
    two.send_echo(ONE, 1, 1, b"x", clock.now)
    net.advance(30, step=0.5)
    assert drain(two) == [] and len(one.sad) == len(two.sad) == 0
    # 01 asks a ticket for the principal it expects; 02 cannot accept a ticket for another name.
    [failed] = one.audit.query(event_id=545)
    assert (failed.failure, failed.failure_point) == ("refused-by-peer", "Peer")
    assert failed.peer_identity == kdc.principal("hq-res-srv-03.reskit.com")
    [refused] = two.audit.query(event_id=545)
    assert refused.failure_point == "Me" and refused.reason.startswith("Kerberos: ")


def test_host_unknown_to_the_kdc_is_a_545_and_blocks_for_one_minute(kdc, clock):
    """HQ-RES-WRK-02's principal is deleted from the KDC (its keytab stays): the server cannot get
    a ticket for it, audits 545 unknown-principal with the kadmin advice and a trace entry, the
    reply is dropped and its flow blocked for one minute; then the next packet negotiates again."""
    kdc.remove_host(H2)
    trace: list[tuple[str, dict]] = []

    class Recorder:
        def info(self, event, **kw):
            trace.append((event, kw))

        warning = debug = error = info

    net, one, two = seed_pair(clock, kdc)
    one.log = Recorder()
    two.send_echo(ONE, 1, 1, b"x" * 32, clock.now)
    net.run()
    [failed] = one.audit.query(event_id=545)
    assert failed.failure == "unknown-principal" and failed.failure_point == "Me"
    assert kdc.principal(H2) in failed.reason and "addprinc" in failed.reason
    assert failed.peer_address == TWO and not one.audit.query(event_id=547)
    text = failed.text()
    assert "Failure Code: unknown-principal" in text and "Failure Reason: Kerberos:" in text
    assert ("kerberos_failed", {"peer": TWO, "failure": "unknown-principal", "failure_point": "Me",
                                "reason": failed.reason}) in trace
    assert one.stats.dropped.get("negotiation-failed") == 1 and drain(two) == []
    notices(one)
    assert one.send_udp(ONE, 7, TWO, 5000, b"late", clock.now) is SendResult.BLOCKED
    assert [n.kind for n in notices(one)] == ["blocked"]
    net.advance(59)
    assert one.send_udp(ONE, 7, TWO, 5000, b"still", clock.now) is SendResult.BLOCKED
    net.advance(2)
    assert one.send_udp(ONE, 7, TWO, 5000, b"again", clock.now) is SendResult.NEGOTIATING
    net.run()
    assert len(one.audit.query(event_id=545)) == 2


def test_responder_without_its_key_audits_545_on_both_sides(kdc, clock):
    """HQ-RES-WRK-02 has 01's keytab instead of its own: as responder it cannot accept the ticket
    (545 no-keytab with the ktadd advice, failure point Me); the server is refused (545
    refused-by-peer, failure point Peer) and blocks the flow; no SA anywhere."""
    net, one, two = seed_pair(clock, kdc, two=creds(kdc, H2, keytab_of=H1))
    two.send_echo(ONE, 1, 1, b"x" * 32, clock.now)
    net.advance(30, step=0.5)
    [mine] = two.audit.query(event_id=545)
    assert (mine.failure, mine.failure_point) == ("no-keytab", "Me") and "ktadd" in mine.reason
    [theirs] = one.audit.query(event_id=545)
    assert (theirs.failure, theirs.failure_point) == ("refused-by-peer", "Peer")
    assert "event 545" in theirs.reason
    assert len(one.sad) == len(two.sad) == 0 and two.stats.acquires == 0
    assert one.send_udp(ONE, 7, TWO, 5000, b"x", clock.now) is SendResult.BLOCKED


def test_keytab_and_principal_in_the_config(kdc, clock):
    """``kerberos_keytab`` + ``kerberos_principal`` in ``AgentConfig`` make the credentials."""
    need_gssapi()
    net = Network(clock)
    one = net.add(make_agent(ONE, builtin.SECURE_SERVER, clock, kerberos_keytab=str(kdc.keytab(H1)),
                             kerberos_principal=kdc.principal(H1)))
    two = net.add(make_agent(TWO, builtin.CLIENT, clock, kerberos_keytab=str(kdc.keytab(H2)),
                             kerberos_principal=kdc.principal(H2)))
    assert one.config.has_kerberos and one.ike_config.kerberos.principal == kdc.principal(H1)
    two.send_echo(ONE, 1, 1, b"x", clock.now)
    net.run()
    assert [d.is_protected for d in drain(two)] == [True]


def test_demo_with_kerberos_runs_part_1_with_a_throwaway_kdc():
    """``policyagent demo --kerberos`` starts its own KDC and shows the Kerberos identity in 541."""
    need_kdc()
    need_gssapi()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KRB5")}
    proc = subprocess.run([sys.executable, "-m", "policyagent", "demo", "--kerberos", "--interval", "0.1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    part1 = proc.stdout.split("Part 2.", 1)[0]
    assert "throwaway KDC for realm RESKIT.COM" in part1
    assert "Negotiating IP Security." in part1 and part1.count("(secured by IPsec)") >= 6
    assert "Kerberos based Identity: host/hq-res-wrk-01.reskit.com@RESKIT.COM" in part1
    assert "pre-shared" not in part1.split("Part 1.", 1)[1]
    assert "Part 3." in proc.stdout and "took" in proc.stdout


@pytest.mark.parametrize("argv, complaint", [
    (["--kerberos-keytab", "/nonexistent.keytab"], "go together"),
    (["--kerberos-keytab", "k", "--kerberos-principal", "HQ-RES-WRK-01"], "host/<fqdn>@REALM"),
    (["--kerberos-peer", "127.0.0.2"], "ADDRESS=host/<fqdn>@REALM"),
])
def test_run_refuses_incomplete_kerberos_settings(tmp_path, capsys, argv, complaint):
    """``policyagent run`` checks its Kerberos options before binding anything (no KDC needed)."""
    from policyagent.cli import main

    assert main(["run", "--store", str(tmp_path), "--ike-port", "15500", "--natt-port", "15501", *argv]) == 1
    assert complaint in capsys.readouterr().err
