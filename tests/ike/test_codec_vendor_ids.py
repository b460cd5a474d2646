"""The vendor-ID table names what real peers send (values cross-checked with the strongSwan capture
and Wireshark's ISAKMP dissector in tests/interop/test_tshark_codec.py)."""

from __future__ import annotations

import hashlib

import pytest

from ikeproto import vendor_ids as v


@pytest.mark.parametrize(
    "hex_vid, name",
    [
        ("4a131c81070358455c5728f20e95452f", "RFC 3947 NAT-T"),
        ("90cb80913ebb696e086381b5ec427b1f", "draft-ietf-ipsec-nat-t-ike-02\\n"),
        ("afcad71368a1f1c96b8696fc77570100", "RFC 3706 DPD"),
        ("4048b7d56ebce88525e7de7f00d6c2d380000000", "IKE fragmentation"),
        ("09002689dfd6b712", "XAUTH"),
        ("1e2b516905991c7d7c96fcbfb587e46100000002", "MS NT5 ISAKMPOAKLEY (Windows 2000)"),
        ("882fe56d6fd20dbc2251613b2ebe5beb", "strongSwan"),
        (b"OE-Libreswan-4.12".hex(), "Libreswan 4.12"),
    ],
)
def test_identify_known_vendor_ids(hex_vid, name):
    """Each well-known vendor ID (as captured from strongSwan or sent by Windows) is named."""
    assert v.identify(bytes.fromhex(hex_vid)) == name


def test_md5_vendor_ids_are_md5_of_their_strings():
    """The MD5-derived IDs are exactly MD5 of the strings their specifications give."""
    assert v.GSSAPI == hashlib.md5(b"GSSAPI").digest()
    assert v.MS_NT5_ISAKMPOAKLEY == hashlib.md5(b"MS NT5 ISAKMPOAKLEY").digest()
    assert v.NAT_T_RFC3947 == hashlib.md5(b"RFC 3947").digest()
    assert v.ms_nt5_vendor_id(2) == v.MS_NT5_ISAKMPOAKLEY + b"\x00\x00\x00\x02"


def test_unknown_and_near_miss_vendor_ids():
    """Unknown IDs, truncated known IDs and a one-bit change are not identified."""
    assert v.identify(b"") is None
    assert v.identify(v.NAT_T_RFC3947[:15]) is None
    assert v.identify(bytes([v.DPD[0] ^ 1]) + v.DPD[1:]) is None
    assert v.identify(b"\xff" * 300) is None

