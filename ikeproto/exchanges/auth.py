"""Main Mode authentication: the per-method strategy Main Mode calls (``Authentication`` for
pre-shared keys, ``SignatureAuth`` for RSA signatures; GSS-API Kerberos is ``gss_auth.GssAuth``),
the RSA signature mechanics (RFC 2409 §5.1) and the trust rule for the peer's key. Pre-shared keys
need little here (SKEYID carries them, ``keymat.skeyid_psk``).

A strategy is chosen with the phase-1 transform and says what its method adds to messages 3/4,
what our proof in 5/6 is and how the peer's is checked; checks run before Main Mode commits
anything, so a refused message changes nothing.

IKEv1 signs HASH_I / HASH_R themselves: "SIG_I = signed HASH_I" with PKCS #1 v1.5 block type 1
padding and *no* DigestInfo (what every IKEv1 implementation does, strongSwan calls it
"EMSA-PKCS1 NULL"). ``cryptography`` signs only with a DigestInfo, so signing is the RSA private
operation done here (CRT, then checked with the public key before the signature leaves, so a
fault cannot leak the key); verifying uses ``recover_data_from_signature`` without a hash.

Certificate authentication (``Phase1Config.certificates``, an ``ikeproto.certs.CertificateAuthenticator``):
``SignatureAuth`` sends its CR payloads (the rule's root CAs) in message 3/4, collects the peer's
CRs, chooses our certificate from them before our proof is built (the initiator while processing
message 4, the responder once message 5 has verified), sends the chain in CERT payloads before the
SIG (RFC 2409 §5.1, RFC 4945 §3.2) and names itself by the certificate's subject (ID_DER_ASN1_DN)
unless a local ID is configured; the peer's CERT chain and ID are checked against the rule (path,
dates, key usage, CRLs) and its SIG must verify with the certified key. A ``CertificateError``
(``ikeproto.pki``) is traced with its failure code and refuses the message; having no certificate
to send is final (``is_dead``).

Without an authenticator the simple trust rule holds: the peer's signature must verify with
``Phase1Config.peer_public_key`` when one is configured; otherwise with the key of a certificate
the peer sent in a CERT payload (X.509 signature encoding) that is one of
``Phase1Config.trusted_certificates`` or directly issued (signature checked) by one of them.
Validity dates, name constraints and revocation are not checked on that path.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ikeproto.certs import cert_payloads
from ikeproto.config import Identity, Phase1Config, Phase1Proposal
from ikeproto.enums import CertEncoding, NotifyType
from ikeproto.pki import CertificateError, Failure
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.exchanges.common import Inbound, address_identity, identity_matches
from ikeproto.keymat import Phase1Keys
from ikeproto.negotiation import Phase1Choice
from ikeproto.payloads import CertPayload, CrPayload, GssPayload, HashPayload, IdPayload, Payload, SigPayload
from ikeproto.proposals import Transform
from ikeproto.trace import IkeTrace

__all__ = ["Authentication", "HashOf", "SignatureAuth", "auth_payloads", "certificate_der", "check_peer_identity",
           "rsa_sign", "rsa_verify", "trusted_peer_key", "usable_proposals", "verify_peer"]

HashOf = Callable[[bytes], bytes]
"""HASH_I or HASH_R over a bound ID payload, with the given octets appended to ID_b (GSS-API)."""


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


def auth_payloads(config: Phase1Config, auth: str, value: bytes, selection: object | None = None) -> list[Payload]:
    """Our proof in message 5/6: HASH (pre-shared key), or [CERT...,] SIG over the hash (RFC 2409
    §5.1); with a certificate ``selection`` (``ikeproto.certs.Selection``) its chain and key."""
    if auth == "psk":
        return [HashPayload(data=value)]
    if selection is not None:
        chain = cert_payloads(selection.certificates)  # type: ignore[attr-defined]
        return [*chain, SigPayload(data=rsa_sign(selection.private_key, value))]  # type: ignore[attr-defined]
    out: list[Payload] = []
    if config.certificate is not None:
        out.append(CertPayload(encoding=CertEncoding.X509_SIGNATURE, data=certificate_der(config.certificate)))
    out.append(SigPayload(data=rsa_sign(config.private_key, value)))  # type: ignore[arg-type]
    return out


def verify_peer(config: Phase1Config, auth: str, expected: bytes, hash_p: HashPayload | None, sig_p: SigPayload | None,
                certs: Sequence[CertPayload], *, name: str, peer_key: object | None = None) -> None:
    """Check the peer's HASH (compared in constant time) or its signature over ``expected`` (with
    ``peer_key`` when given, a key certified for the peer, else the module's simple trust rule)."""
    if auth == "psk":
        if hash_p is None or sig_p is not None:
            raise ProtocolError("pre-shared-key authentication needs a HASH payload", notify=NotifyType.PAYLOAD_MALFORMED)
        if not hmac.compare_digest(hash_p.data, expected):
            raise ProtocolError(f"{name} does not verify", notify=NotifyType.INVALID_HASH_INFORMATION)
        return
    if sig_p is None:
        raise ProtocolError("signature authentication needs a SIG payload", notify=NotifyType.PAYLOAD_MALFORMED)
    key = peer_key if peer_key is not None else trusted_peer_key(config, certs)
    if not rsa_verify(key, expected, sig_p.data):
        raise ProtocolError(f"SIG over {name} does not verify", notify=NotifyType.INVALID_SIGNATURE)


def usable_proposals(config: Phase1Config) -> tuple[Phase1Proposal, ...]:
    """The proposals whose authentication is configured: a PSK for psk, our RSA key and a way to
    trust the peer's for rsa-sig, Kerberos credentials for gssapi (others are not offered or
    accepted)."""
    rsa_ready = config.certificates is not None or (isinstance(config.private_key, rsa.RSAPrivateKey) and (
        config.peer_public_key is not None or bool(config.trusted_certificates)))
    ready = {"psk": bool(config.psk), "rsa-sig": rsa_ready, "gssapi": config.kerberos is not None}
    return tuple(p for p in config.proposals if ready.get(p.auth, False))


def check_peer_identity(config: Phase1Config, method: str, got: Identity, *, peer_ip: str,
                        peer_behind_nat: bool) -> None:
    """The peer's Main Mode ID must be the configured identity; without one, a pre-shared-key peer
    (looked up by its address) must name that address, unless it is behind a NAT."""
    wanted = config.peer_id
    if wanted is not None:
        ok = identity_matches(wanted, got)
    elif method == "psk" and not peer_behind_nat:
        ok = got.kind in ("ipv4", "ipv6") and identity_matches(address_identity(peer_ip), got)
    else:
        ok = True
    if not ok:
        raise ProtocolError(f"peer identity {got.kind} {got.value!r} is not the expected one",
                            notify=NotifyType.INVALID_ID_INFORMATION)


def refuse_gss(inb: Inbound) -> None:
    """GSS tokens belong to GSS-API authentication only (RFC 2408 §5.2: INVALID-PAYLOAD-TYPE)."""
    if inb.find(GssPayload) is not None:
        raise ProtocolError("GSS token without GSS-API authentication", notify=NotifyType.INVALID_PAYLOAD_TYPE)


class Authentication:
    """One side's authentication in one Main Mode, chosen with the phase-1 transform. This base is
    the pre-shared key (HASH_I/HASH_R, RFC 2409 §5); subclasses override what differs."""

    method = "psk"
    uses_psk = True  # SKEYID from the pre-shared key; the others use the signature form

    def __init__(self, config: Phase1Config, choice: Phase1Choice, *, is_initiator: bool,
                 trace: IkeTrace | None = None, peer_ip: str = "") -> None:
        self.config = config
        self.choice = choice
        self.is_initiator = is_initiator
        self.trace = trace if trace is not None else IkeTrace(enabled=False)
        self.peer_ip = peer_ip

    @property
    def is_dead(self) -> bool:
        """True once the negotiation cannot go on, whatever the peer sends next."""
        return False

    def vendor_ids(self) -> list[bytes]:
        """Vendor IDs the responder adds to message 2 for this method."""
        return []

    def reply_transform(self, transform: Transform) -> Transform:
        """The transform the responder returns in message 2 (the chosen one as offered)."""
        return transform

    def keys(self, *, ni_b: bytes, nr_b: bytes, g_xy: bytes, cky_i: bytes, cky_r: bytes) -> Phase1Keys:
        """SKEYID and what follows (RFC 2409 §5): from the pre-shared key, or the signature one,
        prf(Ni_b | Nr_b, g^xy), for signatures and GSS-API (docs/kerberos.md, fact 7)."""
        c = self.choice
        if not self.uses_psk:
            return Phase1Keys.from_signature(hash_alg=c.hash, cipher=c.cipher, ni_b=ni_b, nr_b=nr_b, g_xy=g_xy,
                                             cky_i=cky_i, cky_r=cky_r)
        assert self.config.psk is not None
        return Phase1Keys.from_psk(hash_alg=c.hash, cipher=c.cipher, psk=self.config.psk, ni_b=ni_b, nr_b=nr_b,
                                   g_xy=g_xy, cky_i=cky_i, cky_r=cky_r)

    def ke_payloads(self) -> list[Payload]:
        """What we add to message 3 (initiator) or 4 (responder); called before anything is committed."""
        return []

    def accept_ke(self, inb: Inbound) -> None:
        """Check the peer's additions to message 3 (responder) or 4 (initiator), before commit."""
        refuse_gss(inb)

    def proof(self, hash_of: HashOf) -> list[Payload]:
        """Our authentication payloads in message 5 (initiator) or 6 (responder)."""
        return auth_payloads(self.config, self.method, hash_of(b""))

    def verify(self, inb: Inbound, hash_of: HashOf, *, name: str) -> bool:
        """Check the peer's message 5/6 (ProtocolError: refused); True when the peer is authenticated,
        False when another round of messages 5/6 is needed (GSS-API only)."""
        refuse_gss(inb)
        verify_peer(self.config, self.method, hash_of(b""), inb.find(HashPayload), inb.find(SigPayload),
                    inb.find_all(CertPayload), name=name)
        return True

    def local_identity(self) -> Identity | None:
        """Our Main Mode ID when none is configured (None: our address); asked just before our
        message 5/6 is built."""
        return None

    def identities(self, local: Identity, peer: Identity) -> tuple[Identity, Identity]:
        """The (local, peer) identities ``Phase1Established`` reports: the ID payloads' by default."""
        return local, peer

    def audit_failure(self, error: ProtocolError | None, peer_notify: tuple[int, str] | None) -> tuple[str, str] | None:
        """(reason code, what to do) when the negotiation ended in a failure of this method that is
        audited on its own (GSS-API: event 545), else None. ``error`` is the one that ended it on
        our side, ``peer_notify`` the (number, description) of an error notify the peer sent."""
        return None


class SignatureAuth(Authentication):
    """RSA signatures (RFC 2409 §5.1): [CERT...,] SIG_I / SIG_R. With a certificate authenticator
    (module docstring) its CRs, our chosen chain and the peer's validated one; otherwise a CR in
    message 3/4 asks for the peer's certificate when no key is configured for it."""

    method = "rsa-sig"
    uses_psk = False

    def __init__(self, config: Phase1Config, choice: Phase1Choice, *, is_initiator: bool,
                 trace: IkeTrace | None = None, peer_ip: str = "") -> None:
        super().__init__(config, choice, is_initiator=is_initiator, trace=trace, peer_ip=peer_ip)
        self.certificates = config.certificates  # a CertificateAuthenticator, or None
        self.peer_crs: list[CrPayload] = []  # the peer's certificate requests so far
        self.selection: object | None = None  # our chosen certificate (certs.Selection)
        self._dead = False

    @property
    def is_dead(self) -> bool:
        return self._dead

    def ke_payloads(self) -> list[Payload]:
        if self.certificates is not None:
            return list(self.certificates.cert_requests())  # type: ignore[attr-defined]
        return [CrPayload(cert_type=CertEncoding.X509_SIGNATURE)] if self.config.peer_public_key is None else []

    def accept_ke(self, inb: Inbound) -> None:
        refuse_gss(inb)
        crs = [*self.peer_crs, *inb.find_all(CrPayload)]
        if self.is_initiator and self.certificates is not None:
            self.selection = self._select(crs, inb.now)  # before message 5: our chain, key and ID
        self.peer_crs = crs

    def _select(self, crs: list[CrPayload], now: float) -> object:
        """Our certificate for the peer's requests (``CertificateError``: traced, and final when
        we have none to send)."""
        au = self.certificates
        self.trace.step("certificate requests", peer=self.peer_ip, requested=au.describe_requests(crs))  # type: ignore[union-attr]
        try:
            selection = au.select(crs, now)  # type: ignore[union-attr]
        except CertificateError as exc:
            self.trace.failure(exc.reason, exchange="main mode", peer=self.peer_ip, failure=exc.failure.value)
            self._dead = exc.failure is Failure.NO_LOCAL_CERTIFICATE  # nothing the peer sends changes it
            raise
        self.trace.step("certificate chosen", peer=self.peer_ip, detail=selection.summary())
        return selection

    def proof(self, hash_of: HashOf) -> list[Payload]:
        return auth_payloads(self.config, self.method, hash_of(b""), self.selection)

    def verify(self, inb: Inbound, hash_of: HashOf, *, name: str) -> bool:
        refuse_gss(inb)
        au = self.certificates
        if au is None:
            return super().verify(inb, hash_of, name=name)
        try:
            verified = au.verify_peer(inb.find_all(CertPayload), inb.find(IdPayload), inb.now)  # type: ignore[attr-defined]
        except CertificateError as exc:
            self.trace.failure(exc.reason, exchange="main mode", peer=self.peer_ip, failure=exc.failure.value)
            raise
        self.trace.step("peer certificate", peer=self.peer_ip, detail=verified.summary())
        verify_peer(self.config, self.method, hash_of(b""), inb.find(HashPayload), inb.find(SigPayload), (),
                    name=name, peer_key=verified.public_key)
        crs = [*self.peer_crs, *inb.find_all(CrPayload)]
        if not self.is_initiator and self.selection is None:
            self.selection = self._select(crs, inb.now)  # the responder's, before message 6
        self.peer_crs = crs
        return True

    def local_identity(self) -> Identity | None:
        # What Windows sends: ID_DER_ASN1_DN of the chosen certificate's subject.
        return self.selection.identity if self.selection is not None else None  # type: ignore[attr-defined]

    def audit_failure(self, error: ProtocolError | None, peer_notify: tuple[int, str] | None) -> tuple[str, str] | None:
        return None  # certificate failures are reported as NegotiationFailed.certificate_failure
