"""Integration: `policyagent run` as two processes (127.0.0.1 and 127.0.0.2) with policies
from files, then `policyagent ping` between them through the control socket, and the monitor,
events and diag commands against the running services."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from policyagent import builtin
from policyagent.store import write_policy_file
from tests.agent.helpers import partner_policy
from tests.agent.test_aio import free_ports

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policyagent", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})


@pytest.fixture
def two_services(tmp_path):
    ike, natt = free_ports()
    procs = []
    stores = {}
    for me, peer in (("127.0.0.1", "127.0.0.2"), ("127.0.0.2", "127.0.0.1")):
        store = tmp_path / f"store-{me}"
        policy_file = tmp_path / f"partner-{me}.toml"
        write_policy_file(partner_policy(peer, method=builtin.HIGH), policy_file)
        assert _cli("policy", "import", str(policy_file), "--store", str(store)).returncode == 0
        assert _cli("policy", "assign", "Partner", "--store", str(store)).returncode == 0
        proc = subprocess.Popen(
            [sys.executable, "-m", "policyagent", "run", "--store", str(store), "--address", me,
             "--ike-port", str(ike), "--natt-port", str(natt), "--trace", "--loop", "asyncio",
             "--poll", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=os.environ | {"PYTHONPATH": str(ROOT)})
        procs.append(proc)
        stores[me] = store
    try:
        for proc in procs:
            line = proc.stdout.readline()
            assert "policyagent: running on" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield stores
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            proc.stdout.close()
            proc.stderr.close()


def test_two_processes_ping_monitor_events_diag(two_services):
    one, two = two_services["127.0.0.1"], two_services["127.0.0.2"]
    sock = two / "control.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    ping = _cli("ping", "127.0.0.1", "--via", str(two), "-n", "4", "--interval", "0.2")
    assert ping.returncode == 0, ping.stderr
    lines = ping.stdout.splitlines()
    assert "Pinging 127.0.0.1 with 32 bytes of data:" in lines
    replies = [line for line in lines if line.startswith("Reply from 127.0.0.1")]
    assert "Negotiating IP Security." in lines and len(replies) == 3
    assert all("secured by IPsec" in line for line in replies)
    assert "Packets: Sent = 4, Received = 3, Lost = 1" in ping.stdout
    again = _cli("ping", "127.0.0.1", "--via", str(two), "-n", "2", "--interval", "0.1")
    assert again.stdout.count("Reply from 127.0.0.1") == 2 and "Negotiating" not in again.stdout

    snap = json.loads(_cli("monitor", "--json", "--via", str(two)).stdout)
    [sa] = snap["security_associations"]
    assert sa["peer"] == "127.0.0.1" and sa["security"].startswith("ESP AES CBC 128") and sa["lifetime_left_s"] > 3500
    assert snap["statistics"]["quick_modes"] == 1 and snap["statistics"]["confidential_bytes_sent"] > 0
    table = _cli("monitor", "--once", "--via", str(sock)).stdout
    assert "IP Security Monitor - 127.0.0.2" in table and "Quick Modes" in table
    live = _cli("monitor", "--count", "2", "--interval", "0.1", "--via", str(two)).stdout
    assert live.count("IP Security Monitor - 127.0.0.2") == 2 and live.count("\x1b[2J") == 2

    events = _cli("events", "--via", str(two), "--id", "541", "-v")
    assert "Data Protection Mode (Quick Mode)" in events.stdout and "InboundSpi" in events.stdout
    assert json.loads(_cli("events", "--file", str(one / "audit.jsonl"), "--json").stdout)[0]["event_id"] == 541

    diag = _cli("diag", "--via", str(two))
    assert "Local IPSec Policy Active: 'Partner'" in diag.stdout and "127.0.0.1: established" in diag.stdout
    assert (two / "oakley.log").stat().st_size > 0

    # Assigning another policy in the store takes effect in the running service (polled).
    assert _cli("policy", "assign", "Client", "--store", str(two)).returncode == 0
    for _ in range(50):
        if json.loads(_cli("monitor", "--json", "--via", str(two)).stdout)["policy"] == "Client (Respond Only)":
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the new assignment was not applied")


def test_commands_without_a_service_say_so(tmp_path):
    result = _cli("ping", "127.0.0.1", "--via", str(tmp_path / "nothing.sock"))
    assert result.returncode == 1 and "no policyagent service" in result.stderr
    diag = _cli("diag", "--via", str(tmp_path))
    assert diag.returncode == 1 and "not running" in diag.stdout


def test_run_refuses_privileged_ports_without_root(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: ports below 1024 are allowed")
    result = _cli("run", "--store", str(tmp_path), "--address", "127.0.0.1")
    assert result.returncode == 1 and "need root" in result.stderr
