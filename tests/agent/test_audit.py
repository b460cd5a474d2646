"""The audit log: the 541 text carries the seed's fields, events are JSON lines through
structlog, and the in-memory log answers queries."""

from __future__ import annotations

import io
import json

from ikeproto.config import TrafficSelector
from policyagent import audit


def _qm_541(at: float = 10.0) -> audit.SaEstablished:
    return audit.SaEstablished(
        at=at, host="127.0.0.2", mode=audit.QUICK_MODE,
        peer_identity="Preshared key ID: IPv4 address 127.0.0.1", peer_address="127.0.0.1",
        filter=audit.AuditFilter.from_selectors(TrafficSelector.host("127.0.0.2"), TrafficSelector.host("127.0.0.1")),
        parameters=audit.AuditParameters(esp_algorithm="DES CBC", hmac_algorithm="SHA", inbound_spi=1128617882,
                                         outbound_spi=865899841, lifetime_s=900, lifetime_kb=100000))


def test_541_text_has_the_fields_of_the_seed_sample():
    """Mode, Peer Identity, Peer IP Address, Filter (addresses, masks, protocol, ports),
    Parameters (ESP/HMAC/AH algorithms, Encapsulation, InboundSpi, OutBoundSpi, lifetimes)."""
    text = _qm_541().text()
    for needle in ("IKE security association established.", "Data Protection Mode (Quick Mode)",
                   "Peer Identity:", "Peer IP Address: 127.0.0.1", "Source IP Address 127.0.0.2",
                   "Source IP Address Mask 255.255.255.255", "Destination IP Address 127.0.0.1",
                   "Destination IP Address Mask 255.255.255.255", "Protocol 0", "Source Port 0",
                   "Destination Port 0", "ESP Algorithm DES CBC", "HMAC Algorithm SHA", "AH Algorithm None",
                   "Encapsulation Transport Mode", "InboundSpi 1128617882", "OutBoundSpi 865899841",
                   "Lifetime (sec) 900", "Lifetime (kb) 100000"):
        assert needle in text, needle


def test_events_are_json_lines_through_structlog():
    stream = io.StringIO()
    log = audit.AuditLog(logger=audit.file_logger(stream))
    log.record(_qm_541())
    log.record(audit.NegotiationFailed(at=11.0, mode=audit.MAIN_MODE, peer_address="127.0.0.1",
                                       filter=audit.AuditFilter.hosts("127.0.0.2", "127.0.0.1"),
                                       failure_point="Peer", reason="No response from peer"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [d["event_id"] for d in lines] == [541, 547]
    assert lines[0]["parameters"]["inbound_spi"] == 1128617882 and lines[0]["success"] is True
    assert lines[1]["success"] is False and lines[1]["reason"] == "No response from peer"
    assert "Failure Point: Peer" in audit.render(lines[1])


def test_542_and_543_share_a_record_and_differ_by_mode():
    f = audit.AuditFilter.hosts("10.0.0.1", "10.0.0.2")
    qm = audit.SaEnded(at=1.0, mode=audit.QUICK_MODE, peer_address="10.0.0.2", filter=f, inbound_spi=300, outbound_spi=400)
    mm = audit.SaEnded(at=2.0, mode=audit.MAIN_MODE, peer_address="10.0.0.2", filter=f)
    assert qm.to_dict()["event_id"] == 542 and mm.to_dict()["event_id"] == 543
    assert "InboundSpi 300" in qm.text()


def test_query_by_id_and_time_and_counts():
    log = audit.AuditLog(keep=3)
    f = audit.AuditFilter.hosts("10.0.0.1", "10.0.0.2")
    for t in range(5):
        log.record(audit.SaEnded(at=float(t), mode=audit.MAIN_MODE, peer_address="10.0.0.2", filter=f))
    log.record(audit.KerberosFailed(at=9.0, peer_address="10.0.0.2"))
    assert len(log) == 3
    assert [e.at for e in log.query(event_id=543)] == [3.0, 4.0]
    assert [e.at for e in log.query(since=4.0)] == [4.0, 9.0]
    assert log.counts == {543: 5, 545: 1}


def test_soft_sa_is_a_541_that_says_clear():
    e = audit.SaEstablished(at=1.0, mode=audit.QUICK_MODE, peer_identity="", peer_address="10.0.0.9",
                            filter=audit.AuditFilter.hosts("10.0.0.1", "10.0.0.9"), soft=True)
    d = e.to_dict()
    assert d["event_id"] == 541 and d["soft"] is True and "clear" in d["title"]
    assert "soft SA" in audit.summary(d)


def test_read_log_skips_garbage(tmp_path):
    p = tmp_path / "audit.jsonl"
    p.write_text('{"event_id": 541, "title": "x"}\nnot json\n{"other": 1}\n')
    assert audit.read_log(p) == [{"event_id": 541, "title": "x"}]
    assert audit.read_log(tmp_path / "missing") == []
