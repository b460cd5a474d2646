"""ESP throughput: espcore against the bare ``cryptography`` calls (the ceiling) and scapy.

For 64, 512, 1400 and 8192-byte IPv4 packets and four suites (AES-GCM-128, AES-CBC-128 with
HMAC-SHA1-96, ChaCha20-Poly1305, 3DES with HMAC-SHA1-96) it measures in one run:

- ``bare enc+dec``: the cryptography calls an ESP implementation cannot avoid, on a payload of
  the same size, used as cheaply as the API allows. AEAD: a nonce (salt || sequence number)
  and an AAD (SPI || sequence number) packed per packet, since GCM and ChaCha20-Poly1305 must
  never reuse a nonce and the AAD carries the sequence number (RFC 4106 §3.1, §5); then one
  encrypt and one decrypt. CBC: cipher contexts kept per SA, one encrypt call on a random block
  followed by the payload (the first output block is the IV, RFC 3602 §2.4), HMAC over SPI,
  sequence number, IV and ciphertext (a copy of a keyed template), the same backwards with
  ``hmac.compare_digest`` and one decrypt call on IV and ciphertext. This is the ceiling.
- ``bare, fixed nonce`` (AEAD only, for reference): the same encrypt and decrypt with one nonce
  and AAD for every packet, which no ESP sender may do.
- ``bare openssl enc+dec`` (AEAD, when ``espcore._aead`` is built): the same calls through
  espcore's OpenSSL binding, keyed once per object (reference: how much of a ``cryptography``
  call is per-call set-up).
- ``python floor`` (AEAD, transport mode): the least Python work ``protect`` + ``unprotect``
  need on top of the ceiling's calls: the header struct reads and writes, nonce, AAD, trailer,
  slices, and the AEAD calls, with no check, replay window or counter. No implementation of the
  IP-packet API on ``cryptography``'s AEAD calls can beat it in this interpreter.
- ``p+u on cryptography`` (AEAD, when the binding is built): ``protect+unprotect`` of SAs made
  with ``aead_backend="cryptography"``, what espcore does where the binding is not built.
- ``protect+unprotect``: one ``SecurityAssociation.protect`` and one ``unprotect`` (transport
  mode by default, ``--mode tunnel`` for tunnel mode), replay window and counters included.
- ``protect`` and ``unprotect`` alone (the receiver cycles through pre-protected packets with
  its replay window off, so packets can be reused).
- ``payload p+u``: ``protect_payload`` + ``unprotect_payload`` (UDP encapsulation's path).
- ``batch x64``: ``protect_many`` + ``unprotect_many`` on 64 packets, reported per packet.
- ``scapy enc+dec``: scapy's ``SecurityAssociation.encrypt`` + ``decrypt``, when installed.

Every row of a case is measured in each of ``--rounds`` interleaved rounds and keeps its best
round, so a busy moment on a shared machine hits all rows alike. Ratios are to the ceiling of
the same case; a summary (not printed with ``--json``) gives the
two targets at 1400 bytes with AES-GCM-128: protect+unprotect within 2x of the ceiling (ratio
0.5 or more) and at least 200x scapy's rate.

``--calls N`` runs every measured function exactly N times instead of timing it (with
``--suites``, ``--sizes`` and ``--rows`` to pick one row): run it twice under
``valgrind --tool=callgrind`` with two values of N and divide the difference in instructions by
the difference in N for an instruction count per operation that the machine's load cannot
disturb.
"""

from __future__ import annotations

import hmac as std_hmac
import itertools
import os
import struct
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Row, measure_interleaved, parser, report  # noqa: E402
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES  # noqa: E402
from cryptography.hazmat.primitives import hashes, hmac  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402

from espcore import SecurityAssociation  # noqa: E402
from espcore.aead import BACKEND, new_aead  # noqa: E402
from espcore.ip import checksum  # noqa: E402

SUITES = {
    "aes-gcm-128": dict(cipher="aes-gcm-16", key=20, integrity=None, scapy=("AES-GCM", None)),
    "aes-cbc-128+sha1": dict(cipher="aes-cbc", key=16, integrity="hmac-sha1-96",
                             scapy=("AES-CBC", "HMAC-SHA1-96")),
    "chacha20-poly1305": dict(cipher="chacha20-poly1305", key=36, integrity=None,
                              scapy=("CHACHA20-POLY1305", None)),
    "3des+sha1": dict(cipher="3des-cbc", key=24, integrity="hmac-sha1-96",
                      scapy=("3DES", "HMAC-SHA1-96")),
}
SIZES = (64, 512, 1400, 8192)


def ipv4_udp(size: int) -> bytes:
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size - 28]
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 1, 0x4000, 64, 17, 0,
                                   bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    header[10:12] = checksum(header).to_bytes(2, "big")
    return bytes(header) + struct.pack("!HHHH", 5000, 5001, size - 20, 0) + payload


_NONCE = struct.Struct("!4sQ")  # salt || 64-bit IV (RFC 4106 §4)
_AAD = struct.Struct("!II")  # SPI || sequence number (RFC 4106 §5)


def bare(suite: str, size: int, key: bytes, auth_key: bytes, *, openssl: bool = False):
    """The unavoidable crypto calls for one packet each way, on an ESP-sized payload
    (``openssl``: through espcore's OpenSSL binding instead of ``cryptography``)."""
    if suite in ("aes-gcm-128", "chacha20-poly1305"):
        if openssl:
            aead = new_aead("aes-gcm" if suite == "aes-gcm-128" else "chacha20-poly1305",
                            key[:16] if suite == "aes-gcm-128" else key[:32], backend="openssl")
        else:
            aead = AESGCM(key[:16]) if suite == "aes-gcm-128" else ChaCha20Poly1305(key[:32])
        salt = key[-4:]
        plaintext = os.urandom(size - 20 + 2 + (2 - size) % 4)  # payload, padding, trailer
        encrypt, decrypt = aead.encrypt, aead.decrypt
        pack_nonce, pack_aad, numbers = _NONCE.pack, _AAD.pack, itertools.count(1)

        def round_trip() -> None:
            seq = next(numbers)
            nonce, aad = pack_nonce(salt, seq), pack_aad(0x1000, seq)
            decrypt(nonce, encrypt(nonce, plaintext, aad), aad)
        return round_trip
    block = 16 if suite.startswith("aes") else 8
    algorithm = algorithms.AES(key) if block == 16 else TripleDES(key)
    plaintext = os.urandom((size - 20 + 2 + block - 1) // block * block)
    header = os.urandom(8)
    zero = modes.CBC(bytes(block))
    encryptor = Cipher(algorithm, zero).encryptor()
    decryptor = Cipher(algorithm, zero).decryptor()
    template = hmac.HMAC(auth_key, hashes.SHA1())

    def round_trip_cbc() -> None:
        # One call each way: the random block's output is the IV, then the chained payload.
        iv_ct = encryptor.update(os.urandom(block) + plaintext)
        mac = template.copy()
        mac.update(header)
        mac.update(iv_ct)
        icv = mac.finalize()[:12]
        check = template.copy()
        check.update(header)
        check.update(iv_ct)
        if not std_hmac.compare_digest(check.finalize()[:12], icv):
            raise AssertionError("MAC mismatch")
        decryptor.update(iv_ct)
    return round_trip_cbc


def bare_fixed(suite: str, size: int, key: bytes):
    """AEAD encrypt + decrypt with one nonce and AAD for every packet (reference only)."""
    aead = AESGCM(key[:16]) if suite == "aes-gcm-128" else ChaCha20Poly1305(key[:32])
    plaintext = os.urandom(size - 20 + 2 + (2 - size) % 4)
    nonce, aad = os.urandom(12), os.urandom(8)
    encrypt, decrypt = aead.encrypt, aead.decrypt

    def round_trip() -> None:
        decrypt(nonce, encrypt(nonce, plaintext, aad), aad)
    return round_trip


def python_floor(suite: str, size: int, key: bytes):
    """The least Python work ``protect`` + ``unprotect`` of an IPv4 packet take (AEAD, transport).

    What any implementation of the IP-packet API in this interpreter must do, and nothing
    more: one struct read and one struct write of the headers each way (the IPv4 checksum
    updated incrementally), the nonce, the AAD, the trailer, the slices and the two AEAD calls.
    No check, no replay window, no counter, no lifetime: a lower bound for ``protect+unprotect``,
    measured so that the distance from the ceiling that no implementation can close shows.
    """
    aead = AESGCM(key[:16]) if suite == "aes-gcm-128" else ChaCha20Poly1305(key[:32])
    encrypt, decrypt, salt = aead.encrypt, aead.decrypt, key[-4:]
    packet = ipv4_udp(size)
    pad = (2 - size) % 4
    trailer = bytes(range(1, pad + 1)) + bytes((pad, 17))
    grow = 8 + 8 + pad + 2 + 16
    header, esp = struct.Struct("!BBHIBBH8s"), struct.Struct("!BBHIBBH8sIIQ")
    unpack_v4, pack_v4 = header.unpack_from, header.pack
    unpack_esp, pack_esp = esp.unpack_from, esp.pack
    pack_nonce, numbers = _NONCE.pack, itertools.count(1)

    def round_trip() -> None:
        seq = next(numbers)
        vihl, tos, total, frag, ttl, proto, csum, addresses = unpack_v4(packet)
        head = pack_esp(vihl, tos, total + grow, frag, ttl, 50,
                        0xFFFE - (3 * 0xFFFF + grow + 49 - csum - proto) % 0xFFFF, addresses,
                        0x1000, seq, seq)
        out = head + encrypt(pack_nonce(salt, seq), packet[20:total] + trailer, head[20:28])
        vihl, tos, total, frag, ttl, proto, csum, addresses, spi, seq, iv = unpack_esp(out)
        plaintext = decrypt(pack_nonce(salt, iv), out[36:total], out[20:28])
        n, next_header = total - 54 - plaintext[-2], plaintext[-1]
        pack_v4(vihl, tos, 20 + n, frag, ttl, next_header,
                0xFFFE - (3 * 0xFFFF - 31 - csum - total + n + next_header) % 0xFFFF,
                addresses) + plaintext[:n]
    return round_trip


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["transport", "tunnel"], default="transport")
    p.add_argument("--suites", nargs="*", choices=sorted(SUITES), default=sorted(SUITES),
                   help="measure only these suites")
    p.add_argument("--sizes", nargs="*", type=int, default=None, help="packet sizes")
    p.add_argument("--rows", nargs="*", default=None,
                   help="measure only these rows (e.g. 'bare enc+dec' 'protect+unprotect')")
    p.add_argument("--calls", type=int, default=0,
                   help="call each function exactly this many times (for callgrind)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved rounds per case (default 5, 1 with --smoke)")
    p.add_argument("--no-scapy", action="store_true", help="skip scapy")
    args = p.parse_args()
    sizes = args.sizes or ((64,) if args.smoke else SIZES)
    rounds = args.rounds or (1 if args.smoke else 5)

    def wanted(what: str) -> bool:
        return args.rows is None or what in args.rows

    ScapySA = None
    if not args.no_scapy and wanted("scapy enc+dec"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from scapy.layers.inet import IP
                from scapy.layers.ipsec import ESP
                from scapy.layers.ipsec import SecurityAssociation as ScapySA
        except ImportError:
            ScapySA = None
    rows: list[Row] = []
    for name, suite in SUITES.items():
        if name not in args.suites:
            continue
        key, auth_key = os.urandom(suite["key"]), os.urandom(20)
        params = dict(spi=0x1000, cipher=suite["cipher"], cipher_key=key, mode=args.mode)
        if suite["integrity"]:
            params.update(integrity=suite["integrity"], integrity_key=auth_key)
        if args.mode == "tunnel":
            params.update(tunnel_source="192.0.2.1", tunnel_destination="192.0.2.2")
        is_aead = suite["integrity"] is None
        for size in sizes:
            case = f"{name} {size}B"
            packet = ipv4_udp(size)
            sender, receiver = SecurityAssociation(**params), SecurityAssociation(**params)
            # (what, function, packets per call, share of the time budget, ceiling row)
            plan: list[tuple[str, Callable[[], object], int, float, str | None]] = []
            plan.append(("bare enc+dec", bare(name, size, key, auth_key), 1, 1.0, None))
            if is_aead:
                plan.append(("bare, fixed nonce", bare_fixed(name, size, key), 1, 1.0,
                             "bare enc+dec"))
                if BACKEND == "openssl":
                    plan.append(("bare openssl enc+dec",
                                 bare(name, size, key, auth_key, openssl=True), 1, 1.0,
                                 "bare enc+dec"))
                if args.mode == "transport":
                    plan.append(("python floor", python_floor(name, size, key), 1, 1.0,
                                 "bare enc+dec"))
            protect, unprotect = sender.protect, receiver.unprotect
            plan.append(("protect+unprotect", lambda: unprotect(protect(packet)), 1, 1.0,
                         "bare enc+dec"))
            if is_aead and BACKEND == "openssl":
                slow = dict(params, aead_backend="cryptography")
                slow_protect = SecurityAssociation(**slow).protect
                slow_unprotect = SecurityAssociation(**slow).unprotect
                plan.append(("p+u on cryptography", lambda: slow_unprotect(slow_protect(packet)),
                             1, 1.0, "bare enc+dec"))
            plan.append(("protect", lambda: sender.protect(packet), 1, 1.0, "bare enc+dec"))
            cycle = [sender.protect(packet) for _ in range(256)]
            # The receiver cycles through 256 packets: its replay window must be off.
            lenient = SecurityAssociation(**dict(params, replay_window=0))
            index = itertools.cycle(cycle)
            plan.append(("unprotect", lambda: lenient.unprotect(next(index)), 1, 1.0,
                         "bare enc+dec"))
            inner = packet if args.mode == "tunnel" else packet[20:]
            next_header = 4 if args.mode == "tunnel" else 17
            protect_payload = sender.protect_payload
            unprotect_payload = receiver.unprotect_payload
            plan.append(("payload p+u", lambda: unprotect_payload(
                protect_payload(inner, next_header)), 1, 1.0, "bare enc+dec"))
            batch = [packet] * 64
            plan.append(("batch x64",
                         lambda: receiver.unprotect_many(sender.protect_many(batch)),
                         64, 1.0, "bare enc+dec"))
            if ScapySA is not None:
                algo, auth = suite["scapy"]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    theirs = ScapySA(ESP, spi=0x1000, crypt_algo=algo, crypt_key=key,
                                     auth_algo=auth, auth_key=auth_key if auth else None)
                    scapy_packet = IP(packet)

                def scapy_round_trip() -> None:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        theirs.decrypt(theirs.encrypt(scapy_packet))
                plan.append(("scapy enc+dec", scapy_round_trip, 1, 0.25, "bare enc+dec"))
            plan = [step for step in plan if wanted(step[0])]
            if args.calls:
                measured = {what: _call(fn, args.calls) for what, fn, *_ in plan}
            else:
                measured = measure_interleaved([(what, fn, share) for what, fn, _, share, _c
                                                in plan], seconds=args.seconds, rounds=rounds)
            for what, _fn, packets, _share, ceiling in plan:
                ops, elapsed = measured[what]
                rows.append(Row(case, what, ops * packets, elapsed, size=size, ceiling=ceiling))
    print(report(rows, as_json=args.json))
    if not args.json:
        summary(rows)


def _call(fn: Callable[[], object], calls: int) -> tuple[int, float]:
    """Call ``fn`` exactly ``calls`` times (for instruction counts under callgrind)."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return calls, time.perf_counter() - t0


def summary(rows: list[Row]) -> None:
    index = {(r.case, r.what): r for r in rows}
    for case in sorted({r.case for r in rows}):
        ceiling = index.get((case, "bare enc+dec"))
        if ceiling is None:
            continue
        parts = []
        for what, label in (("protect+unprotect", "ours"), ("batch x64", "batch"),
                            ("payload p+u", "payload"), ("p+u on cryptography", "fallback")):
            row = index.get((case, what))
            if row is not None:
                parts.append(f"{label}/ceiling {row.per_s / ceiling.per_s:.2f}")
        fixed = index.get((case, "bare, fixed nonce"))
        ours, scapy = index.get((case, "protect+unprotect")), index.get((case, "scapy enc+dec"))
        floor = index.get((case, "python floor"))
        if floor is not None:
            parts.append(f"floor/ceiling {floor.per_s / ceiling.per_s:.2f}")
            if ours is not None:
                parts.append(f"ours/floor {ours.per_s / floor.per_s:.2f}")
        if fixed is not None and ours is not None:
            parts.append(f"ours/fixed-nonce {ours.per_s / fixed.per_s:.2f}")
        if scapy is not None and ours is not None:
            parts.append(f"ours/scapy {ours.per_s / scapy.per_s:.0f}x")
        if parts:
            print(f"{case}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
