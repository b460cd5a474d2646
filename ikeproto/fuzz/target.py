"""Fuzzing another IKE responder over UDP, bounded in count and rate, with liveness probes.

Owns the tool's socket and clock (this is not a protocol core). Sends cases from
``ikeproto.fuzz.corpus`` to a loopback or lab address (192.0.2.0/24) unless ``allow_any``;
classifies each answer (none, error notify, status notify, encrypted, unparseable, other);
every ``probe_every`` cases sends a valid Main Mode offer with a fresh cookie, and a peer that no
longer answers it is reported as crashed, with the cases sent since the last good probe.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ikeproto import vendor_ids
from ikeproto.attributes import Attribute
from ikeproto.enums import AuthMethod, ExchangeType, IkeAttr, LifeType, NotifyType, enum_name, is_error_notify
from ikeproto.errors import ParseError
from ikeproto.fuzz.corpus import cases
from ikeproto.message import Message, parse_message, serialize_message
from ikeproto.payloads import NotifyPayload, VendorIdPayload
from ikeproto.proposals import Proposal, SaPayload, Transform

__all__ = ["LAB_NETWORKS", "TargetReport", "check_target", "classify_reply", "fuzz_target", "probe_message"]

LAB_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"), ipaddress.ip_network("192.0.2.0/24"))


def probe_message(rng: random.Random) -> bytes:
    """A valid Main Mode offer with a fresh cookie: any answer (even NO-PROPOSAL-CHOSEN) proves
    the peer's IKE daemon is alive."""
    transforms = [
        Transform(number=i + 1, attributes=(
            Attribute.tv(IkeAttr.ENCRYPTION_ALGORITHM, enc), *((Attribute.tv(IkeAttr.KEY_LENGTH, 128),) if enc == 7 else ()),
            Attribute.tv(IkeAttr.HASH_ALGORITHM, h), Attribute.tv(IkeAttr.AUTHENTICATION_METHOD, AuthMethod.PRE_SHARED_KEY),
            Attribute.tv(IkeAttr.GROUP_DESCRIPTION, g), Attribute.tv(IkeAttr.LIFE_TYPE, LifeType.SECONDS),
            Attribute.tv(IkeAttr.LIFE_DURATION, 28800)))
        for i, (enc, h, g) in enumerate([(7, 2, 14), (5, 2, 2), (5, 1, 2), (1, 2, 1)])
    ]
    msg = Message(initiator_cookie=rng.randbytes(8), exchange_type=ExchangeType.IDENTITY_PROTECTION,
                  payloads=(SaPayload.ipsec([Proposal.isakmp(transforms)]), VendorIdPayload(data=vendor_ids.NAT_T_RFC3947)))
    return serialize_message(msg)


def classify_reply(data: bytes | None) -> str:
    """``no answer``, ``error notify NAME``, ``status notify NAME``, ``encrypted reply``,
    ``unparseable reply`` or ``reply <exchange>``."""
    if data is None:
        return "no answer"
    try:
        msg = parse_message(data)
    except ParseError:
        return "unparseable reply"
    if msg.is_encrypted:
        return "encrypted reply"
    for p in msg.payloads:
        if isinstance(p, NotifyPayload):
            kind = "error" if is_error_notify(p.notify_type) else "status"
            return f"{kind} notify {enum_name(NotifyType, p.notify_type)}"
    return f"reply {enum_name(ExchangeType, msg.exchange_type)}"


def check_target(host: str, *, allow_any: bool) -> tuple[str, int]:
    """Resolve HOST:PORT and refuse non-lab addresses unless allowed."""
    name, _, port = host.rpartition(":")
    if not name or not port.isdigit():
        raise SystemExit(f"--target must be HOST:PORT, got {host!r}")
    addr = socket.getaddrinfo(name.strip("[]"), int(port), type=socket.SOCK_DGRAM)[0][4][0]
    ip = ipaddress.ip_address(addr)
    if not allow_any and not any(ip in net for net in LAB_NETWORKS):
        raise SystemExit(f"refusing to fuzz {ip}: only loopback and 192.0.2.0/24 without --allow-any")
    return addr, int(port)


@dataclass
class TargetReport:
    """What a target run saw. ``by_class`` lists the case indexes per answer class (regenerate any
    case with ``--seed``/``--case``); ``notable`` keeps the octets of the cases that drew an error
    notify or an odd answer (at most ``NOTABLE_MAX``); ``crashed_after`` the cases sent since the
    last answered probe when the peer stopped answering."""

    sent: int = 0
    classes: Counter = field(default_factory=Counter)
    by_class: dict[str, list[int]] = field(default_factory=dict)
    notable: list[dict] = field(default_factory=list)
    crashed_after: list[dict] | None = None
    probe_answered_at_start: bool = False

    def summary_lines(self, shown: int = 10) -> list[str]:
        """One line per answer class: count and the first case indexes."""
        lines = []
        for cls, n in self.classes.most_common():
            first = ", ".join(str(i) for i in self.by_class[cls][:shown])
            lines.append(f"  {cls}: {n} (cases {first}{', ...' if n > shown else ''})")
        return lines


NOTABLE_MAX = 200


def fuzz_target(target: str, *, seed: int, count: int, rate: float, timeout: float, probe_every: int,
                probe_timeout: float, allow_any: bool = False, non_esp_marker: bool = False,
                out: Callable[[str], None] = print) -> TargetReport:
    """Send ``count`` cases to ``target`` at most ``rate`` per second; probe liveness every
    ``probe_every`` cases. Stops at the first lost liveness."""
    addr, port = check_target(target, allow_any=allow_any)
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    report = TargetReport()
    prefix = b"\x00\x00\x00\x00" if non_esp_marker else b""  # RFC 3948 §2.2 on port 4500
    probe_rng = random.Random(f"{seed}:probe")
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((addr, port))

        def exchange(data: bytes, wait: float) -> bytes | None:
            try:
                sock.send(prefix + data)
            except OSError:
                return None
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    reply = sock.recv(65535)
                except (TimeoutError, ConnectionRefusedError, OSError):
                    return None
                return reply[4:] if prefix and reply[:4] == prefix else reply
            return None

        def alive() -> bool:
            return any(exchange(probe_message(probe_rng), probe_timeout) is not None for _ in range(3))

        report.probe_answered_at_start = alive()
        if not report.probe_answered_at_start:
            out("the target does not answer a valid Main Mode offer: liveness cannot be judged")
        since_probe: list[dict] = []
        gap = 1.0 / rate
        next_at = time.monotonic()
        for case in cases(seed):
            if report.sent >= count:
                break
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + gap, time.monotonic())
            reply = exchange(case.data, timeout)
            cls = classify_reply(reply)
            report.sent += 1
            report.classes[cls] += 1
            report.by_class.setdefault(cls, []).append(case.index)
            entry = {"case": case.index, "class": cls, "hex": case.data.hex()}
            since_probe.append(entry)
            if cls != "no answer" and not cls.startswith("reply") and len(report.notable) < NOTABLE_MAX:
                report.notable.append(entry)
            if report.probe_answered_at_start and (report.sent % probe_every == 0 or report.sent == count):
                if not alive():
                    report.crashed_after = since_probe
                    out(f"PEER LOST LIVENESS after case {case.index}; suspects: cases {since_probe[0]['case']}..{case.index}")
                    break
                since_probe = []
    out(f"sent {report.sent} cases to {addr}:{port} (seed {seed}):")
    for line in report.summary_lines():
        out(line)
    return report

