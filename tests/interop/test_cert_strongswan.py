"""Certificate authentication against strongSwan's charon, both directions, with certificates from
one test CA made at run time (``tests.pki``, or ``policyagent cert`` into a machine store): Main
Mode with RSA signatures (RFC 2409 §5.1), CERT and CR payloads (RFC 2408 §3.9-§3.10),
ID_DER_ASN1_DN identities, then a Quick Mode.

Our endpoint runs in the test process with its UDP 500/4500 sockets inside ``ns[0]``
(192.0.2.1), pumped by a small blocking loop (sans-I/O: datagrams in, datagrams out, timers);
charon runs in ``ns[1]`` (192.0.2.2) with kernel-libipsec, which fakes a NAT, so both sides float
to port 4500 (RFC 3947). Main Mode consults ``ikeproto.certs.CertificateAuthenticator`` through
``Phase1Config.certificates``.

strongSwan writes Distinguished Names in DER order ("O=Lab, CN=charon"), Windows and RFC 4514
the other way round ("CN=charon, O=Lab"); both name the same DER.
"""

from __future__ import annotations

import datetime as dt
import select
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ikeproto.certs import CertificateAuthenticator, Credential
from ikeproto.config import TrafficSelector
from ikeproto.endpoint import IkeEndpoint
from ikeproto.events import Event, NegotiationFailed, Phase1Established, Phase2Established
from ikeproto.pki import names_equal
from policyagent.certstore import MachineStore, authenticator_for, system_time
from policyagent.model import AuthMethod
from tests import pki
from tests.ike.helpers import Provider, phase2
from tests.ike.test_cert_negotiation import with_certificates
from tests.interop.ikescan import netns_socket

pytestmark = [pytest.mark.interop, pytest.mark.root]

NON_ESP_MARKER = b"\x00\x00\x00\x00"
STEP_S = 15.0


def _now_pki(bits: int):
    """A CA, our certificate and charon's, valid around the real clock (charon checks dates)."""
    now = dt.datetime.now(dt.timezone.utc)
    nb, na = now - dt.timedelta(days=1), now + dt.timedelta(days=30)
    ca = pki.root("CN=Interop Root, O=Lab", key_slot=1, bits=bits, not_before=nb - dt.timedelta(days=1),
                  not_after=na + dt.timedelta(days=1))
    ours = ca.issue("CN=pyipsec host, O=Lab", key_slot=10, bits=bits, not_before=nb, not_after=na,
                    san=("ip:192.0.2.1",))
    theirs = ca.issue("CN=charon host, O=Lab", key_slot=11, bits=bits, not_before=nb, not_after=na,
                      san=("ip:192.0.2.2",))
    return ca, ours, theirs


def _swanctl_conf(pair) -> str:
    a, b = pair.addrs
    ia, ib = pair.inner
    return f"""connections {{
  certs {{
    version = 1
    aggressive = no
    local_addrs = {b}
    remote_addrs = {a}
    proposals = aes128-sha1-modp2048
    rekey_time = 0
    reauth_time = 0
    dpd_delay = 0
    unique = no
    keyingtries = 1
    send_certreq = yes
    send_cert = always
    local {{
      auth = pubkey
      certs = charon.pem
      id = "O=Lab, CN=charon host"
    }}
    remote {{
      auth = pubkey
      id = "O=Lab, CN=pyipsec host"
      cacerts = ca.pem
    }}
    children {{
      net {{
        mode = tunnel
        local_ts = {ib}/32
        remote_ts = {ia}/32
        esp_proposals = aes128-sha1
        rekey_time = 0
        start_action = none
      }}
    }}
  }}
}}
"""


class Pump:
    """Drives an ``IkeEndpoint`` over real sockets in a namespace (what ``ikeproto.aio`` does)."""

    def __init__(self, ep: IkeEndpoint, netns: str, addr: str) -> None:
        self.ep = ep
        self.socks = {}
        for port in (500, 4500):
            s = netns_socket(netns)
            s.bind((addr, port))
            s.setblocking(False)
            self.socks[port] = s
        self.events: list[Event] = []

    def close(self) -> None:
        for s in self.socks.values():
            s.close()

    def _flush(self, now: float) -> None:
        for data, dest, lport in self.ep.datagrams_to_send(now):
            self.socks[lport].sendto(NON_ESP_MARKER + data if lport == 4500 else data, dest)

    def run_until(self, done, what: str) -> Event:
        deadline = time.monotonic() + STEP_S
        while True:
            now = time.monotonic()
            self.ep.handle_timer(now)
            self._flush(now)
            while (e := self.ep.next_event()) is not None:
                self.events.append(e)
            hit = next((e for e in self.events if done(e)), None)
            if hit is not None:
                return hit
            if now > deadline:
                raise AssertionError(f"no {what} within {STEP_S} s; events: {self.events!r}")
            timer = self.ep.get_timer()
            wait = 0.05 if timer is None else max(0.0, min(0.05, timer - now))
            ready, _, _ = select.select(list(self.socks.values()), [], [], wait)
            for s in ready:
                port = next(p for p, sock in self.socks.items() if sock is s)
                data, addr = s.recvfrom(65535)
                if port == 4500:
                    if not data.startswith(NON_ESP_MARKER):
                        continue  # ESP or a NAT-T keep-alive: not this test's business
                    data = data[4:]
                self.ep.receive_datagram(data, addr, time.monotonic(), local_port=port)


def _cli_pki(tmp: Path):
    """The same PKI made the way a lab user makes it: ``policyagent cert`` into a machine store,
    charon's certificate and key written with ``--out``; our side comes from the store through
    ``authenticator_for`` and a rule naming the root CA."""
    from policyagent.cli import main

    ca, store = tmp / "ca", tmp / "store"
    for argv in (["create-ca", str(ca), "--name", "CN=Interop Root, O=Lab"],
                 ["issue", str(ca), "--subject", "CN=pyipsec host, O=Lab", "--san", "ip:192.0.2.1", "--store", str(store)],
                 ["issue", str(ca), "--subject", "CN=charon host, O=Lab", "--san", "ip:192.0.2.2", "--no-install",
                  "--out", str(tmp / "charon")]):
        assert main(["cert", *argv]) == 0
    ms = MachineStore.load(store)
    au = authenticator_for((AuthMethod.certificate("CN=Interop Root, O=Lab"),), ms)
    charon_cert = x509.load_pem_x509_certificate((tmp / "charon.pem").read_bytes())
    charon_key = serialization.load_pem_private_key((tmp / "charon.key").read_bytes(), password=None)
    return (ms.roots[0], charon_cert, charon_key, au, ms.entries[0].certificate)


@pytest.fixture
def lab(netns_pair, charon_factory, request, tmp_path):
    source = getattr(request, "param", 2048)
    if source == "cli":
        ca_cert, their_cert, their_key, au, our_cert = _cli_pki(tmp_path)
    else:
        ca, ours, theirs = _now_pki(source)
        ca_cert, their_cert, their_key, our_cert = ca.cert, theirs.cert, theirs.key, ours.cert
        au = CertificateAuthenticator(roots=[ca.cert], credentials=[Credential(certificate=ours.cert,
                                      private_key=ours.key)], validation_time=system_time)
    charon = charon_factory(1, "connections {\n}\n", name="certs")
    d = charon.state_dir
    (d / "x509ca" / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (d / "x509" / "charon.pem").write_bytes(their_cert.public_bytes(serialization.Encoding.PEM))
    (d / "rsa" / "charon.key").write_bytes(their_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    (d / "rsa" / "charon.key").chmod(0o600)
    charon.load(_swanctl_conf(netns_pair))
    ia, ib = netns_pair.inner
    cfg = phase2(f"{ia}/32", f"{ib}/32", mode="tunnel")  # ESP AES-128-CBC / HMAC-SHA1-96
    config = with_certificates(au)  # Main Mode: AES-128/SHA-1/MODP-2048, RSA signatures
    ep = IkeEndpoint(config=Provider(config, [cfg]), local_address=netns_pair.addrs[0])
    pump = Pump(ep, netns_pair.ns[0], netns_pair.addrs[0])
    try:
        yield {"charon": charon, "pump": pump, "ep": ep, "cfg": cfg, "ours": our_cert, "theirs": their_cert,
               "pair": netns_pair}
    finally:
        pump.close()


def _check(lab, ours_p1: Phase1Established, we_initiated: bool) -> None:
    charon, theirs, ours = lab["charon"], lab["theirs"], lab["ours"]
    assert ours_p1.auth == "rsa-sig" and ours_p1.is_initiator is we_initiated
    # charon encodes the ID from its configured text (PrintableString), the certificate has
    # UTF8String: the same name by RFC 5280 §7.1, not the same octets
    assert ours_p1.peer_id.kind == "der-dn" and ours_p1.peer_id.value != theirs.subject.public_bytes()
    assert names_equal(ours_p1.peer_id.value, theirs.subject.public_bytes())
    assert ours_p1.local_id.value == ours.subject.public_bytes()
    sas = charon.wait_for(lambda s: [x for x in s if x.state == "ESTABLISHED" and x.child("net")] or None,
                          what="charon's IKE SA with the net child")
    ike = sas[0]
    assert ike.remote_id == "O=Lab, CN=pyipsec host" and ike.local_id == "O=Lab, CN=charon host"
    assert ike.is_initiator is (not we_initiated)
    assert ike.child("net").state == "INSTALLED"
    log = charon.log()
    assert "received cert request for 'O=Lab, CN=Interop Root'" in log  # our CR names our root
    assert 'received end entity cert "O=Lab, CN=pyipsec host"' in log


@pytest.mark.parametrize("lab", [2048, 1024, "cli"], indirect=True, ids=["rsa2048", "rsa1024", "cli-store"])
def test_we_initiate_with_certificates(lab):
    ia, ib = lab["pair"].inner
    lab["ep"].initiate((lab["pair"].addrs[1], 500), lab["cfg"], time.monotonic())
    ev = lab["pump"].run_until(lambda e: isinstance(e, (Phase2Established, NegotiationFailed)), "Quick Mode")
    assert isinstance(ev, Phase2Established), ev
    p1_ev = next(e for e in lab["pump"].events if isinstance(e, Phase1Established))
    _check(lab, p1_ev, we_initiated=True)
    assert ev.local_ts == TrafficSelector.host(ia) and ev.remote_ts == TrafficSelector.host(ib)


@pytest.mark.parametrize("lab", [2048, "cli"], indirect=True, ids=["rsa2048", "cli-store"])
def test_charon_initiates_with_certificates(lab):
    charon = lab["charon"]
    result: list[BaseException | str] = []
    t = threading.Thread(target=lambda: result.append(_try(lambda: charon.initiate("certs", "net", timeout=10))))
    t.start()
    try:
        ev = lab["pump"].run_until(lambda e: isinstance(e, (Phase2Established, NegotiationFailed)), "Quick Mode")
    finally:
        t.join(timeout=STEP_S)
    assert isinstance(ev, Phase2Established), (ev, result)
    p1_ev = next(e for e in lab["pump"].events if isinstance(e, Phase1Established))
    _check(lab, p1_ev, we_initiated=False)


def _try(fn):
    try:
        return fn()
    except BaseException as exc:  # handed back to the test thread
        return exc
