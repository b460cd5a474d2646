"""Policy files and the store: round trips, file modes, refusal without change, assignment."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from policyagent import builtin
from policyagent.errors import PolicyFileError, UsageError, ValidationError
from policyagent.model import Address, AuthMethod, Filter, FilterAction, FilterList, Policy, Rule
from policyagent.store import (
    ENV_HOME,
    PolicyStore,
    default_store_dir,
    dumps_policy,
    field_lines,
    loads_policy,
    read_policy_file,
    write_policy_file,
)
from tests.agent.policy_strategies import policies

PARTNER = Policy(
    name="Partner",
    key_exchange=builtin.DEFAULT_KEY_EXCHANGE,
    filter_lists=(FilterList(name="Partner Filter", filters=(Filter(source=Address.me(), destination=Address.host("192.0.2.2")),)),),
    filter_actions=(FilterAction(name="Partner Filter Action", kind=builtin.ActionKind.NEGOTIATE, security_methods=(builtin.MEDIUM,)),),
    rules=(Rule(name="Partner Filter", filter_list="Partner Filter", filter_action="Partner Filter Action", authentication=(AuthMethod.preshared_key("ABC123"),)),),
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@given(policies())
def test_load_of_save_is_identity(policy):
    """loads(dumps(p)) == p for any policy, including unicode names, keys and every option."""
    assert loads_policy(dumps_policy(policy)) == policy


@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy=policies())
def test_file_round_trip_through_the_disk(tmp_path, policy):
    """What write_policy_file puts on disk reads back equal (valid policies only)."""
    from policyagent.validate import check_policy

    if any(i.is_error for i in check_policy(policy)):
        return
    path = tmp_path / "p.toml"
    write_policy_file(policy, path)
    assert read_policy_file(path)[0] == policy


@pytest.mark.parametrize("policy", list(builtin.BUILTIN_POLICIES.values()) + [PARTNER], ids=lambda p: p.name)
def test_builtin_and_partner_round_trip(policy):
    text = dumps_policy(policy)
    assert loads_policy(text) == policy
    assert dumps_policy(loads_policy(text)) == text  # stable field order


def test_a_minimal_hand_written_file_takes_the_defaults():
    text = """
name = "Partner"
[[filter_lists]]
name = "Partner Filter"
filters = [{ source = "me", destination = "192.0.2.2" }]
[[filter_actions]]
name = "Partner Filter Action"
action = "negotiate"
methods = [{ ah_integrity = "hmac-sha1-96", lifetime_s = 3600, lifetime_kb = 100000 }]
[[rules]]
name = "Partner Filter"
filter_list = "Partner Filter"
filter_action = "Partner Filter Action"
authentication = [{ method = "psk", key = "ABC123" }]
"""
    assert loads_policy(text) == PARTNER


@pytest.mark.parametrize(
    "edit, line, field, rule",
    [
        (('key = "ABC123"', 'key = "ABC123", colour = "red"'), 40, "rules[0].authentication[0].colour", "Partner Filter"),
        (('destination = "192.0.2.2"', 'destination = "192.0.2.256"'), 22, "filter_lists[0].filters[0].destination", None),
        (('action = "negotiate"', 'action = "encrypt"'), 27, "filter_actions[0].action", None),
        (("dh_group = 14 },\n    { cipher = \"aes-cbc-128\"", "dh_group = \"14\" },\n    { cipher = \"aes-cbc-128\""), 11, "key_exchange.methods[0].dh_group", None),
        (('filter_action = "Partner Filter Action"\n', ""), 35, "rules[0].filter_action", "Partner Filter"),
    ],
)
def test_file_errors_name_path_line_field_and_rule(tmp_path, edit, line, field, rule):
    text = dumps_policy(PARTNER)
    assert edit[0] in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(PolicyFileError) as exc:
        read_policy_file(path)
    err = exc.value
    assert (err.path, err.line, err.field, err.rule) == (str(path), line, field, rule)
    assert str(err).startswith(f"{path}:{line}: ")


def test_toml_syntax_errors_carry_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n\nrules = = 1\n')
    with pytest.raises(PolicyFileError) as exc:
        read_policy_file(path)
    assert exc.value.line == 3 and "not valid TOML" in str(exc.value)
    path.write_text('name = "x"\n\nrules = [\n')
    with pytest.raises(PolicyFileError) as exc:
        read_policy_file(path)
    assert exc.value.line == 3


def test_validation_errors_in_a_file_point_at_the_line(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(dumps_policy(PARTNER).replace("mirrored = true", "mirrored = false"))
    with pytest.raises(ValidationError) as exc:
        read_policy_file(path)
    assert exc.value.errors[0].code == "not-mirrored" and exc.value.line == 22 and exc.value.rule == "Partner Filter"


def test_field_lines_for_array_of_table_headers():
    text = "[[rules]]\nname = \"a\"\n[[rules]]\nname = \"b\"\n[[rules.authentication]]\nmethod = \"kerberos\"\n"
    lines = field_lines(text)
    assert lines["rules[1].name"] == 4 and lines["rules[1].authentication[0].method"] == 6


def test_keys_are_written_owner_only_and_a_readable_key_file_warns(tmp_path):
    path = tmp_path / "partner.toml"
    write_policy_file(PARTNER, path)
    assert mode(path) == 0o600
    assert not [w for w in read_policy_file(path)[1] if w.code == "key-file-readable"]
    os.chmod(path, 0o644)
    (warning,) = [w for w in read_policy_file(path)[1] if w.code == "key-file-readable"]
    assert "0644" in warning.message and "ABC123" not in str(warning)
    other = tmp_path / "server.toml"
    write_policy_file(builtin.SERVER, other)
    assert mode(other) == 0o644  # no key: ordinary permissions


def test_a_refused_policy_leaves_the_store_unchanged(tmp_path):
    store = PolicyStore(tmp_path)
    store.save(PARTNER)
    before = snapshot(tmp_path)
    broken = replace(PARTNER, rules=(replace(PARTNER.rules[0], authentication=(AuthMethod.preshared_key(""),)),))
    with pytest.raises(ValidationError):
        store.save(broken)
    bad_file = tmp_path.parent / f"{tmp_path.name}-import.toml"
    bad_file.write_text(dumps_policy(broken).replace('name = "Partner"', 'name = "Other"', 1))
    with pytest.raises(ValidationError):
        store.import_file(bad_file)
    assert snapshot(tmp_path) == before  # no new file, no temporary left behind, old one intact
    assert store.get("Partner") == PARTNER


def test_store_save_load_delete(tmp_path):
    store = PolicyStore(tmp_path / "home")
    assert store.names() == list(builtin.BUILTIN_POLICIES)
    store.save(PARTNER)
    assert store.names()[-1] == "Partner" and store.get("Partner") == PARTNER
    assert mode(store.root) == 0o700 and mode(store.find("Partner")) == 0o600
    with pytest.raises(UsageError):
        store.save(PARTNER, replace_existing=False)
    store.delete("Partner")
    assert store.find("Partner") is None
    with pytest.raises(UsageError):
        store.get("Partner")


def test_builtins_are_always_there_and_read_only(tmp_path):
    store = PolicyStore(tmp_path)
    assert store.get("Secure Server") == builtin.SECURE_SERVER
    with pytest.raises(UsageError):
        store.save(replace(builtin.SERVER, description="mine"))
    with pytest.raises(UsageError):
        store.delete("Client (Respond Only)")


def test_assign_and_unassign(tmp_path):
    store = PolicyStore(tmp_path)
    assert store.assigned_name() is None and store.assigned_policy() is None
    policy, warnings = store.assign("client")
    assert policy is builtin.CLIENT and store.assigned_name() == "Client (Respond Only)"
    assert {w.code for w in warnings} == {"weak-algorithm"}
    store.save(PARTNER)
    store.assign("Partner")
    assert store.assigned_policy() == PARTNER  # at most one policy is assigned
    with pytest.raises(UsageError):
        store.delete("Partner")  # unassign first
    assert store.unassign() == "Partner" and store.assigned_name() is None
    assert store.unassign() is None
    with pytest.raises(UsageError):
        store.assign("Nope")


def test_import_and_export(tmp_path):
    a, b = PolicyStore(tmp_path / "a"), PolicyStore(tmp_path / "b")
    a.save(PARTNER)
    out = a.export("Partner", tmp_path / "partner.toml")
    assert mode(out) == 0o600
    policy, _ = b.import_file(out)
    assert b.get("Partner") == policy == PARTNER
    with pytest.raises(UsageError):
        b.import_file(out)  # exists
    b.import_file(out, replace_existing=True)
    b.import_file(out, name="Partner 2")
    assert b.get("Partner 2") == replace(PARTNER, name="Partner 2")
    a.export("Server", tmp_path / "server.toml")
    with pytest.raises(UsageError):
        b.import_file(tmp_path / "server.toml")  # a built-in name
    assert b.import_file(tmp_path / "server.toml", name="My Server")[0].rules == builtin.SERVER.rules


def test_store_directory_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "pa"))
    assert default_store_dir() == tmp_path / "pa" and PolicyStore().root == tmp_path / "pa"
    monkeypatch.delenv(ENV_HOME)
    assert default_store_dir() == Path.home() / ".local" / "share" / "policyagent"


def test_unreadable_files_are_skipped_in_listings(tmp_path):
    store = PolicyStore(tmp_path)
    store.save(PARTNER)
    (store.policies_dir / "junk.toml").write_text("this is not toml [")
    assert store.names()[-1] == "Partner"
