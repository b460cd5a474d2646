"""The agent's SA database: SA pairs built from a quick mode (both directions, bundles), found by
flow, by covering selectors and by SPI, replaced after a rekey, and removed whole."""

from __future__ import annotations

import os

import pytest

from ikeproto.config import Identity, TrafficSelector
from ikeproto.events import ChildSa, Phase2Established
from policyagent.sad import PairState, SaDatabase, build_pair, covers

ONE, TWO = "127.0.0.1", "127.0.0.2"


KEYS = {"esp": (os.urandom(20), os.urandom(20)), "ah": (os.urandom(20), os.urandom(20))}


def _event(*, initiator: bool, spis=(0x1001, 0x2002), protocols=("esp",), local=ONE, remote=TWO, proto=0) -> Phase2Established:
    keys = KEYS
    children = []
    for i, p in enumerate(protocols):
        k_a, k_b = keys[p]
        spi_in, spi_out = (spis[0] + i, spis[1] + i) if initiator else (spis[1] + i, spis[0] + i)
        enc_in, enc_out = (k_a, k_b) if initiator else (k_b, k_a)
        children.append(ChildSa(protocol=p, spi_in=spi_in, spi_out=spi_out,
                                cipher="aes-gcm-16" if p == "esp" else None, key_bits=128 if p == "esp" else None,
                                integrity=None if p == "esp" else "hmac-sha1-96",
                                enc_key_in=enc_in if p == "esp" else b"", enc_key_out=enc_out if p == "esp" else b"",
                                auth_key_in=b"" if p == "esp" else enc_in, auth_key_out=b"" if p == "esp" else enc_out))
    return Phase2Established(at=0.0, peer=(remote, 500), cookies=(b"i" * 8, b"r" * 8), message_id=7,
                             is_initiator=initiator, request_id=1 if initiator else None,
                             peer_id=Identity(kind="ipv4", value=remote), mode="transport", encapsulation="udp",
                             local_ts=TrafficSelector.host(local, proto), remote_ts=TrafficSelector.host(remote, proto),
                             sas=tuple(children), lifetime_s=3600, lifetime_kb=1000, pfs_group=None,
                             local_port=4500, peer_port=4500)


def _pairs(protocols=("esp",)):
    a = build_pair(_event(initiator=True, protocols=protocols), pair_id=1, peer=TWO, local=ONE,
                   soft_fraction=0.9, replay_window=64, rng=os.urandom, now=10.0)
    b = build_pair(_event(initiator=False, protocols=protocols, local=TWO, remote=ONE), pair_id=1, peer=ONE,
                   local=TWO, soft_fraction=0.9, replay_window=64, rng=os.urandom, now=10.0)
    return a, b


def test_both_directions_interoperate():
    """Our outbound SA is the peer's inbound one (same SPI and keys), and vice versa."""
    a, b = _pairs()
    assert a.spis_out == b.spis_in and a.spis_in == b.spis_out and a.esp_only is not None
    esp = a.esp_only.protect_payload(b"segment", 17)
    assert b.inbound[0].unprotect_payload(esp) == (17, b"segment")
    assert a.is_confidential and a.has_integrity


def test_ah_esp_bundle_order():
    """AH is the outer header: outbound applies ESP first, inbound opens AH first."""
    a, b = _pairs(("ah", "esp"))
    assert [sa.protocol for sa in a.outbound] == ["esp", "ah"]
    assert [sa.protocol for sa in b.inbound] == ["ah", "esp"]
    assert a.esp_only is None and a.protocols == ("ah", "esp")


def test_kilobyte_lifetime_becomes_soft_and_hard_byte_limits():
    a, _ = _pairs()
    assert a.outbound[0].lifetime.hard_bytes == 1000 * 1024
    assert a.outbound[0].lifetime.soft_bytes == int(1000 * 1024 * 0.9)
    assert a.expires_at == 3610.0


def test_database_lookups_and_removal():
    db = SaDatabase()
    a, _ = _pairs()
    g = db.generation
    assert db.add(a) is None and db.generation == g + 1
    assert db.for_flow(a.key) is a and db.by_spi(a.spis_in[0]) is a
    assert db.esp_in[a.spis_in[0]][1] is a
    assert db.covering(ONE, TWO, 17, 1, 2) is a and db.covering(ONE, "127.0.0.9", 17, 1, 2) is None
    assert db.remove(a) and not db.remove(a)
    assert len(db) == 0 and db.by_spi(a.spis_in[0]) is None and a.state is PairState.DELETED


def test_newer_pair_takes_the_flow_and_an_older_active_one_returns():
    db = SaDatabase()
    old, _ = _pairs()
    new = build_pair(_event(initiator=True, spis=(0x3003, 0x4004)), pair_id=2, peer=TWO, local=ONE,
                     soft_fraction=0.9, replay_window=64, rng=os.urandom, now=20.0)
    db.add(old)
    assert db.add(new) is old and db.for_flow(new.key) is new
    db.remove(new)
    assert db.for_flow(old.key) is old
    old.set_state(PairState.SUPERSEDED)
    with pytest.raises(ValueError):
        old.set_state(PairState.ACTIVE)


def test_selectors_cover_protocols_ports_and_subnets():
    import ipaddress

    udp53 = TrafficSelector(network=ipaddress.ip_network("10.0.0.0/8"), protocol=17, port=53)
    assert covers(udp53, "10.1.2.3", 17, 53)
    assert not covers(udp53, "10.1.2.3", 6, 53) and not covers(udp53, "10.1.2.3", 17, 54)
    assert not covers(udp53, "11.0.0.1", 17, 53)
    a, _ = _pairs()
    assert a.accepts_inbound(TWO, ONE, 1, None, None) and not a.accepts_inbound("127.0.0.9", ONE, 1, None, None)
