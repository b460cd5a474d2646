"""``python -m ikeproto respond|initiate``: an IKEv1 peer with a static configuration.

For interop tests and for trying ikeproto against another IKE implementation by hand: Main Mode
with a pre-shared key (RFC 2409 §5.4), Quick Mode (§5.5), NAT-T (RFC 3947/3948), run on the
asyncio adapter (``ikeproto.aio``). Every endpoint event is printed on stdout as one JSON line;
keys are printed only with ``--print-keys``. The IKE debug trace goes to stderr (``-v``, ``-vv``).

Owns: the command line, the TOML file format, ``StaticConfig`` (a ``ConfigProvider`` built from
them), proposal strings in strongSwan's style, and the JSON form of events. Does not own any
protocol logic and does not move ESP traffic (ESP-in-UDP arriving on the NAT-T port is counted).

Configuration file (TOML; command-line options override it, names as the long options)::

    local = "192.0.2.1"            # our address (bound, and used in IDs and NAT-D)
    peer = "192.0.2.2"             # initiate: whom; respond: accept only this peer (optional)
    psk_file = "/etc/ikeproto.psk" # or psk = "...": the pre-shared key
    ike = ["aes128-sha1-modp2048", "3des-sha1-modp1024"]
    esp = ["aes128-sha1", "3des-sha1"]          # "-modp2048" appended: PFS with that group
    mode = "tunnel"
    local_ts = ["192.0.2.101/32"]  # initiate: one Quick Mode per (local_ts, remote_ts) pair
    remote_ts = ["192.0.2.102/32"] # respond: accept selectors inside any of these networks
    force_encapsulation = false    # fake a NAT so that ESP goes in UDP (RFC 3948)
    ike_port = 500
    natt_port = 4500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Sequence
from typing import Any

import structlog

from ikeproto.aio import IkeService, create_endpoint
from ikeproto.config import (Address, IpsecTransform, Mode, Phase1Config, Phase1Proposal, Phase2Config,
                             Phase2Proposal, TrafficSelector)
from ikeproto.errors import UsageError
from ikeproto.events import (Event, NegotiationFailed, Phase1Deleted, Phase1Established, Phase2Deleted,
                             Phase2Established)

__all__ = ["StaticConfig", "event_json", "main", "parse_esp_proposal", "parse_ike_proposal"]

_IKE_CIPHERS = {"des": ("des", None), "3des": ("3des", None), "aes128": ("aes-cbc", 128),
                "aes192": ("aes-cbc", 192), "aes256": ("aes-cbc", 256)}
_ESP_CIPHERS = {"null": ("null", None), "des": ("des-cbc", None), "3des": ("3des-cbc", None),
                **{f"aes{b}": ("aes-cbc", b) for b in (128, 192, 256)},
                **{f"aes{b}ctr": ("aes-ctr", b) for b in (128, 192, 256)},
                **{f"aes{b}gcm{i}": (f"aes-gcm-{i}", b) for b in (128, 192, 256) for i in (8, 12, 16)},
                **{f"aes{b}gmac": ("aes-gmac", b) for b in (128, 192, 256)}}
_AEAD = ("aes-gcm-8", "aes-gcm-12", "aes-gcm-16", "aes-gmac")
_HASHES = {"md5": "md5", "sha1": "sha1", "sha256": "sha2-256", "sha384": "sha2-384", "sha512": "sha2-512"}
_INTEGRITY = {"md5": "hmac-md5-96", "sha1": "hmac-sha1-96", "sha256": "hmac-sha2-256-128",
              "sha384": "hmac-sha2-384-192", "sha512": "hmac-sha2-512-256"}
_GROUPS = {"modp768": 1, "modp1024": 2, "modp1536": 5, "modp2048": 14, "modp3072": 15,
           "modp4096": 16, "ecp256": 19, "ecp384": 20, "curve25519": 31, "x25519": 31}
DEFAULT_IKE = ("aes128-sha1-modp2048", "3des-sha1-modp1024")
DEFAULT_ESP = ("aes128-sha1", "3des-sha1")


# ---------------------------------------------------------------------------------- proposals


def parse_ike_proposal(text: str) -> Phase1Proposal:
    """``aes128-sha1-modp2048`` -> a PSK Main Mode proposal (cipher-hash-group, strongSwan style)."""
    parts = text.strip().lower().split("-")
    if len(parts) != 3 or parts[0] not in _IKE_CIPHERS or parts[1] not in _HASHES or parts[2] not in _GROUPS:
        raise UsageError(f"IKE proposal {text!r} is not cipher-hash-group: cipher one of "
                         f"{sorted(_IKE_CIPHERS)}, hash one of {sorted(_HASHES)}, group one of {sorted(_GROUPS)}")
    cipher, bits = _IKE_CIPHERS[parts[0]]
    return Phase1Proposal(cipher=cipher, key_bits=bits, hash=_HASHES[parts[1]], dh_group=_GROUPS[parts[2]])


def parse_esp_proposal(text: str) -> tuple[Phase2Proposal, int | None]:
    """``aes128-sha1[-modp2048]`` or ``aes128gcm16[-ecp256]`` -> (ESP proposal, PFS group or None)."""
    parts = text.strip().lower().split("-")
    pfs = _GROUPS.get(parts[-1]) if len(parts) > 1 else None
    if pfs is not None:
        parts = parts[:-1]
    if not parts or parts[0] not in _ESP_CIPHERS:
        raise UsageError(f"ESP proposal {text!r}: cipher one of {sorted(_ESP_CIPHERS)}")
    cipher, bits = _ESP_CIPHERS[parts[0]]
    if cipher in _AEAD:
        if len(parts) != 1:
            raise UsageError(f"ESP proposal {text!r}: {parts[0]} takes no integrity algorithm")
        integrity = None
    elif len(parts) != 2 or parts[1] not in _INTEGRITY:
        raise UsageError(f"ESP proposal {text!r}: integrity one of {sorted(_INTEGRITY)}")
    else:
        integrity = _INTEGRITY[parts[1]]
    transform = IpsecTransform(protocol="esp", cipher=cipher, key_bits=bits, integrity=integrity)
    return Phase2Proposal(transforms=(transform,)), pfs


def _selector(text: str) -> TrafficSelector:
    try:
        return TrafficSelector(network=ipaddress.ip_network(text.strip(), strict=False))
    except ValueError as exc:
        raise UsageError(f"traffic selector {text!r}: {exc}") from None


def _covers(mine: TrafficSelector, offered: TrafficSelector) -> bool:
    net, off = mine.network, offered.network
    return (net.version == off.version and off.subnet_of(net)  # type: ignore[arg-type]
            and mine.protocol in (0, offered.protocol) and mine.port in (0, offered.port))


# ---------------------------------------------------------------------------- ConfigProvider


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StaticConfig:
    """A ``ConfigProvider`` with one answer for every peer.

    ``phase1`` is used with any peer (or only ``peers`` when given). As responder a Quick Mode is
    accepted when its mode is ``mode`` and our side of the selectors lies inside one of
    ``local_ts`` and the peer's inside one of ``remote_ts``; the offered selectors are agreed as
    they are (IKEv1 has no narrowing).
    """

    phase1: Phase1Config
    proposals: tuple[Phase2Proposal, ...]
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    mode: Mode = "tunnel"
    pfs_group: int | None = None
    peers: tuple[str, ...] | None = None

    def phase1_config(self, peer: Address) -> Phase1Config | None:
        if self.peers is not None and peer[0] not in self.peers:
            return None
        return self.phase1

    def phase2_config(self, peer: Address, local_ts: TrafficSelector, remote_ts: TrafficSelector,
                      mode: Mode) -> Phase2Config | None:
        if self.phase1_config(peer) is None or mode != self.mode:
            return None
        if not any(_covers(m, local_ts) for m in self.local_ts):
            return None
        if not any(_covers(m, remote_ts) for m in self.remote_ts):
            return None
        return self.phase2(local_ts, remote_ts)

    def phase2(self, local_ts: TrafficSelector, remote_ts: TrafficSelector) -> Phase2Config:
        """The Quick Mode we offer (or accept) for these selectors."""
        return Phase2Config(proposals=self.proposals, local_ts=local_ts, remote_ts=remote_ts,
                            mode=self.mode, pfs_group=self.pfs_group)

    @classmethod
    def build(cls, *, psk: bytes, ike: Sequence[str] = DEFAULT_IKE, esp: Sequence[str] = DEFAULT_ESP,
              local_ts: Sequence[str], remote_ts: Sequence[str], mode: Mode = "tunnel",
              force_encapsulation: bool = False, nat_traversal: bool = True,
              peers: Sequence[str] | None = None) -> StaticConfig:
        """From proposal strings and selector texts (the command line's vocabulary)."""
        if not psk:
            raise UsageError("the pre-shared key must not be empty")
        if mode not in ("tunnel", "transport"):
            raise UsageError(f"mode must be tunnel or transport, not {mode!r}")
        parsed = [parse_esp_proposal(p) for p in esp]
        groups = {g for _, g in parsed}
        if len(groups) > 1:
            raise UsageError("all ESP proposals must name the same PFS group (or none)")
        phase1 = Phase1Config(proposals=tuple(parse_ike_proposal(p) for p in ike), psk=psk,
                              force_encapsulation=force_encapsulation, nat_traversal=nat_traversal)
        return cls(phase1=phase1, proposals=tuple(p for p, _ in parsed),
                   local_ts=tuple(_selector(t) for t in local_ts),
                   remote_ts=tuple(_selector(t) for t in remote_ts), mode=mode,
                   pfs_group=groups.pop() if groups else None,
                   peers=tuple(peers) if peers is not None else None)


# --------------------------------------------------------------------------------- events


def _jsonable(name: str, value: Any, keys: bool) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(f.name, getattr(value, f.name), keys)
                for f in dataclasses.fields(value) if f.repr or keys}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, int) and not isinstance(value, bool) and name.startswith("spi"):
        return f"{value:08x}"  # as swanctl and tshark show SPIs
    if isinstance(value, (tuple, list)):
        return [_jsonable(name, v, keys) for v in value]
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    return value


def event_json(event: Event, *, keys: bool = False) -> dict[str, Any]:
    """The event as a JSON-ready dict: ``{"event": "Phase2Established", ...}``; bytes and SPIs in
    hex; fields declared ``repr=False`` (keys) only when ``keys`` is true."""
    return {"event": type(event).__name__, **_jsonable("", event, keys)}


# ------------------------------------------------------------------------------- the program


def _address(text: str, default_port: int) -> Address:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        return host, int(port[1:]) if port.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ikeproto",
        description="An IKEv1 peer (Main Mode PSK + Quick Mode, NAT-T) with a static configuration; "
                    "prints every event as a JSON line. Options override the TOML --config file.",
        epilog="Example: python -m ikeproto initiate --local 192.0.2.1 --peer 192.0.2.2 --psk-file k "
               "--local-ts 192.0.2.101/32 --remote-ts 192.0.2.102/32 --hold 30",
    )
    p.add_argument("command", choices=("respond", "initiate"), help="answer peers, or start Quick Modes to --peer")
    p.add_argument("--config", metavar="FILE", help="TOML file with the settings below (underscores for dashes)")
    p.add_argument("--local", help="our IP address (bound; used in IDs and NAT-D)")
    p.add_argument("--peer", help="initiate: the peer ([host]:port, port 500 by default); respond: only this peer")
    p.add_argument("--ike-port", type=int, help="our IKE port (500)")
    p.add_argument("--natt-port", type=int, help="our and the peer's NAT-T port (4500)")
    p.add_argument("--psk", help="the pre-shared key (visible to other users: prefer --psk-file or $IKEPROTO_PSK)")
    p.add_argument("--psk-file", help="file holding the pre-shared key (one line)")
    p.add_argument("--ike", action="append", metavar="PROPOSAL",
                   help=f"Main Mode proposal cipher-hash-group, repeatable (default {' '.join(DEFAULT_IKE)})")
    p.add_argument("--esp", action="append", metavar="PROPOSAL",
                   help=f"ESP proposal cipher-integrity[-pfsgroup], repeatable (default {' '.join(DEFAULT_ESP)})")
    p.add_argument("--mode", choices=("tunnel", "transport"), help="IPsec mode (tunnel)")
    p.add_argument("--local-ts", action="append", metavar="NET",
                   help="our traffic selector, repeatable (default: --local as /32)")
    p.add_argument("--remote-ts", action="append", metavar="NET",
                   help="the peer's traffic selector, repeatable (initiate default: --peer as /32; respond: any)")
    p.add_argument("--force-encapsulation", action="store_true", default=None,
                   help="fake a NAT so that both sides float to the NAT-T port and use ESP in UDP")
    p.add_argument("--hold", type=float, help="initiate: keep the SAs this many seconds, then delete them and exit")
    p.add_argument("--count", type=int, help="respond: exit after this many Quick Modes")
    p.add_argument("--no-delete", action="store_true", default=None, help="exit without sending Deletes")
    p.add_argument("--print-keys", action="store_true", default=None, help="include the IPsec keys in the events")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), help="event loop (uvloop when installed)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="IKE trace on stderr: -v info, -vv debug")
    return p


def _settings(argv: Sequence[str] | None) -> tuple[str, dict[str, Any], int]:
    args = _parser().parse_args(argv)
    settings: dict[str, Any] = {}
    if args.config:
        with open(args.config, "rb") as f:
            settings = {k.replace("-", "_"): v for k, v in tomllib.load(f).items()}
        unknown = set(settings) - {a.dest for a in _parser()._actions}
        if unknown:
            raise UsageError(f"{args.config}: unknown settings {sorted(unknown)}")
    for key, value in vars(args).items():
        if value is not None and key not in ("command", "config"):
            settings[key] = value
    for key in ("ike", "esp", "local_ts", "remote_ts"):
        if isinstance(settings.get(key), str):
            settings[key] = [settings[key]]
    return args.command, settings, settings.get("verbose", 0)


def _read_psk(settings: dict[str, Any]) -> bytes:
    if settings.get("psk"):
        return str(settings["psk"]).encode()
    if settings.get("psk_file"):
        with open(settings["psk_file"], "rb") as f:
            return f.read().strip()
    if os.environ.get("IKEPROTO_PSK"):
        return os.environ["IKEPROTO_PSK"].encode()
    raise UsageError("no pre-shared key: give --psk-file, --psk or $IKEPROTO_PSK")


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _run(command: str, s: dict[str, Any]) -> int:
    if not s.get("local"):
        raise UsageError("--local is required")
    local = s["local"]
    ike_port, natt_port = int(s.get("ike_port", 500)), int(s.get("natt_port", 4500))
    peer = _address(s["peer"], 500) if s.get("peer") else None
    if command == "initiate" and peer is None:
        raise UsageError("initiate needs --peer")
    local_ts = s.get("local_ts") or [local]
    remote_ts = s.get("remote_ts") or ([peer[0]] if command == "initiate" else ["0.0.0.0/0", "::/0"])
    config = StaticConfig.build(
        psk=_read_psk(s), ike=s.get("ike") or DEFAULT_IKE, esp=s.get("esp") or DEFAULT_ESP,
        local_ts=local_ts, remote_ts=remote_ts, mode=s.get("mode", "tunnel"),
        force_encapsulation=bool(s.get("force_encapsulation")), peers=[peer[0]] if peer else None)
    if command == "initiate" and len(config.local_ts) != len(config.remote_ts):
        raise UsageError("initiate pairs --local-ts with --remote-ts: give as many of each")
    keys, delete = bool(s.get("print_keys")), not s.get("no_delete")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = await create_endpoint(config, local, ike_port=ike_port, natt_port=natt_port, logger=s.get("logger"),
                                    trace=bool(s.get("verbose")))
    _emit({"event": "Listening", "local": local, "ike_port": service.ike_port, "natt_port": service.natt_port})
    state = _Tracker(keys=keys, count=s.get("count"), stop=stop)
    pumping = asyncio.create_task(_pump(service, state))
    try:
        if command == "initiate":
            assert peer is not None
            futures = [service.initiate(peer, config.phase2(lts, rts))
                       for lts, rts in zip(config.local_ts, config.remote_ts)]
            done = asyncio.ensure_future(asyncio.gather(*futures))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({done, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if done.done() and all(isinstance(r, NegotiationFailed) for r in done.result()):
                pass  # nothing to hold
            elif done.done() and s.get("hold") is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=float(s["hold"]))
            else:
                await stop.wait()
            done.cancel()
        else:
            await stop.wait()
        if delete:
            while not service.events.empty():  # what the peer deleted meanwhile
                state.track(service.events.get_nowait())
            for who, spi in list(state.phase2):
                with contextlib.suppress(UsageError):  # gone since (expired, or deleted by the peer)
                    service.delete_phase2(who, spi)
            for who in list(state.phase1):
                service.delete_phase1(who)
            await asyncio.sleep(0.2)  # the Deletes leave at once; give their events a moment
    finally:
        pumping.cancel()
        while not service.events.empty():
            state.track(service.events.get_nowait())
        service.close()
    return 1 if state.failed and command == "initiate" else 0


class _Tracker:
    """Prints events and remembers the SAs to delete at exit."""

    def __init__(self, *, keys: bool, count: int | None, stop: asyncio.Event) -> None:
        self.keys, self.count, self.stop = keys, count, stop
        self.phase1: set[Address] = set()
        self.phase2: dict[tuple[Address, int], None] = {}  # (peer, spi_in), in order
        self.established = 0
        self.failed = False

    def track(self, event: Event) -> None:
        _emit(event_json(event, keys=self.keys))
        if isinstance(event, Phase1Established):
            self.phase1.add(event.peer)
        elif isinstance(event, Phase1Deleted):
            self.phase1.discard(event.peer)
        elif isinstance(event, Phase2Established):
            self.phase2.update(((event.peer, sa.spi_in), None) for sa in event.sas)
            self.established += 1
            if self.count is not None and self.established >= self.count:
                self.stop.set()
        elif isinstance(event, Phase2Deleted):
            for spi in event.spis:
                self.phase2.pop((event.peer, spi), None)
        elif isinstance(event, NegotiationFailed):
            self.failed = True


async def _pump(service: IkeService, state: _Tracker) -> None:
    while True:
        state.track(await service.next_event())


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0 ok, 1 a negotiation failed, 2 usage)."""
    try:
        command, settings, verbose = _settings(argv)
        level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
        # Our own logger, not structlog.configure: stdout carries only the JSON events.
        settings["logger"] = structlog.wrap_logger(structlog.PrintLogger(sys.stderr),
                                                   wrapper_class=structlog.make_filtering_bound_logger(level))
        loop_kind = settings.get("loop")
        factory = None
        if loop_kind != "asyncio":
            try:
                import uvloop

                factory = uvloop.new_event_loop
            except ImportError:
                if loop_kind == "uvloop":
                    raise UsageError("uvloop is not installed") from None
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(_run(command, settings))
    except (UsageError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"ikeproto: {exc}", file=sys.stderr)
        return 2
