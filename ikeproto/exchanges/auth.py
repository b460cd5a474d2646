"""Main Mode authentication mechanics: RSA signatures (RFC 2409 §5.1) and the trust rule for the
peer's key. Pre-shared keys need nothing here (SKEYID carries them, ``keymat.skeyid_psk``).

IKEv1 signs HASH_I / HASH_R themselves: "SIG_I = signed HASH_I" with PKCS #1 v1.5 block type 1
padding and *no* DigestInfo (what every IKEv1 implementation does, strongSwan calls it
"EMSA-PKCS1 NULL"). ``cryptography`` signs only with a DigestInfo, so signing is the RSA private
operation done here (CRT, then checked with the public key before the signature leaves, so a
fault cannot leak the key); verifying uses ``recover_data_from_signature`` without a hash.

Trust rule (certificate *policy* is a later issue): the peer's signature must verify with
``Phase1Config.peer_public_key`` when one is configured; otherwise with the key of a certificate
the peer sent in a CERT payload (X.509 signature encoding) that is one of
``Phase1Config.trusted_certificates`` or directly issued (signature checked) by one of them.
Validity dates, name constraints and revocation are not checked here.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ikeproto.config import Phase1Config, Phase1Proposal
from ikeproto.enums import CertEncoding, NotifyType
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.payloads import CertPayload, HashPayload, Payload, SigPayload

__all__ = ["auth_payloads", "certificate_der", "rsa_sign", "rsa_verify", "trusted_peer_key",
           "usable_proposals", "verify_peer"]


def certificate_der(cert: object) -> bytes:
    """DER of a configured certificate (DER bytes or a ``cryptography`` certificate)."""
    if isinstance(cert, bytes | bytearray):
        return bytes(cert)
    if isinstance(cert, x509.Certificate):
        return cert.public_bytes(serialization.Encoding.DER)
    raise UsageError("a certificate is DER bytes or a cryptography x509.Certificate")


def _load(cert: object) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    return x509.load_der_x509_certificate(certificate_der(cert))


def rsa_sign(private_key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """PKCS #1 v1.5 type 1 signature of ``data`` without DigestInfo (RFC 2409 §5.1 practice)."""
    numbers = private_key.private_numbers()
    pub = numbers.public_numbers
    k = (pub.n.bit_length() + 7) // 8
    if len(data) > k - 11:
        raise UsageError("RSA key too small for this hash")
    block = b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data
    m = int.from_bytes(block, "big")
    s1 = pow(m, numbers.dmp1, numbers.p)
    s2 = pow(m, numbers.dmq1, numbers.q)
    s = s2 + ((numbers.iqmp * (s1 - s2)) % numbers.p) * numbers.q
    if pow(s, pub.e, pub.n) != m:  # pragma: no cover - a fault in the CRT computation
        raise UsageError("RSA signature self-check failed")
    return s.to_bytes(k, "big")


def rsa_verify(public_key: object, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a type-1 signature of exactly ``data`` under ``public_key``."""
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    try:
        recovered = public_key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (InvalidSignature, ValueError):
        return False
    return hmac.compare_digest(recovered, data)


def trusted_peer_key(config: Phase1Config, certs: Sequence[CertPayload]) -> object:
    """The public key the peer's signature must verify with (see the module's trust rule)."""
    if config.peer_public_key is not None:
        return config.peer_public_key
    x509_certs = [c for c in certs if c.encoding == CertEncoding.X509_SIGNATURE]
    if not x509_certs:
        raise ProtocolError("no certificate from the peer and no configured key", notify=NotifyType.CERTIFICATE_UNAVAILABLE)
    trusted = [_load(t) for t in config.trusted_certificates]
    trusted_der = {certificate_der(t) for t in trusted}
    for c in x509_certs:
        try:
            cert = x509.load_der_x509_certificate(c.data)
        except ValueError:
            raise ProtocolError("certificate does not parse", notify=NotifyType.INVALID_CERTIFICATE) from None
        if c.data in trusted_der or any(_issued_by(cert, t) for t in trusted):
            key = cert.public_key()
            if not isinstance(key, rsa.RSAPublicKey):
                raise ProtocolError("certificate key is not RSA", notify=NotifyType.INVALID_CERTIFICATE)
            return key
    raise ProtocolError("certificate not issued by a trusted certificate", notify=NotifyType.INVALID_CERT_AUTHORITY)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def auth_payloads(config: Phase1Config, auth: str, value: bytes) -> list[Payload]:
    """Our proof in message 5/6: HASH (pre-shared key), or [CERT,] SIG over the hash (RFC 2409 §5.1)."""
    if auth == "psk":
        return [HashPayload(data=value)]
    out: list[Payload] = []
    if config.certificate is not None:
        out.append(CertPayload(encoding=CertEncoding.X509_SIGNATURE, data=certificate_der(config.certificate)))
    out.append(SigPayload(data=rsa_sign(config.private_key, value)))  # type: ignore[arg-type]
    return out


def verify_peer(config: Phase1Config, auth: str, expected: bytes, hash_p: HashPayload | None, sig_p: SigPayload | None,
                certs: Sequence[CertPayload], *, name: str) -> None:
    """Check the peer's HASH (compared in constant time) or its signature over ``expected``."""
    if auth == "psk":
        if hash_p is None or sig_p is not None:
            raise ProtocolError("pre-shared-key authentication needs a HASH payload", notify=NotifyType.PAYLOAD_MALFORMED)
        if not hmac.compare_digest(hash_p.data, expected):
            raise ProtocolError(f"{name} does not verify", notify=NotifyType.INVALID_HASH_INFORMATION)
        return
    if sig_p is None:
        raise ProtocolError("signature authentication needs a SIG payload", notify=NotifyType.PAYLOAD_MALFORMED)
    key = trusted_peer_key(config, certs)
    if not rsa_verify(key, expected, sig_p.data):
        raise ProtocolError(f"SIG over {name} does not verify", notify=NotifyType.INVALID_SIGNATURE)


def usable_proposals(config: Phase1Config) -> tuple[Phase1Proposal, ...]:
    """The proposals whose authentication is configured: a PSK for psk, our RSA key and a way to
    trust the peer's for rsa-sig (others, like gssapi, are not offered or accepted)."""
    rsa_ready = isinstance(config.private_key, rsa.RSAPrivateKey) and (
        config.peer_public_key is not None or bool(config.trusted_certificates))
    return tuple(p for p in config.proposals if (p.auth == "psk" and config.psk) or (p.auth == "rsa-sig" and rsa_ready))
