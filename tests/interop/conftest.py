"""Fixtures for tests against real peers: private charons in the ``netns_pair`` namespaces.

``charon_factory`` starts charons (``tests.interop.strongswan.Charon``) and always stops them, by PID,
before ``netns_pair`` deletes the namespaces; their state directories are removed afterwards. When a
test fails, the tail of each charon's log is attached to its report. Gates (``need_*``) fail in CI
and skip elsewhere, naming the apt package.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.ikescan import DEFAULT_BPF, Capture
from tests.interop.strongswan import CHARON, Charon, SwanctlConfig
from tests.lab import NetnsPair, need, need_netns, need_program

LIBIPSEC_PLUGIN = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"


def need_strongswan() -> None:
    """Root, namespaces, charon with kernel-libipsec, swanctl and a TUN device."""
    need_netns()
    need_program(os.path.basename(CHARON), "strongswan-charon")
    need_program("swanctl", "strongswan-swanctl")
    need(os.path.exists(LIBIPSEC_PLUGIN), "charon's kernel-libipsec plugin (apt package libcharon-extra-plugins)")
    need(os.path.exists("/dev/net/tun"), "/dev/net/tun (kernel-libipsec's TUN device)")
    need_program("unshare", "util-linux")
    need_program("setpriv", "util-linux")


def need_ike_scan() -> None:
    need_program("ike-scan", "ike-scan")


def need_capture() -> None:
    need_program("tcpdump", "tcpdump")
    need_program("tshark", "tshark")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Attach the charon logs to a failing test's report (charon is still running at that point)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when != "teardown":
        for charon in getattr(item, "_interop_charons", ()):
            report.sections.append((f"charon {charon.name} log (tail)", charon.log_tail(60)))


CharonFactory = Callable[..., Charon]


@pytest.fixture
def charon_factory(request: pytest.FixtureRequest, netns_pair: NetnsPair) -> Iterator[CharonFactory]:
    """``start(netns, conf, *, name=None, **charon_kw) -> Charon``: a running, configured charon.

    ``netns`` is a namespace name or a side (0 or 1) of ``netns_pair``; ``conf`` a ``SwanctlConfig``
    or swanctl.conf text. Every charon is stopped at teardown, before the namespaces go.
    """
    need_strongswan()
    base = Path(tempfile.mkdtemp(prefix="pyipsec-swan-"))
    started: list[Charon] = []
    request.node._interop_charons = started

    def start(netns: str | int, conf: SwanctlConfig | str, *, name: str | None = None, **kw: Any) -> Charon:
        ns = netns_pair.ns[netns] if isinstance(netns, int) else netns
        charon = Charon(name or f"charon{len(started)}", **kw)
        started.append(charon)  # before start: a half-started charon is stopped too
        charon.start(ns, conf, base / charon.name)
        return charon

    try:
        yield start
    finally:
        try:
            for charon in reversed(started):
                charon.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def capture_factory(netns_pair: NetnsPair) -> Iterator[Callable[..., Capture]]:
    """``start(side, *, iface=None, bpf=DEFAULT_BPF) -> Capture``: tcpdump running in a namespace.

    ``side`` 0 or 1 captures on that side's veth (or give a namespace name and ``iface``). Call
    ``.stop()`` for the pcap path; captures still running are stopped at teardown and every pcap is
    deleted with its temporary directory.
    """
    need_capture()
    base = Path(tempfile.mkdtemp(prefix="pyipsec-cap-"))
    captures: list[Capture] = []

    def start(side: str | int, *, iface: str | None = None, bpf: str = DEFAULT_BPF) -> Capture:
        ns = netns_pair.ns[side] if isinstance(side, int) else side
        dev = iface or (netns_pair.veth[side] if isinstance(side, int) else None)
        if dev is None:
            raise ValueError("capture in a named namespace needs iface=")
        cap = Capture(ns, dev, base / f"{ns}-{dev}-{len(captures)}.pcap", bpf)
        captures.append(cap)
        return cap.start()

    try:
        yield start
    finally:
        try:
            for cap in captures:
                cap.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
