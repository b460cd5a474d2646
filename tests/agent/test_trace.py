"""The IKE debug trace file: off means nothing written, .sav keeps the previous file, the
50,000-entry bound holds, and key material is hidden unless asked for."""

from __future__ import annotations

import os
import stat

from policyagent.trace import MAX_ENTRIES, TraceFile, null_logger


def test_default_bound_is_the_seeds_50000():
    assert MAX_ENTRIES == 50_000


def test_restart_keeps_the_previous_file_as_sav(tmp_path):
    path = tmp_path / "oakley.log"
    with TraceFile(path, clock=lambda: 0.0) as t:
        t.logger().info("mm_sent", peer="127.0.0.1", step=1)
    first = path.read_text()
    assert "mm_sent" in first and "peer=127.0.0.1" in first
    with TraceFile(path, clock=lambda: 0.0) as t:
        t.logger().info("qm_sent", peer="127.0.0.1")
    assert (tmp_path / "oakley.log.sav").read_text() == first
    assert "qm_sent" in path.read_text() and "mm_sent" not in path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_bound_starts_a_new_file_and_keeps_the_full_one(tmp_path):
    path = tmp_path / "oakley.log"
    with TraceFile(path, max_entries=5, clock=lambda: 0.0) as t:
        log = t.logger()
        for i in range(12):
            log.info("entry", n=i)
        assert t.rotations == 2
    current = path.read_text().splitlines()
    saved = (tmp_path / "oakley.log.sav").read_text().splitlines()
    assert len(current) == 2 and len(saved) == 5
    assert current[-1].endswith("n=11") and saved[0].endswith("n=5")


def test_secrets_are_hidden_unless_requested(tmp_path):
    path = tmp_path / "oakley.log"
    with TraceFile(path, clock=lambda: 0.0) as t:
        t.logger().info("keys", skeyid_d=b"\x01\x02", enc_key="abc", key_bits=128)
    text = path.read_text()
    assert "0102" not in text and "abc" not in text and "key_bits=128" in text
    with TraceFile(path, include_secrets=True, clock=lambda: 0.0) as t:
        t.logger().info("keys", skeyid_d=b"\x01\x02")
    assert "skeyid_d=0102" in path.read_text()


def test_null_logger_accepts_calls_and_writes_nothing(tmp_path):
    log = null_logger()
    log.info("anything", x=1)
    log.debug("more")
    assert list(tmp_path.iterdir()) == []
