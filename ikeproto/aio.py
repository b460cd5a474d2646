"""The asyncio adapter of ikeproto: two UDP sockets and one loop timer around an ``IkeEndpoint``.

Owns only the I/O around the sans-I/O endpoint (STYLE rule 1): binding the IKE port (UDP 500)
and the NAT-T port (UDP 4500) or given ones, feeding received datagrams to
``IkeEndpoint.receive_datagram``, sending what ``datagrams_to_send`` returns, arming ONE loop
timer at ``get_timer()``, queueing events and resolving the futures of ``initiate``. It works on
the standard event loop and on uvloop. ``now`` is ``loop.time()`` everywhere (monotonic seconds),
so events' ``at`` are loop times.

On the NAT-T port it demultiplexes by RFC 3948 (``espcore.udp_encap``): §2.2 an IKE message is
prefixed by the 4-byte non-ESP marker, which is stripped before the endpoint sees it and prepended
to every IKE message sent from that port; ESP packets and §2.3 NAT-keepalives (0xFF) go, as
received, to the ``esp_handler(data, addr)`` that the application passes (the policy agent's data
path), and ``send_esp`` sends ESP-in-UDP from the same socket.

Does not own: any protocol decision (the endpoint demultiplexes by cookie, retransmits, expires),
ESP processing (the application's handler), the NAT-T float itself (RFC 3947 §4, the endpoint says
which local port to send from) or keep-alive timing (the endpoint's ``nat_keepalives`` says when;
the adapter only sends the 0xFF octet).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from espcore import udp_encap
from espcore.errors import ParseError as EspParseError
from ikeproto.config import Address, ConfigProvider, Phase2Config
from ikeproto.errors import UsageError
from ikeproto.events import Event, NegotiationFailed, Phase2Established

EspHandler = Callable[[bytes, Address], None]
InitiateResult = Phase2Established | NegotiationFailed

__all__ = ["EspHandler", "IkeService", "create_endpoint"]


class _PortProtocol(asyncio.DatagramProtocol):
    """One bound UDP port; hands every datagram to the service with the port it arrived on."""

    def __init__(self, service: IkeService, *, is_natt: bool) -> None:
        self._service = service
        self._is_natt = is_natt

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # IPv6 sockets report (host, port, flowinfo, scope_id); the endpoint keys peers by (host, port).
        peer = (addr[0], addr[1])
        if self._is_natt:
            self._service._natt_received(data, peer)
        else:
            self._service._ike_received(data, peer)

    def error_received(self, exc: Exception) -> None:
        self._service._error_received(exc)


class IkeService:
    """An ``IkeEndpoint`` on the event loop: made by ``create_endpoint``, ended by ``close``.

    ``endpoint`` is the sans-I/O core (read its ``stats``, ``ike_sas()``); ``stats`` counts what
    the adapter itself dropped or passed on. Every event is queued in ``events`` (``next_event()``
    awaits the next one; an application that only uses the futures should still drain it);
    ``initiate`` also returns a future for its outcome.
    """

    def __init__(
        self,
        endpoint: Any,
        *,
        loop: asyncio.AbstractEventLoop,
        ike_port: int,
        natt_port: int,
        esp_handler: EspHandler | None,
        logger: Any,
    ) -> None:
        self.endpoint = endpoint
        self.ike_port = ike_port
        self.natt_port = natt_port
        self.esp_handler = esp_handler
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.stats: Counter[str] = Counter()
        self._loop = loop
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._log = logger
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pending: dict[int, asyncio.Future[InitiateResult]] = {}
        self._closed = False

    def _attach(self, port: int, transport: asyncio.DatagramTransport) -> None:
        self._transports[port] = transport

    # -- commands --------------------------------------------------------------------------------

    def initiate(self, peer: Address, phase2: Phase2Config) -> asyncio.Future[InitiateResult]:
        """Start a Quick Mode with ``peer`` (after Main Mode when no ISAKMP SA exists).

        The future resolves with the ``Phase2Established`` or ``NegotiationFailed`` that carries
        this request's id (never with an exception); the event is queued in ``events`` as well.
        """
        self._check_open()
        request_id = self.endpoint.initiate(peer=peer, phase2=phase2, now=self._loop.time())
        future: asyncio.Future[InitiateResult] = self._loop.create_future()
        self._pending[request_id] = future
        self._flush()
        return future

    def delete_phase2(self, peer: Address, spi_in: int, protocol: str = "esp") -> None:
        """Send a Delete for the IPsec SA pair whose inbound SPI is ``spi_in``."""
        self._check_open()
        self.endpoint.delete_phase2(peer, spi_in, protocol=protocol, now=self._loop.time())
        self._flush()

    def delete_phase1(self, peer: Address) -> None:
        """Send a Delete for the ISAKMP SA with ``peer``."""
        self._check_open()
        self.endpoint.delete_phase1(peer, now=self._loop.time())
        self._flush()

    def send_esp(self, data: bytes, addr: Address) -> None:
        """Send one ESP packet (SPI to ICV) as ESP-in-UDP from the NAT-T port (RFC 3948 §2.1)."""
        self._check_open()
        if len(data) < 8 or data[:4] == udp_encap.NON_ESP_MARKER:
            # RFC 3948 §2.2: SPI 0 would make the receiver read the packet as IKE.
            raise UsageError("not an ESP packet: shorter than SPI + sequence number, or SPI 0")
        self._transports[self.natt_port].sendto(data, addr)

    def send_keepalive(self, addr: Address) -> None:
        """Send a NAT-keepalive (the single byte 0xFF, RFC 3948 §2.3) from the NAT-T port."""
        self._check_open()
        self._transports[self.natt_port].sendto(udp_encap.keepalive(), addr)

    async def next_event(self) -> Event:
        """The next event of the endpoint (waits for one)."""
        return await self.events.get()

    def close(self) -> None:
        """Stop the timer, close both sockets and cancel the futures of pending initiations.

        Sends nothing: delete SAs first (``delete_phase2``/``delete_phase1``) to tell the peer.
        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        for transport in self._transports.values():
            transport.close()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    @property
    def is_closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> IkeService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- inputs ----------------------------------------------------------------------------------

    def _ike_received(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        self.endpoint.receive_datagram(data, addr, self._loop.time(), local_port=self.ike_port)
        self._flush()

    def _natt_received(self, data: bytes, addr: Address) -> None:
        if self._closed:
            return
        try:
            kind, message = udp_encap.decapsulate(data)
        except EspParseError:
            self.stats["natt_malformed"] += 1
            self._log.debug("natt_datagram_dropped", peer=addr, length=len(data))
            return
        if kind is udp_encap.PayloadKind.IKE:
            self.endpoint.receive_datagram(message, addr, self._loop.time(), local_port=self.natt_port)
            self._flush()
            return
        self.stats["natt_" + kind.value] += 1
        if self.esp_handler is None:
            self.stats["natt_unhandled"] += 1
            return
        self.esp_handler(data, addr)

    def _error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier sendto (e.g. port unreachable): the endpoint's retransmission
        # and give-up rules decide what happens to the exchange, so only count it.
        self.stats["socket_errors"] += 1
        self._log.debug("socket_error", error=str(exc))

    def _on_timer(self) -> None:
        at, self._timer, self._timer_at = self._timer_at, None, None
        if self._closed or at is None:
            return
        # uvloop's clock has millisecond steps and may run a timer while loop.time() is still just
        # below ``at``; the endpoint would then do nothing and ask for the same time again (a busy
        # loop until the clock ticks). The timer being due is the point, so ``now`` is at least ``at``.
        self.endpoint.handle_timer(max(self._loop.time(), at))
        self._flush()

    # -- outputs ---------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send queued datagrams and NAT-keepalives, pass on queued events, re-arm the single timer."""
        endpoint = self.endpoint
        now = self._loop.time()
        for data, addr, local_port in endpoint.datagrams_to_send(now):
            transport = self._transports.get(local_port)
            if transport is None:
                self.stats["unroutable"] += 1
                self._log.warning("datagram_for_unknown_port", local_port=local_port, peer=addr)
                continue
            if local_port == self.natt_port:
                data = udp_encap.encapsulate_ike(data)  # RFC 3948 §2.2: non-ESP marker
            transport.sendto(data, addr)
        for addr, local_port in endpoint.nat_keepalives(now):
            # RFC 3948 §2.3: the single octet 0xFF, no marker, from the port the IKE SA uses
            transport = self._transports.get(local_port)
            if transport is not None:
                transport.sendto(udp_encap.keepalive(), addr)
        while (event := endpoint.next_event()) is not None:
            self.events.put_nowait(event)
            request_id = getattr(event, "request_id", None)
            if request_id is not None and isinstance(event, (Phase2Established, NegotiationFailed)):
                future = self._pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(event)
        at = endpoint.get_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = None if at is None else self._loop.call_at(at, self._on_timer)

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("the IKE service is closed")


def _bind(sock: socket.socket | None, address: str, port: int) -> socket.socket:
    """``sock`` (made by the caller, e.g. inside a network namespace) or a new UDP socket, bound
    to (address, port) unless the caller bound it already."""
    if sock is None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if sock.getsockname()[1] == 0:  # not bound yet: a bound UDP socket always has a port
            sock.bind((address, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _default_factory(**kw: Any) -> Any:
    from ikeproto.endpoint import IkeEndpoint  # the exchange layer, imported when first needed

    return IkeEndpoint(**kw)


async def create_endpoint(
    config: ConfigProvider,
    local_address: str,
    *,
    ike_port: int = 500,
    natt_port: int = 4500,
    esp_handler: EspHandler | None = None,
    ike_sock: socket.socket | None = None,
    natt_sock: socket.socket | None = None,
    rng: Callable[[int], bytes] = os.urandom,
    logger: Any = None,
    loop: asyncio.AbstractEventLoop | None = None,
    endpoint_factory: Callable[..., Any] = _default_factory,
    **endpoint_options: Any,
) -> IkeService:
    """Bind the IKE and NAT-T ports on ``local_address`` and run an ``IkeEndpoint`` on them.

    ``ike_sock``/``natt_sock`` are sockets made by the caller (for example inside a network
    namespace); they are bound here unless already bound. Port 0 binds an ephemeral port: the
    endpoint is told the ports actually bound (``service.ike_port``/``natt_port``). Peers are
    assumed to use the same NAT-T port as we do (the endpoint's contract). ``esp_handler(data,
    addr)`` receives ESP packets and keep-alives from the NAT-T port; without one they are counted
    and dropped. ``endpoint_options`` go to the endpoint (``trace_secrets``, ``max_half_open``, ...);
    ``endpoint_factory`` replaces ``IkeEndpoint`` (tests, benchmarks).
    """
    loop = loop or asyncio.get_running_loop()
    log = logger if logger is not None else structlog.get_logger("ikeproto.aio")
    if ike_port == natt_port != 0 and ike_sock is None and natt_sock is None:
        raise UsageError("the IKE and NAT-T ports must differ")
    service: IkeService | None = None
    ike = _bind(ike_sock, local_address, ike_port)
    try:
        natt = _bind(natt_sock, local_address, natt_port)
    except BaseException:
        ike.close()
        raise
    unattached = [(ike, False), (natt, True)]
    try:
        bound_ike, bound_natt = ike.getsockname()[1], natt.getsockname()[1]
        if bound_ike == bound_natt:
            raise UsageError("the IKE and NAT-T ports must differ")
        endpoint = endpoint_factory(
            config=config, local_address=local_address, ike_port=bound_ike, natt_port=bound_natt,
            rng=rng, logger=logger, **endpoint_options,
        )
        service = IkeService(
            endpoint, loop=loop, ike_port=bound_ike, natt_port=bound_natt, esp_handler=esp_handler,
            logger=log,
        )
        while unattached:
            sock, is_natt = unattached[0]
            port = sock.getsockname()[1]
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _PortProtocol(service, is_natt=is_natt), sock=sock  # type: ignore[arg-type]
            )
            unattached.pop(0)  # the transport owns the socket now
            service._attach(port, transport)  # type: ignore[arg-type]
        return service
    except BaseException:
        if service is not None:
            service.close()
        for sock, _ in unattached:
            sock.close()
        raise
