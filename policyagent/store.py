"""Policy files (TOML) and the policy store directory.

Owns: the file format (``policy_to_dict``/``policy_from_dict``, ``dumps_policy``/``loads_policy``:
read with ``tomllib``, written with ``tomli-w`` in a stable field order, unknown fields refused),
the line map that lets errors name a line, safe writes (validate first, write a temporary file in
the same directory, fsync, rename: a refused policy leaves the store unchanged), file modes (a
file holding a pre-shared key is created 0600; loading one that group or others can read warns),
and ``PolicyStore``: one directory holding ``policies/*.toml`` and ``assigned.toml`` (the name of
the assigned policy, at most one). Built-in policies are always present and never files.

The store directory is ``$POLICYAGENT_HOME`` if set, else ``~/.local/share/policyagent``.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import tomllib
import urllib.parse
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import tomli_w

from policyagent import builtin
from policyagent.errors import Issue, PolicyFileError, UsageError
from policyagent.model import (
    DEFAULT_MM_LIFETIME_MIN,
    DEFAULT_POLLING_INTERVAL_MIN,
    PROTOCOL_NAMES,
    ActionKind,
    Address,
    AuthKind,
    AuthMethod,
    ConnectionType,
    Filter,
    FilterAction,
    FilterList,
    KeyExchange,
    MainModeMethod,
    Policy,
    Rule,
    SecurityMethod,
    parse_protocol,
)
from policyagent.validate import line_in, validate_policy

ENV_HOME = "POLICYAGENT_HOME"
FORMAT = 1
_HEADER = "# policyagent IPsec policy (Windows 2000 model). Check after editing: policyagent policy validate FILE\n"


def default_store_dir() -> Path:
    """``$POLICYAGENT_HOME``, else ``~/.local/share/policyagent``."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "policyagent"


# --- model -> dict -------------------------------------------------------------------------------


def _put(d: dict, key: str, value: Any) -> None:
    if value is not None:
        d[key] = value


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """The file form of ``policy``: absent values are omitted, field order is fixed."""
    d: dict[str, Any] = {"format": FORMAT, "name": policy.name}
    _put(d, "description", policy.description)
    d["polling_interval_min"] = policy.polling_interval_min
    d["default_exemptions"] = policy.has_default_exemptions
    kx = policy.key_exchange
    k: dict[str, Any] = {"lifetime_min": kx.lifetime_min}
    _put(k, "lifetime_sessions", kx.lifetime_sessions)
    k["master_key_pfs"] = kx.has_master_key_pfs
    k["methods"] = [{"cipher": m.cipher, "hash": m.hash, "dh_group": m.dh_group} for m in kx.methods]
    d["key_exchange"] = k
    d["filter_lists"] = [_list_to_dict(fl) for fl in policy.filter_lists]
    d["filter_actions"] = [_action_to_dict(fa) for fa in policy.filter_actions]
    d["rules"] = [_rule_to_dict(r) for r in policy.rules]
    return d


def _list_to_dict(fl: FilterList) -> dict[str, Any]:
    d: dict[str, Any] = {"name": fl.name}
    _put(d, "description", fl.description)
    filters = []
    for f in fl.filters:
        e: dict[str, Any] = {"source": str(f.source), "destination": str(f.destination)}
        if f.protocol is not None:
            e["protocol"] = PROTOCOL_NAMES.get(f.protocol, f.protocol)
        _put(e, "source_port", f.source_port)
        _put(e, "destination_port", f.destination_port)
        e["mirrored"] = f.is_mirrored
        _put(e, "description", f.description)
        filters.append(e)
    d["filters"] = filters
    return d


def _action_to_dict(fa: FilterAction) -> dict[str, Any]:
    d: dict[str, Any] = {"name": fa.name}
    _put(d, "description", fa.description)
    d["action"] = fa.kind.value
    d["accept_unsecured"] = fa.accepts_unsecured
    d["fall_back_to_clear"] = fa.falls_back_to_clear
    d["session_key_pfs"] = fa.has_session_key_pfs
    methods = []
    for m in fa.security_methods:
        e: dict[str, Any] = {}
        for key in ("ah_integrity", "esp_cipher", "esp_key_bits", "esp_integrity", "lifetime_s", "lifetime_kb"):
            _put(e, key, getattr(m, key))
        methods.append(e)
    d["methods"] = methods
    return d


def _rule_to_dict(r: Rule) -> dict[str, Any]:
    d: dict[str, Any] = {"name": r.name}
    _put(d, "description", r.description)
    _put(d, "filter_list", r.filter_list)
    d["filter_action"] = r.filter_action
    auth = []
    for a in r.authentication:
        e = {"method": a.kind.value}
        _put(e, "root_ca", a.root_ca)
        _put(e, "key", a.key)
        auth.append(e)
    d["authentication"] = auth
    _put(d, "tunnel_endpoint", str(r.tunnel_endpoint) if r.tunnel_endpoint is not None else None)
    d["connection_type"] = r.connection_type.value
    d["active"] = r.is_active
    d["default_response"] = r.is_default_response
    return d


def dumps_policy(policy: Policy) -> str:
    """The TOML text of ``policy`` (no validation)."""
    return _HEADER + tomli_w.dumps(policy_to_dict(policy))


# --- dict -> model -------------------------------------------------------------------------------


class _FieldError(Exception):
    def __init__(self, field: str, message: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.field, self.message, self.rule = field, message, rule


class _Table:
    """One TOML table being read: typed getters that name the field on error, unknown keys refused."""

    def __init__(self, data: Any, where: str, rule: str | None = None) -> None:
        if not isinstance(data, dict):
            raise _FieldError(where, "expected a table", rule)
        self.data, self.where, self.rule, self.used = data, where, rule, set()

    def field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind: type | tuple, default: Any = ..., *, what: str | None = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise _FieldError(self.field(key), "missing", self.rule)
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise _FieldError(self.field(key), f"expected {what or ' or '.join(k.__name__ for k in kinds)}, got {value!r}", self.rule)
        return value

    def items(self, key: str) -> list[_Table]:
        values = self.get(key, list, [])
        return [_Table(v, f"{self.field(key)}[{i}]", self.rule) for i, v in enumerate(values)]

    def convert(self, key: str, fn, value: Any) -> Any:
        try:
            return fn(value)
        except ValueError as exc:
            raise _FieldError(self.field(key), str(exc), self.rule) from None

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise _FieldError(self.field(extra[0]), f"unknown field {extra[0]!r}", self.rule)


def _enum(cls, value: str):
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"{value!r} is not one of {', '.join(e.value for e in cls)}") from None


def policy_from_dict(data: dict[str, Any]) -> Policy:
    """Build a Policy from its file form. Raises ``_FieldError`` (wrapped by ``loads_policy``)."""
    t = _Table(data, "")
    fmt = t.get("format", int, FORMAT)
    if fmt != FORMAT:
        raise _FieldError("format", f"this is policy file format {fmt}; this policyagent reads format {FORMAT}")
    k = _Table(t.get("key_exchange", dict, {}), "key_exchange")
    methods = []
    for m in k.items("methods"):
        methods.append(MainModeMethod(cipher=m.get("cipher", str), hash=m.get("hash", str), dh_group=m.get("dh_group", int)))
        m.done()
    kx = KeyExchange(
        methods=tuple(methods) if "methods" in k.data else builtin.DEFAULT_MAIN_MODE,
        lifetime_min=k.get("lifetime_min", int, DEFAULT_MM_LIFETIME_MIN),
        lifetime_sessions=k.get("lifetime_sessions", int, None),
        has_master_key_pfs=k.get("master_key_pfs", bool, False),
    )
    k.done()
    lists = [_list_from(x) for x in t.items("filter_lists")]
    actions = [_action_from(x) for x in t.items("filter_actions")]
    rules = [_rule_from(x) for x in t.items("rules")]
    policy = Policy(
        name=t.get("name", str),
        description=t.get("description", str, None),
        polling_interval_min=t.get("polling_interval_min", int, DEFAULT_POLLING_INTERVAL_MIN),
        has_default_exemptions=t.get("default_exemptions", bool, True),
        key_exchange=kx,
        filter_lists=tuple(lists),
        filter_actions=tuple(actions),
        rules=tuple(rules),
    )
    t.done()
    return policy


def _list_from(t: _Table) -> FilterList:
    filters = []
    for f in t.items("filters"):
        port = (int, "a port number")
        filters.append(
            Filter(
                source=f.convert("source", Address.parse, f.get("source", str)),
                destination=f.convert("destination", Address.parse, f.get("destination", str)),
                protocol=f.convert("protocol", parse_protocol, f.get("protocol", (str, int), None)),
                source_port=f.get("source_port", port[0], None, what=port[1]),
                destination_port=f.get("destination_port", port[0], None, what=port[1]),
                is_mirrored=f.get("mirrored", bool, True),
                description=f.get("description", str, None),
            )
        )
        f.done()
    fl = FilterList(name=t.get("name", str), description=t.get("description", str, None), filters=tuple(filters))
    t.done()
    return fl


def _action_from(t: _Table) -> FilterAction:
    methods = []
    for m in t.items("methods"):
        methods.append(
            SecurityMethod(
                ah_integrity=m.get("ah_integrity", str, None),
                esp_cipher=m.get("esp_cipher", str, None),
                esp_key_bits=m.get("esp_key_bits", int, None),
                esp_integrity=m.get("esp_integrity", str, None),
                lifetime_s=m.get("lifetime_s", int, None),
                lifetime_kb=m.get("lifetime_kb", int, None),
            )
        )
        m.done()
    fa = FilterAction(
        name=t.get("name", str),
        description=t.get("description", str, None),
        kind=t.convert("action", lambda v: _enum(ActionKind, v), t.get("action", str)),
        accepts_unsecured=t.get("accept_unsecured", bool, False),
        falls_back_to_clear=t.get("fall_back_to_clear", bool, False),
        has_session_key_pfs=t.get("session_key_pfs", bool, False),
        security_methods=tuple(methods),
    )
    t.done()
    return fa


def _rule_from(t: _Table) -> Rule:
    t.rule = t.data.get("name") if isinstance(t.data.get("name"), str) else None
    auth = []
    for a in t.items("authentication"):
        kind = a.convert("method", lambda v: _enum(AuthKind, v), a.get("method", str))
        auth.append(AuthMethod(kind=kind, root_ca=a.get("root_ca", str, None), key=a.get("key", str, None)))
        a.done()
    endpoint = t.get("tunnel_endpoint", str, None)
    rule = Rule(
        name=t.get("name", str),
        description=t.get("description", str, None),
        filter_list=t.get("filter_list", str, None),
        filter_action=t.get("filter_action", str),
        authentication=tuple(auth),
        tunnel_endpoint=t.convert("tunnel_endpoint", ip_address, endpoint) if endpoint is not None else None,
        connection_type=t.convert("connection_type", lambda v: _enum(ConnectionType, v), t.get("connection_type", str, "all")),
        is_active=t.get("active", bool, True),
        is_default_response=t.get("default_response", bool, False),
    )
    t.done()
    return rule


# --- text, lines and files -----------------------------------------------------------------------

_HEADER_RE = re.compile(r"^\[\[\s*([^\]]+?)\s*\]\]|^\[\s*([^\]]+?)\s*\]")
_KEY_RE = re.compile(r"^([A-Za-z0-9_-]+)\s*=\s*(.*)$")


def field_lines(text: str) -> dict[str, int]:
    """Map field paths (``rules[1].authentication[0]``) to 1-based lines, for this module's layout
    and hand-written array-of-tables headers alike. Unknown layouts just map fewer fields."""
    lines: dict[str, int] = {}
    counters: dict[str, int] = {}
    prefix = ""
    array: str | None = None
    index = 0

    def resolve(parts: list[str]) -> str:
        path = ""
        for p in parts[:-1]:
            path = f"{path}.{p}" if path else p
            if path in counters:
                path = f"{path}[{counters[path]}]"
        return f"{path}.{parts[-1]}" if path else parts[-1]

    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if array is not None:
            if s.startswith("]"):
                array = None
            elif s.startswith(("{", '"', "'")) or s[0].isdigit():
                lines[f"{array}[{index}]"] = n
                index += 1
            continue
        m = _HEADER_RE.match(s)
        if m:
            parts = [p.strip().strip('"') for p in (m.group(1) or m.group(2)).split(".")]
            path = resolve(parts)
            if m.group(1):
                counters[path] = counters.get(path, -1) + 1
                prefix = f"{path}[{counters[path]}]"
            else:
                prefix = path
            lines[prefix] = n
            continue
        m = _KEY_RE.match(s)
        if m:
            field = f"{prefix}.{m.group(1)}" if prefix else m.group(1)
            lines[field] = n
            value = m.group(2).split("#")[0].strip()
            if value.startswith("[") and value.count("[") > value.count("]"):
                array, index = field, 0
    return lines


def loads_policy(text: str, *, path: str | None = None) -> Policy:
    """Parse policy TOML (no validation). Raises ``PolicyFileError`` naming path, line and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m.group(1)) if m else len(text.splitlines()) if "end of document" in str(exc) else None
        raise PolicyFileError(path, line, None, None, f"not valid TOML: {exc}") from None
    try:
        return policy_from_dict(data)
    except _FieldError as exc:
        raise PolicyFileError(path, line_in(field_lines(text), exc.field), exc.rule, exc.field, exc.message) from None


def read_policy_file(path: str | os.PathLike) -> tuple[Policy, list[Issue]]:
    """Load and validate one policy file; return it with its warnings, or raise."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        mode = p.stat().st_mode
    except OSError as exc:
        raise PolicyFileError(str(p), None, None, None, f"cannot read: {exc.strerror}") from None
    policy = loads_policy(text, path=str(p))
    warnings = validate_policy(policy, path=str(p), line_of=field_lines(text))
    if policy.has_preshared_key and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(
            Issue(
                severity="warning",
                code="key-file-readable",
                message=f"holds a pre-shared key but its mode is {stat.S_IMODE(mode):04o}: run chmod 600 on it",
                path=str(p),
            )
        )
    return policy, warnings


def _atomic_write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_policy_file(policy: Policy, path: str | os.PathLike) -> list[Issue]:
    """Validate, then write atomically: 0600 if it holds a pre-shared key. Returns the warnings."""
    p = Path(path)
    text = dumps_policy(policy)
    warnings = validate_policy(policy, path=str(p), line_of=field_lines(text))
    _atomic_write(p, text, 0o600 if policy.has_preshared_key else 0o644)
    return warnings


# --- the store -----------------------------------------------------------------------------------


class PolicyStore:
    """A directory of policy files plus the record of which policy is assigned."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_dir()
        self.policies_dir = self.root / "policies"
        self.state_path = self.root / "assigned.toml"

    def path_for(self, name: str) -> Path:
        return self.policies_dir / (urllib.parse.quote(name, safe=" -_.()+,") + ".toml")

    def _files(self) -> list[Path]:
        return sorted(self.policies_dir.glob("*.toml")) if self.policies_dir.is_dir() else []

    def names(self) -> list[str]:
        """Built-in policy names first, then stored ones (sorted; unreadable files skipped)."""
        stored = []
        for f in self._files():
            try:
                stored.append(loads_policy(f.read_text(encoding="utf-8"), path=str(f)).name)
            except (OSError, PolicyFileError):
                continue
        return list(builtin.BUILTIN_POLICIES) + sorted(stored)

    def find(self, name: str) -> Path | None:
        """The file holding policy ``name`` (None for built-ins and unknown names)."""
        p = self.path_for(name)
        if p.exists():
            return p
        for f in self._files():
            try:
                if loads_policy(f.read_text(encoding="utf-8"), path=str(f)).name == name:
                    return f
            except (OSError, PolicyFileError):
                continue
        return None

    def load(self, name: str) -> tuple[Policy, list[Issue]]:
        """A built-in (by full or short name) or stored policy, validated, with its warnings."""
        b = builtin.builtin_policy(name)
        if b is not None:
            return b, validate_policy(b)
        path = self.find(name)
        if path is None:
            raise UsageError(f"no policy called {name!r} (policyagent policy list shows them)")
        return read_policy_file(path)

    def get(self, name: str) -> Policy:
        return self.load(name)[0]

    def save(self, policy: Policy, *, replace_existing: bool = True) -> list[Issue]:
        """Validate and store ``policy`` (refused whole if invalid; the store is then unchanged)."""
        if builtin.is_builtin(policy.name):
            raise UsageError(f"{policy.name!r} is a built-in policy: it cannot be changed (copy it under a new name)")
        existing = self.find(policy.name)
        if existing is not None and not replace_existing:
            raise UsageError(f"a policy called {policy.name!r} already exists")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        warnings = write_policy_file(policy, existing or self.path_for(policy.name))
        return warnings

    def delete(self, name: str) -> None:
        if builtin.is_builtin(name):
            raise UsageError(f"{name!r} is a built-in policy: it cannot be deleted")
        path = self.find(name)
        if path is None:
            raise UsageError(f"no policy called {name!r}")
        if self.assigned_name() == name:
            raise UsageError(f"{name!r} is assigned: unassign it first")
        path.unlink()

    def assigned_name(self) -> str | None:
        try:
            data = tomllib.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PolicyFileError(str(self.state_path), None, None, None, f"unreadable store state: {exc}") from None
        name = data.get("assigned")
        return name if isinstance(name, str) else None

    def assigned_policy(self) -> Policy | None:
        name = self.assigned_name()
        return self.get(name) if name is not None else None

    def assign(self, name: str) -> tuple[Policy, list[Issue]]:
        """Record ``name`` as the assigned policy (it must load and validate)."""
        policy, warnings = self.load(name)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        _atomic_write(self.state_path, tomli_w.dumps({"assigned": policy.name}), 0o644)
        return policy, warnings

    def unassign(self) -> str | None:
        """Clear the assignment; return the name that was assigned."""
        name = self.assigned_name()
        if name is not None:
            _atomic_write(self.state_path, "", 0o644)
        return name

    def import_file(self, path: str | os.PathLike, *, name: str | None = None, replace_existing: bool = False) -> tuple[Policy, list[Issue]]:
        """Read, validate and store one policy file (optionally renamed). Refused whole on error."""
        policy, warnings = read_policy_file(path)
        if name is not None:
            policy = replace(policy, name=name)
        self.save(policy, replace_existing=replace_existing)
        return policy, warnings

    def export(self, name: str, path: str | os.PathLike) -> Path:
        """Write policy ``name`` (built-in or stored) to ``path``."""
        policy = self.get(name)
        write_policy_file(policy, path)
        return Path(path)

