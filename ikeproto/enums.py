"""IANA numbers of ISAKMP (RFC 2408), IKEv1 (RFC 2409) and the IPsec DOI (RFC 2407), as IntEnums.

Owns the names only. Model fields that a peer controls stay plain ``int`` so that values missing
here still round-trip; these enums name the values the stack understands. Names follow the RFC
tables (``ExchangeType.IDENTITY_PROTECTION`` is Main Mode). Extensions: NAT-T (RFC 3947 and its
drafts), DPD (RFC 3706), AES (RFC 3602), SHA-2 (RFC 4868), ECP groups (RFC 5903), the Windows
GSS-API payload (draft-ietf-ipsec-isakmp-gss-auth) and the ``IPSEC`` registries at IANA.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = [
    "AhTransformId",
    "AuthMethod",
    "CertEncoding",
    "Doi",
    "EncapsulationMode",
    "EncryptionAlgorithm",
    "EspTransformId",
    "ExchangeType",
    "Flag",
    "GroupDescription",
    "GroupType",
    "HashAlgorithm",
    "IdType",
    "IkeAttr",
    "IpcompTransformId",
    "IpsecAttr",
    "IpsecAuthAlgorithm",
    "IsakmpTransformId",
    "LifeType",
    "NotifyType",
    "PayloadType",
    "ProtocolId",
    "Situation",
    "enum_name",
    "is_error_notify",
]


class ExchangeType(IntEnum):
    """RFC 2408 §3.1 exchange types; 32/33 are the IKE DOI exchanges of RFC 2409 §5.5/§6.2."""

    NONE = 0
    BASE = 1
    IDENTITY_PROTECTION = 2  # Main Mode in RFC 2409
    AUTHENTICATION_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    TRANSACTION = 6  # draft-ietf-ipsec-isakmp-mode-cfg (XAUTH / Mode Config)
    QUICK_MODE = 32
    NEW_GROUP_MODE = 33


class Flag(IntFlag):
    """RFC 2408 §3.1 header flags. Unknown bits are kept in ``Message.flags`` as received."""

    ENCRYPTION = 0x01
    COMMIT = 0x02
    AUTHENTICATION_ONLY = 0x04


class PayloadType(IntEnum):
    """RFC 2408 §3.1 Next Payload types, RFC 3947 §3 (NAT-D/NAT-OA), and private-use values.

    129 is the GSS-API token payload Windows 2000 uses for Kerberos (draft-ietf-ipsec-isakmp-gss-auth);
    130/131 are NAT-D/NAT-OA of draft-ietf-ipsec-nat-t-ike-02/03, still sent by older peers.
    """

    NONE = 0
    SA = 1
    PROPOSAL = 2
    TRANSFORM = 3
    KE = 4
    ID = 5
    CERT = 6
    CR = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    N = 11
    D = 12
    VID = 13
    ATTR = 14  # Mode Config attribute payload (draft-ietf-ipsec-isakmp-mode-cfg); opaque here
    SAK = 15
    SAT = 16
    KD = 17
    SEQ = 18
    POP = 19
    NAT_D = 20
    NAT_OA = 21
    GSS = 129
    NAT_D_DRAFT = 130
    NAT_OA_DRAFT = 131
    FRAGMENT = 132  # Cisco / Microsoft IKE fragmentation payload; opaque here


class Doi(IntEnum):
    """RFC 2408 §3.4 Domain of Interpretation."""

    ISAKMP = 0
    IPSEC = 1  # RFC 2407
    GDOI = 2  # RFC 3547


class Situation(IntFlag):
    """RFC 2407 §4.2 IPsec DOI situation bitmap."""

    IDENTITY_ONLY = 0x01
    SECRECY = 0x02
    INTEGRITY = 0x04


class ProtocolId(IntEnum):
    """RFC 2407 §4.4.1 IPsec security protocol identifiers (also used in Notify and Delete)."""

    RESERVED = 0
    ISAKMP = 1
    IPSEC_AH = 2
    IPSEC_ESP = 3
    IPCOMP = 4


class IsakmpTransformId(IntEnum):
    """RFC 2407 §4.4.2 transform identifiers for PROTO_ISAKMP."""

    KEY_IKE = 1


class AhTransformId(IntEnum):
    """RFC 2407 §4.4.3 AH transform identifiers (+ RFC 4868 SHA-2)."""

    AH_MD5 = 2
    AH_SHA = 3
    AH_DES = 4
    AH_SHA2_256 = 5
    AH_SHA2_384 = 6
    AH_SHA2_512 = 7
    AH_RIPEMD = 8
    AH_AES_XCBC_MAC = 9
    AH_RSA = 10
    AH_AES_128_GMAC = 11
    AH_AES_192_GMAC = 12
    AH_AES_256_GMAC = 13


class EspTransformId(IntEnum):
    """RFC 2407 §4.4.4 ESP transform identifiers (+ RFC 3602 AES-CBC, RFC 4106 GCM)."""

    ESP_DES_IV64 = 1
    ESP_DES = 2
    ESP_3DES = 3
    ESP_RC5 = 4
    ESP_IDEA = 5
    ESP_CAST = 6
    ESP_BLOWFISH = 7
    ESP_3IDEA = 8
    ESP_DES_IV32 = 9
    ESP_RC4 = 10
    ESP_NULL = 11
    ESP_AES = 12  # RFC 3602: AES-CBC, key length attribute
    ESP_AES_CTR = 13
    ESP_AES_CCM_8 = 14
    ESP_AES_CCM_12 = 15
    ESP_AES_CCM_16 = 16
    ESP_AES_GCM_8 = 18
    ESP_AES_GCM_12 = 19
    ESP_AES_GCM_16 = 20
    ESP_SEED_CBC = 21
    ESP_CAMELLIA = 22
    ESP_NULL_AUTH_AES_GMAC = 23


class IpcompTransformId(IntEnum):
    """RFC 2407 §4.4.5 IPCOMP transform identifiers."""

    IPCOMP_OUI = 1
    IPCOMP_DEFLATE = 2
    IPCOMP_LZS = 3
    IPCOMP_LZJH = 4


class IkeAttr(IntEnum):
    """RFC 2409 Appendix A phase 1 attribute classes (B = basic, V = variable in the RFC)."""

    ENCRYPTION_ALGORITHM = 1
    HASH_ALGORITHM = 2
    AUTHENTICATION_METHOD = 3
    GROUP_DESCRIPTION = 4
    GROUP_TYPE = 5
    GROUP_PRIME = 6
    GROUP_GENERATOR_ONE = 7
    GROUP_GENERATOR_TWO = 8
    GROUP_CURVE_A = 9
    GROUP_CURVE_B = 10
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14
    FIELD_SIZE = 15
    GROUP_ORDER = 16


class EncryptionAlgorithm(IntEnum):
    """RFC 2409 Appendix A encryption algorithms (+ RFC 3602 AES-CBC)."""

    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_R16_B64_CBC = 4
    TRIPLE_DES_CBC = 5
    CAST_CBC = 6
    AES_CBC = 7
    CAMELLIA_CBC = 8


class HashAlgorithm(IntEnum):
    """RFC 2409 Appendix A hash algorithms (+ RFC 4868 SHA-2)."""

    MD5 = 1
    SHA = 2
    TIGER = 3
    SHA2_256 = 4
    SHA2_384 = 5
    SHA2_512 = 6


class AuthMethod(IntEnum):
    """RFC 2409 Appendix A authentication methods, RFC 4754 ECDSA and the private-use range.

    65001 is both GSS-API Kerberos (Windows 2000, with the "GSSAPI" / "MS NT5 ISAKMPOAKLEY"
    vendor IDs) and XAUTHInitPreShared (draft-ietf-ipsec-isakmp-xauth); the vendor IDs decide.
    """

    PRE_SHARED_KEY = 1
    DSS_SIGNATURES = 2
    RSA_SIGNATURES = 3
    RSA_ENCRYPTION = 4
    REVISED_RSA_ENCRYPTION = 5
    ECDSA_SHA256_P256 = 9
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11
    HYBRID_INIT_RSA = 64221
    HYBRID_RESP_RSA = 64222
    HYBRID_INIT_DSS = 64223
    HYBRID_RESP_DSS = 64224
    GSSAPI_KERBEROS = 65001
    XAUTH_INIT_PRESHARED = 65001  # alias: same number, decided by vendor IDs
    XAUTH_RESP_PRESHARED = 65002
    XAUTH_INIT_DSS = 65003
    XAUTH_RESP_DSS = 65004
    XAUTH_INIT_RSA = 65005
    XAUTH_RESP_RSA = 65006


class GroupDescription(IntEnum):
    """Diffie-Hellman groups: RFC 2409 §6 (1, 2), RFC 3526 (5, 14-18), RFC 5903 (19-21), RFC 8031 (31)."""

    MODP_768 = 1
    MODP_1024 = 2
    EC2N_155 = 3
    EC2N_185 = 4
    MODP_1536 = 5
    MODP_2048 = 14
    MODP_3072 = 15
    MODP_4096 = 16
    MODP_6144 = 17
    MODP_8192 = 18
    ECP_256 = 19
    ECP_384 = 20
    ECP_521 = 21
    MODP_1024_S160 = 22
    MODP_2048_S224 = 23
    MODP_2048_S256 = 24
    ECP_192 = 25
    ECP_224 = 26
    BRAINPOOL_P224 = 27
    BRAINPOOL_P256 = 28
    BRAINPOOL_P384 = 29
    BRAINPOOL_P512 = 30
    CURVE25519 = 31
    CURVE448 = 32


class GroupType(IntEnum):
    """RFC 2409 Appendix A group types."""

    MODP = 1
    ECP = 2
    EC2N = 3


class LifeType(IntEnum):
    """RFC 2409 Appendix A life types; RFC 2407 §4.5 uses the same two values for SA Life Type."""

    SECONDS = 1
    KILOBYTES = 2


class IpsecAttr(IntEnum):
    """RFC 2407 §4.5 IPsec DOI SA attributes (phase 2), + RFC 4304 extended sequence numbers."""

    SA_LIFE_TYPE = 1
    SA_LIFE_DURATION = 2
    GROUP_DESCRIPTION = 3
    ENCAPSULATION_MODE = 4
    AUTHENTICATION_ALGORITHM = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7
    COMPRESS_DICTIONARY_SIZE = 8
    COMPRESS_PRIVATE_ALGORITHM = 9
    ECN_TUNNEL = 10
    EXTENDED_SEQUENCE_NUMBER = 11


class EncapsulationMode(IntEnum):
    """RFC 2407 §4.5 encapsulation modes; RFC 3947 §4 UDP modes; 61443/61444 draft NAT-T values."""

    TUNNEL = 1
    TRANSPORT = 2
    UDP_ENCAPSULATED_TUNNEL = 3
    UDP_ENCAPSULATED_TRANSPORT = 4
    UDP_ENCAPSULATED_TUNNEL_DRAFT = 61443
    UDP_ENCAPSULATED_TRANSPORT_DRAFT = 61444


class IpsecAuthAlgorithm(IntEnum):
    """RFC 2407 §4.5 Authentication Algorithm values (+ RFC 4868 SHA-2, RFC 3566 XCBC)."""

    HMAC_MD5 = 1
    HMAC_SHA = 2
    DES_MAC = 3
    KPDK = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    HMAC_RIPEMD = 8
    AES_XCBC_MAC = 9
    SIG_RSA = 10
    AES_128_GMAC = 11
    AES_192_GMAC = 12
    AES_256_GMAC = 13


class IdType(IntEnum):
    """RFC 2407 §4.6.2.1 identification types (+ RFC 3554 ID_LIST)."""

    RESERVED = 0
    ID_IPV4_ADDR = 1
    ID_FQDN = 2
    ID_USER_FQDN = 3
    ID_IPV4_ADDR_SUBNET = 4
    ID_IPV6_ADDR = 5
    ID_IPV6_ADDR_SUBNET = 6
    ID_IPV4_ADDR_RANGE = 7
    ID_IPV6_ADDR_RANGE = 8
    ID_DER_ASN1_DN = 9
    ID_DER_ASN1_GN = 10
    ID_KEY_ID = 11
    ID_LIST = 12


class CertEncoding(IntEnum):
    """RFC 2408 §3.9 certificate encodings (CERT and CR payloads)."""

    NONE = 0
    PKCS7_WRAPPED_X509 = 1
    PGP = 2
    DNS_SIGNED_KEY = 3
    X509_SIGNATURE = 4
    X509_KEY_EXCHANGE = 5
    KERBEROS_TOKENS = 6
    CRL = 7
    ARL = 8
    SPKI = 9
    X509_ATTRIBUTE = 10


class NotifyType(IntEnum):
    """Notify message types: RFC 2408 §3.14.1 errors (1-30, 16384), RFC 2407 §4.6.3 status
    (24576-24578), RFC 3706 DPD (36136/36137)."""

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    RESPONDER_LIFETIME = 24576
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
    R_U_THERE = 36136
    R_U_THERE_ACK = 36137

    @property
    def is_error(self) -> bool:
        """True for error types (see ``is_error_notify``)."""
        return is_error_notify(self.value)


def is_error_notify(notify_type: int) -> bool:
    """RFC 2408 §3.14.1: 1-16383 are errors (8192-16383 private use); 16384 and up are status
    (24576-32767 DOI-specific such as RESPONDER-LIFETIME, 32768-40959 private use such as DPD)."""
    return 1 <= notify_type <= 16383


def enum_name(enum: type[IntEnum], value: int) -> str:
    """``NAME`` of ``value`` in ``enum``, or the number when it has no name (peer values)."""
    try:
        return enum(value).name
    except ValueError:
        return str(value)
