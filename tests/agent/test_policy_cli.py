"""``policyagent policy ...`` in-process (capsys), plus one real ``python -m policyagent`` run."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from policyagent import builtin
from policyagent.cli import main
from policyagent.matcher import Direction, Matcher, Packet, Verdict
from policyagent.model import ActionKind, AuthKind
from policyagent.store import PolicyStore, dumps_policy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path, capsys):
    """Run ``policyagent policy ARGS --store tmp``; return (status, stdout, stderr)."""

    def go(*args: str) -> tuple[int, str, str]:
        status = main(["policy", *args, "--store", str(tmp_path / "store")])
        out, err = capsys.readouterr()
        return status, out, err

    go.store = PolicyStore(tmp_path / "store")  # type: ignore[attr-defined]
    return go


# The seed's custom policy, one command line per step (docs/policies.md shows the same lines).
PARTNER_STEPS = [
    ("create", "Partner", "--no-default-response"),
    ("add-rule", "Partner", "-f", "0+192.0.2.2", "--filter-list", "Partner Filter", "-n", "MEDIUM", "--filter-action", "Partner Filter Action", "-a", "PRESHARE:ABC123"),
    ("assign", "Partner"),
]


def test_the_partner_policy_in_one_command_line_per_step(run):
    for step in PARTNER_STEPS:
        status, out, err = run(*step)
        assert status == 0, err
    store = run.store
    assert store.assigned_name() == "Partner"
    p = store.get("Partner")
    assert p.default_response_rule is None  # "Clear the Activate the default response rule check box"
    (rule,) = p.rules
    assert rule.filter_list == "Partner Filter" and rule.filter_action == "Partner Filter Action" and rule.tunnel_endpoint is None
    assert [a.kind for a in rule.authentication] == [AuthKind.PRESHARED_KEY] and rule.authentication[0].key == "ABC123"
    (f,) = p.filter_list_named("Partner Filter").filters
    assert str(f.source) == "me" and str(f.destination) == "192.0.2.2" and f.is_mirrored and f.protocol is None
    action = p.filter_action_named("Partner Filter Action")
    assert action.kind is ActionKind.NEGOTIATE and action.security_methods == (builtin.MEDIUM,)
    assert not action.falls_back_to_clear and not action.accepts_unsecured  # "Do not communicate with computers that do not support IPSec"
    assert stat.S_IMODE(store.find("Partner").stat().st_mode) == 0o600
    # And it does what the seed says: a ping to the partner negotiates, with the pre-shared key.
    d = Matcher(p, ["192.0.2.1"]).lookup(Packet(*map(__import__("ipaddress").ip_address, ("192.0.2.1", "192.0.2.2")), 1), Direction.OUTBOUND)
    assert d.verdict is Verdict.NEGOTIATE and d.authentication == rule.authentication


def test_the_documented_partner_file_imports_to_the_same_policy(run, tmp_path):
    for step in PARTNER_STEPS[:2]:
        run(*step)
    doc = (ROOT / "docs" / "policies.md").read_text()
    toml = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "partner.toml"
    path.write_text(toml)
    os.chmod(path, 0o600)
    status, out, err = run("import", str(path), "--name", "Partner copy")
    assert status == 0, err
    from dataclasses import replace

    assert run.store.get("Partner copy") == replace(run.store.get("Partner"), name="Partner copy")
    for step in PARTNER_STEPS:
        assert " ".join(step[1:]).replace('"', "") in doc.replace('"', "") or step[0] == "assign"


def test_list_and_show(run):
    run(*PARTNER_STEPS[0])
    run(*PARTNER_STEPS[1])
    status, out, _ = run("list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ASSIGNED", "KIND", "RULES", "NAME"]
    assert any(line.endswith("Secure Server (Require Security)") and "built-in" in line for line in lines)
    assert any(line.split()[:3] == ["no", "stored", "1"] and line.endswith("Partner") for line in lines)
    status, out, _ = run("show", "Partner")
    assert status == 0
    assert "me <-> 192.0.2.2" in out and "AH[SHA1]" in out and "Default response rule: off" in out and "pre-shared key" in out
    assert "ABC123" not in out
    assert "ABC123" in run("show", "Partner", "--show-keys")[1]
    status, out, _ = run("show", "Partner", "--json")
    data = json.loads(out)
    assert data["name"] == "Partner" and data["rules"][0]["authentication"] == [{"method": "psk", "key": "<hidden>"}]
    assert data["builtin"] is False and data["assigned"] is False
    status, out, _ = run("show", "server", "--json")
    assert json.loads(out)["builtin"] is True


def test_show_of_a_builtin_lists_its_rules(run):
    status, out, _ = run("show", "Server (Request Security)")
    assert status == 0 and "[built-in]" in out
    assert "filter action: Permit: permit" in out and "Request Security (Optional): negotiate security; accept unsecured inbound, fall back to clear" in out


def test_create_options_and_copy(run):
    status, _, err = run("create", "Strong", "-1s", "AES256-SHA256-14", "-1k", "60M/5Q", "-1p", "--description", "modern only", "--no-exemptions", "--no-default-response")
    assert status == 0, err
    p = run.store.get("Strong")
    kx = p.key_exchange
    assert [(m.cipher, m.dh_group) for m in kx.methods] == [("aes-cbc-256", 14)]
    assert kx.lifetime_min == 60 and kx.has_master_key_pfs and kx.lifetime_sessions == 1
    assert p.description == "modern only" and not p.has_default_exemptions and p.default_response_rule is None
    assert err == ""  # no weak algorithm offered, no warning
    status, _, err = run("create", "Answering", "-1s", "AES256-SHA256-14")
    assert status == 0 and run.store.get("Answering").default_response_rule is not None
    assert "3 weak-algorithm warning(s)" in err  # the default response rule's DES/MD5 offers
    status, _, err = run("create", "My Server", "--from", "Server")
    assert status == 0 and run.store.get("My Server").rules == builtin.SERVER.rules
    assert "weak-algorithm warning" in err
    assert run("create", "Strong")[0] == 1
    assert run("create", "Client")[0] == 1


def test_add_rule_variants(run):
    run("create", "P", "--no-default-response")
    assert run("add-rule", "P", "--filter-list", "All ICMP Traffic", "--filter-action", "Permit")[0] == 0
    status, _, err = run("add-rule", "P", "-r", "web", "-f", "0+10.0.0.0/8:80:TCP 0+10.0.0.0/8:443:TCP", "-n", "PASS")
    assert status == 0, err
    status, _, err = run("add-rule", "P", "-r", "branch", "-f", "10.1.0.0/16=10.2.0.0/16", "-n", "ESP[AES128,SHA1]:3600S/100000K", "-t", "192.0.2.9", "--soft", "--pfs", "--lan")
    assert status == 0, err
    p = run.store.get("P")
    assert [r.name for r in p.rules] == ["All ICMP Traffic", "web", "branch"]
    assert p.filter_action_named("web Action").kind is ActionKind.PERMIT and len(p.filter_list_named("web").filters) == 2
    branch = p.rule_named("branch")
    assert str(branch.tunnel_endpoint) == "192.0.2.9" and branch.connection_type.value == "lan"
    action = p.filter_action_named("branch Action")
    assert action.falls_back_to_clear and action.has_session_key_pfs
    assert p.rule_named("web").authentication[0].kind is AuthKind.KERBEROS  # the ipsecpol default


@pytest.mark.parametrize(
    "args, message",
    [
        (("add-rule", "Server", "--filter-list", "All IP Traffic", "--filter-action", "Permit"), "built-in"),
        (("add-rule", "P", "-f", "0+192.0.2.2"), "--filter-list"),
        (("add-rule", "P", "--filter-list", "Nope", "-n", "MEDIUM"), "no filter list"),
        (("add-rule", "P", "--filter-list", "All IP Traffic"), "-n NEGOTIATION"),
        (("add-rule", "P", "-r", "x", "-f", "0+192.0.2.2", "-n", "ESP[FOO,SHA1]"), "unknown ESP cipher"),
        (("add-rule", "P", "-r", "x", "-f", "0+192.0.2.2", "-n", "MEDIUM", "-t", "gw.example"), "not an address"),
        (("show", "Nope"), "no policy called"),
        (("delete", "Client"), "built-in"),
        (("assign", "Nope"), "no policy called"),
    ],
)
def test_usage_errors_exit_1_with_a_message(run, args, message):
    run("create", "P")
    status, out, err = run(*args)
    assert status == 1 and message in err and out == ""


def test_a_refused_rule_changes_nothing(run):
    run("create", "P", "--no-default-response")
    before = run.store.find("P").read_bytes()
    status, _, err = run("add-rule", "P", "-r", "one way", "-f", "0=192.0.2.2", "-n", "MEDIUM", "-a", "PRESHARE:ABC123")
    assert status == 1 and "not mirrored" in err and "nothing was changed" in err and "ABC123" not in err
    status, _, err = run("add-rule", "P", "-r", "tcp", "-f", "0+192.0.2.2::TCP", "-n", "HIGH", "-a", "KERBEROS")
    assert status == 0, err
    status, _, err = run("add-rule", "P", "-r", "udp", "-f", "0+192.0.2.2::UDP", "-n", "HIGH", "-a", 'CERT:"CN=SecTestCA3"')
    assert status == 1 and "same pair of hosts" in err  # the seed's TCP-Kerberos / UDP-certificate trap
    assert [r.name for r in run.store.get("P").rules] == ["tcp"]
    assert before != run.store.find("P").read_bytes()  # only the accepted rule changed the file


def test_assign_unassign_delete(run):
    assert run("assign", "secure server")[0] == 0
    assert run.store.assigned_name() == "Secure Server (Require Security)"
    status, out, _ = run("list")
    assert any(line.startswith("yes") and line.endswith("Secure Server (Require Security)") for line in out.splitlines())
    run("create", "P")
    run("assign", "P")
    assert run("delete", "P")[0] == 1
    status, out, _ = run("unassign")
    assert status == 0 and "'P'" in out
    assert run("delete", "P")[0] == 0 and run.store.find("P") is None
    assert "no policy was assigned" in run("unassign")[1]


def test_export_import_and_validate(run, tmp_path):
    for step in PARTNER_STEPS[:2]:
        run(*step)
    out_file = tmp_path / "partner.toml"
    assert run("export", "Partner", str(out_file))[0] == 0
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    status, out, _ = run("validate", str(out_file))
    assert status == 0 and "0 errors" in out and "weak-algorithm" not in out.split("\n")[-2]
    bad = tmp_path / "bad.toml"
    bad.write_text(out_file.read_text().replace("mirrored = true", "mirrored = false"))
    status, out, _ = run("validate", str(bad))
    assert status == 1 and f"{bad}:22: rule 'Partner Filter', field filter_lists[0].filters[0].mirrored: error [not-mirrored]" in out
    status, _, err = run("import", str(bad), "--name", "Bad")
    assert status == 1 and run.store.find("Bad") is None
    os.chmod(out_file, 0o644)
    status, _, err = run("import", str(out_file), "--name", "Partner 2")
    assert status == 0 and "chmod 600" in err
    status, out, _ = run("validate", "Client")
    assert status == 0 and "weak-algorithm" in out and out.strip().endswith("OK")
    status, out, _ = run("validate", "Partner 2")
    assert status == 0


def test_a_stored_file_edited_by_hand_is_checked_on_load(run):
    run(*PARTNER_STEPS[0])
    path = run.store.find("Partner")
    path.write_text(dumps_policy(run.store.get("Partner")).replace("polling_interval_min = 180", "polling_interval_min = 0"))
    status, _, err = run("assign", "Partner")
    assert status == 1 and f"{path}:4:" in err and run.store.assigned_name() is None


def test_python_dash_m_policyagent_policy_list(tmp_path):
    env = dict(os.environ, POLICYAGENT_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "policyagent", "policy", "list"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Client (Respond Only)" in proc.stdout and "Server (Request Security)" in proc.stdout
