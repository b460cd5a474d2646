"""Fuzz harness: ``python -m ikeproto.fuzz`` (in-process) or ``--target HOST:PORT`` (over UDP).

In-process mode runs our parser on generated and mutated messages until stopped, for ``--cases``
cases or ``--seconds``; it prints cases/s and every exception other than ``ParseError`` with a
reproducer (the datagram in hex and the ``--seed``/``--case`` that regenerates it). It also checks
that whatever parses re-serializes to the same octets.

Target mode sends generated and mutated messages to an IKE responder, bounded in count
(``--count``, at most ``--max-count``) and rate (``--rate`` per second), and reports which inputs
got no answer, an error Notify, or another answer; between batches it probes liveness with a
valid Main Mode offer, and a peer that stops answering the probe is reported as crashed together
with the inputs sent since the last good probe. Only loopback and the lab network 192.0.2.0/24
are allowed unless ``--allow-any`` is given.

This is a tool, not a protocol core: it owns its socket and clock. Cases come from
``random.Random`` seeded per case (so every case is reproducible) and the mutations of
``ikeproto.mutations``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ikeproto import vendor_ids
from ikeproto.attributes import Attribute
from ikeproto.enums import (
    AuthMethod,
    EncryptionAlgorithm,
    EspTransformId,
    ExchangeType,
    Flag,
    GroupDescription,
    HashAlgorithm,
    IdType,
    IkeAttr,
    IpsecAttr,
    LifeType,
    NotifyType,
    PayloadType,
    ProtocolId,
    enum_name,
)
from ikeproto.errors import ParseError
from ikeproto.message import Message, parse_message, parse_payloads, serialize_message
from ikeproto.mutations import mutate_message
from ikeproto.payloads import (
    CertPayload,
    CrPayload,
    DeletePayload,
    GssPayload,
    HashPayload,
    IdPayload,
    KePayload,
    NatDPayload,
    NatOaPayload,
    NoncePayload,
    NotifyPayload,
    OpaquePayload,
    Payload,
    SigPayload,
    VendorIdPayload,
)
from ikeproto.proposals import Proposal, SaPayload, Transform

__all__ = ["FuzzCase", "case_datagram", "classify_reply", "fuzz_in_process", "fuzz_target", "main", "probe_message"]

LAB_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"), ipaddress.ip_network("192.0.2.0/24"))


def _ike_transform(rng: random.Random, number: int) -> Transform:
    attrs = [Attribute.tv(IkeAttr.ENCRYPTION_ALGORITHM, rng.choice(list(EncryptionAlgorithm)))]
    if rng.random() < 0.4:
        attrs.append(Attribute.tv(IkeAttr.KEY_LENGTH, rng.choice((128, 192, 256))))
    attrs += [
        Attribute.tv(IkeAttr.HASH_ALGORITHM, rng.choice(list(HashAlgorithm))),
        Attribute.tv(IkeAttr.AUTHENTICATION_METHOD, rng.choice(list(AuthMethod))),
        Attribute.tv(IkeAttr.GROUP_DESCRIPTION, rng.choice(list(GroupDescription))),
        Attribute.tv(IkeAttr.LIFE_TYPE, LifeType.SECONDS),
        Attribute.auto(IkeAttr.LIFE_DURATION, rng.choice((28800, 86400, 3600, 0, 1 << 31))),
    ]
    return Transform(number=number, attributes=tuple(attrs))


def _esp_transform(rng: random.Random, number: int) -> Transform:
    return Transform(
        number=number,
        transform_id=rng.choice(list(EspTransformId)),
        attributes=(
            Attribute.tv(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS),
            Attribute.auto(IpsecAttr.SA_LIFE_DURATION, rng.choice((3600, 100000))),
            Attribute.tv(IpsecAttr.ENCAPSULATION_MODE, rng.choice((1, 2, 3, 4, 61443, 61444))),
            Attribute.tv(IpsecAttr.AUTHENTICATION_ALGORITHM, rng.randint(1, 7)),
            Attribute.tv(IpsecAttr.KEY_LENGTH, rng.choice((128, 256))),
        ),
    )


def _id(rng: random.Random) -> IdPayload:
    kind = rng.randrange(6)
    if kind == 0:
        return IdPayload.address(f"192.0.2.{rng.randrange(256)}", protocol=rng.choice((0, 17)), port=rng.choice((0, 500)))
    if kind == 1:
        return IdPayload.subnet(f"10.{rng.randrange(256)}.0.0/16")
    if kind == 2:
        return IdPayload.range("2001:db8::1", "2001:db8::ff")
    if kind == 3:
        return IdPayload.fqdn("host.reskit.com")
    if kind == 4:
        return IdPayload(id_type=IdType.ID_DER_ASN1_DN, data=rng.randbytes(rng.randrange(40)))
    return IdPayload(id_type=IdType.ID_KEY_ID, data=rng.randbytes(rng.randrange(20)))


def _extra_payload(rng: random.Random) -> Payload:
    return rng.choice(
        (
            lambda: CertPayload(encoding=4, data=rng.randbytes(rng.randrange(64))),
            lambda: CrPayload(cert_type=4, authority=rng.randbytes(rng.randrange(32))),
            lambda: SigPayload(data=rng.randbytes(rng.randrange(64))),
            lambda: NatOaPayload.of(f"10.0.0.{rng.randrange(256)}"),
            lambda: OpaquePayload(payload_type=rng.randrange(133, 256), data=rng.randbytes(rng.randrange(16))),
            lambda: GssPayload(data=rng.randbytes(rng.randrange(64))),
            lambda: DeletePayload.of(ProtocolId.IPSEC_ESP, [rng.randbytes(4) for _ in range(rng.randrange(4))]),
        )
    )()


def random_message(rng: random.Random) -> Message:
    """A message shaped as an IKEv1 exchange sends it (RFC 2409 §5), with random contents."""
    icky, rcky = rng.randbytes(8), rng.choice((bytes(8), rng.randbytes(8)))
    kind = rng.randrange(8)
    vids = [VendorIdPayload(data=rng.choice(vendor_ids.KNOWN_VENDOR_IDS).data) for _ in range(rng.randrange(4))]
    mm, qm, info = ExchangeType.IDENTITY_PROTECTION, ExchangeType.QUICK_MODE, ExchangeType.INFORMATIONAL
    msgid = rng.randrange(1, 1 << 32)
    if kind == 0:  # MM1 / MM2
        sa = SaPayload.ipsec([Proposal.isakmp([_ike_transform(rng, i + 1) for i in range(rng.randint(1, 4))])])
        return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=mm, payloads=(sa, *vids))
    if kind == 1:  # MM3 / MM4, PSK/certificates with NAT-D, or Kerberos with a GSS token
        tail = [NatDPayload(data=rng.randbytes(20)), NatDPayload(data=rng.randbytes(20))] if rng.random() < 0.5 else [GssPayload(data=rng.randbytes(80))]
        ke = KePayload(data=rng.randbytes(rng.choice((0, 1, 96, 128, 256, 300))))
        return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=mm,
                       payloads=(ke, NoncePayload(data=rng.randbytes(rng.choice((8, 16, 32)))), *tail))
    if kind == 2:  # QM1 / QM2 as decrypted
        props = [Proposal.ipsec(ProtocolId.IPSEC_ESP, rng.randbytes(4), [_esp_transform(rng, i + 1) for i in range(rng.randint(1, 3))])]
        body = [HashPayload(data=rng.randbytes(20)), SaPayload.ipsec(props), NoncePayload(data=rng.randbytes(16))]
        if rng.random() < 0.3:
            body.append(KePayload(data=rng.randbytes(128)))
        if rng.random() < 0.6:
            body += [_id(rng), _id(rng)]
        return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=qm, message_id=msgid, payloads=tuple(body))
    if kind == 3:  # Informational
        n = NotifyPayload(notify_type=rng.choice(list(NotifyType)), spi=icky + rcky, data=rng.randbytes(rng.choice((0, 4))))
        return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=info, payloads=(n,))
    if kind == 4:  # Aggressive Mode 1
        sa = SaPayload.ipsec([Proposal.isakmp([_ike_transform(rng, 1)])])
        return Message(initiator_cookie=icky, exchange_type=ExchangeType.AGGRESSIVE,
                       payloads=(sa, KePayload(data=rng.randbytes(128)), NoncePayload(data=rng.randbytes(16)), _id(rng), *vids))
    if kind == 5:  # encrypted MM5 / QM / Informational
        return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=rng.choice((mm, qm, info)), flags=Flag.ENCRYPTION,
                       message_id=msgid, next_payload=rng.choice((PayloadType.ID, PayloadType.HASH)),
                       encrypted_body=rng.randbytes(16 * rng.randint(1, 10)))
    extra = [_extra_payload(rng) for _ in range(rng.randint(1, 5))]
    return Message(initiator_cookie=icky, responder_cookie=rcky, exchange_type=rng.choice((mm, qm, info, 6, 33, 200)),
                   payloads=tuple(extra))


@dataclass(frozen=True, slots=True)
class FuzzCase:
    """Case ``index`` of run ``seed``: regenerate it with ``case_datagram(seed, index)``."""

    seed: int
    index: int
    data: bytes


def case_datagram(seed: int, index: int) -> bytes:
    """The datagram of one case: a random exchange-shaped message, mutated 7 times out of 8."""
    rng = random.Random(f"{seed}:{index}")
    msg = random_message(rng)
    if rng.randrange(8) == 0:
        return serialize_message(msg)
    return mutate_message(msg, rng.randrange)


def cases(seed: int, start: int = 0) -> Iterator[FuzzCase]:
    """The endless case sequence of ``seed``."""
    i = start
    while True:
        yield FuzzCase(seed, i, case_datagram(seed, i))
        i += 1


def check_case(data: bytes) -> None:
    """The invariant: parse or raise ParseError; what parses re-serializes to the same octets;
    the body parsed as a decrypted chain (padding allowed) also parses or raises ParseError."""
    try:
        msg = parse_message(data)
    except ParseError:
        pass
    else:
        again = serialize_message(msg)
        if again != data:
            raise AssertionError(f"round trip changed the octets: {again.hex()}")
    if len(data) > 28:
        try:
            parse_payloads(data[16], data[28:], allow_trailing=True)
        except ParseError:
            pass


def fuzz_in_process(*, seed: int, max_cases: int | None, seconds: float | None, out: Callable[[str], None] = print,
                    max_failures: int = 10) -> dict:
    """Run cases until ``max_cases``/``seconds``/Ctrl-C; return a summary with any escapes."""
    started = time.perf_counter()
    last_report = started
    done = 0
    failures: list[dict] = []
    seen: set[tuple[str, str]] = set()
    try:
        for case in cases(seed):
            if max_cases is not None and done >= max_cases:
                break
            now = time.perf_counter()
            if seconds is not None and now - started >= seconds:
                break
            try:
                check_case(case.data)
            except Exception as exc:  # noqa: BLE001 - finding these is the point
                where = traceback.extract_tb(exc.__traceback__)[-1]
                key = (type(exc).__name__, f"{where.filename}:{where.lineno}")
                if key not in seen:
                    seen.add(key)
                    failures.append({"seed": case.seed, "case": case.index, "exception": f"{type(exc).__name__}: {exc}",
                                     "at": key[1], "hex": case.data.hex()})
                    out(f"ESCAPED {type(exc).__name__} at {key[1]}: {exc}\n  reproduce: python -m ikeproto.fuzz --seed {case.seed} "
                        f"--case {case.index}\n  or: ikeproto.message.parse_message(bytes.fromhex('{case.data.hex()}'))")
                    if len(failures) >= max_failures:
                        break
            done += 1
            if now - last_report >= 2.0:
                out(f"{done} cases, {done / (now - started):,.0f} cases/s, {len(failures)} escapes")
                last_report = now
    except KeyboardInterrupt:
        pass
    elapsed = time.perf_counter() - started
    summary = {"mode": "in-process", "seed": seed, "cases": done, "seconds": round(elapsed, 3),
               "cases_per_s": round(done / elapsed, 1) if elapsed else None, "escapes": failures}
    out(f"{done} cases in {elapsed:.1f} s ({summary['cases_per_s']:,} cases/s), {len(failures)} escaping exceptions")
    return summary


# ---- target mode -------------------------------------------------------------------------------


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
            kind = "error" if 1 <= p.notify_type < 8192 else "status"
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
    sent: int = 0
    classes: Counter = field(default_factory=Counter)
    notable: list[dict] = field(default_factory=list)
    crashed_after: list[dict] | None = None
    probe_answered_at_start: bool = False


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
            entry = {"case": case.index, "class": cls, "hex": case.data.hex()}
            since_probe.append(entry)
            if cls != "no answer" and not cls.startswith("reply"):
                report.notable.append(entry)
            if report.probe_answered_at_start and (report.sent % probe_every == 0 or report.sent == count):
                if not alive():
                    report.crashed_after = since_probe
                    out(f"PEER LOST LIVENESS after case {case.index}; suspects: cases {since_probe[0]['case']}..{case.index}")
                    break
                since_probe = []
    out(f"sent {report.sent} cases to {addr}:{port}: " + ", ".join(f"{k}: {v}" for k, v in report.classes.most_common()))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ikeproto.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=None, help="run seed (default: random, printed)")
    p.add_argument("--cases", type=int, default=None, help="in-process: stop after N cases")
    p.add_argument("--seconds", type=float, default=None, help="in-process: stop after T seconds")
    p.add_argument("--case", type=int, default=None, help="print and check one case of --seed (reproducer)")
    p.add_argument("--target", metavar="HOST:PORT", help="fuzz an IKE responder over UDP instead")
    p.add_argument("--count", type=int, default=200, help="target: cases to send (default 200)")
    p.add_argument("--max-count", type=int, default=100_000, help="target: hard upper bound on --count")
    p.add_argument("--rate", type=float, default=20.0, help="target: cases per second (default 20, max 1000)")
    p.add_argument("--timeout", type=float, default=0.25, help="target: seconds to wait for each answer")
    p.add_argument("--probe-every", type=int, default=20, help="target: liveness probe every N cases")
    p.add_argument("--probe-timeout", type=float, default=1.0, help="target: seconds to wait for a probe answer")
    p.add_argument("--non-esp-marker", action="store_true", help="target: prefix 4 zero octets (port 4500, RFC 3948)")
    p.add_argument("--allow-any", action="store_true", help="target: allow addresses outside loopback/192.0.2.0/24")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    say = (lambda s: print(s, file=sys.stderr)) if args.json else print
    if args.case is not None:
        data = case_datagram(seed, args.case)
        print(data.hex())
        check_case(data)  # raises with the full traceback if it escapes
        print("parses or raises ParseError: ok")
        return 0
    if args.target:
        if args.count > args.max_count or not 0 < args.rate <= 1000:
            raise SystemExit("--count must be <= --max-count and 0 < --rate <= 1000")
        say(f"seed {seed}")
        rep = fuzz_target(args.target, seed=seed, count=args.count, rate=args.rate, timeout=args.timeout,
                          probe_every=max(1, args.probe_every), probe_timeout=args.probe_timeout, allow_any=args.allow_any,
                          non_esp_marker=args.non_esp_marker, out=say)
        if args.json:
            print(json.dumps({"mode": "target", "seed": seed, "sent": rep.sent, "classes": dict(rep.classes),
                              "notable": rep.notable, "crashed_after": rep.crashed_after,
                              "probe_answered_at_start": rep.probe_answered_at_start}, indent=2))
        return 2 if rep.crashed_after else 0
    say(f"seed {seed}")
    summary = fuzz_in_process(seed=seed, max_cases=args.cases, seconds=args.seconds, out=say)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 1 if summary["escapes"] else 0


if __name__ == "__main__":
    sys.exit(main())
