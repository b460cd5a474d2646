"""The asyncio service over real loopback sockets (127.0.0.1 and 127.0.0.2, no root): embedded
datagram endpoints with asyncio's semantics, ping through the agents, the negotiating notice
in error_received, the one-minute block with a jumped clock, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from policyagent import builtin
from policyagent.agent import AgentConfig
from policyagent.aio import IpSecNegotiating, SkewedClock, start_agent
from tests.agent.helpers import partner_policy

ONE, TWO = "127.0.0.1", "127.0.0.2"


def free_ports() -> tuple[int, int]:
    """Two consecutive UDP ports free on both loopback addresses."""
    for _ in range(50):
        base = random.randrange(20000, 60000, 2)
        socks = []
        try:
            for host in (ONE, TWO):
                for port in (base, base + 1):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.bind((host, port))
            return base, base + 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def config(ports, **kw) -> AgentConfig:
    return AgentConfig(ike_port=ports[0], natt_port=ports[1], force_encapsulation=True,
                       kerberos_psk=b"kerberos-substitute", **kw)


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data.upper(), addr)


class Client(asyncio.DatagramProtocol):
    def __init__(self):
        self.received = asyncio.Queue()
        self.errors = []

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)


async def _two(policy_1, policy_2, **kw):
    ports = free_ports()
    one = await start_agent(policy=policy_1, address=ONE, config=config(ports, **kw))
    two = await start_agent(policy=policy_2, address=TWO, config=config(ports, **kw))
    return one, two


async def _udp_echo_through_agents():
    one, two = await _two(partner_policy(TWO, method=builtin.HIGH), partner_policy(ONE, method=builtin.HIGH))
    try:
        await one.create_datagram_endpoint(Echo, local_addr=(ONE, 7))
        transport, client = await two.create_datagram_endpoint(Client, remote_addr=(ONE, 7))
        transport.sendto(b"hello")
        assert isinstance(client.errors[0], IpSecNegotiating)
        data, addr = await asyncio.wait_for(client.received.get(), 5)
        assert data == b"HELLO" and addr == (ONE, 7)
        assert transport.get_extra_info("sockname")[0] == TWO
        transport.sendto(b"again")
        data, _ = await asyncio.wait_for(client.received.get(), 5)
        assert data == b"AGAIN"
        snap = two.monitor()
        assert snap["statistics"]["quick_modes"] == 1 and snap["security_associations"][0]["security"].startswith("ESP")
        assert snap["statistics"]["confidential_bytes_sent"] > 0
    finally:
        one.close()
        two.close()


def test_udp_echo_through_two_agents_asyncio():
    asyncio.run(_udp_echo_through_agents())


def test_udp_echo_through_two_agents_uvloop():
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(_udp_echo_through_agents())


async def _ping_secure_server_from_client():
    one, two = await _two(builtin.SECURE_SERVER, builtin.CLIENT)
    try:
        results = [r async for r in two.ping(ONE, count=4, interval=0.05, timeout=2.0)]
        statuses = [r.status for r in results]
        assert statuses[0] in ("negotiating", "reply") and statuses[-1] == "reply"
        assert all(r.is_protected for r in results[1:] if r.status == "reply")
        assert "negotiating" in statuses or one.agent.stats.acquires == 1
    finally:
        one.close()
        two.close()


def test_ping_secure_server_from_client():
    asyncio.run(_ping_secure_server_from_client())


async def _partner_ping_negotiates_then_replies():
    one, two = await _two(partner_policy(TWO, method=builtin.HIGH), partner_policy(ONE, method=builtin.HIGH))
    try:
        results = [r async for r in two.ping(ONE, count=4, interval=0.05, timeout=2.0)]
        assert results[0].status == "negotiating"
        assert [r.status for r in results[1:]] == ["reply"] * 3
    finally:
        one.close()
        two.close()


def test_partner_ping_negotiates_then_replies():
    asyncio.run(_partner_ping_negotiates_then_replies())


async def _wrong_key_blocked_for_a_minute():
    loop = asyncio.get_running_loop()
    ports = free_ports()
    clock = SkewedClock(loop, speed=20)  # main mode retries take ~24 s: run them 20x faster
    one = await start_agent(policy=partner_policy(TWO, method=builtin.HIGH), address=ONE, config=config(ports), clock=clock)
    two = await start_agent(policy=partner_policy(ONE, key="WRONG", method=builtin.HIGH), address=TWO, config=config(ports), clock=clock)
    try:
        first = [r async for r in two.ping(ONE, count=1, timeout=3.0)]
        assert first[0].status in ("negotiating", "blocked")
        for _ in range(100):
            if two.agent.stats.negotiation_failures:
                break
            await asyncio.sleep(0.05)
        [r] = [r async for r in two.ping(ONE, count=1, timeout=0.5)]
        assert r.status == "blocked"
        clock.skip(61)  # a minute later (without waiting for it): the next echo negotiates again
        two.kick()
        [r] = [r async for r in two.ping(ONE, count=1, timeout=0.5)]
        assert r.status == "negotiating" and two.agent.stats.acquires == 2
    finally:
        one.close()
        two.close()


def test_wrong_key_blocked_for_a_minute_with_a_jumped_clock():
    asyncio.run(_wrong_key_blocked_for_a_minute())


async def _endpoint_semantics():
    one, two = await _two(None, None)
    try:
        t1, _ = await one.create_datagram_endpoint(Client, local_addr=(ONE, 9))
        with pytest.raises(OSError):
            await one.create_datagram_endpoint(Client, local_addr=(ONE, 9))
        with pytest.raises(OSError):
            await one.create_datagram_endpoint(Client, local_addr=("10.9.9.9", 9))
        t2, c2 = await two.create_datagram_endpoint(Client, local_addr=(TWO, 0))
        t2.sendto(b"clear", (ONE, 9))
        t1.close()
        assert t1.is_closing()
        with pytest.raises(OSError):
            t1.sendto(b"x", (TWO, 1))
    finally:
        one.close()
        two.close()


def test_endpoint_semantics():
    asyncio.run(_endpoint_semantics())
