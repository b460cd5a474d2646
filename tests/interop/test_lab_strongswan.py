"""strongSwan interop fixtures proven on real peers, and their parsers on stored output.

Unit tests (no root): the swanctl.conf builder, the ``--list-sas --pretty`` parser and the ike-scan
parser, on output captured from charon 5.9.8 and ike-scan 1.9.5 in the lab. Lab tests (root,
``interop``): two charons in ``netns_pair`` negotiate IKEv1 Main Mode (PSK) + Quick Mode
(RFC 2409 §5, §5.5) in UDP-encapsulated tunnel mode (RFC 3948), ping through the tunnel, delete
from the other side (RFC 2408 §3.15); ike-scan probes a charon responder; a capture shows the
exchanges and ESP-in-UDP with the listed SPIs.
"""

from __future__ import annotations

import os
import socket

import pytest

from tests.interop.conftest import need_ike_scan
from tests.interop.ikescan import (
    AUTH_PSK,
    ENC_3DES,
    ENC_AES_CBC,
    ENC_DES,
    GROUP_MODP768,
    GROUP_MODP1024,
    GROUP_MODP2048,
    HASH_MD5,
    HASH_SHA1,
    ike_scan,
    netns_socket,
    parse_ike_scan,
    transform,
    tshark_fields,
)
from tests.interop.strongswan import (
    Charon,
    IkeSa,
    Secret,
    StrongswanError,
    SwanctlConfig,
    SwanctlError,
    find_children,
    parse_list_sas,
    parse_vici_pretty,
)
from tests.lab import run

# ---------------------------------------------------------------------------- stored output
# Captured in the lab: charon hq2 (192.0.2.2) initiated children 'net' and 'host' to hq1.
LIST_SAS_INITIATOR = """list-sa event {
  hq {
    uniqueid = 1
    version = 1
    state = ESTABLISHED
    local-host = 192.0.2.2
    local-port = 4500
    local-id = 192.0.2.2
    remote-host = 192.0.2.1
    remote-port = 4500
    remote-id = 192.0.2.1
    initiator = yes
    initiator-spi = 8fbbe8ec3edadeff
    responder-spi = 8736fe62b2d36df4
    nat-remote = yes
    nat-any = yes
    encr-alg = 3DES_CBC
    integ-alg = HMAC_SHA1_96
    prf-alg = PRF_HMAC_SHA1
    dh-group = MODP_1024
    established = 1
    child-sas {
      net-1 {
        name = net
        uniqueid = 1
        reqid = 1
        state = INSTALLED
        mode = TUNNEL
        protocol = ESP
        encap = yes
        spi-in = 1ef31de0
        spi-out = 3d071ccb
        encr-alg = AES_CBC
        encr-keysize = 128
        integ-alg = HMAC_SHA1_96
        bytes-in = 168
        packets-in = 2
        use-in = 1
        bytes-out = 168
        packets-out = 2
        use-out = 1
        install-time = 1
        local-ts = [
          192.0.2.102/32
        ]
        remote-ts = [
          192.0.2.101/32
        ]
      }
      host-2 {
        name = host
        uniqueid = 2
        reqid = 2
        state = INSTALLED
        mode = TUNNEL
        protocol = ESP
        encap = yes
        spi-in = d3121e27
        spi-out = 5ba5fabb
        encr-alg = AES_CBC
        encr-keysize = 128
        integ-alg = HMAC_SHA1_96
        bytes-in = 168
        packets-in = 2
        use-in = 0
        bytes-out = 168
        packets-out = 2
        use-out = 0
        install-time = 1
        local-ts = [
          192.0.2.2/32
        ]
        remote-ts = [
          192.0.2.1/32
        ]
      }
    }
  }
}
list-sas reply {
}
"""

LIST_SAS_HALF_OPEN = """list-sa event {
  (unnamed) {
    uniqueid = 5
    version = 1
    state = CONNECTING
    local-host = 192.0.2.1
    local-port = 500
    local-id = %any
    remote-host = 192.0.2.2
    remote-port = 48931
    remote-id = %any
    initiator-spi = 21975f6df65688e4
    responder-spi = 524f96545a690d0a
    encr-alg = AES_CBC
    encr-keysize = 128
    integ-alg = HMAC_SHA1_96
    prf-alg = PRF_HMAC_SHA1
    dh-group = MODP_2048
    tasks-passive = [
      ISAKMP_VENDOR
      MAIN_MODE
    ]
    child-sas {
    }
  }
}
"""

SCAN_HANDSHAKE = """Starting ike-scan 1.9.5 with 1 hosts (http://www.nta-monitor.com/tools/ike-scan/)
192.0.2.1\tMain Mode Handshake returned
\tHDR=(CKY-R=4be035f9cc2bcdc7)
\tSA=(Enc=3DES Hash=SHA1 Group=2:modp1024 Auth=PSK LifeType=Seconds LifeDuration=28800)
\tVID=09002689dfd6b712 (XAUTH)
\tVID=afcad71368a1f1c96b8696fc77570100 (Dead Peer Detection v1.0)

Ending ike-scan 1.9.5: 1 hosts scanned in 0.009 seconds (115.55 hosts/sec).  1 returned handshake; 0 returned notify
"""

SCAN_AES = """Starting ike-scan 1.9.5 with 1 hosts (http://www.nta-monitor.com/tools/ike-scan/)
192.0.2.1\tMain Mode Handshake returned
\tHDR=(CKY-R=524f96545a690d0a)
\tSA=(Enc=AES KeyLength=128 Hash=SHA1 Group=14:modp2048 Auth=PSK LifeType=Seconds LifeDuration=0)
\tVID=09002689dfd6b712 (XAUTH)
\tVID=afcad71368a1f1c96b8696fc77570100 (Dead Peer Detection v1.0)

Ending ike-scan 1.9.5: 1 hosts scanned in 0.014 seconds (72.32 hosts/sec).  1 returned handshake; 0 returned notify
"""

SCAN_NOTIFY = """Starting ike-scan 1.9.5 with 1 hosts (http://www.nta-monitor.com/tools/ike-scan/)
192.0.2.1\tNotify message 14 (NO-PROPOSAL-CHOSEN)
\tHDR=(CKY-R=7302b264e1edc3be, msgid=db82d200)

Ending ike-scan 1.9.5: 1 hosts scanned in 0.009 seconds (115.17 hosts/sec).  0 returned handshake; 1 returned notify
"""

SCAN_SILENT = """Starting ike-scan 1.9.5 with 1 hosts (http://www.nta-monitor.com/tools/ike-scan/)

Ending ike-scan 1.9.5: 1 hosts scanned in 2.403 seconds (0.42 hosts/sec).  0 returned handshake; 0 returned notify
"""
# Edited from a real listing to exercise values with spaces (a DN identity) and a binary value.
LIST_SAS_DN_ID = """list-sa event {
  moon {
    uniqueid = 7
    version = 1
    state = ESTABLISHED
    local-id = C=CH, O=strongSwan, CN=moon.strongswan.org
    remote-id = C=CH, O=strongSwan, CN=sun.strongswan.org
    initiator-spi = 0123456789abcdef
    responder-spi = fedcba9876543210
    child-sas {
      gw-3 {
        name = gw
        uniqueid = 3
        state = INSTALLED
        mode = TUNNEL
        protocol = ESP
        spi-in = 0000c001
        spi-out = ffffffff
        local-ts = [
          10.1.0.0/16
          10.3.0.0/16
        ]
        remote-ts = [
        ]
      }
    }
  }
}
list-sas reply {
}
"""


# ---------------------------------------------------------------------------- unit: parsers


def test_list_sas_parser_reads_initiator_sa_with_two_children():
    """The captured initiator listing becomes one IKE SA with both CHILD_SAs, SPIs as ints."""
    (ike,) = parse_list_sas(LIST_SAS_INITIATOR)
    assert (ike.name, ike.uniqueid, ike.version, ike.state) == ("hq", 1, 1, "ESTABLISHED")
    assert ike.is_initiator and ike.nat_remote and ike.nat_any and not ike.nat_local
    assert (ike.local_host, ike.local_port, ike.remote_host, ike.remote_port) == ("192.0.2.2", 4500, "192.0.2.1", 4500)
    assert (ike.local_id, ike.remote_id) == ("192.0.2.2", "192.0.2.1")
    assert ike.initiator_spi == 0x8FBBE8EC3EDADEFF and ike.responder_spi == 0x8736FE62B2D36DF4
    assert (ike.encr_alg, ike.integ_alg, ike.prf_alg, ike.dh_group) == (
        "3DES_CBC", "HMAC_SHA1_96", "PRF_HMAC_SHA1", "MODP_1024"
    )
    assert [c.key for c in ike.children] == ["net-1", "host-2"]
    net = ike.child("net")
    assert net is not None
    assert (net.state, net.mode, net.protocol, net.is_encap) == ("INSTALLED", "TUNNEL", "ESP", True)
    assert (net.spi_in, net.spi_out) == (0x1EF31DE0, 0x3D071CCB)
    assert (net.encr_alg, net.encr_keysize, net.integ_alg) == ("AES_CBC", 128, "HMAC_SHA1_96")
    assert (net.bytes_in, net.packets_in, net.bytes_out, net.packets_out) == (168, 2, 168, 2)
    assert (net.local_ts, net.remote_ts) == (("192.0.2.102/32",), ("192.0.2.101/32",))
    host = ike.child("host")
    assert host is not None and host.spi_in == 0xD3121E27 and host.remote_ts == ("192.0.2.1/32",)
    assert ike.child("trans") is None
    assert find_children([ike], state="INSTALLED") == [net, host]


def test_list_sas_parser_reads_half_open_responder_sa():
    """An SA that ike-scan left half-open: no name, CONNECTING, a task list, no children."""
    (ike,) = parse_list_sas(LIST_SAS_HALF_OPEN)
    assert (ike.name, ike.state, ike.is_initiator) == ("(unnamed)", "CONNECTING", False)
    assert ike.children == () and ike.established_s is None
    assert (ike.encr_alg, ike.encr_keysize, ike.dh_group) == ("AES_CBC", 128, "MODP_2048")
    assert ike.raw["tasks-passive"] == ["ISAKMP_VENDOR", "MAIN_MODE"]


def test_list_sas_parser_keeps_values_with_spaces_and_lists():
    """DN identities keep their spaces; a list holds several selectors or none."""
    (ike,) = parse_list_sas(LIST_SAS_DN_ID)
    assert ike.local_id == "C=CH, O=strongSwan, CN=moon.strongswan.org"
    (gw,) = ike.children
    assert gw.local_ts == ("10.1.0.0/16", "10.3.0.0/16") and gw.remote_ts == ()
    assert (gw.spi_in, gw.spi_out, gw.reqid, gw.bytes_in) == (0xC001, 0xFFFFFFFF, None, None)


def test_vici_pretty_parser_ignores_log_lines_and_keeps_message_order():
    """swanctl's log lines around messages are skipped; the reply message is kept too."""
    text = "[IKE] something happened\n" + LIST_SAS_HALF_OPEN + "list-sas reply {\n}\n"
    assert [label for label, _ in parse_vici_pretty(text)] == ["list-sa event", "list-sas reply"]


@pytest.mark.parametrize("cut", [40, 300, len(LIST_SAS_INITIATOR) - 3])
def test_vici_pretty_parser_rejects_truncated_output(cut):
    """Output cut inside a section or list is an error, never a silently partial listing."""
    with pytest.raises(StrongswanError):
        parse_list_sas(LIST_SAS_INITIATOR[:cut])


def test_ike_scan_parser_reads_handshake():
    r = parse_ike_scan(SCAN_HANDSHAKE, "192.0.2.1")
    assert r.is_handshake and r.mode == "Main" and r.responder_cookie == "4be035f9cc2bcdc7"
    assert {k: r.sa[k] for k in ("Enc", "Hash", "Group", "Auth")} == {
        "Enc": "3DES", "Hash": "SHA1", "Group": "2:modp1024", "Auth": "PSK"
    }
    assert r.vendor_ids[1].endswith("(Dead Peer Detection v1.0)")
    aes = parse_ike_scan(SCAN_AES, "192.0.2.1")
    assert (aes.sa["Enc"], aes.sa["KeyLength"], aes.sa["Group"]) == ("AES", "128", "14:modp2048")


def test_ike_scan_parser_reads_notify_and_silence():
    r = parse_ike_scan(SCAN_NOTIFY, "192.0.2.1")
    assert (r.outcome, r.notify_type, r.notify_name) == ("notify", 14, "NO-PROPOSAL-CHOSEN")
    assert not r.is_handshake and r.responder_cookie == "7302b264e1edc3be"
    silent = parse_ike_scan(SCAN_SILENT, "192.0.2.9")
    assert silent.outcome == "none" and silent.sa == {}
    with pytest.raises(ValueError):
        parse_ike_scan("ike-scan: something broke\n", "192.0.2.1")


def test_ike_scan_transform_strings():
    assert transform(ENC_3DES, HASH_SHA1, AUTH_PSK, GROUP_MODP1024) == "5,2,1,2"
    assert transform(ENC_AES_CBC, HASH_SHA1, AUTH_PSK, GROUP_MODP2048, key_length=128) == "(1=7,14=128,2=2,3=1,4=14)"


# ---------------------------------------------------------------------------- unit: builder


def test_lab_peer_config_matches_gen_peer_semantics():
    """``lab_peer`` renders what conf/gen-peer.sh writes: IKEv1 Main Mode, PSK, no rekey/DPD."""
    conf = SwanctlConfig.lab_peer("192.0.2.1", "192.0.2.2", "192.0.2.101", "192.0.2.102")
    (label, conns), (_, secrets) = parse_vici_pretty(conf.render())
    assert label == "connections"
    hq = conns["hq"]
    assert {k: hq[k] for k in ("version", "aggressive", "local_addrs", "remote_addrs", "unique")} == {
        "version": "1", "aggressive": "no", "local_addrs": "192.0.2.1", "remote_addrs": "192.0.2.2", "unique": "no"
    }
    assert hq["proposals"] == "3des-sha1-modp1024, aes128-sha1-modp2048"
    assert (hq["rekey_time"], hq["reauth_time"], hq["dpd_delay"]) == ("0", "0", "0")
    assert hq["local"] == {"auth": "psk", "id": "192.0.2.1"} and hq["remote"] == {"auth": "psk", "id": "192.0.2.2"}
    kids = hq["children"]
    assert list(kids) == ["net", "host", "trans"]
    assert (kids["net"]["mode"], kids["net"]["local_ts"], kids["net"]["remote_ts"]) == (
        "tunnel", "192.0.2.101/32", "192.0.2.102/32"
    )
    assert (kids["host"]["local_ts"], kids["host"]["remote_ts"]) == ("192.0.2.1/32", "192.0.2.2/32")
    assert kids["trans"]["mode"] == "transport"
    for kid in kids.values():
        assert kid["esp_proposals"] == "aes128-sha1, 3des-sha1"
        assert (kid["rekey_time"], kid["start_action"]) == ("0", "none")
        assert "ah_proposals" not in kid
    assert secrets["ike-hq"] == {"id-0": "192.0.2.1", "id-1": "192.0.2.2", "secret": '"ABC123"'}
    assert secrets["ike-any"] == {"secret": '"ABC123"'}


def test_responder_config_accepts_any_peer():
    conf = SwanctlConfig.responder("192.0.2.1", "192.0.2.101", esp_proposals=("aes128-sha1",))
    (_, conns), _ = parse_vici_pretty(conf.render())
    resp = conns["resp"]
    assert resp["remote_addrs"] == "%any" and resp["remote"] == {"auth": "psk"}
    assert resp["children"]["net"]["remote_ts"] == "0.0.0.0/0"
    assert resp["children"]["net"]["esp_proposals"] == "aes128-sha1"


@pytest.mark.parametrize("psk", ["", 'a"b', "a\nb", "a}b", "a\\b"])
def test_secret_refuses_keys_that_cannot_be_written(psk):
    with pytest.raises(ValueError):
        Secret(name="x", secret=psk).settings()


def test_secret_stays_out_of_repr():
    conf = SwanctlConfig.lab_peer("192.0.2.1", "192.0.2.2", "192.0.2.101", "192.0.2.102", psk="s3cr3t-k3y")
    assert "s3cr3t-k3y" not in repr(conf) and "s3cr3t-k3y" in conf.render()


def test_config_refuses_values_that_would_break_the_file():
    conf = SwanctlConfig.lab_peer("192.0.2.1", "192.0.2.2 }", "192.0.2.101", "192.0.2.102")
    with pytest.raises(ValueError):
        conf.render()


# ---------------------------------------------------------------------------- lab: real charons


def _pair_charons(charon_factory, netns_pair) -> tuple[Charon, Charon]:
    a = charon_factory(0, SwanctlConfig.for_pair(netns_pair, 0), name="hq1")
    b = charon_factory(1, SwanctlConfig.for_pair(netns_pair, 1), name="hq2")
    return a, b


def _installed(charon: Charon, name: str) -> IkeSa:
    """Wait until ``charon`` lists CHILD_SA ``name`` INSTALLED; return its IKE SA."""
    def ready(sas: list[IkeSa]) -> IkeSa | None:
        return next((s for s in sas if (c := s.child(name)) is not None and c.state == "INSTALLED"), None)

    return charon.wait_for(ready, timeout=10, what=f"CHILD_SA {name} INSTALLED")


def _assert_pair(a: Charon, b: Charon, name: str) -> None:
    """Both sides list CHILD_SA ``name``: tunnel mode, ESP in UDP, SPIs crossed over."""
    ike_a, ike_b = _installed(a, name), _installed(b, name)
    ca, cb = ike_a.child(name), ike_b.child(name)
    assert ca is not None and cb is not None
    assert ike_a.state == ike_b.state == "ESTABLISHED" and ike_a.version == 1
    assert (ike_a.initiator_spi, ike_a.responder_spi) == (ike_b.initiator_spi, ike_b.responder_spi)
    for c in (ca, cb):
        assert (c.mode, c.protocol, c.is_encap) == ("TUNNEL", "ESP", True)
    assert ca.spi_in == cb.spi_out and ca.spi_out == cb.spi_in
    assert ca.spi_in != ca.spi_out
    assert (ca.local_ts, ca.remote_ts) == (cb.remote_ts, cb.local_ts)
    # charon's libipsec fakes a NAT so that ESP goes in UDP 4500 (RFC 3948)
    assert ike_a.local_port == ike_b.local_port == 4500


def _ping(netns_pair, side: int, target: str) -> str:
    out = netns_pair.run(side, ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", target], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.interop
@pytest.mark.root
def test_charons_negotiate_tunnels_ping_and_delete(charon_factory, netns_pair):
    """hq2 initiates 'net' then 'host'; both sides agree; pings pass; hq1's Deletes reach hq2."""
    a, b = _pair_charons(charon_factory, netns_pair)
    out = b.initiate("hq", "net", timeout=10)
    assert "CHILD_SA net{" in out and "established" in out
    _assert_pair(a, b, "net")
    b.initiate("hq", "host", timeout=10)
    _assert_pair(a, b, "host")
    assert len(a.list_sas()) == len(b.list_sas()) == 1  # one Main Mode, two Quick Modes

    _ping(netns_pair, 1, netns_pair.inner[0])  # inner /32 <-> inner /32
    _ping(netns_pair, 1, netns_pair.addrs[0])  # host-to-host: TS == the IKE peers
    # the echoes went through the SAs: charon's counters (libipsec) saw them both ways
    for name in ("net", "host"):
        (cb,) = b.children(name)
        (ca,) = a.children(name)
        assert cb.packets_out is not None and cb.packets_out >= 2, cb
        assert ca.packets_in == cb.packets_out and ca.packets_out == cb.packets_in
    net_b = b.children("net")[0]

    with pytest.raises(SwanctlError, match="not found"):
        b.initiate("hq", "nope", timeout=5)

    # the responder deletes one CHILD_SA, then the whole IKE SA; the initiator follows
    host_b = b.children("host")[0]
    a.terminate(ike="hq", child="net")
    b.wait_for(lambda sas: sas and sas[0].child("net") is None, timeout=5, what="net deleted")
    assert [c.name for c in b.children()] == ["host"]
    a.terminate(ike="hq")
    b.wait_for(lambda sas: not sas, timeout=5, what="IKE SA deleted")
    assert a.list_sas() == []
    # each Delete names the SPI its sender receives on (RFC 2408 §3.15), i.e. hq2's outbound SPI
    # (charon may process the IKE SA's Delete before the CHILD_SA's that was sent just before it)
    deletes = b.deletes_received()
    assert deletes[0] == ("ESP", net_b.spi_out) and ("IKE", None) in deletes
    assert set(deletes) <= {("ESP", net_b.spi_out), ("ESP", host_b.spi_out), ("IKE", None)}
    assert a.deletes_received() == []


@pytest.mark.interop
@pytest.mark.root
def test_charon_stop_kills_by_pid_and_leaves_nothing(charon_factory, netns_pair):
    """stop() ends the recorded PID; no process is left in the namespace; stop twice is harmless."""
    c = charon_factory(0, SwanctlConfig.for_pair(netns_pair, 0, children=("net",)), name="solo")
    pid = c.pid
    assert pid is not None and c.running
    listed = run(["ip", "netns", "pids", netns_pair.ns[0]]).stdout.split()
    assert str(pid) in listed
    assert "loaded connection 'hq'" in c.load(SwanctlConfig.for_pair(netns_pair, 0))
    assert c.stop() == 0  # charon exits cleanly on SIGTERM
    assert not c.running and c.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert run(["ip", "netns", "pids", netns_pair.ns[0]]).stdout.split() == []
    with pytest.raises(SwanctlError):
        c.list_sas()


@pytest.mark.interop
@pytest.mark.root
def test_ike_scan_probes_charon_responder(charon_factory, netns_pair):
    """ike-scan from ns[1] gets a Main Mode reply for 3DES/SHA1/MODP1024, NO-PROPOSAL-CHOSEN for DES/MD5/MODP768."""
    need_ike_scan()
    resp = charon_factory(0, SwanctlConfig.responder(netns_pair.addrs[0], netns_pair.inner[0]), name="resp")
    target = netns_pair.addrs[0]
    ok = ike_scan(netns_pair.ns[1], target, transform(ENC_3DES, HASH_SHA1, AUTH_PSK, GROUP_MODP1024))
    assert ok.is_handshake and ok.mode == "Main", ok.output
    assert (ok.sa["Enc"], ok.sa["Hash"], ok.sa["Group"], ok.sa["Auth"]) == ("3DES", "SHA1", "2:modp1024", "PSK")
    aes128 = transform(ENC_AES_CBC, HASH_SHA1, AUTH_PSK, GROUP_MODP2048, key_length=128)
    aes = ike_scan(netns_pair.ns[1], target, aes128)
    assert aes.is_handshake and (aes.sa["Enc"], aes.sa["KeyLength"]) == ("AES", "128"), aes.output
    refused = ike_scan(netns_pair.ns[1], target, transform(ENC_DES, HASH_MD5, AUTH_PSK, GROUP_MODP768))
    assert refused.outcome == "notify" and refused.notify_name == "NO-PROPOSAL-CHOSEN", refused.output
    # charon keeps the probes' half-open SAs: its responder cookies are what ike-scan printed
    half_open = resp.wait_for(lambda sas: [s for s in sas if s.state == "CONNECTING"] or None, what="half-open SAs")
    cookies = {f"{s.responder_spi:016x}" for s in half_open}
    assert {ok.responder_cookie, aes.responder_cookie} <= cookies
    assert all(not s.is_initiator and s.children == () for s in half_open)


@pytest.mark.interop
@pytest.mark.root
def test_capture_shows_main_quick_mode_and_esp_in_udp(charon_factory, capture_factory, netns_pair):
    """hq1 initiates; a capture on hq1's veth holds MM on 500, QM on 4500 and ESP-in-UDP with the listed SPIs."""
    a, b = _pair_charons(charon_factory, netns_pair)
    cap = capture_factory(0)
    a.initiate("hq", "net", timeout=10)
    _assert_pair(b, a, "net")
    _ping(netns_pair, 0, netns_pair.inner[1])
    pcap = cap.stop()
    rows = tshark_fields(pcap, "isakmp || esp", ["udp.srcport", "isakmp.exchangetype", "esp.spi"])
    kinds = {(r["udp.srcport"], r["isakmp.exchangetype"]) for r in rows if r["isakmp.exchangetype"]}
    assert ("500", "2") in kinds and ("4500", "2") in kinds and ("4500", "32") in kinds, kinds
    esp = [r for r in rows if r["esp.spi"]]
    assert all(r["udp.srcport"] == "4500" for r in esp)
    spis = {int(r["esp.spi"], 16) for r in esp}
    (net_a,) = a.children("net")
    assert spis == {net_a.spi_in, net_a.spi_out}
    assert len(esp) >= 4  # two echo requests out, two replies back


@pytest.mark.interop
@pytest.mark.root
def test_charon_with_unloadable_config_is_stopped(charon_factory, netns_pair):
    """A config swanctl refuses fails start() with swanctl's message, and no charon is left running."""
    with pytest.raises(SwanctlError, match="invalid config file") as err:
        charon_factory(0, "connections {\n  broken {\n", name="broken")
    assert "--load-all" in err.value.argv
    bad_proposal = SwanctlConfig.for_pair(netns_pair, 0, proposals=("nonsense-sha1-modp1024",))
    with pytest.raises(SwanctlError, match="invalid value for: proposals"):
        charon_factory(0, bad_proposal, name="bad-proposal")
    assert run(["ip", "netns", "pids", netns_pair.ns[0]]).stdout.split() == []


@pytest.mark.interop
@pytest.mark.root
def test_netns_socket_lives_in_its_namespace(netns_pair):
    """Sockets made from the test process in ns[0] and ns[1] talk over the veth; ours stays put."""
    a = netns_socket(netns_pair.ns[0])
    b = netns_socket(netns_pair.ns[1])
    with a, b:
        a.bind((netns_pair.addrs[0], 0))  # only ns[0] has 192.0.2.1
        b.bind((netns_pair.addrs[1], 0))
        a.settimeout(5)
        b.sendto(b"hello", a.getsockname())
        data, peer = a.recvfrom(100)
        assert (data, peer) == (b"hello", b.getsockname())
    here = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with here, pytest.raises(OSError):
        here.bind((netns_pair.addrs[0], 0))  # the test thread is still in the root namespace
    with pytest.raises(FileNotFoundError):
        netns_socket("pyipsec-no-such-namespace")


@pytest.mark.interop
@pytest.mark.root
def test_charon_initiates_toward_a_socket_of_ours(charon_factory, netns_pair):
    """The set-up for charon initiating to our endpoint: Main Mode message 1 reaches our socket at 192.0.2.1:500."""
    ours = netns_socket(netns_pair.ns[0])
    with ours:
        ours.bind((netns_pair.addrs[0], 500))
        ours.settimeout(5)
        b = charon_factory(1, SwanctlConfig.for_pair(netns_pair, 1), name="hq2")
        assert "initiate completed" in b.initiate("hq", "net", wait=False)  # returns before any reply
        data, peer = ours.recvfrom(65535)
    assert peer == (netns_pair.addrs[1], 500)
    # RFC 2408 §3.1 header: CKY-I, CKY-R = 0, next payload SA (1), version 1.0, Identity Protection (2)
    assert len(data) >= 28 and data[8:16] == bytes(8)
    assert (data[16], data[17], data[18]) == (1, 0x10, 2)
    assert int.from_bytes(data[24:28], "big") == len(data)
    cky_i = int.from_bytes(data[:8], "big")
    (sa,) = b.wait_for(lambda sas: [s for s in sas if s.initiator_spi == cky_i], what="our cookie listed")
    assert (sa.name, sa.state, sa.is_initiator, sa.remote_host) == ("hq", "CONNECTING", True, netns_pair.addrs[0])
