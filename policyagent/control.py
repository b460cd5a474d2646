"""The running service's control socket: a local Unix socket readable by its owner only.

Owns the control protocol between ``policyagent run`` and the other commands (``monitor``,
``events``, ``diag``, ``ping``): one JSON object per line each way. A request names an ``op``;
the answer is one or more JSON lines, the last one carrying ``"done": true`` (or ``"error"``).

- ``status`` / ``monitor``: the monitor snapshot (``policyagent.monitor``);
- ``events``: audit events (``since``, ``event_id``), newest last;
- ``diag``: what ``netdiag /test:ipsec`` showed: the policy, its rules, IKE SAs, counters;
- ``ping``: streams one line per echo (``host``, ``count``, ``size``, ``timeout``, ``interval``);
- ``reload``: read the store's assigned policy again; ``restart``: clear all IKE and SA state.

The socket file is created with mode 0600 in a 0700 directory (umask held during bind), and a
connecting process must have our user id (``SO_PEERCRED``, where the platform has it).
``request`` is the blocking client the command line uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from policyagent import audit, diag
from policyagent.aio import AgentService
from policyagent.errors import PolicyError

SOCKET_NAME = "control.sock"


class ControlError(PolicyError):
    """The service could not be reached or answered with an error."""


def socket_path(where: str | os.PathLike) -> Path:
    """``where`` as a socket path: a store directory means ``DIR/control.sock``."""
    p = Path(where).expanduser()
    return p / SOCKET_NAME if p.is_dir() else p


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", creds)[1]


class ControlServer:
    """Serves the control protocol for one ``AgentService`` on ``path``."""

    def __init__(self, service: AgentService, path: str | os.PathLike, *,
                 reload: Callable[[], str | None] | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.service = service
        self.path = Path(path)
        self._reload = reload
        self.info = info or {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists():
            if _is_live(self.path):
                raise ControlError(f"another service already listens on {self.path}")
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer)
            if uid is not None and uid != os.getuid():
                await _send(writer, {"error": "permission denied", "done": True})
                return
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    await self._dispatch(request, writer)
                except (ValueError, KeyError, TypeError) as exc:
                    await _send(writer, {"error": f"bad request: {exc}", "done": True})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        op = request.get("op")
        service = self.service
        if op in ("status", "monitor"):
            await _send(writer, service.monitor() | {"done": True})
        elif op == "events":
            since = request.get("since")
            ids = request.get("event_id")
            events = service.agent.audit.query(event_id=ids, since=since)
            await _send(writer, {"events": [e.to_dict() for e in events], "done": True})
        elif op == "diag":
            await _send(writer, diag.report(service, info=self.info) | {"done": True})
        elif op == "ping":
            host = str(request["host"])
            async for result in service.ping(
                    host, count=int(request.get("count", 4)), size=int(request.get("size", 32)),
                    timeout=float(request.get("timeout", 1.0)),
                    interval=float(request.get("interval", 1.0))):
                await _send(writer, {"seq": result.seq, "status": result.status, "host": result.host,
                                     "size": result.size, "rtt_ms": result.rtt_ms,
                                     "protected": result.is_protected, "reason": result.reason})
            await _send(writer, {"done": True})
        elif op == "reload":
            name = self._reload() if self._reload is not None else None
            await _send(writer, {"policy": name, "done": True})
        elif op == "restart":
            service.restart()
            await _send(writer, {"restarted": True, "done": True})
        else:
            await _send(writer, {"error": f"unknown op {op!r}", "done": True})


async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(json.dumps(obj, default=str).encode() + b"\n")
    await writer.drain()


def _is_live(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def request(path: str | os.PathLike, payload: dict[str, Any], *, timeout: float = 30.0
            ) -> Iterator[dict[str, Any]]:
    """Send one request to the service at ``path``; yield its answer lines (``done`` last)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ControlError(f"no policyagent service at {path} ({exc.strerror or exc}): "
                               "start it with `policyagent run`") from None
        sock.sendall(json.dumps(payload).encode() + b"\n")
        buffer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ControlError("the service closed the connection")
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                answer = json.loads(line)
                if "error" in answer:
                    raise ControlError(answer["error"])
                yield answer
                if answer.get("done"):
                    return
    finally:
        sock.close()


def request_one(path: str | os.PathLike, payload: dict[str, Any], *, timeout: float = 30.0
                ) -> dict[str, Any]:
    """The single answer of a non-streaming request."""
    *_, last = request(path, payload, timeout=timeout)
    return last


def render_events(events: list[dict[str, Any]], *, verbose: bool) -> str:
    """Events as Event Viewer text (verbose) or one line each."""
    if verbose:
        return "\n\n".join(f"[{e.get('at')}] event {e.get('event_id')}\n{audit.render(e)}" for e in events)
    return "\n".join(audit.summary(e) for e in events)
