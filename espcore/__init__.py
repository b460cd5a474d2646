"""espcore: the ESP (RFC 4303) and AH (RFC 4302) data path. Pure: bytes in, bytes out, no sockets.

Public API:

- ``SecurityAssociation`` (``espcore.sa``): one direction of one SA; ``protect``/``unprotect``
  whole IP packets, ``protect_payload``/``unprotect_payload`` for ESP without an IP header,
  batch ``protect_many``/``unprotect_many``, counters, lifetimes and their events.
- ``SaDatabase`` (``espcore.sad``): inbound SAs by SPI.
- ``Lifetime``, ``SaState``, ``SoftLifetimeReached``, ``HardLifetimeReached``
  (``espcore.lifetime``).
- ``ReplayWindow`` (``espcore.replay``).
- ``transforms``: the algorithm registry shared with IKE; ``keymat_length``, ``split_keymat``.
- ``udp_encap``: RFC 3948 helpers.
- The error tree of ``espcore.errors``.
- ``espcore.strategies`` (imported explicitly; needs hypothesis): fuzzing strategies.
"""

from espcore import transforms, udp_encap
from espcore.errors import (DummyPacket, EspError, IntegrityError, LifetimeExpired, ParseError,
                            ReplayError, SequenceExhausted, UnknownSpiError, UsageError)
from espcore.lifetime import HardLifetimeReached, Lifetime, SaState, SoftLifetimeReached
from espcore.replay import ReplayWindow
from espcore.sa import SecurityAssociation
from espcore.sad import SaDatabase
from espcore.transforms import keymat_length, split_keymat

__all__ = [
    "DummyPacket",
    "EspError",
    "HardLifetimeReached",
    "IntegrityError",
    "Lifetime",
    "LifetimeExpired",
    "ParseError",
    "ReplayError",
    "ReplayWindow",
    "SaDatabase",
    "SaState",
    "SecurityAssociation",
    "SequenceExhausted",
    "SoftLifetimeReached",
    "UnknownSpiError",
    "UsageError",
    "keymat_length",
    "split_keymat",
    "transforms",
    "udp_encap",
]
