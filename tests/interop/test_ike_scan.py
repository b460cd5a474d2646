"""ike-scan (an independent IKEv1 Main Mode initiator) against our responder in the lab.

Our responder is the command-line tool, ``python -m ikeproto respond``, run inside ``ns[0]``
(192.0.2.1) with ``ip netns exec``; ike-scan probes it from ``ns[1]``. A transform we accept gets
"Main Mode Handshake returned" with that transform (RFC 2409 §5: the responder's SA payload names
the one transform it chose); one we do not accept gets NO-PROPOSAL-CHOSEN (RFC 2408 §3.14.1,
Notify 14); the responder keeps serving afterwards, and exits cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.interop.conftest import need_ike_scan
from tests.interop.ikescan import (AUTH_PSK, ENC_3DES, ENC_AES_CBC, ENC_DES, GROUP_MODP768, GROUP_MODP1024,
                                   GROUP_MODP2048, HASH_MD5, HASH_SHA1, ike_scan, transform)

pytestmark = [pytest.mark.interop, pytest.mark.root]
ROOT = Path(__file__).resolve().parents[2]


class ToolProcess:
    """``python -m ikeproto`` in a namespace; its stdout is read as JSON lines."""

    def __init__(self, netns: str, args: list[str], psk_file: Path) -> None:
        argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "ikeproto", *args, "--psk-file", str(psk_file)]
        # ``ip netns exec`` execs python, so the PID is the tool's own; killed by that PID only.
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.lines: list[dict] = []
        self._buf = b""

    def read_until(self, event: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            found = next((d for d in self.lines if d["event"] == event), None)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                raise AssertionError(f"tool gave no {event} (exit {self.proc.poll()}): {self.stderr()}")
            self._buf += chunk
            *complete, self._buf = self._buf.split(b"\n")
            self.lines += [json.loads(line) for line in complete if line.strip()]

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        out = self.proc.stdout.read() if self.proc.stdout else b""
        self.lines += [json.loads(line) for line in (self._buf + out).split(b"\n") if line.strip()]
        self._buf = b""
        return self.proc.returncode

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")


@pytest.fixture
def responder(netns_pair, tmp_path):
    """Our tool responding at 192.0.2.1 (3DES/SHA-1/MODP1024 and AES-128/SHA-1/MODP2048, PSK)."""
    need_ike_scan()
    psk = tmp_path / "psk"
    psk.write_text("ABC123\n")
    psk.chmod(0o600)
    tool = ToolProcess(netns_pair.ns[0], ["respond", "--local", netns_pair.addrs[0],
                                          "--ike", "3des-sha1-modp1024", "--ike", "aes128-sha1-modp2048"], psk)
    try:
        yield tool
    finally:
        tool.stop()


def test_ike_scan_gets_handshake_and_no_proposal_chosen(netns_pair, responder):
    """Accepted transform -> Main Mode handshake naming it; refused -> NO-PROPOSAL-CHOSEN; then
    the responder still answers, and stops cleanly."""
    listening = responder.read_until("Listening")
    assert (listening["local"], listening["ike_port"], listening["natt_port"]) == (netns_pair.addrs[0], 500, 4500)
    target, scanner = netns_pair.addrs[0], netns_pair.ns[1]

    ok = ike_scan(scanner, target, transform(ENC_3DES, HASH_SHA1, AUTH_PSK, GROUP_MODP1024))
    assert ok.is_handshake and ok.mode == "Main", ok.output
    assert (ok.sa["Enc"], ok.sa["Hash"], ok.sa["Group"], ok.sa["Auth"]) == ("3DES", "SHA1", "2:modp1024", "PSK")

    refused = ike_scan(scanner, target, transform(ENC_DES, HASH_MD5, AUTH_PSK, GROUP_MODP768))
    assert refused.outcome == "notify" and refused.notify_type == 14, refused.output
    assert refused.notify_name == "NO-PROPOSAL-CHOSEN"

    # still serving: a second accepted probe (with a key length attribute) and the first again
    aes = ike_scan(scanner, target, transform(ENC_AES_CBC, HASH_SHA1, AUTH_PSK, GROUP_MODP2048, key_length=128))
    assert aes.is_handshake and (aes.sa["Enc"], aes.sa["KeyLength"], aes.sa["Group"]) == (
        "AES", "128", "14:modp2048"), aes.output
    again = ike_scan(scanner, target, transform(ENC_3DES, HASH_SHA1, AUTH_PSK, GROUP_MODP1024))
    assert again.is_handshake and again.responder_cookie not in (ok.responder_cookie, aes.responder_cookie)
    # several proposals, the acceptable one last: the responder picks it
    mixed = ike_scan(scanner, target, transform(ENC_DES, HASH_MD5, AUTH_PSK, GROUP_MODP768),
                     transform(ENC_3DES, HASH_SHA1, AUTH_PSK, GROUP_MODP1024))
    assert mixed.is_handshake and mixed.sa["Enc"] == "3DES", mixed.output

    assert responder.stop() == 0, responder.stderr()
    # the one refusal is reported (audit 546: invalid proposal); the half-open probes are not
    [refusal] = [d for d in responder.lines if d["event"] == "NegotiationFailed"]
    assert (refusal["phase"], refusal["notify"], refusal["failure_point"]) == (1, 14, "me")
    assert refusal["peer"][0] == netns_pair.addrs[1] and refusal["request_id"] is None
    assert [d["event"] for d in responder.lines] == ["Listening", "NegotiationFailed"]
