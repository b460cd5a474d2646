"""The fuzz harness: in-process mode finds nothing escaping our parser and reports escapes with a
reproducer when there are some; target mode classifies answers and detects a peer that stops
answering, and refuses non-lab targets."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from ikeproto import fuzz
from ikeproto.fuzz import inprocess
from ikeproto.fuzz.__main__ import main as fuzz_main
from ikeproto.enums import ExchangeType, NotifyType
from ikeproto.errors import ParseError
from ikeproto.message import Message, parse_message, serialize_message
from ikeproto.payloads import NotifyPayload


def test_in_process_run_has_no_escapes():
    """3000 generated and mutated cases: every one parses byte-exactly or raises ParseError."""
    lines: list[str] = []
    summary = fuzz.fuzz_in_process(seed=99, max_cases=3000, seconds=None, out=lines.append)
    assert summary["cases"] == 3000
    assert summary["escapes"] == [], summary["escapes"]
    assert "cases/s" in lines[-1]


def test_cases_are_reproducible_from_seed_and_index():
    """A case regenerates identically from (seed, index); different indexes differ."""
    assert fuzz.case_datagram(5, 17) == fuzz.case_datagram(5, 17)
    assert len({fuzz.case_datagram(5, i) for i in range(50)}) > 40


def test_escaping_exception_is_reported_with_a_reproducer(monkeypatch):
    """When something other than ParseError escapes, the harness prints the seed, case and hex."""
    real = inprocess.check_case

    def broken(data: bytes) -> None:
        if len(data) % 7 == 3:
            raise IndexError("planted")
        real(data)

    monkeypatch.setattr(inprocess, "check_case", broken)
    lines: list[str] = []
    summary = fuzz.fuzz_in_process(seed=1, max_cases=200, seconds=None, out=lines.append)
    (failure,) = summary["escapes"]  # one failure site, reported once
    assert failure["exception"] == "IndexError: planted"
    assert len(bytes.fromhex(failure["hex"])) % 7 == 3
    assert bytes.fromhex(failure["hex"]) == fuzz.case_datagram(1, failure["case"])
    assert any(f"--seed 1 --case {failure['case']}" in line for line in lines)


def test_main_in_process_json_and_case_reproducer(capsys):
    """`python -m ikeproto.fuzz --cases N --json` exits 0 with a JSON summary; `--case` prints the
    datagram of that case."""
    assert fuzz_main(["--seed", "3", "--cases", "200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cases"] == 200 and out["escapes"] == []
    assert fuzz_main(["--seed", "3", "--case", "12"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == fuzz.case_datagram(3, 12).hex()


def test_classify_reply():
    """Replies are classified as no answer, error/status notify, encrypted, unparseable, other."""
    notify = Message(initiator_cookie=b"A" * 8, exchange_type=ExchangeType.INFORMATIONAL,
                     payloads=(NotifyPayload(notify_type=NotifyType.NO_PROPOSAL_CHOSEN),))
    status = Message(initiator_cookie=b"A" * 8, exchange_type=ExchangeType.INFORMATIONAL,
                     payloads=(NotifyPayload(notify_type=NotifyType.R_U_THERE_ACK),))
    enc = Message(initiator_cookie=b"A" * 8, exchange_type=5, flags=1, next_payload=8, encrypted_body=bytes(16))
    assert fuzz.classify_reply(None) == "no answer"
    assert fuzz.classify_reply(serialize_message(notify)) == "error notify NO_PROPOSAL_CHOSEN"
    assert fuzz.classify_reply(serialize_message(status)) == "status notify R_U_THERE_ACK"
    assert fuzz.classify_reply(serialize_message(enc)) == "encrypted reply"
    assert fuzz.classify_reply(b"junk") == "unparseable reply"
    assert fuzz.classify_reply(serialize_message(Message(initiator_cookie=b"A" * 8, exchange_type=2))) == "reply IDENTITY_PROTECTION"


def test_non_lab_targets_are_refused_without_allow_any():
    """Only loopback and 192.0.2.0/24 are fuzzed unless --allow-any."""
    with pytest.raises(SystemExit, match="refusing"):
        fuzz.check_target("198.51.100.7:500", allow_any=False)
    assert fuzz.check_target("192.0.2.2:500", allow_any=False) == ("192.0.2.2", 500)
    assert fuzz.check_target("127.0.0.1:4500", allow_any=False) == ("127.0.0.1", 4500)
    assert fuzz.check_target("198.51.100.7:500", allow_any=True) == ("198.51.100.7", 500)
    with pytest.raises(SystemExit):
        fuzz_main(["--target", "127.0.0.1:500", "--rate", "5000"])


class FragileResponder(threading.Thread):
    """A toy responder on loopback: answers parseable messages with NO-PROPOSAL-CHOSEN, ignores
    the rest, and stops answering for good after ``crash_after`` fuzz datagrams."""

    def __init__(self, crash_after: int | None) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.crash_after = crash_after
        self.received = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received += 1
            if self.crash_after is not None and self.received > self.crash_after + 3:  # +3 start probes
                continue  # "crashed": the datagram is swallowed
            try:
                msg = parse_message(data)
            except ParseError:
                continue
            reply = Message(initiator_cookie=msg.initiator_cookie, responder_cookie=b"R" * 8,
                            exchange_type=ExchangeType.INFORMATIONAL,
                            payloads=(NotifyPayload(notify_type=NotifyType.NO_PROPOSAL_CHOSEN),))
            self.sock.sendto(serialize_message(reply), peer)

    def close(self) -> None:
        self.stop.set()
        self.join(2)
        self.sock.close()


@pytest.mark.parametrize("crash_after", [None, 25])
def test_target_mode_classifies_answers_and_detects_lost_liveness(crash_after):
    """Against a loopback responder: parseable cases get an error notify, garbage gets no answer;
    a responder that stops answering is reported with the cases sent since the last good probe."""
    peer = FragileResponder(crash_after)
    peer.start()
    try:
        rep = fuzz.fuzz_target(f"127.0.0.1:{peer.port}", seed=11, count=60, rate=1000, timeout=0.03,
                               probe_every=10, probe_timeout=0.1, out=lambda s: None)
    finally:
        peer.close()
    assert rep.probe_answered_at_start
    assert rep.classes["error notify NO_PROPOSAL_CHOSEN"] > 0
    if crash_after is None:
        assert rep.sent == 60 and rep.crashed_after is None
        assert rep.classes["no answer"] > 0
        assert sorted(i for ids in rep.by_class.values() for i in ids) == list(range(60))
    else:
        assert rep.crashed_after and rep.sent <= 40
        assert {e["case"] for e in rep.crashed_after} <= set(range(20, 40))
