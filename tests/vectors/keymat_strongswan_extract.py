"""Build keymat_strongswan.json from a strongSwan-vs-strongSwan lab run (not a test; run by hand).

    python tests/vectors/keymat_strongswan_extract.py CAPTURE.pcap INITIATOR.log RESPONDER.log > OUT.json

The logs come from two charon 5.9.8 instances started by the lab's strongswan-start.sh with
LOGLEVEL=4 (charon logs SKEYID*, Ka, IVs, HASH_I/R, Hash(1..3) and the child keys at level 4 with
``%B`` hex dumps); the capture holds the IKE datagrams on UDP 500 and 4500 (non-ESP marker
stripped here). Values appear in the order charon logged them; labels that repeat become lists.
"""

from __future__ import annotations

import json
import re
import sys

from scapy.all import UDP, rdpcap

_HEAD = re.compile(r"^\S+ \d+\[(\w+)\] (.+?) => (\d+) bytes @ 0x[0-9a-f]+$")
_LINE = re.compile(r"^\S+ \d+\[\w+\]\s+(\d+): ((?:[0-9A-F]{2} ?)+)")


def log_values(path: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    label, want, buf = None, 0, b""
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        if label is not None:
            m = _LINE.match(line)
            if m:
                buf += bytes.fromhex(m.group(2)[: 3 * 16].replace(" ", ""))
                if len(buf) >= want:
                    values.setdefault(label, []).append(buf[:want].hex())
                    label = None
                continue
            label = None
        m = _HEAD.match(line)
        if m and m.group(1) in ("IKE", "CHD"):
            label, want, buf = m.group(2), int(m.group(3)), b""
    return values


def messages(path: str) -> list[dict[str, object]]:
    out = []
    for pkt in rdpcap(path):
        udp = pkt[UDP]
        data = bytes(udp.payload)
        if udp.dport == 4500 or udp.sport == 4500:
            if data[:4] != b"\0\0\0\0":
                continue  # ESP in UDP, not IKE
            data = data[4:]
        out.append({"src": f"{pkt['IP'].src}:{udp.sport}", "dst": f"{pkt['IP'].dst}:{udp.dport}", "hex": data.hex()})
    return out


if __name__ == "__main__":
    pcap, ini, resp = sys.argv[1:4]
    json.dump(
        {"messages": messages(pcap), "initiator_log": log_values(ini), "responder_log": log_values(resp)},
        sys.stdout,
        indent=1,
    )
