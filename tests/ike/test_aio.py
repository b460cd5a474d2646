"""The asyncio adapter (``ikeproto.aio``) on the standard event loop and on uvloop.

A small fake endpoint (``FakeEndpoint``) that speaks the ``IkeEndpoint`` contract with toy
messages proves the adapter's own duties: which socket a datagram comes from and goes to, the
RFC 3948 non-ESP marker on the NAT-T port (§2.2), ESP and keep-alives (§2.3) handed to the
application, one loop timer, events and initiate futures, pre-made sockets, closing.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Any

import pytest

from ikeproto.aio import IkeService, create_endpoint
from ikeproto.config import Identity, Phase2Config, Phase2Proposal, IpsecTransform, TrafficSelector
from ikeproto.errors import UsageError
from ikeproto.events import NegotiationFailed, Phase1Deleted, Phase2Deleted, Phase2Established

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
    uvloop = None

LOOPS = ["asyncio", "uvloop"]
MARKER = b"\0\0\0\0"
PHASE2 = Phase2Config(
    proposals=(Phase2Proposal(transforms=(IpsecTransform(protocol="esp", cipher="aes-cbc", key_bits=128,
                                                         integrity="hmac-sha1-96"),)),),
    local_ts=TrafficSelector.host("127.0.0.1"),
    remote_ts=TrafficSelector.host("127.0.0.2"),
    mode="tunnel",
)


@pytest.fixture(params=LOOPS)
def run(request):
    """Run a coroutine to completion on a fresh loop of the parametrised kind."""
    if request.param == "uvloop":
        if uvloop is None:
            pytest.skip("uvloop not installed")
        factory = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop

    def runner(coro, timeout: float = 10.0):
        async def bounded():
            return await asyncio.wait_for(coro, timeout)

        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(bounded())

    return runner


class FakeEndpoint:
    """The ``IkeEndpoint`` contract with toy messages.

    ``ping<x>`` is answered ``pong<x>`` from the port it came to; ``float<x>`` is answered from the
    NAT-T port; ``accept:<id>``/``refuse:<id>`` end request ``<id>``; ``later`` moves the timer 60 s
    ahead. ``initiate`` sends ``offer:<id>`` and retransmits it on the timer ``retransmits`` times,
    then fails with ``timed_out``.
    """

    def __init__(self, *, config: Any, local_address: str, ike_port: int, natt_port: int, rng: Any,
                 logger: Any, retransmit_s: float = 0.02, retransmits: int = 2) -> None:
        self.config, self.local_address = config, local_address
        self.ike_port, self.natt_port = ike_port, natt_port
        self.retransmit_s, self.retransmits = retransmit_s, retransmits
        self.received: list[tuple[bytes, tuple[str, int], int, float]] = []
        self.timer_calls: list[float] = []
        self.commands: list[tuple] = []
        self._out: list[tuple[bytes, tuple[str, int], int]] = []
        self._events: deque = deque()
        self._timer: float | None = None
        self._requests: dict[int, tuple[tuple[str, int], int]] = {}
        self._next_id = 1
        self.keepalives_owed: list[tuple[tuple[str, int], int]] = []

    # contract: commands and inputs
    def initiate(self, *, peer, phase2, now):
        rid, self._next_id = self._next_id, self._next_id + 1
        self.commands.append(("initiate", peer, phase2, now))
        self._requests[rid] = (peer, 0)
        self._out.append((b"offer:%d" % rid, peer, self.ike_port))
        self._timer = now + self.retransmit_s
        return rid

    def delete_phase2(self, peer, spi_in, protocol="esp", *, now):
        self.commands.append(("delete_phase2", peer, spi_in, protocol))
        self._out.append((b"delete2:%x" % spi_in, peer, self.natt_port))

    def delete_phase1(self, peer, *, now):
        self.commands.append(("delete_phase1", peer))
        self._out.append((b"delete1", peer, self.natt_port))

    def receive_datagram(self, data, addr, now, local_port=500):
        self.received.append((data, addr, local_port, now))
        if data.startswith(b"ping"):
            self._out.append((b"pong" + data[4:], addr, local_port))
        elif data.startswith(b"float"):
            self._out.append((b"floated" + data[5:], addr, self.natt_port))
        elif data.startswith((b"accept:", b"refuse:")):
            rid = int(data[7:])
            self._requests.pop(rid, None)
            self._events.append(_established(addr, rid, now) if data.startswith(b"accept")
                                else _failed(addr, rid, now, timed_out=False))
            self._timer = None
        elif data == b"later":
            self._timer = now + 60
        elif data == b"keepalive":
            self.keepalives_owed.append((addr, self.natt_port))

    def handle_timer(self, now):
        self.timer_calls.append(now)
        if self._timer is None or now < self._timer:
            return
        self._timer = None
        for rid, (peer, sent) in list(self._requests.items()):
            if sent >= self.retransmits:
                del self._requests[rid]
                self._events.append(_failed(peer, rid, now, timed_out=True))
            else:
                self._requests[rid] = (peer, sent + 1)
                self._out.append((b"offer:%d" % rid, peer, self.ike_port))
                self._timer = now + self.retransmit_s

    # contract: outputs
    def datagrams_to_send(self, now):
        out, self._out = self._out, []
        return out

    def get_timer(self):
        return self._timer

    def nat_keepalives(self, now):
        out, self.keepalives_owed = self.keepalives_owed, []
        return out

    def next_event(self):
        return self._events.popleft() if self._events else None


def _established(peer, rid, now):
    return Phase2Established(
        at=now, peer=peer, cookies=(b"i" * 8, b"r" * 8), message_id=1, is_initiator=True, request_id=rid,
        peer_id=Identity(kind="ipv4", value=peer[0]), mode="tunnel", encapsulation="udp",
        local_ts=PHASE2.local_ts, remote_ts=PHASE2.remote_ts, sas=(), lifetime_s=3600, lifetime_kb=None,
        pfs_group=None, local_port=4500, peer_port=4500,
    )


def _failed(peer, rid, now, *, timed_out):
    return NegotiationFailed(at=now, peer=peer, phase=1, request_id=rid, reason="test", timed_out=timed_out)


class Peer(asyncio.DatagramProtocol):
    """A plain UDP socket on 127.0.0.1 standing in for the remote IKE peer."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.queue.put_nowait((data, (addr[0], addr[1])))

    async def recv(self, timeout: float = 5.0):
        return await asyncio.wait_for(self.queue.get(), timeout)

    @property
    def addr(self):
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, data, addr):
        self.transport.sendto(data, addr)


async def _service(**kw) -> IkeService:
    kw.setdefault("endpoint_factory", FakeEndpoint)
    return await create_endpoint(None, "127.0.0.1", ike_port=kw.pop("ike_port", 0),
                                 natt_port=kw.pop("natt_port", 0), **kw)


async def _peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    return peer


async def _settle() -> None:
    """Let the loop deliver datagrams already sent over loopback."""
    for _ in range(5):
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------------------- ports


def test_ike_port_round_trip(run):
    """A datagram on the IKE port reaches the endpoint with local_port = the IKE port, unchanged,
    and the reply leaves from that port without a marker."""

    async def main():
        async with await _service() as svc:
            peer = await _peer()
            peer.send(b"ping1", ("127.0.0.1", svc.ike_port))
            data, src = await peer.recv()
            assert (data, src) == (b"pong1", ("127.0.0.1", svc.ike_port))
            ep = svc.endpoint
            [(got, addr, port, now)] = ep.received
            assert (got, addr, port) == (b"ping1", peer.addr, svc.ike_port)
            assert now <= asyncio.get_running_loop().time()  # ``now`` is loop time

    run(main())


def test_natt_port_strips_and_adds_the_non_esp_marker(run):
    """RFC 3948 §2.2: the endpoint sees IKE from port 4500 without the marker; IKE sent from that
    port carries it; the endpoint may answer a port-500 message from the NAT-T port."""

    async def main():
        async with await _service() as svc:
            peer = await _peer()
            peer.send(MARKER + b"ping2", ("127.0.0.1", svc.natt_port))
            assert await peer.recv() == (MARKER + b"pong2", ("127.0.0.1", svc.natt_port))
            peer.send(b"float3", ("127.0.0.1", svc.ike_port))
            assert await peer.recv() == (MARKER + b"floated3", ("127.0.0.1", svc.natt_port))
            assert [(d, p) for d, _, p, _ in svc.endpoint.received] == [
                (b"ping2", svc.natt_port), (b"float3", svc.ike_port)]

    run(main())


def test_esp_and_keepalives_go_to_the_handler(run):
    """ESP datagrams and 0xFF keep-alives on the NAT-T port go to esp_handler as received; the
    endpoint never sees them; a datagram that is none of the three is counted and dropped."""

    async def main():
        got: list[tuple[bytes, tuple[str, int]]] = []
        async with await _service(esp_handler=lambda d, a: got.append((d, a))) as svc:
            peer = await _peer()
            esp = bytes.fromhex("c0ffee01 00000001") + b"ciphertext"
            for datagram in (esp, b"\xff", b"\x01\x02\x03", MARKER):
                peer.send(datagram, ("127.0.0.1", svc.natt_port))
            peer.send(MARKER + b"ping4", ("127.0.0.1", svc.natt_port))
            await peer.recv()  # the IKE reply was sent after the earlier datagrams were handled
            assert got == [(esp, peer.addr), (b"\xff", peer.addr)]
            assert [d for d, *_ in svc.endpoint.received] == [b"ping4"]
            assert svc.stats["natt_esp"] == 1 and svc.stats["natt_keepalive"] == 1
            assert svc.stats["natt_malformed"] == 2  # 3 bytes; a marker with no message

    run(main())


def test_esp_without_a_handler_is_counted(run):
    async def main():
        async with await _service() as svc:
            peer = await _peer()
            peer.send(b"\x00\x00\x01\x00" + bytes(20), ("127.0.0.1", svc.natt_port))
            peer.send(MARKER + b"ping", ("127.0.0.1", svc.natt_port))
            await peer.recv()
            assert svc.stats["natt_unhandled"] == 1 and svc.endpoint.received[0][0] == b"ping"

    run(main())


def test_send_esp_and_keepalive_leave_from_the_natt_port(run):
    """send_esp sends the ESP packet unchanged (RFC 3948 §2.1); SPI 0 is refused (§2.2)."""

    async def main():
        async with await _service() as svc:
            peer = await _peer()
            esp = bytes.fromhex("00001000 00000007") + bytes(range(40))
            svc.send_esp(esp, peer.addr)
            assert await peer.recv() == (esp, ("127.0.0.1", svc.natt_port))
            svc.send_keepalive(peer.addr)
            assert await peer.recv() == (b"\xff", ("127.0.0.1", svc.natt_port))
            for bad in (MARKER + b"ike message", b"\x01\x02\x03"):
                with pytest.raises(UsageError):
                    svc.send_esp(bad, peer.addr)

    run(main())


# --------------------------------------------------------------------------- events and timers


def test_initiate_future_resolves_with_its_request(run):
    """initiate's future resolves with the Phase2Established carrying its request id, also queued
    as an event; a second request's failure resolves the second future only."""

    async def main():
        async with await _service() as svc:
            peer = await _peer()
            first = svc.initiate(peer.addr, PHASE2)
            second = svc.initiate(peer.addr, PHASE2)
            offers = {(await peer.recv())[0] for _ in range(2)}
            assert offers == {b"offer:1", b"offer:2"}
            peer.send(b"accept:1", ("127.0.0.1", svc.ike_port))
            ev = await first
            assert isinstance(ev, Phase2Established) and ev.request_id == 1 and not second.done()
            assert await svc.next_event() is ev
            peer.send(b"refuse:2", ("127.0.0.1", svc.ike_port))
            failed = await second
            assert isinstance(failed, NegotiationFailed) and failed.request_id == 2
            assert svc.events.get_nowait() is failed
            assert svc.endpoint.commands[0][:3] == ("initiate", peer.addr, PHASE2)

    run(main())


def test_timer_drives_retransmissions_and_give_up(run):
    """The loop timer calls handle_timer at (not before) get_timer(): two retransmissions, then the
    endpoint gives up and the future resolves with a timed-out NegotiationFailed; no timer is left."""

    async def main():
        async with await _service() as svc:
            peer = await _peer()
            future = svc.initiate(peer.addr, PHASE2)
            sent = [(await peer.recv())[0] for _ in range(3)]
            assert sent == [b"offer:1"] * 3
            ev = await future
            assert isinstance(ev, NegotiationFailed) and ev.timed_out
            ep = svc.endpoint
            start = ep.commands[0][3]
            # each call is due (``now`` never before get_timer(), even on uvloop's millisecond clock),
            # so exactly one call per retransmission and one for the give-up
            assert len(ep.timer_calls) == 3
            for i, at in enumerate(ep.timer_calls, 1):
                assert at >= start + i * ep.retransmit_s - 1e-9
            assert svc._timer is None and ep.get_timer() is None

    run(main())


def test_one_timer_follows_the_endpoint(run):
    """When the endpoint moves its timer later, the earlier loop timer no longer fires."""

    async def main():
        async with await _service() as svc:
            peer = await _peer()
            svc.initiate(peer.addr, PHASE2)
            peer.send(b"later", ("127.0.0.1", svc.ike_port))
            peer.send(b"ping", ("127.0.0.1", svc.ike_port))
            await peer.recv()
            await peer.recv()
            await asyncio.sleep(0.1)  # five times the abandoned retransmission interval
            assert svc.endpoint.timer_calls == []
            assert svc._timer_at == svc.endpoint.get_timer()

    run(main())


def test_owed_keepalives_are_sent_from_their_port(run):
    """A keep-alive the endpoint owes is the single 0xFF octet without marker (RFC 3948 §2.3)."""

    async def main():
        async with await _service() as svc:
            peer = await _peer()
            peer.send(b"keepalive", ("127.0.0.1", svc.ike_port))
            assert await peer.recv() == (b"\xff", ("127.0.0.1", svc.natt_port))

    run(main())


def test_deletes_are_passed_to_the_endpoint_and_sent(run):
    async def main():
        async with await _service() as svc:
            peer = await _peer()
            svc.delete_phase2(peer.addr, 0x1234, "esp")
            svc.delete_phase1(peer.addr)
            assert await peer.recv() == (MARKER + b"delete2:1234", ("127.0.0.1", svc.natt_port))
            assert (await peer.recv())[0] == MARKER + b"delete1"
            assert svc.endpoint.commands == [("delete_phase2", peer.addr, 0x1234, "esp"),
                                             ("delete_phase1", peer.addr)]

    run(main())


# ------------------------------------------------------------------------------ sockets, close


def test_ephemeral_ports_are_told_to_the_endpoint(run):
    async def main():
        async with await _service() as svc:
            ep = svc.endpoint
            assert (ep.ike_port, ep.natt_port) == (svc.ike_port, svc.natt_port)
            assert 0 not in (svc.ike_port, svc.natt_port) and svc.ike_port != svc.natt_port
            assert ep.local_address == "127.0.0.1"

    run(main())


def test_premade_sockets_bound_or_not(run):
    """A caller's unbound socket is bound to (local_address, port); a bound one keeps its port."""

    async def main():
        unbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        bound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        async with await _service(ike_sock=unbound, natt_sock=bound) as svc:
            assert unbound.getsockname()[0] == "127.0.0.1" and svc.natt_port == port
            peer = await _peer()
            peer.send(MARKER + b"ping", ("127.0.0.1", port))
            assert (await peer.recv())[1] == ("127.0.0.1", port)

    run(main())


def test_equal_ports_are_refused_and_nothing_stays_open(run):
    async def main():
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        with pytest.raises(UsageError):
            await _service(ike_port=port, natt_port=port)
        again = await _service(ike_port=port)  # the port was released
        again.close()

    run(main())


def test_close_cancels_pending_and_releases_ports(run):
    """close() cancels pending initiations, stops the timer, frees the ports; commands then raise."""

    async def main():
        svc = await _service()
        peer = await _peer()
        future = svc.initiate(peer.addr, PHASE2)
        svc.close()
        svc.close()  # idempotent
        assert future.cancelled() and svc.is_closed and svc._timer is None
        with pytest.raises(UsageError):
            svc.initiate(peer.addr, PHASE2)
        with pytest.raises(UsageError):
            svc.send_esp(bytes(range(1, 20)), peer.addr)
        await _settle()
        calls = len(svc.endpoint.timer_calls)
        again = await _service(ike_port=svc.ike_port, natt_port=svc.natt_port)
        again.close()
        await asyncio.sleep(0.05)
        assert len(svc.endpoint.timer_calls) == calls == 0

    run(main())


def test_ipv6_peer_addresses_are_host_port_pairs(run):
    """IPv6 sockets report 4-tuples; the endpoint and the ESP handler get (host, port)."""
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def main():
        got = []
        svc = await create_endpoint(None, "::1", ike_port=0, natt_port=0, endpoint_factory=FakeEndpoint,
                                    esp_handler=lambda d, a: got.append(a))
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(Peer, local_addr=("::1", 0))
        try:
            transport.sendto(b"ping", ("::1", svc.ike_port))
            data, src = await peer.recv()
            assert data == b"pong" and src == ("::1", svc.ike_port)
            transport.sendto(bytes.fromhex("00010000 00000001"), ("::1", svc.natt_port))
            await _settle()
            mine = transport.get_extra_info("sockname")[:2]
            assert svc.endpoint.received[0][1] == mine and got == [mine]
        finally:
            transport.close()
            svc.close()

    run(main())


# ------------------------------------------------ the command-line tool built on the adapter
# (``ikeproto.tool``; kept here because the tool is the adapter's first user)

from ikeproto import tool  # noqa: E402
from ikeproto.config import Phase1Proposal  # noqa: E402
from ikeproto.events import ChildSa  # noqa: E402


@pytest.mark.parametrize("text, expected", [
    ("3des-sha1-modp1024", Phase1Proposal(cipher="3des", hash="sha1", dh_group=2)),
    ("aes128-sha1-modp2048", Phase1Proposal(cipher="aes-cbc", key_bits=128, hash="sha1", dh_group=14)),
    ("AES256-SHA256-ecp256", Phase1Proposal(cipher="aes-cbc", key_bits=256, hash="sha2-256", dh_group=19)),
    ("des-md5-modp768", Phase1Proposal(cipher="des", hash="md5", dh_group=1)),
])
def test_tool_parses_ike_proposals(text, expected):
    assert tool.parse_ike_proposal(text) == expected


@pytest.mark.parametrize("text, cipher, bits, integrity, pfs", [
    ("aes128-sha1", "aes-cbc", 128, "hmac-sha1-96", None),
    ("3des-sha1", "3des-cbc", None, "hmac-sha1-96", None),
    ("aes256-sha256-modp2048", "aes-cbc", 256, "hmac-sha2-256-128", 14),
    ("aes128gcm16-ecp256", "aes-gcm-16", 128, None, 19),
])
def test_tool_parses_esp_proposals(text, cipher, bits, integrity, pfs):
    proposal, group = tool.parse_esp_proposal(text)
    (t,) = proposal.transforms
    assert (t.protocol, t.cipher, t.key_bits, t.integrity, group) == ("esp", cipher, bits, integrity, pfs)


@pytest.mark.parametrize("text", ["aes128", "aes128-sha1-modp2048-x", "rc4-sha1-modp1024", "aes128-sha1-modp9",
                                  "aes128gcm16-sha1", ""])
def test_tool_refuses_bad_proposals(text):
    with pytest.raises(UsageError):
        tool.parse_ike_proposal(text)
    if text != "aes128":
        with pytest.raises(UsageError):
            tool.parse_esp_proposal(text)


def test_static_config_accepts_selectors_inside_its_networks():
    """As responder: our side inside a local_ts network, theirs inside a remote_ts one, same mode."""
    cfg = tool.StaticConfig.build(psk=b"k", local_ts=["192.0.2.1/32", "10.1.0.0/16"], remote_ts=["192.0.2.0/24"],
                                  esp=["aes128-sha1-modp2048"])
    peer = ("192.0.2.2", 500)
    host = TrafficSelector.host
    got = cfg.phase2_config(peer, host("10.1.2.3"), host("192.0.2.2"), "tunnel")
    assert got is not None and got.local_ts == host("10.1.2.3") and got.pfs_group == 14
    assert got.proposals == cfg.proposals and got.mode == "tunnel"
    assert cfg.phase2_config(peer, host("10.2.0.1"), host("192.0.2.2"), "tunnel") is None
    assert cfg.phase2_config(peer, host("192.0.2.1"), host("198.51.100.1"), "tunnel") is None
    assert cfg.phase2_config(peer, host("192.0.2.1"), host("192.0.2.2"), "transport") is None
    assert cfg.phase2_config(peer, host("2001:db8::1"), host("192.0.2.2"), "tunnel") is None
    assert cfg.phase1_config(peer).psk == b"k"
    only = tool.StaticConfig.build(psk=b"k", local_ts=["0.0.0.0/0"], remote_ts=["0.0.0.0/0"], peers=["192.0.2.9"])
    assert only.phase1_config(peer) is None and only.phase2_config(peer, host("1.1.1.1"), host("2.2.2.2"),
                                                                     "tunnel") is None
    with pytest.raises(UsageError):
        tool.StaticConfig.build(psk=b"", local_ts=["0.0.0.0/0"], remote_ts=["0.0.0.0/0"])
    with pytest.raises(UsageError):
        tool.StaticConfig.build(psk=b"k", local_ts=["0.0.0.0/0"], remote_ts=["0.0.0.0/0"],
                                esp=["aes128-sha1-modp2048", "3des-sha1"])


def test_event_json_hides_keys_unless_asked():
    """Keys (repr=False fields) never appear in the JSON unless requested; SPIs are hex, cookies hex."""
    sa = ChildSa(protocol="esp", spi_in=0xC0FFEE01, spi_out=0x1234, cipher="aes-cbc", key_bits=128,
                 integrity="hmac-sha1-96", enc_key_in=b"\x11" * 16, auth_key_in=b"\x22" * 20,
                 enc_key_out=b"\x33" * 16, auth_key_out=b"\x44" * 20)
    ev = Phase2Established(**{**{f: getattr(_established(("192.0.2.2", 4500), 7, 5.0), f)
                                 for f in Phase2Established.__dataclass_fields__}, "sas": (sa,)})
    shown = tool.event_json(ev)
    text = repr(shown)
    assert shown["event"] == "Phase2Established" and shown["request_id"] == 7
    assert shown["sas"][0]["spi_in"] == "c0ffee01" and shown["sas"][0]["spi_out"] == "00001234"
    assert shown["cookies"] == ["69" * 8, "72" * 8] and shown["local_ts"]["network"] == "127.0.0.1/32"
    assert "enc_key_in" not in text and "11111111" not in text and "22222222" not in text
    with_keys = tool.event_json(ev, keys=True)["sas"][0]
    assert with_keys["enc_key_in"] == "11" * 16 and with_keys["auth_key_out"] == "44" * 20


def test_tool_reads_toml_and_options_override(tmp_path):
    conf = tmp_path / "peer.toml"
    conf.write_text('local = "192.0.2.1"\nike = "3des-sha1-modp1024"\nesp = ["aes128-sha1"]\n'
                    'local_ts = ["10.0.0.0/8"]\nnatt_port = 4501\npsk = "x"\n')
    command, settings, verbose = tool._settings(["respond", "--config", str(conf), "--natt-port", "4600", "-v"])
    assert command == "respond" and verbose == 1
    assert settings["ike"] == ["3des-sha1-modp1024"] and settings["esp"] == ["aes128-sha1"]
    assert settings["natt_port"] == 4600 and settings["local"] == "192.0.2.1" and settings["psk"] == "x"
    bad = tmp_path / "bad.toml"
    bad.write_text('lokal = "192.0.2.1"\n')
    assert tool.main(["respond", "--config", str(bad)]) == 2


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.2", ("192.0.2.2", 500)), ("192.0.2.2:4501", ("192.0.2.2", 4501)),
    ("[2001:db8::2]:600", ("2001:db8::2", 600)), ("2001:db8::2", ("2001:db8::2", 500)),
])
def test_tool_peer_addresses(text, expected):
    assert tool._address(text, 500) == expected


def test_tool_usage_errors_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("IKEPROTO_PSK", raising=False)
    assert tool.main(["respond", "--local", "127.0.0.1"]) == 2
    assert "pre-shared key" in capsys.readouterr().err
    assert tool.main(["initiate", "--local", "127.0.0.1", "--psk", "k"]) == 2
    assert "--peer" in capsys.readouterr().err
    assert tool.main(["initiate", "--local", "127.0.0.1", "--psk", "k", "--peer", "127.0.0.2",
                      "--ike", "rot13-sha1-modp1024"]) == 2


# ------------------------------------------------------ two real endpoints over loopback sockets

A_ADDR, B_ADDR = "127.0.0.1", "127.0.0.2"


def _loopback_configs(*, force_encapsulation: bool = False):
    def one(local, remote):
        return tool.StaticConfig.build(psk=b"loopback-psk", ike=["aes128-sha1-modp2048"], esp=["aes128-sha1"],
                                       local_ts=[f"{local}/32"], remote_ts=[f"{remote}/32"], mode="tunnel",
                                       force_encapsulation=force_encapsulation)

    return one(A_ADDR, B_ADDR), one(B_ADDR, A_ADDR)


async def _real_pair(*, force_encapsulation: bool = False, esp_a=None, esp_b=None):
    """Services at 127.0.0.1 and 127.0.0.2 on ephemeral IKE ports and one shared NAT-T port."""
    conf_a, conf_b = _loopback_configs(force_encapsulation=force_encapsulation)
    for _ in range(20):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((A_ADDR, 0))
        natt = probe.getsockname()[1]
        probe.close()
        try:
            a = await create_endpoint(conf_a, A_ADDR, ike_port=0, natt_port=natt, esp_handler=esp_a)
        except OSError:
            continue
        try:
            b = await create_endpoint(conf_b, B_ADDR, ike_port=0, natt_port=natt, esp_handler=esp_b)
        except OSError:
            a.close()
            continue
        return conf_a, a, b
    pytest.fail("no NAT-T port free on both 127.0.0.1 and 127.0.0.2")


async def _next(svc: IkeService, kind, timeout: float = 10.0):
    while True:
        event = await asyncio.wait_for(svc.next_event(), timeout)
        if isinstance(event, kind):
            return event


def test_two_services_negotiate_and_delete_over_loopback(run):
    """Main Mode + Quick Mode between two services over UDP: both report the SA pair with crossed
    SPIs; a Delete from either side reaches the other (RFC 2408 §3.15)."""

    async def main():
        conf_a, a, b = await _real_pair()
        try:
            peer_b = (B_ADDR, b.ike_port)
            phase2 = conf_a.phase2(TrafficSelector.host(A_ADDR), TrafficSelector.host(B_ADDR))
            mine = await asyncio.wait_for(a.initiate(peer_b, phase2), 10)
            assert isinstance(mine, Phase2Established), mine
            theirs = await _next(b, Phase2Established)
            assert mine.is_initiator and not theirs.is_initiator and theirs.request_id is None
            assert mine.cookies == theirs.cookies
            (sa_a,), (sa_b,) = mine.sas, theirs.sas
            assert (sa_a.spi_in, sa_a.spi_out) == (sa_b.spi_out, sa_b.spi_in)
            assert sa_a.enc_key_in == sa_b.enc_key_out and sa_a.auth_key_out == sa_b.auth_key_in
            assert mine.encapsulation == theirs.encapsulation == "none"  # no NAT on loopback
            assert (mine.local_port, mine.peer_port) == (a.ike_port, b.ike_port)
            # a second Quick Mode reuses the ISAKMP SA
            again = await asyncio.wait_for(a.initiate(peer_b, phase2), 10)
            assert isinstance(again, Phase2Established) and again.cookies == mine.cookies
            assert again.sas[0].spi_in != sa_a.spi_in
            a.delete_phase2(peer_b, sa_a.spi_in)
            gone = await _next(b, Phase2Deleted)
            assert gone.by_peer and gone.spis == (sa_b.spi_in,)
            b.delete_phase1((A_ADDR, a.ike_port))
            p1 = await _next(a, Phase1Deleted)
            assert p1.by_peer and p1.cookies == mine.cookies
        finally:
            a.close()
            b.close()

    run(main())


def test_forced_encapsulation_floats_to_natt_and_carries_esp(run):
    """With a faked NAT both sides float to the NAT-T port (RFC 3947 §4) and agree on ESP in UDP;
    ESP sent with send_esp reaches the peer's esp_handler and opens with the SAs from the events."""
    from ikeproto.child_sa import espcore_sas

    async def main():
        got: asyncio.Queue = asyncio.Queue()
        conf_a, a, b = await _real_pair(force_encapsulation=True, esp_b=lambda d, addr: got.put_nowait((d, addr)))
        try:
            phase2 = conf_a.phase2(TrafficSelector.host(A_ADDR), TrafficSelector.host(B_ADDR))
            mine = await asyncio.wait_for(a.initiate((B_ADDR, b.ike_port), phase2), 10)
            assert isinstance(mine, Phase2Established), mine
            theirs = await _next(b, Phase2Established)
            for ev, svc in ((mine, a), (theirs, b)):
                assert ev.encapsulation == "udp" and ev.local_port == ev.peer_port == svc.natt_port
            _, out_a = espcore_sas(mine, mine.sas[0], local_address=A_ADDR)
            in_b, _ = espcore_sas(theirs, theirs.sas[0], local_address=B_ADDR)
            inner = bytes.fromhex("4500001c000100004001f7c87f0000017f000002") + bytes(8)
            a.send_esp(out_a.protect_payload(inner, 4), (B_ADDR, b.natt_port))
            data, addr = await asyncio.wait_for(got.get(), 5)
            assert addr == (A_ADDR, a.natt_port)
            assert in_b.unprotect_payload(data) == (4, inner)
        finally:
            a.close()
            b.close()

    run(main())


def test_tool_initiates_to_tool_over_loopback(tmp_path):
    """``python -m ikeproto respond`` and ``initiate`` agree on a Quick Mode: crossed SPIs in their
    JSON events, no key in the output, both exit 0 after deleting."""
    import json
    import subprocess
    import sys

    psk = tmp_path / "psk"
    psk.write_text("tool-psk\n")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((B_ADDR, 0))
    port = probe.getsockname()[1]
    probe.close()
    common = ["--psk-file", str(psk), "--ike-port", str(port), "--natt-port", str(port + 1 if port < 65535 else 1025),
              "--loop", "asyncio"]
    py = [sys.executable, "-m", "ikeproto"]
    responder = subprocess.Popen([*py, "respond", "--local", B_ADDR, "--count", "1", *common],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(responder.stdout.readline())["event"] == "Listening"
        init = subprocess.run([*py, "initiate", "--local", A_ADDR, "--peer", f"{B_ADDR}:{port}", "--hold", "0", *common],
                              capture_output=True, text=True, timeout=30)
        out, err = responder.communicate(timeout=30)
    finally:
        if responder.poll() is None:
            responder.kill()
            responder.wait()
    assert init.returncode == 0 and responder.returncode == 0, init.stderr + err
    mine = [json.loads(line) for line in init.stdout.splitlines()]
    theirs = [json.loads(line) for line in out.splitlines()]
    [m] = [e for e in mine if e["event"] == "Phase2Established"]
    [t] = [e for e in theirs if e["event"] == "Phase2Established"]
    assert (m["sas"][0]["spi_in"], m["sas"][0]["spi_out"]) == (t["sas"][0]["spi_out"], t["sas"][0]["spi_in"])
    assert "enc_key_in" not in init.stdout + out


def test_tool_initiate_to_a_silent_peer_exits_1():
    """No answer: the endpoint gives up (timed out, after its retransmissions) and the tool exits 1."""
    import json
    import subprocess
    import sys

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((B_ADDR, 0))
    silent.settimeout(5)
    with silent:
        proc = subprocess.run([sys.executable, "-m", "ikeproto", "initiate", "--local", A_ADDR, "--psk", "k",
                               "--peer", f"{B_ADDR}:{silent.getsockname()[1]}", "--ike-port", "0", "--natt-port", "0",
                               "--loop", "asyncio"], capture_output=True, text=True, timeout=30)
        assert len(silent.recv(65535)) > 28  # Main Mode message 1 was sent
    assert proc.returncode == 1, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["event"] for e in events] == ["Listening", "NegotiationFailed"]
    assert events[1]["timed_out"] and events[1]["phase"] == 1 and events[1]["request_id"] == 1
