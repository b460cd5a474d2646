"""Probe and watch tools for interop tests: ike-scan, packet capture, tshark, namespace sockets.

Owns running ``ike-scan`` (an independent IKEv1 Main/Aggressive Mode initiator, RFC 2409 §5) from a
network namespace and parsing what it reports (the accepted transform, or the Notify a responder
sent, RFC 2408 §3.14.1); capturing a namespace's traffic with ``tcpdump`` for ``tshark``; opening
sockets inside a namespace from the test process (so an in-process asyncio endpoint can live at
192.0.2.1 while pytest stays in the root namespace).
Does not own the namespaces (``tests.lab``) or charon (``tests.interop.strongswan``).
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# ike-scan --trans numbers are the RFC 2409 Appendix A attribute values.
ENC_DES, ENC_3DES, ENC_AES_CBC = 1, 5, 7
HASH_MD5, HASH_SHA1, HASH_SHA2_256 = 1, 2, 4
AUTH_PSK = 1
GROUP_MODP768, GROUP_MODP1024, GROUP_MODP1536, GROUP_MODP2048 = 1, 2, 5, 14

_HOST_LINE = re.compile(r"^(?P<host>\S+)\t(?P<what>.*)$")
_NOTIFY = re.compile(r"Notify message (?P<code>\d+) \((?P<name>[^)]*)\)")
_ENDING = re.compile(r"(?P<hs>\d+) returned handshake; (?P<nt>\d+) returned notify")


def transform(enc: int, hash_alg: int, auth: int, group: int, *, key_length: int | None = None) -> str:
    """An ike-scan ``--trans`` value; with a key length it uses the attribute/value form."""
    if key_length is None:
        return f"{enc},{hash_alg},{auth},{group}"
    return f"(1={enc},14={key_length},2={hash_alg},3={auth},4={group})"


@dataclass(frozen=True, slots=True, kw_only=True)
class IkeScanResult:
    """What ike-scan saw from one target: a handshake, a Notify, or nothing (``outcome == "none"``)."""

    target: str
    outcome: str  # "handshake" | "notify" | "none"
    mode: str | None = None  # "Main" | "Aggressive" for a handshake
    sa: Mapping[str, str] = field(default_factory=dict)  # Enc, Hash, Group, Auth, KeyLength, ...
    notify_type: int | None = None
    notify_name: str | None = None  # e.g. NO-PROPOSAL-CHOSEN
    vendor_ids: tuple[str, ...] = ()
    responder_cookie: str | None = None
    output: str = field(default="", repr=False, compare=False)

    @property
    def is_handshake(self) -> bool:
        return self.outcome == "handshake"


def _fields(text: str) -> dict[str, str]:
    """``Enc=AES KeyLength=128 Group=2:modp1024`` -> dict (values never contain spaces)."""
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


def parse_ike_scan(output: str, target: str) -> IkeScanResult:
    """Parse ike-scan's default (multi-line) output for one target.

    The host line is ``<addr>\\t<Main|Aggressive> Mode Handshake returned`` or
    ``<addr>\\tNotify message <n> (<NAME>)``; tab-indented lines follow (HDR=, SA=, VID=).
    """
    lines = output.splitlines()
    for i, line in enumerate(lines):
        m = _HOST_LINE.match(line)
        if not m or m["host"] != target:
            continue
        block = [m["what"]]
        for cont in lines[i + 1 :]:
            if not cont.startswith("\t"):
                break
            block.append(cont.strip())
        what = m["what"]
        cookie = None
        sa: dict[str, str] = {}
        vids: list[str] = []
        for item in block[1:]:
            if item.startswith("HDR=(") and (c := re.search(r"CKY-R=([0-9a-f]+)", item)):
                cookie = c.group(1)
            elif item.startswith("SA=(") and item.endswith(")"):
                sa = _fields(item[4:-1])
            elif item.startswith("VID="):
                vids.append(item[4:])
        if (hs := re.match(r"(Main|Aggressive) Mode Handshake returned", what)) is not None:
            return IkeScanResult(
                target=target, outcome="handshake", mode=hs.group(1), sa=sa, vendor_ids=tuple(vids),
                responder_cookie=cookie, output=output,
            )
        if (nt := _NOTIFY.search(what)) is not None:
            return IkeScanResult(
                target=target, outcome="notify", notify_type=int(nt["code"]), notify_name=nt["name"],
                responder_cookie=cookie, output=output,
            )
        raise ValueError(f"unrecognised ike-scan result line: {line!r}")
    ending = _ENDING.search(output)
    if ending is None:
        raise ValueError(f"ike-scan output without its summary line:\n{output}")
    return IkeScanResult(target=target, outcome="none", output=output)


def ike_scan(
    netns: str | None,
    target: str,
    *transforms: str,
    sport: int = 0,
    aggressive: bool = False,
    ike_id: str | None = None,
    retry: int | None = None,
    timeout_ms: int | None = None,
    extra: Sequence[str] = (),
) -> IkeScanResult:
    """Run ike-scan from ``netns`` against ``target`` with the given ``--trans`` values.

    ``sport=0`` picks a random source port, so it works while something (charon) holds UDP 500 in
    the same namespace. No transforms: ike-scan's default eight (DES/3DES, MD5/SHA1, MODP768/1024).
    A target that stays silent gives ``outcome == "none"`` after ike-scan's retries (about 2.4 s).
    """
    argv = ["ike-scan", f"--sport={sport}", "--aggressive" if aggressive else "-M"]
    argv += [f"--trans={t}" for t in transforms]
    if ike_id is not None:
        argv.append(f"--id={ike_id}")
    if retry is not None:
        argv.append(f"--retry={retry}")
    if timeout_ms is not None:
        argv.append(f"--timeout={timeout_ms}")
    argv += [*extra, target]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return parse_ike_scan(proc.stdout, target)


# ----------------------------------------------------------------------------- capture

DEFAULT_BPF = "udp port 500 or udp port 4500 or esp or ah or icmp"


class Capture:
    """``tcpdump`` on one interface of a namespace, writing a pcap; a context manager.

    ``--immediate-mode`` matters: without it packets still in the kernel's TPACKET_V3 ring block
    when tcpdump is interrupted are lost, so a short capture comes back empty.
    """

    def __init__(self, netns: str | None, iface: str, path: Path | str, bpf: str = DEFAULT_BPF) -> None:
        self.netns, self.iface, self.path, self.bpf = netns, iface, Path(path), bpf
        self._proc: subprocess.Popen[bytes] | None = None
        self.stderr = ""

    def start(self, timeout: float = 5.0) -> Capture:
        """Start tcpdump and return once it reports that it is listening (no-op when running)."""
        if self._proc is not None:
            return self
        argv = ["tcpdump", "--immediate-mode", "-U", "-n", "-s", "0", "-i", self.iface, "-w", str(self.path), self.bpf]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self._proc.stderr is not None
        fd = self._proc.stderr.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"listening on" not in buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                self.stop()
                said = (buf.decode(errors="replace") + self.stderr).strip()
                raise RuntimeError(f"tcpdump did not start on {self.iface}: {said}")
            buf += chunk
        self.stderr = buf.decode(errors="replace")
        return self

    def stop(self, timeout: float = 5.0) -> Path:
        """Interrupt tcpdump (it flushes the file) and return the pcap path. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            self.stderr += (err or b"").decode(errors="replace")
        return self.path

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tshark_fields(pcap: Path | str, display_filter: str, fields: Sequence[str]) -> list[dict[str, str]]:
    """One dict per packet matching ``display_filter``: each field's occurrences joined by ``,``.

    tshark dissects UDP 500 as ISAKMP and UDP 4500 as NAT-T (ISAKMP after the non-ESP marker,
    otherwise ESP in UDP, RFC 3948).
    """
    argv = ["tshark", "-n", "-r", str(pcap), "-Y", display_filter, "-T", "fields"]
    argv += ["-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        argv += ["-e", f]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"tshark exited {proc.returncode}: {proc.stderr.strip()}")
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    return [dict(zip(fields, row + [""] * (len(fields) - len(row)))) for row in rows]


# ----------------------------------------------------------------------------- namespace sockets

CLONE_NEWNET = 0x40000000


def netns_socket(
    netns: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0
) -> socket.socket:
    """A socket that lives in network namespace ``netns`` (``ip netns`` name), made from this process.

    A short-lived thread joins the namespace with setns(2) (a network namespace is per thread),
    creates the socket and exits; the socket stays in that namespace, the caller's threads never
    move. Bind it and hand it to ``loop.create_datagram_endpoint(..., sock=s)``. Needs root.
    """
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_create() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            made.append(socket.socket(family, type, proto))
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=enter_and_create, name=f"netns-{netns}")
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return made[0]
