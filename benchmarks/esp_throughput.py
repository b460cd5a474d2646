"""ESP throughput: espcore against the bare ``cryptography`` calls (the ceiling) and scapy.

For 64, 512, 1400 and 8192-byte IPv4 packets and four suites (AES-GCM-128, AES-CBC-128 with
HMAC-SHA1-96, ChaCha20-Poly1305, 3DES with HMAC-SHA1-96) it measures in one run:

- ``bare enc+dec``: the cipher and MAC calls an ESP implementation cannot avoid, on a payload
  of the same size (AEAD encrypt + decrypt; or CBC encrypt + HMAC, HMAC + CBC decrypt, with a
  fresh cipher context per packet as the straightforward API use). This is the ceiling.
- ``protect+unprotect``: one ``SecurityAssociation.protect`` and one ``unprotect`` (transport
  mode by default, ``--mode tunnel`` for tunnel mode), replay window and counters included.
- ``protect`` and ``unprotect`` alone (the receiver cycles through pre-protected packets with
  its replay window off, so packets can be reused).
- ``batch x64``: ``protect_many`` + ``unprotect_many`` on 64 packets, reported per packet.
- ``scapy enc+dec``: scapy's ``SecurityAssociation.encrypt`` + ``decrypt``, when installed.

Ratios are to the ceiling of the same case; a summary (not printed with ``--json``) gives the
two targets at 1400 bytes with AES-GCM-128: protect+unprotect within 2x of the ceiling (ratio
0.5 or more) and at least 200x scapy's rate.
"""

from __future__ import annotations

import os
import struct
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Row, measure, parser, report  # noqa: E402
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES  # noqa: E402
from cryptography.hazmat.primitives import hashes, hmac  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402

from espcore import SecurityAssociation  # noqa: E402
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


def bare(suite: str, size: int, key: bytes, auth_key: bytes):
    """The unavoidable crypto calls for one packet each way, on an ESP-sized payload."""
    if suite in ("aes-gcm-128", "chacha20-poly1305"):
        aead = AESGCM(key[:16]) if suite == "aes-gcm-128" else ChaCha20Poly1305(key[:32])
        plaintext, nonce, aad = os.urandom(size - 20 + 4), os.urandom(12), os.urandom(8)

        def round_trip() -> None:
            aead.decrypt(nonce, aead.encrypt(nonce, plaintext, aad), aad)
        return round_trip
    block = 16 if suite.startswith("aes") else 8
    algorithm = algorithms.AES(key) if block == 16 else TripleDES(key)
    plaintext = os.urandom((size - 20 + 2 + block - 1) // block * block)
    iv, header = os.urandom(block), os.urandom(8)

    def round_trip_cbc() -> None:
        ct = Cipher(algorithm, modes.CBC(iv)).encryptor().update(plaintext)
        mac = hmac.HMAC(auth_key, hashes.SHA1())
        mac.update(header + iv + ct)
        icv = mac.finalize()[:12]
        check = hmac.HMAC(auth_key, hashes.SHA1())
        check.update(header + iv + ct)
        assert check.finalize()[:12] == icv
        Cipher(algorithm, modes.CBC(iv)).decryptor().update(ct)
    return round_trip_cbc


def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["transport", "tunnel"], default="transport")
    p.add_argument("--suites", nargs="*", choices=sorted(SUITES), default=sorted(SUITES),
                   help="measure only these suites")
    args = p.parse_args()
    sizes = (64,) if args.smoke else SIZES
    seconds = args.seconds
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
        for size in sizes:
            case = f"{name} {size}B"
            packet = ipv4_udp(size)
            sender, receiver = SecurityAssociation(**params), SecurityAssociation(**params)
            rows.append(Row(case, "bare enc+dec", *measure(bare(name, size, key, auth_key),
                                                            seconds=seconds), size=size))
            rows.append(Row(case, "protect+unprotect", *measure(
                lambda: receiver.unprotect(sender.protect(packet)), seconds=seconds),
                size=size, ceiling="bare enc+dec"))
            rows.append(Row(case, "protect", *measure(lambda: sender.protect(packet),
                                                      seconds=seconds), size=size,
                            ceiling="bare enc+dec"))
            cycle = [sender.protect(packet) for _ in range(256)]
            lenient = SecurityAssociation(**dict(params, replay_window=0))
            index = [0]

            def unprotect_one() -> None:
                index[0] = (index[0] + 1) & 255
                lenient.unprotect(cycle[index[0]])
            rows.append(Row(case, "unprotect", *measure(unprotect_one, seconds=seconds),
                            size=size, ceiling="bare enc+dec"))
            batch = [packet] * 64
            ops, elapsed = measure(lambda: receiver.unprotect_many(sender.protect_many(batch)),
                                   seconds=seconds)
            rows.append(Row(case, "batch x64", ops * 64, elapsed, size=size,
                            ceiling="bare enc+dec"))
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
                rows.append(Row(case, "scapy enc+dec", *measure(scapy_round_trip,
                                                                 seconds=seconds / 4),
                                size=size, ceiling="bare enc+dec"))
    print(report(rows, as_json=args.json))
    if not args.json:
        summary(rows)


def summary(rows: list[Row]) -> None:
    index = {(r.case, r.what): r for r in rows}
    for case in sorted({r.case for r in rows}):
        ours, ceiling = index.get((case, "protect+unprotect")), index.get((case, "bare enc+dec"))
        scapy, batch = index.get((case, "scapy enc+dec")), index.get((case, "batch x64"))
        if not (ours and ceiling):
            continue
        line = (f"{case}: ours/ceiling {ours.per_s / ceiling.per_s:.2f} "
                f"(batch {batch.per_s / ceiling.per_s:.2f})")
        if scapy:
            line += f", ours/scapy {ours.per_s / scapy.per_s:.0f}x"
        print(line)


if __name__ == "__main__":
    main()
