"""Our IKEv1 endpoint against strongSwan's charon, both ways, in the lab's network namespaces.

Our side runs in the test process on the asyncio adapter, with its UDP 500/4500 sockets opened
inside ``ns[0]`` (192.0.2.1, inner 192.0.2.101); charon runs in ``ns[1]`` (192.0.2.2, inner
192.0.2.102) with kernel-libipsec, which fakes a NAT so that both sides float to port 4500
(RFC 3947 §4) and carry ESP in UDP (RFC 3948). For each direction (we initiate / charon initiates)
and each Main Mode suite (3DES/SHA-1/MODP1024 and AES-128/SHA-1/MODP2048, PSK, RFC 2409 §5.4):

- Quick Mode (RFC 2409 §5.5) for the inner /32s ("net") and host-to-host ("host"), tunnel mode,
  UDP-encapsulated, over one ISAKMP SA; both sides list the same cookies and crossed SPIs;
- ``ping`` from charon's namespace through each tunnel is answered by our ESP echo responder on
  espcore SAs, and our echo requests through each tunnel are answered by charon's kernel;
- a Delete (RFC 2408 §3.15) from us removes the SA at charon and one from charon removes it here;
  finally the ISAKMP SA goes too.

Then lifetimes: our ISAKMP SA expiring under a live tunnel (kept until its IPsec SAs are gone, and
a later Delete goes on the newest ISAKMP SA, where charon has moved its CHILD_SA), and charon
re-authenticating (new Main Mode with INITIAL_CONTACT, CHILD_SAs adopted: ours must stay too).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from ikeproto.aio import IkeService, create_endpoint
from ikeproto.config import TrafficSelector
from ikeproto.events import (Event, NegotiationFailed, Phase1Deleted, Phase1Established, Phase2Deleted,
                             Phase2Established)
from ikeproto.tool import StaticConfig
from tests.interop.esp_echo import EspEcho
from tests.interop.ikescan import netns_socket
from tests.interop.strongswan import LAB_PSK, Charon, ChildSa, IkeSa, SwanctlConfig

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

pytestmark = [pytest.mark.interop, pytest.mark.root]

# Main Mode proposal (both sides) -> (ESP proposal, both sides; what charon lists: encr-alg,
# encr-keysize, dh-group)
SUITES = {
    "3des-sha1-modp1024": ("3des-sha1", "3DES_CBC", None, "MODP_1024"),
    "aes128-sha1-modp2048": ("aes128-sha1", "AES_CBC", "128", "MODP_2048"),
}
STEP_S = 10.0  # bound on every single wait (a whole test takes about 1.5 s)


class Side:
    """Our endpoint in ns[0]: the service, the ESP echo responder, and every event seen."""

    def __init__(self, service: IkeService, echo: EspEcho, local: str) -> None:
        self.service, self.echo, self.local = service, echo, local
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            event = await self.service.next_event()
            self.events.append(event)
            if isinstance(event, Phase2Established):
                self.echo.install(event, local=self.local)
            elif isinstance(event, Phase2Deleted):
                for spi in event.spis:
                    self.echo.remove(spi)
            self._changed.set()

    async def wait(self, predicate: Callable[[Event], bool], what: str) -> Any:
        """The first event (seen so far or coming) that satisfies ``predicate``."""
        deadline = asyncio.get_running_loop().time() + STEP_S
        while True:
            found = next((e for e in self.events if predicate(e)), None)
            if found is not None:
                return found
            self._changed.clear()
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._changed.wait(), max(left, 0))
            except TimeoutError:
                raise AssertionError(f"no {what} within {STEP_S} s; events: {self.events!r}") from None

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.service.close()


async def _start_side(netns_pair, config: StaticConfig) -> Side:
    echo = EspEcho()
    ns, local = netns_pair.ns[0], netns_pair.addrs[0]
    service = await create_endpoint(config, local, ike_sock=netns_socket(ns), natt_sock=netns_socket(ns),
                                    esp_handler=echo.handle)
    echo.service = service
    return Side(service, echo, local)


def _our_config(netns_pair, ike: str, esp: str) -> StaticConfig:
    return StaticConfig.build(
        psk=LAB_PSK.encode(), ike=[ike], esp=[esp], mode="tunnel",
        local_ts=[f"{netns_pair.addrs[0]}/32", f"{netns_pair.inner[0]}/32"],
        remote_ts=[f"{netns_pair.addrs[1]}/32", f"{netns_pair.inner[1]}/32"],
    )


def _children(netns_pair) -> dict[str, tuple[str, str, str, str]]:
    """child name -> (our TS, charon's TS, our ping source, charon's address to ping)."""
    a, b = netns_pair.addrs
    ia, ib = netns_pair.inner
    return {"net": (ia, ib, ia, ib), "host": (a, b, a, b)}


def _charon_child(sas: list[IkeSa], name: str) -> tuple[IkeSa, ChildSa] | None:
    for ike in sas:
        child = ike.child(name)
        if child is not None and child.state == "INSTALLED":
            return ike, child
    return None


async def _blocking(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Run a blocking swanctl call off the loop (our endpoint must keep answering meanwhile)."""
    return await asyncio.to_thread(fn, *args, **kw)


def _assert_same_sa(ours: Phase2Established, ike: IkeSa, child: ChildSa, suite: tuple, *, we_initiated: bool) -> None:
    """Both sides list the same ISAKMP SA and the same ESP SA pair with crossed SPIs."""
    _, encr, keysize, group = suite
    assert ike.state == "ESTABLISHED" and ike.version == 1
    assert ike.is_initiator is (not we_initiated)
    assert ours.cookies == (ike.initiator_spi.to_bytes(8, "big"), ike.responder_spi.to_bytes(8, "big"))
    assert (ike.encr_alg, ike.dh_group) == (encr, group) and ike.encr_keysize == (int(keysize) if keysize else None)
    assert ike.local_port == ike.remote_port == 4500  # both floated to NAT-T (RFC 3947 §4)
    (sa,) = ours.sas
    assert (child.protocol, child.mode, child.is_encap) == ("ESP", "TUNNEL", True)
    assert (sa.spi_in, sa.spi_out) == (child.spi_out, child.spi_in)
    assert ours.mode == "tunnel" and ours.encapsulation == "udp"
    assert (ours.local_port, ours.peer_port) == (4500, 4500)
    assert ours.is_initiator is we_initiated
    assert [str(ours.local_ts.network)] == list(child.remote_ts)
    assert [str(ours.remote_ts.network)] == list(child.local_ts)


async def _pings(netns_pair, side: Side, charon: Charon, name: str, ours: Phase2Established) -> None:
    """charon's kernel pings us through the tunnel, and we ping it; both get answers."""
    _, _, our_addr, their_addr = _children(netns_pair)[name]
    spi_in = ours.sas[0].spi_in
    before = len(side.echo.answered)
    out = await asyncio.to_thread(
        netns_pair.run, 1, ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", our_addr], check=False)
    assert out.returncode == 0, out.stdout + out.stderr + f"\necho stats: {side.echo.stats}"
    answered = side.echo.answered[before:]
    assert len(answered) >= 2
    assert all(spi == spi_in and e.source == their_addr and e.destination == our_addr for spi, e in answered)
    reply = await side.echo.ping(spi_in, our_addr, their_addr, ident=0x5151, seq=len(side.echo.answered))
    assert (reply.source, reply.destination) == (their_addr, our_addr)
    (_, child) = _charon_child(await _blocking(charon.list_sas), name)
    assert child.packets_in >= 3 and child.packets_out >= 3  # two pings answered + one echo


async def _scenario(netns_pair, charon: Charon, suite_name: str, *, we_initiate: bool) -> None:
    suite = SUITES[suite_name]
    config = _our_config(netns_pair, suite_name, suite[0])
    side = await _start_side(netns_pair, config)
    peer = (netns_pair.addrs[1], 500)
    try:
        established: dict[str, Phase2Established] = {}
        for name, (ours_ts, theirs_ts, _, _) in _children(netns_pair).items():
            if we_initiate:
                phase2 = config.phase2(TrafficSelector.host(ours_ts), TrafficSelector.host(theirs_ts))
                ev = await asyncio.wait_for(side.service.initiate(peer, phase2), STEP_S)
                assert isinstance(ev, Phase2Established), ev
            else:
                await _blocking(charon.initiate, "hq", name, timeout=STEP_S)
                ev = await side.wait(lambda e, n=name: isinstance(e, Phase2Established)
                                     and str(e.local_ts.network) == f"{_children(netns_pair)[n][0]}/32",
                                     f"Phase2Established for {name}")
            established[name] = ev
            found = await _blocking(charon.wait_for, lambda sas, n=name: _charon_child(sas, n),
                                  timeout=STEP_S, what=f"CHILD_SA {name} INSTALLED")
            _assert_same_sa(ev, *found, suite, we_initiated=we_initiate)
            ike, child = found
            print(f"{suite_name} {'we' if we_initiate else 'charon'} initiated {name}: cookies "
                  f"{ike.initiator_spi:016x}/{ike.responder_spi:016x}; ours in/out {ev.sas[0].spi_in:08x}/"
                  f"{ev.sas[0].spi_out:08x}, charon in/out {child.spi_in:08x}/{child.spi_out:08x}")
        p1 = [e for e in side.events if isinstance(e, Phase1Established)]
        assert len(p1) == 1 and p1[0].nat_detected and p1[0].is_initiator is we_initiate
        assert len(await _blocking(charon.list_sas)) == 1  # one Main Mode, two Quick Modes
        assert not [e for e in side.events if isinstance(e, NegotiationFailed)]

        for name, ev in established.items():
            await _pings(netns_pair, side, charon, name, ev)

        # A Delete from us removes "net" at charon; one from charon removes "host" here.
        net, host = established["net"].sas[0], established["host"].sas[0]
        side.service.delete_phase2(peer, net.spi_in)
        await _blocking(charon.wait_for, lambda sas: not _charon_child(sas, "net"), timeout=STEP_S,
                      what="net deleted")
        assert ("ESP", net.spi_in) in charon.deletes_received()  # the SPI we receive on
        mine = await side.wait(lambda e: isinstance(e, Phase2Deleted) and net.spi_in in e.spis, "our Delete")
        assert not mine.by_peer
        await _blocking(charon.terminate, ike="hq", child="host")
        theirs = await side.wait(lambda e: isinstance(e, Phase2Deleted) and host.spi_in in e.spis,
                                 "charon's Delete")
        assert theirs.by_peer and theirs.spis == (host.spi_in,)

        # the ISAKMP SA: charon deletes it when it initiated, we do when we did
        if we_initiate:
            side.service.delete_phase1(peer)
            await _blocking(charon.wait_for, lambda sas: not sas, timeout=STEP_S, what="IKE SA deleted")
            assert ("IKE", None) in charon.deletes_received()
            gone = await side.wait(lambda e: isinstance(e, Phase1Deleted), "Phase1Deleted")
            assert not gone.by_peer
        else:
            await _blocking(charon.terminate, ike="hq")
            gone = await side.wait(lambda e: isinstance(e, Phase1Deleted), "Phase1Deleted")
            assert gone.by_peer
        assert gone.cookies == p1[0].cookies
        assert side.echo.stats["IntegrityError"] == side.echo.stats["unknown_spi"] == 0
        # nothing charon sent was dropped by the endpoint or the adapter
        assert not side.service.endpoint.stats.dropped, side.service.endpoint.stats.as_dict()
        assert set(side.service.stats) <= {"natt_esp"}, side.service.stats
    finally:
        await side.close()


def _run(coro, loop: str) -> None:
    factory = uvloop.new_event_loop if loop == "uvloop" and uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro)


def _start_charon(charon_factory, netns_pair, suite_name: str) -> Charon:
    conf = SwanctlConfig.for_pair(netns_pair, 1, proposals=(suite_name,), esp_proposals=(SUITES[suite_name][0],),
                                  children=("net", "host"))
    return charon_factory(1, conf, name="hq2")


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_we_initiate_to_charon(charon_factory, netns_pair, suite_name):
    """Our initiator (on uvloop) against charon as responder: MM + two QMs, pings, Deletes."""
    charon = _start_charon(charon_factory, netns_pair, suite_name)
    _run(_scenario(netns_pair, charon, suite_name, we_initiate=True), "uvloop")


@pytest.mark.parametrize("suite_name", list(SUITES))
def test_charon_initiates_to_us(charon_factory, netns_pair, suite_name):
    """charon as initiator against our responder (on the standard loop): MM + two QMs, pings, Deletes."""
    charon = _start_charon(charon_factory, netns_pair, suite_name)
    _run(_scenario(netns_pair, charon, suite_name, we_initiate=False), "asyncio")


# ------------------------------------------------------------------ lifetimes and re-authentication


def _wait_sync(charon: Charon, predicate: Callable[[list[IkeSa]], Any], what: str) -> Any:
    return _blocking(charon.wait_for, predicate, timeout=STEP_S, what=what)


async def _expired_then_new_main_mode(netns_pair, charon: Charon, side: Side, config: StaticConfig):
    """``net`` on ISAKMP SA #1 (2 s lifetime); past it, ``host`` runs Main Mode #2. Returns both."""
    peer = (netns_pair.addrs[1], 500)
    net = await asyncio.wait_for(side.service.initiate(peer, config.phase2(
        TrafficSelector.host(netns_pair.inner[0]), TrafficSelector.host(netns_pair.inner[1]))), STEP_S)
    assert isinstance(net, Phase2Established), net
    await asyncio.sleep(2.5)  # past the ISAKMP SA's lifetime
    assert not [e for e in side.events if isinstance(e, Phase1Deleted)]  # kept: it has IPsec SAs
    assert _charon_child(await _blocking(charon.list_sas), "net") is not None
    await _pings(netns_pair, side, charon, "net", net)
    host = await asyncio.wait_for(side.service.initiate(peer, config.phase2(
        TrafficSelector.host(netns_pair.addrs[0]), TrafficSelector.host(netns_pair.addrs[1]))), STEP_S)
    assert isinstance(host, Phase2Established) and host.cookies != net.cookies  # a new Main Mode
    await _wait_sync(charon, lambda sas: _charon_child(sas, "host"), "host INSTALLED")
    await _pings(netns_pair, side, charon, "host", host)
    return net, host


def _short_lived(config: StaticConfig, lifetime_s: int) -> StaticConfig:
    phase1 = dataclasses.replace(config.phase1, proposals=tuple(
        dataclasses.replace(p, lifetime_s=lifetime_s) for p in config.phase1.proposals))
    return dataclasses.replace(config, phase1=phase1)


def test_our_isakmp_expiry_keeps_the_tunnel(charon_factory, netns_pair):
    """Our ISAKMP SA reaches its (2 s) lifetime while its ESP pair lives: no Delete(ISAKMP), so
    charon keeps its CHILD_SA and pings still pass; the next Quick Mode runs a new Main Mode
    (interop finding ikeio-1)."""
    charon = _start_charon(charon_factory, netns_pair, "aes128-sha1-modp2048")

    async def scenario():
        config = _short_lived(_our_config(netns_pair, "aes128-sha1-modp2048", "aes128-sha1"), 2)
        side = await _start_side(netns_pair, config)
        try:
            net, _ = await _expired_then_new_main_mode(netns_pair, charon, side, config)
            # charon moves CHILD_SAs into the newest IKE SA with the same identities (it logs
            # "detected reauth of existing IKE_SA, adopting 1 children")
            newest = max(await _blocking(charon.list_sas), key=lambda sa: sa.uniqueid)
            assert newest.child("net") is not None and newest.child("host") is not None
            assert not side.service.endpoint.stats.dropped
        finally:
            await side.close()

    _run(scenario(), "uvloop")


def test_delete_after_a_new_main_mode_reaches_charon(charon_factory, netns_pair):
    """After Main Mode #2, deleting the pair negotiated under the expired #1 removes it at charon
    (the Delete goes on #2, where charon has moved the CHILD_SA: interop finding ikeio-3)."""
    charon = _start_charon(charon_factory, netns_pair, "aes128-sha1-modp2048")

    async def scenario():
        config = _short_lived(_our_config(netns_pair, "aes128-sha1-modp2048", "aes128-sha1"), 2)
        side = await _start_side(netns_pair, config)
        try:
            net, _ = await _expired_then_new_main_mode(netns_pair, charon, side, config)
            side.service.delete_phase2((netns_pair.addrs[1], 500), net.sas[0].spi_in)
            old = await side.wait(lambda e: isinstance(e, Phase1Deleted), "the expired ISAKMP SA deleted")
            assert old.cookies == net.cookies and old.reason == "expired" and not old.by_peer
            await _wait_sync(charon, lambda sas: _charon_child(sas, "net") is None, "net deleted at charon")
            assert _charon_child(await _blocking(charon.list_sas), "host") is not None
            assert ("ESP", net.sas[0].spi_in) in charon.deletes_received()
        finally:
            await side.close()

    _run(scenario(), "uvloop")


def test_charon_reauthentication_keeps_the_tunnel(charon_factory, netns_pair):
    """charon re-authenticates (new Main Mode every 3 s, Delete of the old ISAKMP SA, INITIAL_CONTACT)
    and keeps its CHILD_SA: the tunnel keeps working on our side too (interop finding ikeio-2)."""
    conf = SwanctlConfig.for_pair(netns_pair, 1, proposals=("aes128-sha1-modp2048",), children=("net",))
    conf = dataclasses.replace(conf, connections=(dataclasses.replace(conf.connections[0], rekey_time=3),))
    charon = charon_factory(1, conf, name="hq2")

    async def scenario():
        side = await _start_side(netns_pair, _our_config(netns_pair, "aes128-sha1-modp2048", "aes128-sha1"))
        try:
            await _blocking(charon.initiate, "hq", "net", timeout=STEP_S)
            net = await side.wait(lambda e: isinstance(e, Phase2Established), "Phase2Established")
            await side.wait(lambda e: sum(isinstance(x, Phase1Established) for x in side.events) >= 2
                            and isinstance(e, Phase1Established), "charon's re-authentication")
            await asyncio.sleep(0.3)
            found = _charon_child(await _blocking(charon.list_sas), "net")
            assert found is not None and found[1].spi_out == net.sas[0].spi_in  # charon kept the pair
            await _pings(netns_pair, side, charon, "net", net)
        finally:
            await side.close()

    _run(scenario(), "asyncio")


# ------------------------------------------------------------------ the command-line tool


def test_tool_initiates_to_charon(charon_factory, netns_pair, tmp_path):
    """``python -m ikeproto initiate`` in ns[0]: one Quick Mode per selector pair, SPIs as charon
    lists them, and on exit its Deletes leave charon with no SA."""
    from tests.interop.test_ike_scan import ToolProcess

    charon = _start_charon(charon_factory, netns_pair, "aes128-sha1-modp2048")
    psk = tmp_path / "psk"
    psk.write_text(LAB_PSK + "\n")
    a, b = netns_pair.addrs
    ia, ib = netns_pair.inner
    tool = ToolProcess(netns_pair.ns[0], ["initiate", "--local", a, "--peer", b, "--ike", "aes128-sha1-modp2048",
                                          "--esp", "aes128-sha1", "--local-ts", f"{ia}/32", "--remote-ts", f"{ib}/32",
                                          "--local-ts", f"{a}/32", "--remote-ts", f"{b}/32", "--hold", "0.5"], psk)
    try:
        tool.read_until("Phase2Established")
        children = {name: _charon_child(charon.wait_for(lambda sas, n=name: _charon_child(sas, n),
                                                        what=f"{name} INSTALLED"), name)[1]
                    for name in ("net", "host")}
        assert tool.proc.wait(timeout=STEP_S) == 0, tool.stderr()
    finally:
        tool.stop()
    established = [d for d in tool.lines if d["event"] == "Phase2Established"]
    assert len(established) == 2 and all(d["is_initiator"] and d["encapsulation"] == "udp" for d in established)
    ours = {(int(d["sas"][0]["spi_in"], 16), int(d["sas"][0]["spi_out"], 16)) for d in established}
    assert ours == {(c.spi_out, c.spi_in) for c in children.values()}
    assert not any(k.endswith(("_key_in", "_key_out")) for d in established for k in d["sas"][0])  # no keys
    charon.wait_for(lambda sas: not sas, timeout=STEP_S, what="all SAs deleted by the tool")
