"""The IKE debug trace file (Windows 2000's ``oakley.log``): off by default, bounded, kept once.

The seed ("Using IKE Debug Tracing"): logging is disabled by default; when enabled, the file
``oakley.log`` is written and ``oakley.log.sav`` is the previous version after the policy agent
restarts; the log is limited to 50,000 entries. This module owns that file: ``TraceFile`` opens
it (moving an existing file to ``.sav``), writes one line per entry, and when the bound is reached
starts over (the full file becomes the new ``.sav``), so at most two bounded files exist.

Entries come from structlog loggers: ``TraceFile.logger()`` is handed to the ``IkeEndpoint``
(every exchange step, payload summary and failure reason) and to the agent (acquires, soft SAs,
blocks). Keys appear only when explicitly requested (``include_secrets``): otherwise any field
whose name says it holds key material is replaced by ``<hidden>`` before it is written, in case
a producer forgets (house rule 6). ``null_logger()`` is the logger used when tracing is off.

This is an adapter-side module (it writes a file and stamps entries with the wall clock, which
the injected ``clock`` replaces in tests); cores only receive the logger.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

MAX_ENTRIES = 50_000
_SECRET_HINTS = ("key", "skeyid", "psk", "secret", "keymat", "g_xy", "shared")


def _is_secret(name: str) -> bool:
    low = name.lower()
    return any(h in low for h in _SECRET_HINTS) and low not in ("key_bits", "key_exchange")


def _drop(_logger: Any, _name: str, _event: dict[str, Any]) -> dict[str, Any]:
    raise structlog.DropEvent


def null_logger() -> Any:
    """A structlog logger that discards everything (tracing off)."""
    return structlog.wrap_logger(structlog.ReturnLogger(), processors=[_drop])


class _Sink:
    """The structlog "logger" a TraceFile gives out: every call is one entry."""

    def __init__(self, trace: TraceFile) -> None:
        self._trace = trace

    def msg(self, message: str) -> None:
        self._trace.write_line(message)

    log = debug = info = warning = warn = error = critical = exception = failure = err = msg


class TraceFile:
    """``oakley.log``: at most ``max_entries`` lines, the previous file kept as ``<path>.sav``."""

    def __init__(self, path: str | os.PathLike, *, max_entries: int = MAX_ENTRIES,
                 include_secrets: bool = False, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.path = Path(path)
        self.sav_path = self.path.with_name(self.path.name + ".sav")
        self.max_entries = max_entries
        self.include_secrets = include_secrets
        self.entries = 0
        self.rotations = 0
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = None
        self._open(rotate=True)

    def _open(self, *, rotate: bool) -> None:
        if rotate and self.path.exists():
            os.replace(self.path, self.sav_path)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._stream = os.fdopen(fd, "w", encoding="utf-8")
        self.entries = 0

    def write_line(self, line: str) -> None:
        """Append one entry; start a new file (keeping this one as ``.sav``) at the bound."""
        if self._stream is None:
            return
        if self.entries >= self.max_entries:
            self._stream.close()
            self.rotations += 1
            self._open(rotate=True)
        self._stream.write(line.rstrip("\n") + "\n")
        self._stream.flush()
        self.entries += 1

    def _render(self, _logger: Any, name: str, event_dict: dict[str, Any]) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self._clock()))
        millis = int(self._clock() * 1000) % 1000
        event = event_dict.pop("event", name)
        parts = []
        for key, value in event_dict.items():
            if not self.include_secrets and _is_secret(str(key)):
                value = "<hidden>"
            elif isinstance(value, bytes):
                value = value.hex()
            parts.append(f"{key}={value}")
        return f"{stamp}.{millis:03d} {event} " + " ".join(parts)

    def logger(self, **bound: Any) -> Any:
        """A structlog logger whose every call becomes one entry of this file."""
        return structlog.wrap_logger(_Sink(self), processors=[self._render]).bind(**bound)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self) -> TraceFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
