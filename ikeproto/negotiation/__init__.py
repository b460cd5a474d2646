"""Proposal building and selection for Main Mode (``phase1``) and Quick Mode (``phase2``), and the
lifetime attributes both use (``lifetimes``).

Owns the translation between the config records (``ikeproto.config``) and SA payloads, and the
choice rules: the initiator offers in its order; the responder picks its most preferred acceptable
offer; the initiator checks the answer is one it offered. Does not own the exchanges that carry
these payloads, the NAT-T dialect (``ikeproto.natt``) or keys.
"""

from ikeproto.negotiation.lifetimes import DEFAULT_LIFETIME_S, parse_responder_lifetime, responder_lifetime_data
from ikeproto.negotiation.phase1 import (  # noqa: F401 - the name tables are re-exported for extensions
    _P1_AUTH_NAMES,
    P1_AUTH,
    P1_CIPHERS,
    P1_HASHES,
    Phase1Choice,
    accept_phase1,
    is_supported_phase1,
    phase1_sa,
    phase1_transform,
    select_phase1,
)
from ikeproto.negotiation.phase2 import (
    ChildChoice,
    Phase2Choice,
    accept_phase2,
    apply_responder_lifetime,
    phase2_sa,
    responder_sa,
    select_phase2,
)

__all__ = [
    "DEFAULT_LIFETIME_S",
    "P1_AUTH",
    "P1_CIPHERS",
    "P1_HASHES",
    "ChildChoice",
    "Phase1Choice",
    "Phase2Choice",
    "accept_phase1",
    "accept_phase2",
    "apply_responder_lifetime",
    "is_supported_phase1",
    "parse_responder_lifetime",
    "phase1_sa",
    "phase1_transform",
    "phase2_sa",
    "responder_lifetime_data",
    "responder_sa",
    "select_phase1",
    "select_phase2",
]
