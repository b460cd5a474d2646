"""Test helpers for Kerberos: a throwaway MIT KDC per test (realm RESKIT.COM in a temp dir).

``kdc`` starts ``policyagent.kdc.ThrowawayKdc`` with the two lab hosts, points this process at it
(``KRB5_CONFIG``, ``KRB5_KDC_PROFILE``, ``KRB5RCACHEDIR``, ``KRB5CCNAME`` through monkeypatch,
so nothing under /etc is read or written) and always stops the KDC by its PID afterwards, also
when the test fails. ``kdc_factory`` starts more (another clock, another realm set-up).

Gates fail in CI (CI=true) and skip elsewhere: ``need_kdc`` (the MIT programs, naming their apt
packages), ``need_gssapi`` (the optional ``gssapi`` package, naming the pip extra),
``need_faketime`` (libfaketime, for a KDC whose clock is off).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from policyagent.kdc import FAKETIME_LIBRARY, PROGRAMS, ThrowawayKdc
from tests.lab import need, need_program

__all__ = ["H1", "H2", "kdc", "kdc_factory", "need_faketime", "need_gssapi", "need_kdc"]

H1, H2 = "hq-res-wrk-01.reskit.com", "hq-res-wrk-02.reskit.com"


def need_kdc() -> None:
    """The MIT KDC programs (krb5kdc, kdb5_util from krb5-kdc; kadmin.local from krb5-admin-server)."""
    for name, package in PROGRAMS.items():
        need_program(name, package)


def need_gssapi() -> Any:
    """The ``gssapi`` package (``pip install '.[kerberos]'``, built against libkrb5-dev); returns it."""
    try:
        import gssapi
    except ImportError:
        gssapi = None
    need(gssapi is not None, "the gssapi package (pip install '.[kerberos]'; needs apt package libkrb5-dev to build)")
    return gssapi


def need_faketime() -> None:
    need(os.path.exists(FAKETIME_LIBRARY), f"libfaketime ({FAKETIME_LIBRARY}, apt package faketime)")


@pytest.fixture
def kdc_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ThrowawayKdc]]:
    """Start KDCs (keyword arguments of ``ThrowawayKdc``); the last one started is the one this
    process uses. Every KDC is stopped at the end of the test."""
    need_kdc()
    started: list[ThrowawayKdc] = []

    def start(**kwargs: Any) -> ThrowawayKdc:
        server = ThrowawayKdc(tmp_path / f"kdc{len(started)}", **kwargs)
        started.append(server)
        server.start()
        for key, value in server.environ().items():
            monkeypatch.setenv(key, value)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def kdc(kdc_factory: Callable[..., ThrowawayKdc]) -> ThrowawayKdc:
    """A running KDC for RESKIT.COM with host principals and keytabs for ``H1`` and ``H2``."""
    return kdc_factory(hosts=(H1, H2))
