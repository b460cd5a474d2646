"""ikeproto: ISAKMP (RFC 2408) and IKEv1 (RFC 2409, IPsec DOI RFC 2407), sans-I/O.

Public API (the contract of /work/briefs/ike-endpoint-api.md):

- ``IkeEndpoint`` (``ikeproto.endpoint``): the engine; ``EndpointStats`` its counters.
- Config records (``ikeproto.config``): ``Phase1Config``, ``Phase1Proposal``, ``Phase2Config``,
  ``Phase2Proposal``, ``IpsecTransform``, ``TrafficSelector``, ``Identity``, ``RetransmitPolicy``,
  ``ConfigProvider``.
- Events (``ikeproto.events``): ``Phase1Established``, ``Phase2Established`` (with ``ChildSa``),
  ``NegotiationFailed``, ``Phase1Deleted``, ``Phase2Deleted``.
- ``espcore_sas`` (``ikeproto.child_sa``): espcore SA pairs from a ``Phase2Established``.
- Errors (``ikeproto.errors``): ``IkeError``, ``ParseError``, ``ProtocolError``, ``UsageError``.

The codec (``message``, ``payloads``, ``proposals``, ``attributes``), key material (``keymat``,
``iv``, ``dh``, ``crypto``) and fuzzing helpers (``strategies``, ``mutations``, ``fuzz``) are
imported from their modules.
"""

from ikeproto.child_sa import espcore_sas
from ikeproto.config import (
    ConfigProvider,
    Identity,
    IpsecTransform,
    Phase1Config,
    Phase1Proposal,
    Phase2Config,
    Phase2Proposal,
    RetransmitPolicy,
    TrafficSelector,
)
from ikeproto.endpoint import EndpointStats, IkeEndpoint
from ikeproto.errors import IkeError, ParseError, ProtocolError, UsageError
from ikeproto.events import (
    ChildSa,
    Event,
    NegotiationFailed,
    Phase1Deleted,
    Phase1Established,
    Phase2Deleted,
    Phase2Established,
)

__all__ = [
    "ChildSa",
    "ConfigProvider",
    "EndpointStats",
    "Event",
    "Identity",
    "IkeEndpoint",
    "IkeError",
    "IpsecTransform",
    "NegotiationFailed",
    "ParseError",
    "Phase1Config",
    "Phase1Deleted",
    "Phase1Established",
    "Phase1Proposal",
    "Phase2Config",
    "Phase2Deleted",
    "Phase2Established",
    "Phase2Proposal",
    "ProtocolError",
    "RetransmitPolicy",
    "TrafficSelector",
    "UsageError",
    "espcore_sas",
]
