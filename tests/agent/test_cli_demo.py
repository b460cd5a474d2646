"""`policyagent demo` replays the seed's walkthrough end to end: negotiation then replies in
Parts 1 and 2, the monitor and event 541, and the three failure cases of Part 3."""

from __future__ import annotations

from policyagent.cli import main


def test_demo_runs_the_walkthrough(capsys):
    assert main(["demo", "--interval", "0.1"]) == 0
    out = capsys.readouterr().out
    part1, rest = out.split("Part 2.", 1)
    part2, part3 = rest.split("Part 3.", 1)
    assert "this demo substitutes a pre-shared\nkey for Kerberos" in out
    for part in (part1, part2):
        assert "Negotiating IP Security." in part
        assert part.count("(secured by IPsec)") >= 6
        assert "Data Protection Mode (Quick Mode)" in part and "InboundSpi" in part
        assert "Quick Modes                 1" in part
    assert "Client (Respond Only)" in part1 and "Secure Server (Require Security)" in part1
    a, b = part3.split("b) A wrong", 1)
    b, c = b.split("c) Server", 1)
    assert a.count("(in clear)") == 2 and "0 security associations" in a
    assert "IKE security association negotiation failed." in b and "Destination blocked by IP Security" in b
    assert b.rstrip().endswith("(secured by IPsec)")
    assert "soft SA" in c and "<none>" in c and "Soft Associations           1" in c
    assert "took" in out
