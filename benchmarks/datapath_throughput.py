"""Application datagrams per second (and MB/s) through two policy agents over loopback.

Two agents in this process, HQ-RES-WRK-01 (127.0.0.1) and -02 (127.0.0.2), assign the Partner
policy with ESP AES-GCM-128 and negotiate for real (IKE on loopback); then an embedded UDP
endpoint on 02 sends 1400-byte datagrams to a sink on 01: each one becomes an IP/UDP packet,
is matched against the policy, protected with ESP, carried in UDP (RFC 3948) over a real socket,
unprotected by SPI, checked against its SA's selectors and delivered to the sink.

The ceiling, in the same run: plain UDP between two sockets on the same two addresses, same
payloads, same flow control (a window of datagrams in flight, so neither side drops). Both are
measured on the standard asyncio event loop and on uvloop. Ratios = agents / plain UDP.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Row, parser, report  # noqa: E402

from policyagent import builtin  # noqa: E402
from policyagent.agent import AgentConfig  # noqa: E402
from policyagent.aio import start_agent  # noqa: E402
from policyagent.model import (ActionKind, Address, AuthMethod, Filter, FilterAction, FilterList,  # noqa: E402
                               Policy, Rule, SecurityMethod)

ONE, TWO = "127.0.0.1", "127.0.0.2"
SIZE = 1400
WINDOW = 64
GCM128 = SecurityMethod(esp_cipher="aes-gcm", esp_key_bits=128, lifetime_s=3600, lifetime_kb=100_000_000)


def _policy(peer: str) -> Policy:
    fl = FilterList(name="Partner Filter", filters=(Filter(source=Address.me(), destination=Address.host(peer)),))
    fa = FilterAction(name="GCM", kind=ActionKind.NEGOTIATE, security_methods=(GCM128,))
    return Policy(name="Partner", key_exchange=builtin.DEFAULT_KEY_EXCHANGE, filter_lists=(fl,), filter_actions=(fa,),
                  rules=(Rule(name="Partner", filter_list=fl.name, filter_action=fa.name,
                              authentication=(AuthMethod.preshared_key("ABC123"),)),))


def _free_ports() -> tuple[int, int, int]:
    for _ in range(100):
        base = random.randrange(20000, 60000, 4)
        socks = []
        try:
            for host in (ONE, TWO):
                for port in range(base, base + 4):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.bind((host, port))
            return base, base + 1, base + 2
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError("no free ports")


class _Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.n = 0

    def datagram_received(self, data: bytes, addr) -> None:
        self.n += 1


async def _pump(send, sink: _Sink, seconds: float) -> tuple[int, float]:
    """Send for ``seconds`` with at most WINDOW datagrams in flight; (delivered, elapsed)."""
    loop = asyncio.get_running_loop()
    base = sink.n
    sent = 0
    lost = 0
    t0 = loop.time()
    stall_since = None
    while loop.time() - t0 < seconds:
        while sent - (sink.n - base) - lost < WINDOW:
            send()
            sent += 1
        before = sink.n
        await asyncio.sleep(0)
        if sink.n == before:
            stall_since = stall_since or loop.time()
            if loop.time() - stall_since > 0.5:  # a datagram was lost: do not wait for it
                lost = sent - (sink.n - base)
                stall_since = None
        else:
            stall_since = None
    deadline = loop.time() + 1.0
    while sink.n - base < sent - lost and loop.time() < deadline:
        await asyncio.sleep(0)
    return sink.n - base, loop.time() - t0


async def _plain(seconds: float, port: int) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    payload = os.urandom(SIZE)
    sink = _Sink()
    recv_t, _ = await loop.create_datagram_endpoint(lambda: sink, local_addr=(ONE, port))
    send_t, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(TWO, port),
                                                     remote_addr=(ONE, port))
    try:
        await _pump(lambda: send_t.sendto(payload), sink, min(seconds, 0.05))  # warm-up
        return await _pump(lambda: send_t.sendto(payload), sink, seconds)
    finally:
        send_t.close()
        recv_t.close()


async def _agents(seconds: float, ike_port: int, natt_port: int) -> tuple[int, float]:
    config = AgentConfig(ike_port=ike_port, natt_port=natt_port, force_encapsulation=True)
    one = await start_agent(policy=_policy(TWO), address=ONE, config=config)
    two = await start_agent(policy=_policy(ONE), address=TWO, config=config)
    try:
        sink = _Sink()
        await one.create_datagram_endpoint(lambda: sink, local_addr=(ONE, 9))
        transport, _ = await two.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=(ONE, 9))
        payload = os.urandom(SIZE)
        transport.sendto(payload)  # the first datagram negotiates
        for _ in range(500):
            if sink.n:
                break
            await asyncio.sleep(0.01)
        if not sink.n:
            raise RuntimeError("the agents did not negotiate")
        [pair] = list(two.agent.sad)
        assert pair.esp_only is not None and pair.esp_only.cipher_name.startswith("aes-gcm")
        await _pump(lambda: transport.sendto(payload), sink, min(seconds, 0.05))  # warm-up
        return await _pump(lambda: transport.sendto(payload), sink, seconds)
    finally:
        await one.aclose()
        await two.aclose()


async def _measure(case: str, seconds: float) -> list[Row]:
    ike_port, natt_port, plain_port = _free_ports()
    n, t = await _plain(seconds, plain_port)
    rows = [Row(case, "plain UDP", n, t, SIZE)]
    n, t = await _agents(seconds, ike_port, natt_port)
    rows.append(Row(case, "agents ESP GCM-128", n, t, SIZE, ceiling="plain UDP"))
    return rows


def main() -> int:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    seconds = 0.05 if args.smoke else max(args.seconds, 0.05) * 2
    rows = asyncio.run(_measure("asyncio", seconds))
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        rows += uvloop.run(_measure("uvloop", seconds))
    print(report(rows, as_json=args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
