"""IKEv1 negotiations per second: Main Mode (PSK) + Quick Mode between two of our endpoints.

Per Diffie-Hellman group (14 = MODP2048, 19 = ECP P-256), one negotiation at a time:

- ``dh floor``: the bare DH work of one setup (each side generates a key pair and computes g^xy,
  through ``ikeproto.dh`` exactly as the endpoint does) — the ceiling nothing can beat;
- ``MM+QM in-process``: two fresh ``IkeEndpoint`` objects, datagrams handed over in memory,
  until both sides report ``Phase2Established`` (9 messages: MM 1-6, QM 1-3), with the IKE debug
  trace off (its default in production); ``MM+QM, trace on``: the same with the trace on and a
  logger that drops every line (what building the trace costs);
- ``MM+QM over UDP``: the same through the asyncio adapter (uvloop when installed) between
  127.0.0.1 and 127.0.0.2 over loopback sockets;
- ``QM only``: another Quick Mode on the established ISAKMP SA (no DH without PFS).

The ratio column is each row's rate over the DH floor's. For comparison (shared lab README):
strongSwan 5.9.8 does 78-99 full IKEv1 setups per second against itself on this kind of machine
(MODP2048, one at a time, including SA installation), and about 680 Quick Modes per second.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog  # noqa: E402
from _harness import Row, measure_interleaved, parser, report  # noqa: E402

from ikeproto import dh  # noqa: E402
from ikeproto.config import TrafficSelector  # noqa: E402
from ikeproto.events import NegotiationFailed, Phase2Established  # noqa: E402
from ikeproto.tool import StaticConfig  # noqa: E402

A, B = "127.0.0.1", "127.0.0.2"
GROUPS = {14: "aes128-sha1-modp2048", 19: "aes128-sha1-ecp256"}
PSK = b"benchmark-psk"


def _quiet_logger():
    """A structlog logger that drops everything (the IKE trace is off in production too)."""
    return structlog.wrap_logger(structlog.PrintLogger(io.StringIO()),
                                 wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def _configs(ike: str) -> tuple[StaticConfig, StaticConfig]:
    def one(local: str, remote: str) -> StaticConfig:
        return StaticConfig.build(psk=PSK, ike=[ike], esp=["aes128-sha1"], local_ts=[f"{local}/32"],
                                  remote_ts=[f"{remote}/32"], mode="tunnel")

    return one(A, B), one(B, A)


def _endpoint(config: StaticConfig, local: str, *, trace: bool = False):
    from ikeproto.endpoint import IkeEndpoint

    return IkeEndpoint(config=config, local_address=local, ike_port=500, natt_port=4500, rng=os.urandom,
                       logger=_quiet_logger(), trace=trace)


def _pump(a, b, now: float) -> int:
    """Hand datagrams between endpoints ``a`` (at A) and ``b`` (at B) until both are quiet."""
    moved = total = 1
    while moved:
        moved = 0
        for src, src_addr, dst in ((a, A, b), (b, B, a)):
            for data, addr, local_port in src.datagrams_to_send(now):
                dst.receive_datagram(data, (src_addr, local_port), now, local_port=addr[1])
                moved += 1
        total += moved
    return total - 1


def _drain(ep) -> list:
    events = []
    while (e := ep.next_event()) is not None:
        events.append(e)
    return events


class InProcess:
    """Full and Quick-Mode-only negotiations between two in-memory endpoints."""

    def __init__(self, ike: str, *, trace: bool = False) -> None:
        self.conf_a, self.conf_b = _configs(ike)
        self.phase2 = self.conf_a.phase2(TrafficSelector.host(A), TrafficSelector.host(B))
        self.trace = trace
        self.now = 1000.0
        self.a = self.b = None

    def full(self) -> None:
        self.now += 0.001
        a, b = _endpoint(self.conf_a, A, trace=self.trace), _endpoint(self.conf_b, B, trace=self.trace)
        rid = a.initiate(peer=(B, 500), phase2=self.phase2, now=self.now)
        _pump(a, b, self.now)
        self._check(a, b, rid)
        self.a, self.b = a, b

    def quick(self) -> None:
        self.now += 0.001
        rid = self.a.initiate(peer=(B, 500), phase2=self.phase2, now=self.now)
        _pump(self.a, self.b, self.now)
        self._check(self.a, self.b, rid)

    @staticmethod
    def _check(a, b, rid: int) -> None:
        mine = [e for e in _drain(a) if isinstance(e, (Phase2Established, NegotiationFailed))]
        theirs = [e for e in _drain(b) if isinstance(e, Phase2Established)]
        if not (len(mine) == 1 and isinstance(mine[0], Phase2Established) and mine[0].request_id == rid
                and len(theirs) == 1 and theirs[0].sas[0].spi_in == mine[0].sas[0].spi_out):
            raise SystemExit(f"negotiation did not complete: {mine!r} / {theirs!r}")


class OverUdp:
    """Full negotiations through ``ikeproto.aio`` over loopback: each one on a new ISAKMP SA."""

    def __init__(self, ike: str) -> None:
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            self.loop = asyncio.new_event_loop()
        self.conf_a, self.conf_b = _configs(ike)
        self.phase2 = self.conf_a.phase2(TrafficSelector.host(A), TrafficSelector.host(B))
        self.a, self.b = self.loop.run_until_complete(self._start())

    async def _start(self):
        from ikeproto.aio import create_endpoint

        for _ in range(20):  # both sides need the same NAT-T port: find one free on A and B
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind((A, 0))
            natt = probe.getsockname()[1]
            probe.close()
            try:
                a = await create_endpoint(self.conf_a, A, ike_port=0, natt_port=natt, logger=_quiet_logger(),
                                          trace=False)
            except OSError:
                continue
            try:
                b = await create_endpoint(self.conf_b, B, ike_port=0, natt_port=natt, logger=_quiet_logger(),
                                          trace=False)
            except OSError:
                a.close()
                continue
            return a, b
        raise SystemExit("no free NAT-T port pair on 127.0.0.1/127.0.0.2")

    async def _one(self) -> None:
        event = await self.a.initiate((B, self.b.ike_port), self.phase2)
        if not isinstance(event, Phase2Established):
            raise SystemExit(f"negotiation over UDP failed: {event!r}")
        self.a.delete_phase1((B, self.b.ike_port))  # the next one runs Main Mode again
        for svc in (self.a, self.b):
            while not svc.events.empty():
                svc.events.get_nowait()

    def full(self) -> None:
        self.loop.run_until_complete(self._one())

    def close(self) -> None:
        self.a.close()
        self.b.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


def _dh_floor(number: int):
    group = dh.group(number)

    def setup_dh() -> None:
        x, y = group.generate(), group.generate()
        if x.compute(y.public_value) != y.compute(x.public_value):
            raise SystemExit("DH mismatch")

    return setup_dh


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    seconds = 0.01 if args.smoke else args.seconds
    rounds = 1 if args.smoke else 3
    plan: list[tuple[str, str, object, str | None]] = []  # (case, what, fn, ceiling)
    closers = []
    for number, ike in GROUPS.items():
        case = f"group {number} ({ike.rsplit('-', 1)[1]})"
        bench, udp = InProcess(ike), OverUdp(ike)
        closers.append(udp.close)
        plan += [
            (case, "dh floor", _dh_floor(number), None),
            (case, "MM+QM in-process", bench.full, "dh floor"),
            (case, "MM+QM, trace on", InProcess(ike, trace=True).full, "dh floor"),
            (case, "MM+QM over UDP (aio)", udp.full, "dh floor"),
            (case, "QM only", bench.quick, "dh floor"),  # after bench.full: its ISAKMP SA exists
        ]
    try:
        best = measure_interleaved([((case, what), fn, 1.0) for case, what, fn, _c in plan],
                                   seconds=seconds, rounds=rounds)
    finally:
        for close in closers:
            close()
    rows = [Row(case, what, *best[(case, what)], ceiling=ceiling) for case, what, _fn, ceiling in plan]
    print(report(rows, as_json=args.json))


if __name__ == "__main__":
    main()
