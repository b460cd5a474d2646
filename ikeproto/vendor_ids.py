"""Well-known ISAKMP Vendor IDs (RFC 2408 §3.16) with their names.

Owns the table and ``identify``. Most vendor IDs are the MD5 of a string (RFC 3947 §3.1 for
NAT-T, RFC 3706 §5.1 for DPD, the Windows 2000 ones), some carry a version after a fixed
prefix (Windows "MS NT5 ISAKMPOAKLEY" + a 4-octet version, IKE fragmentation + capability
flags, Libreswan "OE-Libreswan-" + version). Which capabilities a peer gets from them is the
exchange layer's decision (e.g. auth method 65001 means GSS-API Kerberos only with the GSSAPI
vendor IDs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = [
    "CISCO_UNITY",
    "DPD",
    "FRAGMENTATION",
    "GSSAPI",
    "GSSAPI_LONG",
    "KNOWN_VENDOR_IDS",
    "LIBRESWAN_PREFIX",
    "MS_INITIAL_CONTACT",
    "MS_NT5_ISAKMPOAKLEY",
    "NAT_T_DRAFT_00",
    "NAT_T_DRAFT_01",
    "NAT_T_DRAFT_02",
    "NAT_T_DRAFT_02_N",
    "NAT_T_DRAFT_03",
    "NAT_T_RFC3947",
    "STRONGSWAN",
    "VendorId",
    "XAUTH",
    "identify",
    "ms_nt5_vendor_id",
]


def _md5(text: str) -> bytes:
    return hashlib.md5(text.encode("ascii")).digest()  # noqa: S324 - the wire defines MD5 here


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorId:
    """One table entry: ``data`` matches exactly, or as a prefix when ``is_prefix``."""

    name: str
    data: bytes
    is_prefix: bool = False

    def matches(self, vid: bytes) -> bool:
        return vid.startswith(self.data) if self.is_prefix else vid == self.data


# RFC 3947 §3.1: MD5("RFC 3947"); the drafts used MD5 of their own names (draft-02 with and
# without the trailing newline, as deployed).
NAT_T_RFC3947 = _md5("RFC 3947")
NAT_T_DRAFT_00 = _md5("draft-ietf-ipsec-nat-t-ike-00")
NAT_T_DRAFT_01 = _md5("draft-ietf-ipsec-nat-t-ike-01")
NAT_T_DRAFT_02 = _md5("draft-ietf-ipsec-nat-t-ike-02")
NAT_T_DRAFT_02_N = _md5("draft-ietf-ipsec-nat-t-ike-02\n")
NAT_T_DRAFT_03 = _md5("draft-ietf-ipsec-nat-t-ike-03")
# RFC 3706 §5.1: the 14 fixed octets, then major 1, minor 0.
DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
# Windows 2000: MD5("MS NT5 ISAKMPOAKLEY") followed by a 4-octet version (2 = Windows 2000).
MS_NT5_ISAKMPOAKLEY = _md5("MS NT5 ISAKMPOAKLEY")
# draft-ietf-ipsec-isakmp-gss-auth: Windows sends MD5("GSSAPI"); the draft's own long name too.
GSSAPI = _md5("GSSAPI")
GSSAPI_LONG = _md5("A GSS-API Authentication Method for IKE")
MS_INITIAL_CONTACT = _md5("Vid-Initial-Contact")
STRONGSWAN = _md5("strongSwan")
LIBRESWAN_PREFIX = b"OE-Libreswan-"
# IKE fragmentation (Cisco, also strongSwan/Windows): MD5("FRAGMENTATION") then capability flags.
FRAGMENTATION = _md5("FRAGMENTATION")
# draft-ietf-ipsra-isakmp-xauth: the first 8 octets of MD5("draft-ietf-ipsra-isakmp-xauth-06.txt").
XAUTH = _md5("draft-ietf-ipsra-isakmp-xauth-06.txt")[:8]
CISCO_UNITY = _md5("CISCO-UNITY")[:14]

WINDOWS_VERSIONS = {2: "Windows 2000", 3: "Windows XP SP1", 4: "Windows Server 2003 / XP SP2"}


def ms_nt5_vendor_id(version: int = 2) -> bytes:
    """The "MS NT5 ISAKMPOAKLEY" vendor ID that Windows sends (version 2 = Windows 2000)."""
    return MS_NT5_ISAKMPOAKLEY + version.to_bytes(4, "big")


KNOWN_VENDOR_IDS: tuple[VendorId, ...] = (
    VendorId(name="RFC 3947 NAT-T", data=NAT_T_RFC3947),
    VendorId(name="draft-ietf-ipsec-nat-t-ike-00", data=NAT_T_DRAFT_00),
    VendorId(name="draft-ietf-ipsec-nat-t-ike-01", data=NAT_T_DRAFT_01),
    VendorId(name="draft-ietf-ipsec-nat-t-ike-02", data=NAT_T_DRAFT_02),
    VendorId(name="draft-ietf-ipsec-nat-t-ike-02\\n", data=NAT_T_DRAFT_02_N),
    VendorId(name="draft-ietf-ipsec-nat-t-ike-03", data=NAT_T_DRAFT_03),
    VendorId(name="RFC 3706 DPD", data=DPD),
    VendorId(name="MS NT5 ISAKMPOAKLEY", data=MS_NT5_ISAKMPOAKLEY, is_prefix=True),
    VendorId(name="GSSAPI", data=GSSAPI),
    VendorId(name="A GSS-API Authentication Method for IKE", data=GSSAPI_LONG),
    VendorId(name="Microsoft Vid-Initial-Contact", data=MS_INITIAL_CONTACT),
    VendorId(name="strongSwan", data=STRONGSWAN),
    VendorId(name="Libreswan", data=LIBRESWAN_PREFIX, is_prefix=True),
    VendorId(name="IKE fragmentation", data=FRAGMENTATION, is_prefix=True),
    VendorId(name="XAUTH", data=XAUTH, is_prefix=True),
    VendorId(name="Cisco Unity", data=CISCO_UNITY, is_prefix=True),
)


def identify(vid: bytes) -> str | None:
    """The name of a received vendor ID (with the Windows version or Libreswan version when it
    carries one), or None when unknown."""
    vid = bytes(vid)
    for entry in KNOWN_VENDOR_IDS:
        if entry.matches(vid):
            if entry.data == MS_NT5_ISAKMPOAKLEY and len(vid) == 20:
                version = int.from_bytes(vid[16:], "big")
                return f"{entry.name} ({WINDOWS_VERSIONS.get(version, f'version {version}')})"
            if entry.data == LIBRESWAN_PREFIX:
                tail = vid[len(LIBRESWAN_PREFIX) :].decode("ascii", errors="backslashreplace")
                return f"{entry.name} {tail}".rstrip()
            return entry.name
    return None
