"""From a Quick Mode result to the data path: ``espcore.SecurityAssociation`` pairs.

Owns one helper the policy agent and the tests share: ``espcore_sas(event, child)`` builds the
inbound and outbound SA of one ``ChildSa`` of a ``Phase2Established`` (keys from KEYMAT, RFC 2409
§5.5; tunnel endpoints = the IKE peers' addresses, RFC 2409 §5.5 / RFC 4301 §5.1.2; volume
lifetime from the negotiated kilobytes). Time lifetimes and rekeying stay with the agent; UDP
encapsulation (RFC 3948) is applied around the SA by the caller with ``espcore.udp_encap`` and the
event's ``local_port``/``peer_port``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from espcore import Lifetime, SecurityAssociation
from espcore.transforms import parse_cipher_name, qualified_name
from ikeproto.errors import UsageError
from ikeproto.events import ChildSa, Phase2Established

__all__ = ["espcore_sas", "lifetime_of"]


def lifetime_of(event: Phase2Established, *, soft_fraction: float = 0.9) -> Lifetime:
    """The byte lifetime of the negotiated kilobytes: hard at the limit, soft at ``soft_fraction``
    of it (the time to rekey). No kilobyte limit: no byte limit."""
    if event.lifetime_kb is None:
        return Lifetime()
    hard = event.lifetime_kb * 1024
    return Lifetime(soft_bytes=max(1, int(hard * soft_fraction)), hard_bytes=hard)


def espcore_sas(
    event: Phase2Established,
    child: ChildSa,
    *,
    local_address: str | None = None,
    soft_fraction: float = 0.9,
    rng: Callable[[int], bytes] = os.urandom,
) -> tuple[SecurityAssociation, SecurityAssociation]:
    """(inbound, outbound) espcore SAs for ``child``. Tunnel mode needs our address: the event's
    ``local_address`` unless ``local_address`` is given."""
    mine = local_address or event.local_address
    common: dict = {"protocol": child.protocol, "mode": event.mode, "lifetime": lifetime_of(event, soft_fraction=soft_fraction)}
    cipher = None
    if child.cipher is not None:
        transform, _ = parse_cipher_name(child.cipher)
        bits = child.key_bits if child.key_bits is not None else transform.default_key_bits
        cipher = qualified_name(transform, bits)
    if child.protocol == "esp":
        common["rng"] = rng
    if event.mode == "tunnel" and mine is None:
        raise UsageError("tunnel mode needs our address (Phase2Established.local_address)")
    inbound = SecurityAssociation(
        spi=child.spi_in, cipher=cipher, cipher_key=child.enc_key_in, integrity=child.integrity,
        integrity_key=child.auth_key_in,
        **({"tunnel_source": event.peer[0], "tunnel_destination": mine} if event.mode == "tunnel" else {}),
        **common,
    )
    outbound = SecurityAssociation(
        spi=child.spi_out, cipher=cipher, cipher_key=child.enc_key_out, integrity=child.integrity,
        integrity_key=child.auth_key_out,
        **({"tunnel_source": mine, "tunnel_destination": event.peer[0]} if event.mode == "tunnel" else {}),
        **common,
    )
    return inbound, outbound
