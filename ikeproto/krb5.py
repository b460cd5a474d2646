"""The MIT Kerberos v5 mechanism for ``ikeproto.gss``, through the optional ``gssapi`` package.

Owns ``KerberosCredentials`` (this computer's ``host/<fqdn>@REALM`` principal and its keytab,
acquired once and kept, tickets in a MEMORY cache of its own), its GSS-API contexts, and the
mapping of MIT krb5 / GSS-API status codes (RFC 2744 §3.9.1 major codes, krb5.h com_err minor
codes) to ``GssFailure`` reasons with advice an administrator can act on.

``gssapi`` is imported on first use: importing this module never needs it; using it without it
raises ``GssUnavailableError`` naming the install command. ``KRB5_CONFIG`` (realm and KDC) and
``KRB5RCACHEDIR`` (the acceptor's replay cache) come from the environment, as for any
Kerberos program. Blocking I/O: the initiator's first step may talk to the KDC (libkrb5 does,
with the timeouts of krb5.conf); everything else is local.

Does not own: the IKE rules (``ikeproto.gss``).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from ikeproto.errors import UsageError
from ikeproto.gss import GssContext, GssFailure, GssUnavailableError, KerberosAuthError

__all__ = ["KerberosCredentials", "classify", "is_available"]

_CCACHE_SERIAL = itertools.count()


def is_available() -> bool:
    """Whether the optional ``gssapi`` package can be imported."""
    try:
        _gssapi()
    except GssUnavailableError:
        return False
    return True


def _gssapi() -> Any:
    try:
        import gssapi
    except ImportError:
        raise GssUnavailableError() from None
    return gssapi


# MIT krb5 com_err codes (krb5.h), compared as the unsigned 32-bit minor status GSS-API returns.
KDC_ERR_C_PRINCIPAL_UNKNOWN = -1765328378
KDC_ERR_S_PRINCIPAL_UNKNOWN = -1765328377
KDC_ERR_NEVER_VALID = -1765328373
KDC_ERR_CLIENT_REVOKED = -1765328366
KDC_ERR_KEY_EXP = -1765328361
KDC_ERR_PREAUTH_FAILED = -1765328360
AP_ERR_TKT_EXPIRED = -1765328352
AP_ERR_TKT_NYV = -1765328351
AP_ERR_NOT_US = -1765328349
AP_ERR_BADMATCH = -1765328348
AP_ERR_SKEW = -1765328347
AP_ERR_BADKEYVER = -1765328340
AP_ERR_NOKEY = -1765328339
CC_NOTFOUND = -1765328243
AP_WRONG_PRINC = -1765328240
KDCREP_SKEW = -1765328236
REALM_UNKNOWN = -1765328230
KDC_UNREACH = -1765328228
KT_NOTFOUND = -1765328203
KT_END = -1765328202
FCC_NOFILE = -1765328189
PREAUTH_FAILED = -1765328174
REALM_CANT_RESOLVE = -1765328164
GET_IN_TKT_LOOP = -1765328161
CONFIG_NODEFREALM = -1765328160
KT_KVNONOTFOUND = -1765328154
ENOENT, EACCES = 2, 13
# The krb5 mechanism's own table (gssapi_err_krb5.et, base 39756032): no keytab entry for our name.
KG_KEYTAB_NOMATCH = 39756033


def _u32(*codes: int) -> frozenset[int]:
    return frozenset(c & 0xFFFFFFFF for c in codes)


_BY_MINOR: tuple[tuple[frozenset[int], GssFailure], ...] = (
    (_u32(KDC_ERR_C_PRINCIPAL_UNKNOWN, KDC_ERR_S_PRINCIPAL_UNKNOWN), GssFailure.UNKNOWN_PRINCIPAL),
    # "Ticket not yet valid" / expired at the acceptor: the KDC's clock and ours disagree.
    (_u32(AP_ERR_SKEW, KDCREP_SKEW, AP_ERR_TKT_NYV, AP_ERR_TKT_EXPIRED), GssFailure.CLOCK_SKEW),
    (_u32(KDC_UNREACH, REALM_UNKNOWN, REALM_CANT_RESOLVE, CONFIG_NODEFREALM), GssFailure.KDC_UNREACHABLE),
    (_u32(KT_NOTFOUND, KT_KVNONOTFOUND, KT_END, AP_ERR_NOKEY, AP_ERR_BADKEYVER, KG_KEYTAB_NOMATCH, ENOENT, EACCES),
     GssFailure.NO_KEYTAB),
    (_u32(KDC_ERR_PREAUTH_FAILED, PREAUTH_FAILED, GET_IN_TKT_LOOP, FCC_NOFILE, CC_NOTFOUND, KDC_ERR_CLIENT_REVOKED,
          KDC_ERR_KEY_EXP, KDC_ERR_NEVER_VALID), GssFailure.NO_TICKET),
    (_u32(AP_WRONG_PRINC, AP_ERR_NOT_US, AP_ERR_BADMATCH), GssFailure.WRONG_PEER),
)
_GSS_NO_CRED, _GSS_CRED_EXPIRED = 7 << 16, 11 << 16  # RFC 2744 §3.9.1 routine errors


def _advice(reason: GssFailure, *, principal: str, keytab: str, peer: str | None, detail: str) -> str:
    realm = principal.rpartition("@")[2] or "the default realm"
    config = os.environ.get("KRB5_CONFIG", "/etc/krb5.conf")
    peer_text = peer or "the peer"
    return {
        GssFailure.NO_KEYTAB: f"no usable key for {principal} in keytab {keytab}: export it with kadmin "
                              f"(ktadd -k {keytab} {principal})",
        GssFailure.NO_TICKET: f"could not get a Kerberos ticket as {principal}: make sure the key in {keytab} is the "
                              "KDC's current one (re-export it) and that the account is enabled",
        GssFailure.CLOCK_SKEW: "the clocks of this computer, the peer and the KDC differ by more than Kerberos allows "
                               "(krb5.conf clockskew, 300 s by default): synchronise them (NTP)",
        GssFailure.UNKNOWN_PRINCIPAL: ("the KDC does not know this computer's principal " + principal
                                       if "Client" in detail else f"the KDC does not know the principal of {peer_text}")
                                      + ": create it (kadmin addprinc -randkey host/<fqdn>) and export its key to that "
                                        "computer's keytab",
        GssFailure.KDC_UNREACHABLE: f"no KDC of realm {realm} answered: check that the KDC runs and that {config} "
                                    "names it",
        GssFailure.INVALID_TOKEN: f"the Kerberos token from {peer_text} was refused: altered in transit, replayed, "
                                  f"or the key in {keytab} is out of date",
        GssFailure.WRONG_PEER: f"{peer_text} is not the principal the policy expects",
        GssFailure.OTHER: "GSS-API failure",
    }.get(reason, reason.value)


def classify(err: Any, *, principal: str, keytab: str, peer: str | None, peer_token: bool) -> KerberosAuthError:
    """Map a python-gssapi ``GSSError`` to our error with an administrator-actionable reason."""
    minor = int(getattr(err, "min_code", 0) or 0) & 0xFFFFFFFF
    major = int(getattr(err, "maj_code", 0) or 0) & 0xFFFF0000
    detail = str(err.gen_message()) if hasattr(err, "gen_message") else str(err)
    detail = detail.split("Minor (", 1)[-1].split("): ", 1)[-1].strip() or detail
    reason = next((r for codes, r in _BY_MINOR if minor in codes), None)
    if reason is None:
        if peer_token:
            reason = GssFailure.INVALID_TOKEN
        elif major in (_GSS_NO_CRED, _GSS_CRED_EXPIRED):
            reason = GssFailure.NO_TICKET
        else:
            reason = GssFailure.OTHER
    local = reason in (GssFailure.NO_KEYTAB, GssFailure.NO_TICKET, GssFailure.CLOCK_SKEW, GssFailure.KDC_UNREACHABLE)
    advice = _advice(reason, principal=principal, keytab=keytab, peer=peer, detail=detail)
    return KerberosAuthError(reason, advice, detail=detail, local=local)


class KerberosCredentials:
    """This computer's Kerberos identity (``host/<fqdn>@REALM`` and its keytab) for GSS-API contexts.

    Credentials are acquired on first use and kept (tickets in a MEMORY cache of this object);
    ``KRB5_CONFIG`` and ``KRB5RCACHEDIR`` in the environment choose the realm set-up.
    """

    FLAGS = ("mutual_authentication", "integrity", "confidentiality", "replay_detection", "out_of_sequence_detection")

    def __init__(self, *, keytab: str | os.PathLike[str], principal: str) -> None:
        if "/" not in principal:
            raise UsageError(f"{principal!r} is not a machine principal like host/<fqdn>@REALM")
        self.keytab = os.fspath(keytab)
        self.principal = principal
        # A name never used before in this process: MEMORY caches outlive their objects, and an
        # id() can come back for a new object whose keytab (or KDC) is not the old one's.
        self._ccache = f"MEMORY:pyipsec-{os.getpid()}-{next(_CCACHE_SERIAL)}"
        self._initiate: Any = None
        self._accept: Any = None

    def fail(self, err: Any, *, peer: str | None = None, peer_token: bool = False) -> KerberosAuthError:
        return classify(err, principal=self.principal, keytab=self.keytab, peer=peer, peer_token=peer_token)

    def _check_keytab(self) -> None:
        if not os.path.isfile(self.keytab) or not os.access(self.keytab, os.R_OK):
            raise KerberosAuthError(GssFailure.NO_KEYTAB, _advice(GssFailure.NO_KEYTAB, principal=self.principal,
                                    keytab=self.keytab, peer=None, detail=""),
                                    detail=f"keytab {self.keytab} is missing or unreadable", local=True)

    def _creds(self, usage: str) -> Any:
        cached = self._initiate if usage == "initiate" else self._accept
        if cached is not None:
            return cached
        gssapi = _gssapi()
        self._check_keytab()
        store = {"client_keytab": self.keytab, "ccache": self._ccache} if usage == "initiate" else {"keytab": self.keytab}
        try:
            creds = gssapi.Credentials(name=gssapi.Name(self.principal, gssapi.NameType.kerberos_principal),
                                       usage=usage, mechs=[gssapi.MechType.kerberos], store=store)
        except gssapi.exceptions.GSSError as err:
            raise self.fail(err) from None
        if usage == "initiate":
            self._initiate = creds
        else:
            self._accept = creds
        return creds

    def initiator_context(self, target: str) -> GssContext:
        gssapi = _gssapi()
        creds = self._creds("initiate")
        flags = [getattr(gssapi.RequirementFlag, f) for f in self.FLAGS]
        ctx = gssapi.SecurityContext(name=gssapi.Name(target, gssapi.NameType.kerberos_principal), creds=creds,
                                     usage="initiate", mech=gssapi.MechType.kerberos, flags=flags)
        return _KrbContext(self, ctx, target)

    def acceptor_context(self) -> GssContext:
        gssapi = _gssapi()
        return _KrbContext(self, gssapi.SecurityContext(creds=self._creds("accept"), usage="accept"), None)


class _KrbContext:
    """A python-gssapi ``SecurityContext`` with our error mapping."""

    def __init__(self, owner: KerberosCredentials, ctx: Any, target: str | None) -> None:
        self._owner, self._ctx, self._target = owner, ctx, target
        self._complete = False

    def step(self, token: bytes | None) -> bytes | None:
        errors = _gssapi().exceptions.GSSError
        try:
            out = self._ctx.step(token)
            # MIT answers a refused AP-REQ with a KRB-ERROR token and no exception; asking for
            # completeness makes the context report the real failure.
            self._complete = bool(self._ctx.complete)
        except errors as err:
            raise self._owner.fail(err, peer=self._target, peer_token=token is not None) from None
        return bytes(out) if out else None

    @property
    def is_complete(self) -> bool:
        return self._complete

    def wrap(self, data: bytes) -> bytes:
        try:
            return bytes(self._ctx.wrap(data, True).message)
        except _gssapi().exceptions.GSSError as err:
            raise self._owner.fail(err, peer=self._target) from None

    def unwrap(self, token: bytes) -> bytes:
        try:
            return bytes(self._ctx.unwrap(token).message)
        except _gssapi().exceptions.GSSError as err:
            raise self._owner.fail(err, peer=self._target, peer_token=True) from None

    def peer_name(self) -> str:
        name = self._ctx.target_name if self._target is not None else self._ctx.initiator_name
        return str(name)
