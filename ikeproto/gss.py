"""GSS-API (Kerberos v5) authentication for IKEv1 Main Mode, as Windows 2000 does it.

Owns the rules of draft-ietf-ipsec-isakmp-gss-auth (versions 02-07) as Windows 2000 and racoon
implement them (see docs/kerberos.md for what was verified and where):

- auth method 65001 means GSS-API Kerberos only when the peer sent one of the GSS-API vendor IDs
  (``peer_speaks_gssapi``); 65001 is XAUTHInitPreShared otherwise;
- the GSS identity attribute of a phase-1 transform: class 16384, variable length, the principal
  in UTF-16LE (``gss_id_attribute`` / ``decode_gss_id``); Windows 2000 has also been seen to
  use class 32001;
- HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b [| GSS-ID_i] | tokens_i) and
  HASH_R likewise with the responder's values: after the RFC 2409 §5 input come the sender's own
  GSS identity (only when both sides sent one) and every GSS token that side sent, in order;
  SKEYID is the signature one, prf(Ni_b | Nr_b, g^xy) (``keymat.skeyid_sig``);
- the HASH payload carries the hash gss_wrap'ped by the established context (confidentiality
  on, as racoon does), and the peer's one is unwrapped and compared;
- ``GssAuthenticator``: one side's context fed tokens (message 3/4 carry the first legs, 5/6
  repeat while the context needs more), with the peer-name check and the errors mapped to a
  ``GssFailure`` reason an administrator can act on (audit 545).

The ``gssapi`` package (MIT krb5) is optional and imported on first use; without it
``GssUnavailableError`` says how to install it; ``ikeproto.krb5.KerberosCredentials`` (the
MIT krb5 mechanism) is the only code that touches it. Sans-I/O caveat: libkrb5 talks to the
KDC inside ``initiator_token`` when it has no ticket for the target yet (then tickets are
cached); every other step is local computation.

Does not own: the Main Mode messages, SA payloads, keys (``keymat``), audit or policy.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ikeproto import vendor_ids
from ikeproto.attributes import Attribute
from ikeproto.enums import AuthMethod, NotifyType
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.keymat import Prf, hash_i, hash_r

__all__ = [
    "AUTH_METHOD",
    "GSS_ID_ATTRIBUTE",
    "GSSAPI_LONG_NL",
    "GSS_ID_ATTRIBUTE_W2K",
    "GssAuthenticator",
    "GssContext",
    "GssFailure",
    "GssIdentities",
    "GssMechanism",
    "GssState",
    "GssUnavailableError",
    "INSTALL_HINT",
    "KerberosAuthError",
    "TRANSITIONS",
    "decode_gss_id",
    "encode_gss_id",
    "gss_hash_i",
    "gss_hash_r",
    "gss_hash_suffix",
    "gss_id_attribute",
    "gss_vendor_ids",
    "peer_speaks_gssapi",
    "peer_refused",
    "principal_matches",
]

AUTH_METHOD = AuthMethod.GSSAPI_KERBEROS  # 65001
GSS_ID_ATTRIBUTE = 16384  # draft-07 / racoon OAKLEY_ATTR_GSS_ID, private-use range, variable length
GSS_ID_ATTRIBUTE_W2K = 32001  # seen from Windows 2000 (ike-scan's notes); accepted, never sent
INSTALL_HINT = "pip install 'pyipsec[kerberos]' (it builds against MIT Kerberos: apt-get install libkrb5-dev)"


# --- vendor IDs and the identity attribute -------------------------------------------------------


# MD5("A GSS-API Authentication Method for IKE\n"): the long name with its line end, as some
# implementations hash it (Wireshark lists both forms).
GSSAPI_LONG_NL = bytes.fromhex("b46d8914f3aaa3f2fedeb7c7db2943ca")
_GSSAPI_VIDS = (vendor_ids.GSSAPI, vendor_ids.GSSAPI_LONG, GSSAPI_LONG_NL)


def gss_vendor_ids() -> tuple[bytes, ...]:
    """The vendor IDs we send with a 65001 proposal: MD5("GSSAPI") and the draft's long name.

    Not "MS NT5 ISAKMPOAKLEY": that one says "I am Windows" and carries a Windows version."""
    return (vendor_ids.GSSAPI, vendor_ids.GSSAPI_LONG)


def peer_speaks_gssapi(vids: Iterable[bytes]) -> bool:
    """Whether the peer's vendor IDs make auth method 65001 mean GSS-API Kerberos (else XAUTH)."""
    return any(v in _GSSAPI_VIDS or v.startswith(vendor_ids.MS_NT5_ISAKMPOAKLEY) for v in vids)


def encode_gss_id(principal: str) -> bytes:
    """The attribute value: the principal name in UTF-16LE, no terminator (Windows 2000, racoon)."""
    if not principal:
        raise UsageError("a GSS identity is a non-empty principal name")
    return principal.encode("utf-16-le")


def decode_gss_id(value: bytes) -> str:
    """The principal name from a peer's GSS identity attribute (ProtocolError when not UTF-16LE)."""
    if not value or len(value) % 2:
        raise ProtocolError(f"GSS identity of {len(value)} octets is not UTF-16", notify=NotifyType.ATTRIBUTES_NOT_SUPPORTED)
    try:
        text = value.decode("utf-16-le")
    except UnicodeDecodeError:
        raise ProtocolError("GSS identity is not valid UTF-16LE", notify=NotifyType.ATTRIBUTES_NOT_SUPPORTED) from None
    if "\x00" in text:
        raise ProtocolError("GSS identity contains a NUL", notify=NotifyType.ATTRIBUTES_NOT_SUPPORTED)
    return text


def gss_id_attribute(principal: str) -> Attribute:
    """The phase-1 transform attribute announcing our principal (class 16384, TLV form)."""
    return Attribute.tlv(GSS_ID_ATTRIBUTE, encode_gss_id(principal))


# --- HASH_I / HASH_R -------------------------------------------------------------------------------


def gss_hash_suffix(*, own_id: str | None, other_id: str | None, tokens: Sequence[bytes]) -> bytes:
    """What GSS-API adds after ID_b in one side's HASH input (racoon ``oakley_ph1hash_common``).

    ``own_id`` is the GSS identity the hashing side announced, ``other_id`` the other side's; the
    identity goes in only when both were announced. ``tokens`` are every GSS token the hashing
    side sent, in order (empty tokens are never sent, so never hashed). The identity is hashed
    as 8-bit text, as racoon keeps it; principal names are ASCII.
    """
    out = b""
    if own_id is not None and other_id is not None:
        try:
            out += own_id.encode("latin-1")
        except UnicodeEncodeError:
            raise UsageError("a GSS identity in the hash must be Latin-1 text") from None
    return out + b"".join(tokens)


def gss_hash_i(prf: Prf, skeyid: bytes, *, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sai_b: bytes,
               idii_b: bytes, tokens_i: Sequence[bytes], gss_id_i: str | None = None,
               gss_id_r: str | None = None) -> bytes:
    """HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b [| GSS-ID_i] | tokens_i)."""
    suffix = gss_hash_suffix(own_id=gss_id_i, other_id=gss_id_r, tokens=tokens_i)
    return hash_i(prf, skeyid, g_xi=g_xi, g_xr=g_xr, cky_i=cky_i, cky_r=cky_r, sai_b=sai_b, idii_b=idii_b + suffix)


def gss_hash_r(prf: Prf, skeyid: bytes, *, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sai_b: bytes,
               idir_b: bytes, tokens_r: Sequence[bytes], gss_id_i: str | None = None,
               gss_id_r: str | None = None) -> bytes:
    """HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b [| GSS-ID_r] | tokens_r)."""
    suffix = gss_hash_suffix(own_id=gss_id_r, other_id=gss_id_i, tokens=tokens_r)
    return hash_r(prf, skeyid, g_xi=g_xi, g_xr=g_xr, cky_i=cky_i, cky_r=cky_r, sai_b=sai_b, idir_b=idir_b + suffix)


# --- errors ------------------------------------------------------------------------------------------


class GssUnavailableError(UsageError):
    """Kerberos authentication was asked for but the ``gssapi`` package is not installed."""

    def __init__(self) -> None:
        super().__init__(f"Kerberos authentication needs the gssapi package: {INSTALL_HINT}")


class GssFailure(enum.StrEnum):
    """Why Kerberos authentication failed: the reason of audit event 545."""

    NO_KEYTAB = "no-keytab"
    NO_TICKET = "no-ticket"
    CLOCK_SKEW = "clock-skew"
    UNKNOWN_PRINCIPAL = "unknown-principal"
    KDC_UNREACHABLE = "kdc-unreachable"
    INVALID_TOKEN = "invalid-token"
    WRONG_PEER = "wrong-peer"
    NO_PEER_NAME = "no-peer-name"
    BAD_HASH = "bad-hash"
    OUT_OF_ORDER = "out-of-order"
    REFUSED_BY_PEER = "refused-by-peer"  # the peer answered our token or hash with an error notify
    OTHER = "other"


class KerberosAuthError(ProtocolError):
    """Kerberos authentication failed; ``reason`` is the ``GssFailure``, ``str()`` what to do.

    ``detail`` is the library's own message (principal names and paths, never keys); ``local``
    is True when the fix is on this computer (keytab, clock, KDC reachability)."""

    def __init__(self, reason: GssFailure, advice: str, *, detail: str | None = None, local: bool = False,
                 notify: int = NotifyType.AUTHENTICATION_FAILED) -> None:
        text = f"Kerberos: {advice}" + (f" [{detail}]" if detail else "")
        super().__init__(text, notify=notify)
        self.reason = reason
        self.advice = advice
        self.detail = detail
        self.local = local


def peer_refused(detail: str | None = None) -> KerberosAuthError:
    """What to report when the peer answered our Kerberos authentication with an error notify
    (AUTHENTICATION-FAILED, INVALID-HASH-INFORMATION): the reason is in the peer's own log."""
    return KerberosAuthError(GssFailure.REFUSED_BY_PEER, "the peer refused our Kerberos authentication: its "
                             "security log (event 545) says why", detail=detail)


# --- what a mechanism provides -------------------------------------------------------------------


class GssContext(Protocol):
    """One GSS-API security context as ``GssAuthenticator`` drives it (errors: KerberosAuthError)."""

    def step(self, token: bytes | None) -> bytes | None: ...

    @property
    def is_complete(self) -> bool: ...

    def wrap(self, data: bytes) -> bytes: ...

    def unwrap(self, token: bytes) -> bytes: ...

    def peer_name(self) -> str: ...


class GssMechanism(Protocol):
    """Where contexts come from: our principal, and initiator/acceptor contexts on demand."""

    principal: str

    def initiator_context(self, target: str) -> GssContext: ...

    def acceptor_context(self) -> GssContext: ...


# --- the authenticator Main Mode drives ----------------------------------------------------------------


class GssState(enum.Enum):
    START = "start"
    NEGOTIATING = "negotiating"
    COMPLETE = "complete"
    FAILED = "failed"


TRANSITIONS: dict[GssState, frozenset[GssState]] = {
    GssState.START: frozenset({GssState.NEGOTIATING, GssState.COMPLETE, GssState.FAILED}),
    GssState.NEGOTIATING: frozenset({GssState.NEGOTIATING, GssState.COMPLETE, GssState.FAILED}),
    GssState.COMPLETE: frozenset({GssState.FAILED}),
    GssState.FAILED: frozenset(),
}


def principal_matches(actual: str, expected: str) -> bool:
    """Whether an authenticated principal is the expected one (the realm may be left out)."""
    if "@" in expected:
        return actual == expected
    return actual.rpartition("@")[0] == expected if "@" in actual else actual == expected


@dataclass(frozen=True, slots=True, kw_only=True)
class GssIdentities:
    """The GSS identity attributes on the wire: the initiator's (message 1), the responder's (2)."""

    initiator: str | None = None
    responder: str | None = None


class GssAuthenticator:
    """One side's GSS-API authentication in one Main Mode (see the module docstring).

    Initiator: ``initiator_token()`` for message 3, then ``accept_token(t)`` for each token the
    responder sends (None back: nothing more to send). Responder: ``accept_token(t)`` for each
    initiator token, sending back what it returns. Once ``is_complete``: ``hash_payload`` wraps
    our HASH, ``verify_hash`` checks the peer's; ``hash_i``/``hash_r`` compute them with the
    GSS additions (``hash_suffix`` is what they add after ID_b). Any GSS error raises
    ``KerberosAuthError`` and the authenticator is dead, except a responder's refused first token
    (it stays at START: the genuine message 3 can still follow) and a HASH payload that does not
    unwrap (the genuine message 5/6 can still follow).
    """

    def __init__(self, mechanism: GssMechanism, *, is_initiator: bool, expected_peer: str | None = None) -> None:
        self.mechanism = mechanism
        self.is_initiator = is_initiator
        self.expected_peer = expected_peer
        self.identities = GssIdentities()
        self.state = GssState.START
        self.tokens_sent: list[bytes] = []
        self.tokens_received: list[bytes] = []
        self.peer_name: str | None = None
        self._ctx: GssContext | None = None
        self._wrapped: tuple[bytes, bytes] | None = None

    @property
    def local_principal(self) -> str:
        return self.mechanism.principal

    @property
    def is_complete(self) -> bool:
        return self.state is GssState.COMPLETE

    def _set_state(self, new: GssState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise UsageError(f"GSS authentication cannot go from {self.state.value} to {new.value}")
        self.state = new

    def _fail(self, err: KerberosAuthError) -> KerberosAuthError:
        if self.state is not GssState.FAILED:
            self._set_state(GssState.FAILED)
        return err

    def set_identities(self, *, initiator: str | None, responder: str | None) -> None:
        """Record the GSS identity attributes of messages 1 and 2 (None: not sent)."""
        self.identities = GssIdentities(initiator=initiator, responder=responder)

    def target(self) -> str:
        """The principal the initiator asks a ticket for: the policy's expected peer, else the
        responder's announced identity."""
        target = self.expected_peer or self.identities.responder
        if target is None:
            raise self._fail(KerberosAuthError(
                GssFailure.NO_PEER_NAME, "the policy names no Kerberos peer and the peer announced none: name the "
                "expected peer principal in the Kerberos authentication method", local=True))
        return target

    def initiator_token(self) -> bytes:
        """Initiator: the first token (message 3). Talks to the KDC when no ticket is cached."""
        if not self.is_initiator or self.state is not GssState.START:
            raise UsageError("initiator_token is the initiator's first step")
        try:
            self._ctx = self.mechanism.initiator_context(self.target())
            token = self._ctx.step(None)
        except KerberosAuthError as err:
            raise self._fail(err) from None
        if not token:
            raise self._fail(KerberosAuthError(GssFailure.OTHER, "the GSS-API mechanism produced no first token"))
        self.tokens_sent.append(token)
        self._after_step()
        return token

    def accept_token(self, token: bytes) -> bytes | None:
        """Feed the peer's token; returns ours to send (None: nothing to send)."""
        if self.state in (GssState.COMPLETE, GssState.FAILED) or (self.is_initiator and self._ctx is None):
            raise self._fail(KerberosAuthError(GssFailure.OUT_OF_ORDER, f"a GSS token arrived in state {self.state.value}",
                                               notify=NotifyType.INVALID_PAYLOAD_TYPE))
        if not token:  # malformed input: refused without touching the context
            raise KerberosAuthError(GssFailure.INVALID_TOKEN, "the peer sent an empty GSS token",
                                    notify=NotifyType.PAYLOAD_MALFORMED)
        first = self._ctx is None
        ctx = self._ctx or self.mechanism.acceptor_context()
        try:
            out = ctx.step(token)
        except KerberosAuthError as err:
            if first:
                raise err from None  # a responder's refused first token changes nothing
            raise self._fail(err) from None
        self._ctx = ctx
        self.tokens_received.append(token)
        if out:
            self.tokens_sent.append(out)
        self._after_step()
        return out

    def _after_step(self) -> None:
        assert self._ctx is not None
        if not self._ctx.is_complete:
            self._set_state(GssState.NEGOTIATING)
            return
        name = self._ctx.peer_name()
        if self.expected_peer is not None and not principal_matches(name, self.expected_peer):
            raise self._fail(KerberosAuthError(
                GssFailure.WRONG_PEER, f"the peer authenticated as {name}, the policy expects {self.expected_peer}"))
        self.peer_name = name
        self._set_state(GssState.COMPLETE)

    # --- the hashes ------------------------------------------------------------------------

    def _side_tokens(self, of_initiator: bool) -> list[bytes]:
        return self.tokens_sent if of_initiator == self.is_initiator else self.tokens_received

    def hash_suffix(self, *, of_initiator: bool) -> bytes:
        """What GSS-API appends after ID_b in HASH_I (``of_initiator``) or HASH_R: that side's GSS
        identity (when both sides announced one) and every token that side sent, in order."""
        ids = self.identities
        own, other = (ids.initiator, ids.responder) if of_initiator else (ids.responder, ids.initiator)
        return gss_hash_suffix(own_id=own, other_id=other, tokens=self._side_tokens(of_initiator))

    def hash_i(self, prf: Prf, skeyid: bytes, *, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sai_b: bytes,
               idii_b: bytes) -> bytes:
        """HASH_I over the initiator's tokens (sent by us as initiator, received as responder)."""
        return hash_i(prf, skeyid, g_xi=g_xi, g_xr=g_xr, cky_i=cky_i, cky_r=cky_r, sai_b=sai_b,
                      idii_b=idii_b + self.hash_suffix(of_initiator=True))

    def hash_r(self, prf: Prf, skeyid: bytes, *, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sai_b: bytes,
               idir_b: bytes) -> bytes:
        """HASH_R over the responder's tokens."""
        return hash_r(prf, skeyid, g_xi=g_xi, g_xr=g_xr, cky_i=cky_i, cky_r=cky_r, sai_b=sai_b,
                      idir_b=idir_b + self.hash_suffix(of_initiator=False))

    def hash_payload(self, value: bytes) -> bytes:
        """Our HASH_I/HASH_R wrapped by the context, for the HASH payload. Wrapped once: a
        retransmission must resend the same bytes (a second wrap would use a new sequence number)."""
        if not self.is_complete:
            raise UsageError("the HASH is wrapped only once the GSS-API context is complete")
        if self._wrapped is None or self._wrapped[0] != value:
            assert self._ctx is not None
            try:
                self._wrapped = (value, self._ctx.wrap(value))
            except KerberosAuthError as err:
                raise self._fail(err) from None
        return self._wrapped[1]

    def verify_hash(self, wrapped: bytes, expected: bytes, *, name: str = "HASH") -> None:
        """Unwrap the peer's HASH payload and compare it with ``expected`` (constant time).

        A payload that does not unwrap changes nothing (a failed per-message token leaves the
        context usable, as MIT's does: tests/interop/test_kdc.py), so the genuine message can still
        follow; a hash that unwraps but differs is final (the peer wrapped what it computed: tokens
        or messages were altered, and a retransmission carries the same bytes)."""
        if not self.is_complete:
            raise self._fail(KerberosAuthError(GssFailure.OUT_OF_ORDER, f"{name} arrived before the GSS-API context "
                                               "was complete", notify=NotifyType.INVALID_HASH_INFORMATION))
        assert self._ctx is not None
        try:
            value = self._ctx.unwrap(wrapped)
        except KerberosAuthError as err:
            raise KerberosAuthError(GssFailure.BAD_HASH, f"the peer's wrapped {name} did not unwrap",
                                    detail=err.detail, notify=NotifyType.INVALID_HASH_INFORMATION) from None
        if not hmac.compare_digest(value, expected):
            raise self._fail(KerberosAuthError(GssFailure.BAD_HASH, f"{name} does not verify: Main Mode messages or "
                                               "GSS tokens were altered", notify=NotifyType.INVALID_HASH_INFORMATION))
