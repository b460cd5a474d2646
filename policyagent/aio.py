"""The asyncio adapter of the policy agent: sockets, one timer, embedded endpoints and ping.

Owns only I/O around the sans-I/O ``PolicyAgent`` (STYLE rule 1): it binds the agent's IKE port
and NAT-T port on its address (the NAT-T socket also carries the embedded link: ESP in UDP, RFC
3948, and whole IP packets for clear text and AH), feeds every datagram to
``PolicyAgent.receive_datagram``, sends what ``datagrams_to_send`` returns, arms ONE loop timer at
``get_timer()``, and hands deliveries and notices to the application side:

- ``create_datagram_endpoint(protocol_factory, local_addr=..., remote_addr=...)`` with asyncio's
  semantics (``DatagramTransport.sendto``, ``datagram_received``, ``error_received``): an
  application datagram becomes an IP/UDP packet that the agent matches and protects; a
  "negotiating" or "blocked" notice reaches the sender's ``error_received`` as
  ``IpSecNegotiating`` / ``IpSecBlocked`` (``OSError`` subclasses), the way asyncio reports ICMP
  errors for UDP;
- ``ping(host)``: ICMP echo through the agent (the peer's agent answers), yielding one
  ``PingResult`` per echo: reply (with its time), negotiating, blocked or timeout.

It does not own the IKE endpoint's driving (the agent core owns its ``IkeEndpoint`` and drains
its events, so ``ikeproto.aio.IkeService``, which drives an endpoint itself, is not used) nor any
protocol decision. Time is ``clock()`` (``loop.time()`` by default; ``SkewedClock`` runs faster
or jumps, for the demo's one-minute block); deadlines map back to loop time for ``call_at``.
It works on the standard event loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from policyagent import monitor
from policyagent.agent import AgentConfig, PolicyAgent, SendResult, SenderNotified
from policyagent.audit import AuditLog, file_logger
from policyagent.datapath import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP
from policyagent.model import Policy
from policyagent.trace import TraceFile

__all__ = ["AgentService", "IpSecBlocked", "IpSecNegotiating", "PingResult", "SkewedClock",
           "start_agent"]

_EPHEMERAL = 49152


class IpSecNegotiating(OSError):
    """The datagram is queued while IKE negotiates ("Negotiating IP Security")."""


class IpSecBlocked(OSError):
    """The policy, or a failed negotiation (for one minute), blocks this traffic."""


class SkewedClock:
    """Agent time from loop time: ``speed`` times faster, plus any ``skip``ped seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, speed: float = 1.0) -> None:
        self._loop = loop
        self.speed = speed
        self._origin = loop.time()
        self._skipped = 0.0

    def __call__(self) -> float:
        return self._origin + (self._loop.time() - self._origin) * self.speed + self._skipped

    def skip(self, seconds: float) -> None:
        """Jump forward (timers due in between fire at the next wake-up)."""
        self._skipped += seconds

    def to_loop(self, at: float) -> float:
        return self._origin + (at - self._skipped - self._origin) / self.speed


@dataclass(frozen=True, slots=True, kw_only=True)
class PingResult:
    """One echo: ``status`` is "reply", "negotiating", "blocked" or "timeout"."""

    seq: int
    status: str
    host: str
    size: int
    rtt_ms: float | None = None
    is_protected: bool | None = None
    reason: str = ""


class _PortProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: AgentService, port: int) -> None:
        self._service, self._port = service, port
        self.closed = service.loop.create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._service._received(data, (addr[0], addr[1]), self._port)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a host without IKE, and the like: IKE retransmits anyway.
        self._service.socket_errors += 1


class EmbeddedTransport(asyncio.DatagramTransport):
    """The transport of an embedded endpoint: datagrams go through the agent, not a socket."""

    def __init__(self, service: AgentService, local: tuple[str, int],
                 remote: tuple[str, int] | None, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self._service, self._local, self._remote = service, local, remote
        self._protocol = protocol
        self._closing = False

    def sendto(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        if self._closing:
            raise OSError("transport is closed")
        if addr is None:
            if self._remote is None:
                raise ValueError("no destination: give addr or connect with remote_addr")
            addr = self._remote
        elif self._remote is not None and tuple(addr[:2]) != self._remote:
            raise ValueError(f"transport is connected to {self._remote}")
        self._service._send_udp(self._local, (addr[0], addr[1]), bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": self._local, "peername": self._remote}.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._service._endpoints.pop(self._local, None)
            self._service.loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0


class AgentService:
    """A ``PolicyAgent`` on the event loop (made by ``start_agent``, ended by ``close``)."""

    def __init__(self, agent: PolicyAgent, *, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float], to_loop: Callable[[float], float]) -> None:
        self.agent = agent
        self.loop = loop
        self.clock = clock
        self._to_loop = to_loop
        self._sockets: dict[int, asyncio.DatagramTransport] = {}
        self._socket_protocols: list[_PortProtocol] = []
        self._endpoints: dict[tuple[str, int], EmbeddedTransport] = {}
        self._echo_waiters: dict[tuple[str, int, int], asyncio.Future] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._ports = itertools.count(_EPHEMERAL)
        self._closers: list[Callable[[], None]] = []
        self._closed = False
        self.socket_errors = 0
        self.undeliverable = 0

    # -- wiring ---------------------------------------------------------------------------------

    async def _bind(self, port: int) -> None:
        family = socket.AF_INET6 if ":" in self.agent.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        except OSError:
            pass
        sock.bind((self.agent.address, port))
        sock.setblocking(False)
        transport, protocol = await self.loop.create_datagram_endpoint(
            lambda: _PortProtocol(self, port), sock=sock)
        self._sockets[port] = transport
        self._socket_protocols.append(protocol)

    def _received(self, data: bytes, addr: tuple[str, int], port: int) -> None:
        self.agent.receive_datagram(data, addr, port, self.clock())
        self._flush()

    def _flush(self) -> None:
        agent = self.agent
        now = self.clock()
        for payload, addr, port in agent.datagrams_to_send(now):
            transport = self._sockets.get(port)
            if transport is not None:
                transport.sendto(payload, addr)
        while (notice := agent.next_notification()) is not None:
            self._notice(notice)
        while (d := agent.next_delivery()) is not None:
            if d.protocol == IPPROTO_UDP:
                endpoint = self._endpoints.get((d.dst, d.dport))
                if endpoint is None or (endpoint._remote is not None
                                        and endpoint._remote != (d.src, d.sport)):
                    self.undeliverable += 1
                    continue
                endpoint._protocol.datagram_received(d.data, (d.src, d.sport))
            elif d.protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
                waiter = self._echo_waiters.pop((d.src, d.sport, d.dport), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(("reply", d))
            else:
                self.undeliverable += 1
        if agent.timer_changed:
            self._arm()

    def _notice(self, notice: SenderNotified) -> None:
        if notice.protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            if notice.echo is None:
                return
            waiter = self._echo_waiters.get((notice.dst, notice.echo[0], notice.echo[1]))
            if waiter is not None and not waiter.done():
                waiter.set_result((notice.kind, notice))
            return
        endpoint = self._endpoints.get((notice.src, notice.sport))
        if endpoint is not None:
            exc_type = IpSecNegotiating if notice.kind == "negotiating" else IpSecBlocked
            text = ("Negotiating IP Security." if notice.kind == "negotiating"
                    else f"IP Security blocked this traffic: {notice.reason}")
            endpoint._protocol.error_received(exc_type(text))

    def _arm(self) -> None:
        at = self.agent.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None and not self._closed:
            self._timer = self.loop.call_at(self._to_loop(at), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.clock()
        at = self.agent.get_timer()
        if at is not None and at <= now:
            self.agent.handle_timer(now)
        self._flush()
        self._arm()

    def kick(self) -> None:
        """Re-read the timer (after the clock jumped) and run what is due."""
        self._timer_at = None
        self._on_timer()
        self._arm()

    # -- the application side -------------------------------------------------------------------

    async def create_datagram_endpoint(self, protocol_factory: Callable[[], asyncio.DatagramProtocol],
                                       local_addr: tuple[str, int] | None = None,
                                       remote_addr: tuple[str, int] | None = None
                                       ) -> tuple[EmbeddedTransport, asyncio.DatagramProtocol]:
        """Like ``loop.create_datagram_endpoint``, for UDP carried through the agent."""
        host = local_addr[0] if local_addr else self.agent.address
        if host in ("", "0.0.0.0", "::"):
            host = self.agent.address
        if host not in self.agent.local_addresses:
            raise OSError(f"{host} is not an address of this agent")
        port = local_addr[1] if local_addr and local_addr[1] else self._free_port(host)
        if (host, port) in self._endpoints:
            raise OSError(f"address {host}:{port} is already in use")
        protocol = protocol_factory()
        transport = EmbeddedTransport(self, (host, port),
                                      (remote_addr[0], remote_addr[1]) if remote_addr else None,
                                      protocol)
        self._endpoints[(host, port)] = transport
        protocol.connection_made(transport)
        return transport, protocol

    def _free_port(self, host: str) -> int:
        for port in self._ports:
            if (host, port) not in self._endpoints:
                return port
        raise OSError("no free port")  # pragma: no cover - itertools.count never ends

    def _send_udp(self, local: tuple[str, int], remote: tuple[str, int], data: bytes) -> SendResult:
        result = self.agent.send_udp(local[0], local[1], remote[0], remote[1], data, self.clock())
        self._flush()
        return result

    async def ping(self, host: str, *, count: int = 4, size: int = 32, timeout: float = 1.0,
                   interval: float = 1.0, ident: int | None = None) -> AsyncIterator[PingResult]:
        """ICMP echo through the agent: one ``PingResult`` per echo."""
        ident = ident if ident is not None else int.from_bytes(os.urandom(2), "big")
        payload = bytes((0x61 + i % 23) for i in range(size))  # Windows ping's abcdefg...
        for seq in range(1, count + 1):
            started = self.loop.time()
            waiter = self.loop.create_future()
            self._echo_waiters[(host, ident, seq)] = waiter
            result = self.agent.send_echo(host, ident, seq, payload, self.clock())
            self._flush()
            try:
                kind, detail = await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except asyncio.TimeoutError:
                kind, detail = "timeout", None
            finally:
                self._echo_waiters.pop((host, ident, seq), None)
            if kind == "reply":
                yield PingResult(seq=seq, status="reply", host=host, size=len(detail.data),
                                 rtt_ms=(self.loop.time() - started) * 1000,
                                 is_protected=detail.is_protected)
            elif kind in ("negotiating", "blocked"):
                yield PingResult(seq=seq, status=kind, host=host, size=size,
                                 reason=getattr(detail, "reason", ""))
            else:
                status = "blocked" if result is SendResult.BLOCKED else "timeout"
                yield PingResult(seq=seq, status=status, host=host, size=size)
            if seq < count:
                await asyncio.sleep(max(0.0, interval - (self.loop.time() - started)))

    # -- views and control ----------------------------------------------------------------------

    def monitor(self) -> dict[str, Any]:
        return monitor.snapshot(self.agent, self.clock())

    def restart(self) -> None:
        self.agent.restart(self.clock())
        self._flush()

    def assign_policy(self, policy: Policy | None) -> None:
        self.agent.assign_policy(policy, self.clock())
        self._flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for transport in list(self._endpoints.values()):
            transport.close()
        for transport in self._sockets.values():
            transport.close()
        for closer in self._closers:
            closer()
        for waiter in self._echo_waiters.values():
            waiter.cancel()

    async def wait_closed(self) -> None:
        """After ``close``: until the sockets are really closed (their ports free again)."""
        await asyncio.gather(*(p.closed for p in self._socket_protocols))

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()

    async def __aenter__(self) -> AgentService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def start_agent(*, policy: Policy | None, address: str, config: AgentConfig = AgentConfig(),
                      audit_path: str | os.PathLike | None = None,
                      trace_path: str | os.PathLike | None = None, trace_secrets: bool = False,
                      ike_factory: Callable[..., Any] | None = None, ike: bool = True,
                      clock: SkewedClock | None = None,
                      loop: asyncio.AbstractEventLoop | None = None) -> AgentService:
    """Bind the agent's ports on ``address`` and start it. ``ike=False`` binds only the NAT-T
    port: a host that does not speak IKE at all (the seed's non-IPsec-aware computer)."""
    loop = loop or asyncio.get_running_loop()
    now_fn: Callable[[], float] = clock if clock is not None else loop.time
    to_loop: Callable[[float], float] = clock.to_loop if clock is not None else (lambda t: t)
    closers: list[Callable[[], None]] = []
    audit_logger = None
    if audit_path is not None:
        fd = os.open(audit_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        stream = os.fdopen(fd, "a", encoding="utf-8")
        closers.append(stream.close)
        audit_logger = file_logger(stream)
    trace_logger = None
    if trace_path is not None:
        trace = TraceFile(trace_path, include_secrets=trace_secrets)
        closers.append(trace.close)
        trace_logger = trace.logger(host=address)
    agent = PolicyAgent(policy=policy, local_addresses=[address], config=config,
                        ike_factory=ike_factory, audit=AuditLog(logger=audit_logger),
                        logger=trace_logger, now=now_fn())
    service = AgentService(agent, loop=loop, clock=now_fn, to_loop=to_loop)
    service._closers = closers
    try:
        if ike:
            await service._bind(config.ike_port)
        await service._bind(config.natt_port)
    except BaseException:
        service.close()
        raise
    service._flush()
    return service
