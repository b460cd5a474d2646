"""The IKEv1 exchanges as sans-I/O tasks, and the payloads each message may carry.

One task per exchange, like strongSwan's libcharon: ``main_mode.MainMode`` (RFC 2409 §5,
identity protection), ``quick_mode.QuickMode`` (RFC 2409 §5.5) and ``informational`` (RFC 2409
§5.7, RFC 2408 §4.8). Each task has a private step enum with a transition table and separate
initiator/responder functions chosen once.

This module owns ``PAYLOAD_RULES``: for every message of every exchange, which payloads must be
present (once), which may be (and how often), and which must come first. The endpoint checks a
message against its row *once*, before any task sees it, so a task never has to ask whether a
mandatory payload is there (the class of CVE-2013-6467 / CVE-2005-3732); a payload type not in
the row is refused (RFC 2408 §5.2: INVALID-PAYLOAD-TYPE).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ikeproto.enums import NotifyType, PayloadType
from ikeproto.errors import ProtocolError
from ikeproto.payloads import Payload

__all__ = ["PAYLOAD_RULES", "MessageKind", "PayloadRule", "check_payloads"]

P = PayloadType


class MessageKind(enum.Enum):
    """Every message this stack receives, named after its place in its exchange."""

    MM1 = "main mode 1"
    MM2 = "main mode 2"
    MM3 = "main mode 3"
    MM4 = "main mode 4"
    MM5 = "main mode 5"
    MM6 = "main mode 6"
    QM1 = "quick mode 1"
    QM2 = "quick mode 2"
    QM3 = "quick mode 3"
    INFO = "informational (protected)"
    INFO_CLEAR = "informational (unprotected)"


@dataclass(frozen=True, slots=True)
class PayloadRule:
    """``counts``: payload type -> (min, max) occurrences; anything else is refused. ``first``: the
    payload that must lead the message. ``any_of``: at least one of these must be present."""

    counts: dict[int, tuple[int, int]]
    first: int | None = None
    any_of: frozenset[int] = field(default_factory=frozenset)


_MANY = 64  # a generous cap on repeated payloads (vendor IDs, notifies, NAT-D, certificates)
_VID = {P.VID: (0, 16)}

PAYLOAD_RULES: dict[MessageKind, PayloadRule] = {
    # RFC 2409 §5: HDR, SA [, VID...] both ways.
    MessageKind.MM1: PayloadRule({P.SA: (1, 1), **_VID}),
    MessageKind.MM2: PayloadRule({P.SA: (1, 1), **_VID}),
    # HDR, KE, Ni [, CR] [, GSS] [, NAT-D, NAT-D] (RFC 3947 §3.2; 130 with the drafts). GSS (129):
    # the GSS-API token of draft-ietf-ipsec-isakmp-gss-auth; whether it must be there is the task's
    # business (it depends on the chosen authentication method).
    MessageKind.MM3: PayloadRule({P.KE: (1, 1), P.NONCE: (1, 1), P.NAT_D: (0, 8), P.NAT_D_DRAFT: (0, 8),
                                  P.CR: (0, 8), P.N: (0, 8), P.GSS: (0, 1), **_VID}),
    MessageKind.MM4: PayloadRule({P.KE: (1, 1), P.NONCE: (1, 1), P.NAT_D: (0, 8), P.NAT_D_DRAFT: (0, 8),
                                  P.CR: (0, 8), P.N: (0, 8), P.GSS: (0, 1), **_VID}),
    # HDR*, IDii [, CERT] , HASH_I | SIG_I [, N(INITIAL-CONTACT)]: which of HASH/SIG the task checks.
    # With GSS-API: HDR*, IDii, GSS [, HASH_I] while the context needs more legs (5/6 repeat).
    MessageKind.MM5: PayloadRule({P.ID: (1, 1), P.HASH: (0, 1), P.SIG: (0, 1), P.CERT: (0, 8), P.CR: (0, 8),
                                  P.N: (0, 8), P.GSS: (0, 1), **_VID}, any_of=frozenset({P.HASH, P.SIG, P.GSS})),
    MessageKind.MM6: PayloadRule({P.ID: (1, 1), P.HASH: (0, 1), P.SIG: (0, 1), P.CERT: (0, 8), P.CR: (0, 8),
                                  P.N: (0, 8), P.GSS: (0, 1), **_VID}, any_of=frozenset({P.HASH, P.SIG, P.GSS})),
    # RFC 2409 §5.5: HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr] [, NAT-OAi, NAT-OAr (RFC 3947 §5.2)].
    MessageKind.QM1: PayloadRule({P.HASH: (1, 1), P.SA: (1, 1), P.NONCE: (1, 1), P.KE: (0, 1), P.ID: (0, 2),
                                  P.NAT_OA: (0, 2), P.NAT_OA_DRAFT: (0, 2), P.N: (0, 8)}, first=P.HASH),
    MessageKind.QM2: PayloadRule({P.HASH: (1, 1), P.SA: (1, 1), P.NONCE: (1, 1), P.KE: (0, 1), P.ID: (0, 2),
                                  P.NAT_OA: (0, 2), P.NAT_OA_DRAFT: (0, 2), P.N: (0, 8)}, first=P.HASH),
    MessageKind.QM3: PayloadRule({P.HASH: (1, 1)}, first=P.HASH),
    # RFC 2409 §5.7: HDR*, HASH(1), N/D.
    MessageKind.INFO: PayloadRule({P.HASH: (1, 1), P.N: (0, _MANY), P.D: (0, _MANY)}, first=P.HASH,
                                  any_of=frozenset({P.N, P.D})),
    # Before keys exist only notifications can be sent, unprotected (RFC 2408 §5); a Delete
    # without a hash is never honoured.
    MessageKind.INFO_CLEAR: PayloadRule({P.N: (1, 8), **_VID}),
}


def check_payloads(kind: MessageKind, payloads: Sequence[Payload]) -> None:
    """Refuse ``payloads`` unless they fit the row of ``kind`` (ProtocolError with the Notify)."""
    rule = PAYLOAD_RULES[kind]
    counts = Counter(p.payload_type for p in payloads)
    for ptype, n in counts.items():
        bounds = rule.counts.get(ptype)
        if bounds is None:
            raise ProtocolError(f"payload {ptype} is not allowed in {kind.value}", notify=NotifyType.INVALID_PAYLOAD_TYPE)
        if n > bounds[1]:
            raise ProtocolError(f"payload {ptype} appears {n} times in {kind.value}", notify=NotifyType.PAYLOAD_MALFORMED)
    for ptype, (low, _high) in rule.counts.items():
        if counts.get(ptype, 0) < low:
            raise ProtocolError(f"mandatory payload {ptype} missing from {kind.value}", notify=NotifyType.PAYLOAD_MALFORMED)
    if rule.first is not None and (not payloads or payloads[0].payload_type != rule.first):
        raise ProtocolError(f"{kind.value} must start with payload {rule.first}", notify=NotifyType.PAYLOAD_MALFORMED)
    if rule.any_of and not any(counts.get(t) for t in rule.any_of):
        raise ProtocolError(f"{kind.value} needs one of payloads {sorted(rule.any_of)}", notify=NotifyType.PAYLOAD_MALFORMED)
