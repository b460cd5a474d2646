"""Test-lab fixtures of our own: capability checks and two network namespaces joined by a veth.

Follows the shared lab's recipe (``ip netns`` + veth, 192.0.2.1/24 <-> 192.0.2.2/24, the
documentation range) but owns its names, so it never touches a lab that someone started by hand.
Users of the project run these tests without the shared lab scripts.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest


def in_ci() -> bool:
    """True when running under CI (CI=true), where a missing capability is a failure."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def need(condition: bool, what: str) -> None:
    """Stop the test when a capability is missing: fail in CI, skip (with the reason) elsewhere."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"CI must provide {what}; .ci/run installs it", pytrace=False)
    pytest.skip(f"needs {what}")


def need_root() -> None:
    need(os.geteuid() == 0, "root (network namespaces)")


def need_program(name: str, package: str) -> str:
    """Return the path of ``name``; fail or skip naming the apt package that provides it."""
    path = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin", "/usr/lib/ipsec") if os.access(p := os.path.join(d, name), os.X_OK)),
        None,
    )
    need(path is not None, f"`{name}` (apt package {package})")
    return path  # type: ignore[return-value]


def run(argv: list[str], *, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; raise with its stderr when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class NetnsPair:
    """Two namespaces ``ns[0]`` (192.0.2.1) and ``ns[1]`` (192.0.2.2) joined by a veth pair."""

    ns: tuple[str, str]
    veth: tuple[str, str]
    addrs: tuple[str, str] = ("192.0.2.1", "192.0.2.2")
    inner: tuple[str, str] = ("192.0.2.101", "192.0.2.102")
    _up: bool = field(default=False, repr=False)

    _serial = itertools.count()

    @classmethod
    def unique(cls) -> "NetnsPair":
        """Names unique to this process and call (veth names stay within 15 characters)."""
        tag = f"{os.getpid() % 100000}{next(cls._serial) % 100}"
        return cls(ns=(f"pyipsec-{tag}-a", f"pyipsec-{tag}-b"), veth=(f"pyi{tag}a", f"pyi{tag}b"))

    def exec_argv(self, side: int, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns[side], *argv]

    def run(self, side: int, argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside namespace ``side`` (0 or 1)."""
        return run(self.exec_argv(side, argv), **kw)

    def up(self) -> None:
        self.down()
        self._up = True
        a, b = self.ns
        va, vb = self.veth
        run(["ip", "netns", "add", a])
        run(["ip", "netns", "add", b])
        run(["ip", "link", "add", va, "type", "veth", "peer", "name", vb])
        for side, (ns, veth) in enumerate(zip(self.ns, self.veth)):
            run(["ip", "link", "set", veth, "netns", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{self.addrs[side]}/24", "dev", veth])
            run(["ip", "-n", ns, "addr", "add", f"{self.inner[side]}/32", "dev", "lo"])
            run(["ip", "-n", ns, "link", "set", veth, "up"])

    def down(self) -> None:
        """Delete both namespaces (the veth goes with them); safe to call twice."""
        for ns in self.ns:
            run(["ip", "netns", "del", ns], check=False)
        run(["ip", "link", "del", self.veth[0]], check=False)
        self._up = False


def need_netns() -> None:
    need_root()
    need_program("ip", "iproute2")
    probe = run(["ip", "netns", "list"], check=False)
    need(probe.returncode == 0, f"`ip netns` to work ({probe.stderr.strip()})")
