"""The policyagent error tree: one root, ``PolicyError``, and the structured validation issue.

- ``PolicyFileError``: a policy (file or object) that cannot be used; carries the file path, the
  line where known, the rule and the field the problem is in.
- ``ValidationError``: validation refused a policy; carries every error ``Issue`` found (the first
  one also fills the ``PolicyFileError`` location fields).
- ``UsageError``: local misuse by the caller or the command line (unknown policy, editing a
  built-in policy), never caused by a peer.

Warnings are not exceptions: validation returns them as ``Issue`` objects with
``severity == "warning"`` and the library never prints them. No message here ever contains a
pre-shared key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Issue:
    """One validation finding: an error (the policy is refused) or a warning (it loads)."""

    severity: str  # "error" or "warning"
    code: str  # stable short name, e.g. "not-mirrored", "weak-algorithm"
    message: str
    rule: str | None = None
    field: str | None = None  # dotted path in the policy file, e.g. "rules[1].authentication[0]"
    path: str | None = None
    line: int | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        return _locate(self.path, self.line, self.rule, self.field, f"{self.severity} [{self.code}]: {self.message}")


def _locate(path: str | None, line: int | None, rule: str | None, field: str | None, message: str) -> str:
    head = ""
    if path is not None:
        head = f"{path}:{line}: " if line is not None else f"{path}: "
    where = []
    if rule is not None:
        where.append(f"rule {rule!r}")
    if field is not None:
        where.append(f"field {field}")
    return head + (", ".join(where) + ": " if where else "") + message


class PolicyError(Exception):
    """Root of every error policyagent raises on purpose."""


class UsageError(PolicyError):
    """The caller used the API or the command line wrongly."""


class PolicyFileError(PolicyError):
    """A policy that cannot be used, located as precisely as known."""

    def __init__(
        self,
        path: str | None,
        line: int | None,
        rule: str | None,
        field: str | None,
        message: str,
    ) -> None:
        super().__init__(_locate(path, line, rule, field, message))
        self.path = path
        self.line = line
        self.rule = rule
        self.field = field
        self.reason = message


class ValidationError(PolicyFileError):
    """Validation refused a policy; ``issues`` holds every error (and the warnings) found."""

    def __init__(self, issues: list[Issue] | tuple[Issue, ...]) -> None:
        self.issues = tuple(issues)
        errors = [i for i in self.issues if i.is_error]
        if not errors:
            raise ValueError("ValidationError needs at least one error issue")
        first = errors[0]
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        super().__init__(first.path, first.line, first.rule, first.field, first.message + more)

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.is_error)

    @property
    def warnings(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if not i.is_error)
