"""Informational exchanges (RFC 2409 §5.7, RFC 2408 §4.8): Notify and Delete.

Owns building and processing them:

- Protected (after Main Mode): ``HDR*, HASH(1), N/D`` with its own random message ID and IV chain
  (RFC 2409 Appendix B), HASH(1) = prf(SKEYID_a, M-ID | N/D). A message whose HASH(1) does not
  verify is dropped with no state change. Delete of the ISAKMP SA (the cookie pair as SPI, RFC
  2408 §3.15) and of IPsec SAs (the sender's inbound SPIs, which are our outbound SPIs: the event
  reports our inbound SPIs of the same pairs); INITIAL-CONTACT (RFC 2407 §4.6.3.3); error
  notifies that end a Quick Mode; DPD R-U-THERE answered with R-U-THERE-ACK (RFC 3706 §5.3).
  Payloads are handled in order, and once a Delete removed the SA the message came on, nothing
  after it is looked at (a Delete followed by more notifies, GHSA-65xr-g9j5-jv8g).
- Unprotected (before keys exist, RFC 2408 §5): only notifications. They are not authenticated,
  so they change no state: an error notify is kept as the peer's stated reason, reported if the
  negotiation is later given up. A Delete is never honoured without a hash.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from ikeproto.enums import ExchangeType, NotifyType, PayloadType, ProtocolId, enum_name
from ikeproto.errors import ProtocolError
from ikeproto.events import Phase2Deleted
from ikeproto.exchanges.common import Env, Inbound
from ikeproto.ike_sa import IkeSa
from ikeproto.message import Message, serialize_message, serialize_payload, serialize_payloads
from ikeproto.payloads import DeletePayload, HashPayload, NotifyPayload, Payload

__all__ = ["clear_notify", "process_clear", "process_protected", "send_protected"]

INFORMATIONAL = ExchangeType.INFORMATIONAL
_SEEN_KEEP = 64


def send_protected(sa: IkeSa, env: Env, payloads: Sequence[Payload]) -> bytes:
    """Send ``HDR*, HASH(1), payloads`` on ``sa`` (a fresh message ID); returns the datagram."""
    assert sa.keys is not None and sa.ivs is not None
    mid = env.new_message_id(sa)
    rest = serialize_payloads(payloads)
    h = sa.keys.informational_hash(mid, rest)
    body = serialize_payload(HashPayload(data=h), payloads[0].payload_type) + rest
    raw = sa.protect(INFORMATIONAL, mid, PayloadType.HASH, body)
    sa.ivs.forget(mid)  # one message per Informational exchange
    env.trace.message("sent", payloads, exchange="informational", message_id=f"{mid:08x}", peer=sa.peer_ip)
    env.send(sa, (raw,))
    return raw


def clear_notify(cky_i: bytes, cky_r: bytes, notify_type: int) -> bytes:
    """An unprotected Informational with one Notify about the ISAKMP SA (RFC 2408 §5)."""
    n = NotifyPayload(notify_type=notify_type, protocol_id=ProtocolId.ISAKMP, spi=cky_i + cky_r)
    return serialize_message(Message(initiator_cookie=cky_i, responder_cookie=cky_r, exchange_type=INFORMATIONAL,
                                     payloads=(n,)))


def process_clear(sa: IkeSa, env: Env, inb: Inbound) -> None:
    """Unprotected notifies: remembered as the peer's reason, nothing else changes."""
    for n in inb.find_all(NotifyPayload):
        name = enum_name(NotifyType, n.notify_type)
        env.trace.step("unprotected notify", notify=name, peer=sa.peer_ip, cookies=sa.cookie_text)
        if 1 <= n.notify_type <= 8191:
            sa.note_failure(f"peer sent {name} (unauthenticated)", n.notify_type, "peer")


def process_protected(sa: IkeSa, env: Env, inb: Inbound) -> None:
    """A protected Informational: verify HASH(1) (ProtocolError: dropped), then act on N and D."""
    assert sa.keys is not None and inb.plaintext is not None
    mid = inb.message.message_id
    hash_len = int.from_bytes(inb.plaintext[2:4], "big")
    rest = inb.plaintext[hash_len:inb.chain_end]
    if not hmac.compare_digest(inb.payloads[0].data, sa.keys.informational_hash(mid, rest)):  # type: ignore[attr-defined]
        raise ProtocolError("Informational HASH(1) does not verify", notify=NotifyType.INVALID_HASH_INFORMATION)
    env.authenticated(sa, inb)
    sa.informational_seen[mid] = None
    while len(sa.informational_seen) > _SEEN_KEEP:
        sa.informational_seen.popitem(last=False)
    for p in inb.payloads[1:]:
        if sa.state.value == "deleted":
            env.trace.step("ignored after the SA was deleted", payload=p.payload_type, peer=sa.peer_ip)
            continue
        if isinstance(p, NotifyPayload):
            _notify(sa, env, p, inb.now)
        elif isinstance(p, DeletePayload):
            _delete(sa, env, p, inb.now)


def _notify(sa: IkeSa, env: Env, n: NotifyPayload, now: float) -> None:
    name = enum_name(NotifyType, n.notify_type)
    env.trace.step("notify", notify=name, protocol=n.protocol_id, spi=n.spi.hex(), peer=sa.peer_ip)
    if n.notify_type == NotifyType.R_U_THERE:
        send_protected(sa, env, [NotifyPayload(notify_type=NotifyType.R_U_THERE_ACK, protocol_id=n.protocol_id,
                                               spi=n.spi, data=n.data)])
    elif n.notify_type == NotifyType.INITIAL_CONTACT:
        env.initial_contact(sa, now)
    elif 1 <= n.notify_type <= 8191 and not sa.is_established:
        # Main Mode keys exist but it is not finished: an authenticated refusal ends it.
        sa.note_failure(f"peer refused: {name}", n.notify_type, "peer")
        env.abort_phase1(sa, now)
    elif 1 <= n.notify_type <= 8191:
        pending = [qm for qm in sa.quick_modes.values() if qm.step.value in ("sent", "answered")]
        hit = [qm for qm in pending if n.spi and qm.concerns(n.spi)]
        if not hit and len(pending) == 1:
            hit = pending  # a notify without a usable SPI ends the only exchange it can be about
        for qm in hit:
            qm.fail(now, reason=f"peer refused: {name}", notify=n.notify_type, failure_point="peer")


def _delete(sa: IkeSa, env: Env, d: DeletePayload, now: float) -> None:
    if d.protocol_id == ProtocolId.ISAKMP:
        for spi in d.spis:
            target = env.find_sa(spi[:8], spi[8:16])
            if target is not None and target.peer_ip == sa.peer_ip:
                env.phase1_deleted(target, now, by_peer=True, reason="deleted by peer")
            else:
                env.trace.step("delete for an unknown ISAKMP SA", cookies=spi.hex())
        return
    protocol = {ProtocolId.IPSEC_ESP: "esp", ProtocolId.IPSEC_AH: "ah"}.get(d.protocol_id)
    if protocol is None:
        env.trace.step("delete for an unknown protocol", protocol=d.protocol_id)
        return
    ours = []
    for spi in d.spis:
        found = env.take_child(sa.peer_ip, protocol, int.from_bytes(spi, "big"))
        if found is None:
            env.trace.step("delete for an unknown SPI", protocol=protocol, spi=spi.hex())
        else:
            ours.append(found)
    if ours:
        env.emit(Phase2Deleted(at=now, peer=sa.peer, protocol=protocol, spis=tuple(ours), by_peer=True,
                               reason="deleted by peer"))
