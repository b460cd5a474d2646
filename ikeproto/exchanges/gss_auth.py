"""GSS-API (Kerberos v5) authentication in Main Mode: the ``Authentication`` strategy for auth
method 65001 (draft-ietf-ipsec-isakmp-gss-auth as Windows 2000 and racoon run it, see
docs/kerberos.md), driving one ``ikeproto.gss.GssAuthenticator``::

    Initiator                                    Responder
    HDR, SA(65001 [, GSS-ID_i]), VID(GSS-API)  -->
                                     <--  HDR, SA(65001 [, GSS-ID_r]), VID(GSS-API)
    HDR, KE, Ni, GSS [, NAT-D x2]              -->
                                     <--  HDR, KE, Nr [, GSS] [, NAT-D x2]
    HDR*, IDii, [GSS,] [HASH_I]                -->            message 5 (repeats)
                                     <--  HDR*, IDir, GSS | HASH_R   message 6 (repeats)

Kerberos needs one round trip (the AP-REQ in message 3, the AP-REP in 4), so 5/6 carry the
hashes. For mechanisms with more legs: a side sends its next token in a GSS payload whenever
it has one; the initiator adds HASH_I to the first message 5 it sends once its context is
complete (together with its final token when completing produced one, so the responder can
always answer HASH_I with HASH_R); a message 6 without HASH_R carries the responder's next
token and 5/6 repeat. HASH_I/HASH_R are RFC 2409 §5's with the GSS identity and that side's
tokens after ID_b, ``gss_wrap``ped in the HASH payload; SKEYID is the signature one.

The GSS identity attribute: the initiator announces its principal in message 1 when the policy
names no expected peer (it then asks a ticket for the name the responder announces back in
message 2); the responder announces its own only in answer to one.

Failures keep the Main Mode rule "a refused message changes nothing" where a genuine message
can still follow: a token the responder refuses in message 3, a HASH payload that does not
unwrap. Anything else that fails once a context exists is final (``is_dead``): GSS-API contexts
do not survive errors, and the peer would resend the same bytes. ``audit_failure`` turns the
error (or the peer's AUTHENTICATION-FAILED / INVALID-HASH-INFORMATION) into the reason of audit
event 545.
"""

from __future__ import annotations

from ikeproto.config import Identity, Phase1Config
from ikeproto.enums import NotifyType
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.exchanges.auth import Authentication, HashOf
from ikeproto.exchanges.common import Inbound
from ikeproto.gss import (
    GSS_ID_ATTRIBUTE,
    GssAuthenticator,
    GssFailure,
    GssState,
    KerberosAuthError,
    gss_vendor_ids,
    peer_refused,
)
from ikeproto.negotiation import Phase1Choice
from ikeproto.negotiation.phase1 import with_gss_id
from ikeproto.payloads import CertPayload, GssPayload, HashPayload, Payload, SigPayload
from ikeproto.proposals import Transform
from ikeproto.trace import IkeTrace

__all__ = ["GssAuth", "announced_gss_id"]

_REFUSALS = (NotifyType.AUTHENTICATION_FAILED, NotifyType.INVALID_HASH_INFORMATION)


def announced_gss_id(config: Phase1Config) -> str | None:
    """The principal an initiator announces in message 1: ours, when the policy names no expected
    peer (the responder's answer then names the target of our ticket)."""
    if config.kerberos is None or config.kerberos_peer is not None:
        return None
    return config.kerberos.principal


def _out_of_step(text: str, notify: int = NotifyType.AUTHENTICATION_FAILED) -> KerberosAuthError:
    return KerberosAuthError(GssFailure.OUT_OF_ORDER, f"the GSS-API exchange is out of step: {text}", notify=notify)


class GssAuth(Authentication):
    """GSS-API Kerberos for one side of one Main Mode (see the module docstring)."""

    method = "gssapi"
    uses_psk = False  # SKEYID as for signatures

    def __init__(self, config: Phase1Config, choice: Phase1Choice, *, is_initiator: bool,
                 trace: IkeTrace | None = None, peer_ip: str = "") -> None:
        super().__init__(config, choice, is_initiator=is_initiator, trace=trace, peer_ip=peer_ip)
        if config.kerberos is None:
            raise UsageError("GSS-API authentication chosen without Kerberos credentials")
        self.gss = GssAuthenticator(config.kerberos, is_initiator=is_initiator, expected_peer=config.kerberos_peer)
        if is_initiator:
            self.gss.set_identities(initiator=announced_gss_id(config), responder=choice.peer_gss_id)
        else:
            ours = config.kerberos.principal if choice.peer_gss_id is not None else None
            self.gss.set_identities(initiator=choice.peer_gss_id, responder=ours)
        self._next: bytes | None = None  # our token for the next message
        self._hash_sent = False  # initiator: HASH_I went out
        self._peer_verified = False  # responder: HASH_I verified
        self._dead = False
        self._refused: tuple[bytes, KerberosAuthError] | None = None  # responder: the last refused first token

    @property
    def is_dead(self) -> bool:
        return self._dead or self.gss.state is GssState.FAILED

    def _die(self, err: KerberosAuthError) -> KerberosAuthError:
        self._dead = True
        return err

    # --- messages 1 to 4 ----------------------------------------------------------------------

    def vendor_ids(self) -> list[bytes]:
        return list(gss_vendor_ids())

    def reply_transform(self, transform: Transform) -> Transform:
        c = self.choice
        if self.is_initiator or c.peer_gss_id is None:
            return transform
        return with_gss_id(transform, self.gss.local_principal, c.gss_id_type or GSS_ID_ATTRIBUTE)

    def ke_payloads(self) -> list[Payload]:
        if self.is_initiator:
            # May talk to the KDC (a ticket for the target); any failure is final.
            return [GssPayload(data=self.gss.initiator_token())]
        token, self._next = self._next, None
        return [GssPayload(data=token)] if token else []

    def accept_ke(self, inb: Inbound) -> None:
        token = inb.find(GssPayload)
        if token is None:
            if self.is_initiator and self.gss.is_complete:
                return  # a mechanism that completed with its first token: nothing comes back
            raise ProtocolError(f"message {4 if self.is_initiator else 3} without a GSS token",
                                notify=NotifyType.PAYLOAD_MALFORMED)
        # The responder's refused first token leaves the authenticator as it was; the initiator's
        # context dies with any error (is_dead).
        if self._refused is not None and self._refused[0] == token.data:
            # A retransmitted message 3 gets the same answer: fed to Kerberos again it would be
            # refused as a replay (MIT keeps even a refused AP-REQ in its replay cache).
            raise self._refused[1]
        try:
            self._next = self.gss.accept_token(token.data)
        except KerberosAuthError as err:
            if not self.is_initiator:
                self._refused = (token.data, err)
            raise

    # --- messages 5 and 6 ---------------------------------------------------------------------

    def proof(self, hash_of: HashOf) -> list[Payload]:
        out: list[Payload] = []
        if self._next is not None:
            out.append(GssPayload(data=self._next))
        if self.gss.is_complete and (self.is_initiator or self._peer_verified):
            value = hash_of(self.gss.hash_suffix(of_initiator=self.is_initiator))
            out.append(HashPayload(data=self.gss.hash_payload(value)))
            self._hash_sent = True
        if not out:
            raise self._die(_out_of_step("our context has nothing to send"))
        self._next = None
        return out

    def verify(self, inb: Inbound, hash_of: HashOf, *, name: str) -> bool:
        if inb.find(SigPayload) is not None or inb.find(CertPayload) is not None:
            raise ProtocolError("SIG or CERT with GSS-API authentication", notify=NotifyType.INVALID_PAYLOAD_TYPE)
        token, hash_p = inb.find(GssPayload), inb.find(HashPayload)
        consumed = False
        try:
            if token is not None:
                self._next = self.gss.accept_token(token.data)
                consumed = True
            if hash_p is None:
                self._check_round()
                return False
            if self.is_initiator and not self._hash_sent:
                raise self._die(_out_of_step(f"{name} came before our HASH_I", NotifyType.INVALID_HASH_INFORMATION))
            if self._next is not None:
                raise self._die(_out_of_step(f"{name} came while our context still had a token to send",
                                             NotifyType.INVALID_HASH_INFORMATION))
            # A HASH that does not unwrap changes nothing (the genuine message can follow); one that
            # unwraps and differs kills the context.
            self.gss.verify_hash(hash_p.data, hash_of(self.gss.hash_suffix(of_initiator=not self.is_initiator)),
                                 name=name)
        except ProtocolError as err:
            if consumed and not self.is_dead:
                raise self._die(err if isinstance(err, KerberosAuthError)
                                else KerberosAuthError(GssFailure.OTHER, str(err), notify=err.notify)) from None
            raise
        if not self.is_initiator:
            self._peer_verified = True
        return True

    def _check_round(self) -> None:
        """The peer sent a token and no HASH: another message of ours must follow."""
        if self.is_initiator:
            if self._next is None and not self.gss.is_complete:
                raise self._die(_out_of_step("our context is not complete and has no token to send"))
        elif self._next is None:
            # The initiator is not done, but our context has nothing more to give it.
            raise self._die(_out_of_step("the initiator's context needs more legs than ours"))

    # --- results ------------------------------------------------------------------------------

    def identities(self, local: Identity, peer: Identity) -> tuple[Identity, Identity]:
        """The principals the contexts authenticated, not the ID payloads (addresses)."""
        assert self.gss.peer_name is not None
        return (Identity(kind="kerberos", value=self.gss.local_principal),
                Identity(kind="kerberos", value=self.gss.peer_name))

    def audit_failure(self, error: ProtocolError | None, peer_notify: tuple[int, str] | None) -> tuple[str, str] | None:
        if isinstance(error, KerberosAuthError):
            return error.reason.value, str(error)
        if peer_notify is not None and peer_notify[0] in _REFUSALS:
            refused = peer_refused(peer_notify[1])
            return refused.reason.value, str(refused)
        return None
