"""``policyagent demo``: the seed's walkthrough, replayed end to end on this machine.

Two hosts on loopback (HQ-RES-WRK-01 = 127.0.0.1, HQ-RES-WRK-02 = 127.0.0.2), each a real
policy agent with its own IKE endpoint and sockets, in this one process, no root, no setup:

- Part 1 (Using a Built-in IPSec Policy): Secure Server on 01, Client on 02; ping 01 from 02
  shows *Negotiating IP Security.*, then replies; the IP Security Monitor and event 541.
  By default a pre-shared key stands in for Kerberos (fast, nothing to install), and the demo
  says so; with ``--kerberos`` (needs the MIT KDC programs and the ``gssapi`` package) it starts
  a throwaway KDC for RESKIT.COM with host principals and keytabs for both computers, and
  main mode authenticates with real Kerberos (event 541: "Kerberos based Identity: ...").
- Part 2 (Building / Testing a Custom IPSec Policy): "Partner" on both (pre-shared key
  ABC123, Medium = AH); ping, monitor, 541.
- Part 3 (when it does not work): Client/Client protects nothing; a wrong key fails and blocks
  the traffic for one minute (shown with a sped-up clock); the Server policy falls back to clear
  text (a soft SA) against a computer that does not answer IKE.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from ikeproto import krb5
from ikeproto.krb5 import KerberosCredentials
from policyagent import audit, builtin, monitor
from policyagent.agent import AgentConfig
from policyagent.aio import AgentService, IpSecBlocked, IpSecNegotiating, SkewedClock, start_agent
from policyagent.commands.ping import format_result
from policyagent.kdc import KdcError, ThrowawayKdc, missing_programs
from policyagent.model import (ActionKind, Address, AuthMethod, Filter, FilterAction, FilterList, Policy,
                               Rule, SecurityMethod)

HOSTS = {"127.0.0.1": "HQ-RES-WRK-01", "127.0.0.2": "HQ-RES-WRK-02", "127.0.0.3": "HQ-RES-SRV-03"}
FQDNS = {"127.0.0.1": "hq-res-wrk-01.reskit.com", "127.0.0.2": "hq-res-wrk-02.reskit.com"}
ONE, TWO, THREE = "127.0.0.1", "127.0.0.2", "127.0.0.3"
KERBEROS_STAND_IN = b"demo-kerberos-stand-in"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="replay the Step-by-Step Guide walkthrough on loopback (no root)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--speed", type=float, default=30.0,
                   help="clock speed-up for the failure cases (default 30: the one-minute block in 2 s)")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between echo requests (default 0.25)")
    p.add_argument("--kerberos", action="store_true",
                   help="authenticate Part 1 with real Kerberos against a throwaway KDC for RESKIT.COM "
                        "(needs apt packages krb5-kdc krb5-admin-server and pip install '.[kerberos]')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    kdc = None
    saved = dict(os.environ)
    try:
        if args.kerberos:
            usable, why = kerberos_status()
            if not usable:
                print(f"policyagent demo: --kerberos: {why}", file=sys.stderr)
                return 1
            kdc = _start_kdc()
        asyncio.run(_demo(args, kdc))
    except (OSError, KdcError) as exc:
        print(f"policyagent demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if kdc is not None:
            kdc.stop()
            shutil.rmtree(kdc.directory, ignore_errors=True)
            os.environ.clear()
            os.environ.update(saved)
    print(f"\nThe walkthrough took {time.monotonic() - started:.1f} s.")
    return 0


def _start_kdc() -> ThrowawayKdc:
    """A throwaway KDC for RESKIT.COM with host principals and keytabs for 01 and 02, and this
    process pointed at it (before the first Kerberos call: libkrb5 reads the environment)."""
    kdc = ThrowawayKdc(Path(tempfile.mkdtemp(prefix="policyagent-kdc-")), hosts=tuple(FQDNS.values()))
    try:
        kdc.start()
    except BaseException:
        shutil.rmtree(kdc.directory, ignore_errors=True)
        raise
    os.environ.update(kdc.environ())
    return kdc


# --- helpers -----------------------------------------------------------------------------------------


def _say(text: str = "") -> None:
    print(text, flush=True)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _free_ports() -> tuple[int, int]:
    for _ in range(100):
        base = random.randrange(20000, 60000, 2)
        socks = []
        try:
            for host in (ONE, TWO, THREE):
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
    raise OSError("no two free UDP ports on 127.0.0.1-3")


def partner_policy(peer: str, key: str, method: SecurityMethod) -> Policy:
    """The seed's custom policy: no default response rule; a rule with the Partner Filter (me <->
    partner, mirrored), Partner Filter Action (Negotiate Security, do not communicate with
    computers that do not support IPsec, one method) and a pre-shared key."""
    fl = FilterList(name="Partner Filter", filters=(Filter(source=Address.me(), destination=Address.host(peer)),))
    fa = FilterAction(name="Partner Filter Action", kind=ActionKind.NEGOTIATE, security_methods=(method,))
    rule = Rule(name="Partner", filter_list=fl.name, filter_action=fa.name,
                authentication=(AuthMethod.preshared_key(key),))
    return Policy(name="Partner", key_exchange=builtin.DEFAULT_KEY_EXCHANGE, rules=(rule,),
                  filter_lists=(fl,), filter_actions=(fa,))


def kerberos_status() -> tuple[bool, str]:
    """Whether ``--kerberos`` can run here (the MIT KDC programs and the gssapi package), and
    what is missing when it cannot."""
    missing = []
    programs = missing_programs()
    if programs:
        missing.append(f"the MIT KDC programs ({', '.join(sorted(programs))}: apt-get install "
                       f"{' '.join(sorted(set(programs.values())))})")
    if not krb5.is_available():
        missing.append("the gssapi package (pip install '.[kerberos]')")
    if missing:
        return False, "real Kerberos needs " + " and ".join(missing)
    return True, "the KDC programs and the gssapi package are installed"


def _ah_supported() -> bool:
    """Whether IKE can agree on AH where the demo fakes a NAT (ESP in UDP without root)."""
    from ikeproto.config import Phase1Config

    return "allow_ah_with_nat" in getattr(Phase1Config, "__dataclass_fields__", {})


class _Demo:
    def __init__(self, args: argparse.Namespace, kdc: ThrowawayKdc | None = None) -> None:
        self.args = args
        self.kdc = kdc
        self.ports = _free_ports()
        self.services: list[AgentService] = []

    def credentials(self, address: str) -> KerberosCredentials | None:
        """The computer's ``host/<fqdn>@RESKIT.COM`` keytab when the demo runs its own KDC."""
        if self.kdc is None or address not in FQDNS:
            return None
        fqdn = FQDNS[address]
        return KerberosCredentials(keytab=self.kdc.keytab(fqdn), principal=self.kdc.principal(fqdn))

    async def host(self, address: str, policy: Policy | None, *, clock: SkewedClock | None = None,
                   ike: bool = True) -> AgentService:
        config = AgentConfig(ike_port=self.ports[0], natt_port=self.ports[1], force_encapsulation=True,
                             kerberos_psk=KERBEROS_STAND_IN, kerberos=self.credentials(address))
        service = await start_agent(policy=policy, address=address, config=config, clock=clock, ike=ike)
        self.services.append(service)
        label = f"'{policy.name}'" if policy else "no IPsec policy" if ike else "no IPsec at all (does not speak IKE)"
        _say(f"  [{HOSTS[address]}] {label}")
        return service

    async def close(self) -> None:
        for s in self.services:
            await s.aclose()
        self.services.clear()

    async def ping(self, service: AgentService, target: str, *, count: int = 4) -> list[str]:
        _say(f"\n  {HOSTS[service.agent.address]}> ping {target}")
        _say(f"    Pinging {target} with 32 bytes of data:")
        statuses = []
        async for r in service.ping(target, count=count, interval=self.args.interval, timeout=1.0):
            line = {"status": r.status, "host": r.host, "size": r.size, "rtt_ms": r.rtt_ms,
                    "protected": r.is_protected, "reason": r.reason}
            _say("    " + format_result(line))
            statuses.append(r.status)
        return statuses

    def show_monitor(self, service: AgentService) -> None:
        _say(f"\n  IP Security Monitor on {HOSTS[service.agent.address]}:")
        _say(_indent(monitor.render(service.monitor()), "    | "))

    def show_event(self, service: AgentService, event_id: int, *, quick_mode: bool = True, soft: bool = False,
                   title: str | None = None) -> None:
        events = [e for e in service.agent.audit.query(event_id=event_id)
                  if getattr(e, "soft", False) == soft and (not quick_mode or getattr(e, "mode", "").startswith("Data"))]
        if not events:
            _say(f"    (no event {event_id})")
            return
        _say(f"\n  {title or f'Security log on {HOSTS[service.agent.address]}: event {event_id}'}:")
        _say(_indent(audit.render(events[-1].to_dict()), "    | "))


async def _settle(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)


# --- the walkthrough ---------------------------------------------------------------------------------


async def _demo(args: argparse.Namespace, kdc: ThrowawayKdc | None = None) -> None:
    demo = _Demo(args, kdc)
    ike_port, natt_port = demo.ports
    _say("Step-by-Step Guide to Internet Protocol Security (IPSec) -- replayed on this machine")
    _say("=" * 84)
    _say(f"HQ-RES-WRK-01 is {ONE} and HQ-RES-WRK-02 is {TWO}: two policy agents in this process,")
    _say(f"each with its own IKE endpoint (UDP {ike_port}) and secured data path (ESP in UDP on {natt_port},")
    _say("RFC 3948, so no root is needed). Pings go through the agents, as ICMP echo in IP packets.")
    if kdc is not None:
        _say(f"Kerberos: a throwaway KDC for realm {kdc.realm} runs on 127.0.0.1:{kdc.port}; each computer")
        _say(f"has its host principal ({kdc.principal(FQDNS[ONE])}, ...) in its own keytab, and the")
        _say("built-in policies authenticate main mode with real Kerberos (GSS-API).")
    else:
        usable, why = kerberos_status()
        hint = ("run 'policyagent demo --kerberos' for a throwaway KDC" if usable
                else f"{why}, then run 'policyagent demo --kerberos'")
        _say(f"Kerberos: no KDC is used by default ({hint}).")
        _say("The built-in policies authenticate with Kerberos, so this demo substitutes a pre-shared")
        _say("key for Kerberos on both hosts.")
    try:
        await _part1(demo)
        await _part2(demo)
        await _part3(demo)
    finally:
        await demo.close()


async def _part1(demo: _Demo) -> None:
    _say("\nPart 1. Using a built-in IPSec policy")
    _say("-" * 84)
    _say("  Assign Secure Server on HQ-RES-WRK-01 and Client on HQ-RES-WRK-02:")
    await demo.host(ONE, builtin.SECURE_SERVER)
    client = await demo.host(TWO, builtin.CLIENT)
    _say("  The client sends its first echo in clear; the server accepts it but must secure its reply,")
    _say("  so it requests security and the client responds (default response rule):")
    await demo.ping(client, ONE)
    _say("\n  Repeat the ping: the two computers now have IPsec SAs between them.")
    await demo.ping(client, ONE)
    demo.show_monitor(client)
    demo.show_event(client, 541, title="Security log on HQ-RES-WRK-02, top Success Audit (event 541)")
    await demo.close()


async def _part2(demo: _Demo) -> None:
    _say("\nPart 2. Building and testing a custom IPSec policy: Partner")
    _say("-" * 84)
    if _ah_supported():
        method, what = builtin.MEDIUM, "Medium (AH: integrity only, readable by a sniffer)"
    else:
        method = builtin.HIGH
        what = ("High (ESP). The seed picks Medium (AH), but this IKE build cannot yet agree on AH\n"
                "  where the demo fakes a NAT to carry IPsec in UDP; it will once the endpoint allows it")
    _say("  On both computers: policy Partner, no default response rule; one rule with the")
    _say("  mirrored Partner Filter (my address <-> the partner), Negotiate Security with")
    _say(f"  {what};")
    _say("  pre-shared key ABC123.")
    await demo.host(ONE, partner_policy(TWO, "ABC123", method))
    two = await demo.host(TWO, partner_policy(ONE, "ABC123", method))
    await demo.ping(two, ONE)
    await demo.ping(two, ONE)
    demo.show_monitor(two)
    demo.show_event(two, 541, title="Security log on HQ-RES-WRK-02: event 541")
    await demo.close()


async def _part3(demo: _Demo) -> None:
    args = demo.args
    _say("\nPart 3. When it does not work")
    _say("-" * 84)
    _say("  a) Client on both computers: neither side requests security, nothing is protected.")
    await demo.host(ONE, builtin.CLIENT)
    two = await demo.host(TWO, builtin.CLIENT)
    await demo.ping(two, ONE, count=2)
    snap = two.monitor()
    _say(f"    Monitor: {len(snap['security_associations'])} security associations, "
         f"{snap['statistics']['quick_modes']} quick modes.")
    await demo.close()

    loop = asyncio.get_running_loop()
    clock = SkewedClock(loop, speed=args.speed)
    _say(f"\n  b) A wrong pre-shared key on HQ-RES-WRK-02 (clock running {args.speed:g}x faster from here).")
    method = builtin.MEDIUM if _ah_supported() else builtin.HIGH
    await demo.host(ONE, partner_policy(TWO, "ABC123", method), clock=clock)
    two = await demo.host(TWO, partner_policy(ONE, "ABC124", method), clock=clock)
    await demo.ping(two, ONE, count=1)
    for _ in range(400):
        if two.agent.stats.negotiation_failures:
            break
        await asyncio.sleep(0.02)
    demo.show_event(two, 547, quick_mode=False, title="Security log on HQ-RES-WRK-02: Failure Audit (event 547)")
    _say("\n  The partner answered but the negotiation failed: the traffic is blocked for one minute.")
    await demo.ping(two, ONE, count=2)
    clock.skip(61)
    two.kick()
    _say("\n  One minute later (the clock jumps 61 s) the next packet negotiates again, and fails again:")
    await demo.ping(two, ONE, count=1)
    for _ in range(400):
        if two.agent.stats.negotiation_failures >= 2:
            break
        await asyncio.sleep(0.02)
    _say("\n  With the key corrected on HQ-RES-WRK-02 (assigning the policy again clears the block):")
    two.assign_policy(partner_policy(ONE, "ABC123", method))
    await demo.ping(two, ONE, count=3)
    await demo.close()

    clock = SkewedClock(loop, speed=3.0)
    _say(f"\n  c) Server (Request Security) on HQ-RES-WRK-01 talking to HQ-RES-SRV-03 ({THREE}), a computer")
    _say("     without IPsec that does not answer IKE (clock 3x faster). UDP to its echo service:")
    server = await demo.host(ONE, builtin.SERVER, clock=clock)
    plain = await demo.host(THREE, None, clock=clock, ike=False)
    await _udp_echo_exchange(server, plain)
    demo.show_monitor(server)
    demo.show_event(server, 541, soft=True, title="Security log on HQ-RES-WRK-01: soft association")
    _say("\n  (The Server policy permits ICMP, so a ping would not even ask for security; Secure Server")
    _say("   never falls back: its failure audit would read \"No response from peer\".)")
    await demo.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data, addr):
        self.replies.put_nowait(data)

    def error_received(self, exc):
        if isinstance(exc, (IpSecNegotiating, IpSecBlocked)):
            _say(f"    error_received: {exc}")


async def _udp_echo_exchange(server: AgentService, plain: AgentService) -> None:
    await plain.create_datagram_endpoint(_UdpEcho, local_addr=(THREE, 7))
    transport, client = await server.create_datagram_endpoint(_UdpClient, remote_addr=(THREE, 7))
    _say(f"\n  HQ-RES-WRK-01> send 'hello' to {THREE} UDP port 7")
    transport.sendto(b"hello")
    t0 = asyncio.get_running_loop().time()
    try:
        data = await asyncio.wait_for(client.replies.get(), 10)
        waited = (asyncio.get_running_loop().time() - t0) * 3.0
        _say(f"    reply {data!r} after {waited:.1f} s of agent time: IKE got no answer within 3 s, a soft SA")
        _say("    lets the traffic go in clear.")
    except asyncio.TimeoutError:
        _say("    no reply")
    transport.sendto(b"again")
    data = await asyncio.wait_for(client.replies.get(), 5)
    _say(f"    next datagram: reply {data!r} at once (the soft SA is in place)")
    transport.close()
