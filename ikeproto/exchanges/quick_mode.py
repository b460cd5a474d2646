"""Quick Mode (RFC 2409 §5.5) on an established IKE SA, initiator and responder.

    Initiator                                   Responder
    HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr] [, NAT-OAi, NAT-OAr]  -->
                        <--  HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr] [, NAT-OA...] [, N(RESPONDER-LIFETIME)]
    HDR*, HASH(3)                               -->

Owns the step enum, HASH(1..3) checks, the KEYMAT of each SA (``ChildSa`` keys for both
directions) and the ``Phase2Established`` event. A message whose HASH does not verify (or that
does not decrypt) is dropped with no state change. Once the HASH verified, the message is the
peer's: a refusal (no acceptable proposal, no policy for the IDs, a bad KE value) ends the
exchange, and that failure *is* the protected Notify we send (RFC 2409 §5.7) with the
``NegotiationFailed`` event. The initiator retransmits message 1, the responder message 2
(the peer authenticated itself in phase 1); message 3 is resent only for a duplicate message 2.
The commit bit (RFC 2408 §3.1) is accepted and ignored.

NAT-T (RFC 3947 §5): after a NAT the encapsulation mode is UDP-Encapsulated-Tunnel/-Transport
(3/4, or 61443/61444 with the drafts); in transport mode NAT-OA payloads carry the original
addresses (two with the RFC, the sender's own with the drafts). AH is never offered or accepted
through a NAT.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress

from ikeproto import dh
from ikeproto.config import Mode, Phase2Config, TrafficSelector
from ikeproto.enums import ExchangeType, Flag, NotifyType, PayloadType
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.events import ChildSa, NegotiationFailed, Phase2Established
from ikeproto.exchanges import MessageKind
from ikeproto.exchanges.common import Env, Inbound, host_selector, selector_of, selector_payload
from ikeproto.exchanges.informational import send_protected
from ikeproto.ike_sa import ChildRecord, Flight, IkeSa
from ikeproto.message import serialize_payload, serialize_payload_body, serialize_payloads
from ikeproto.natt import decode_encapsulation, plain_encapsulation_mode
from ikeproto.negotiation import (
    Phase2Choice,
    accept_phase2,
    apply_responder_lifetime,
    parse_responder_lifetime,
    phase2_sa,
    responder_lifetime_data,
    responder_sa,
    select_phase2,
)
from ikeproto.payloads import HashPayload, IdPayload, KePayload, NatOaPayload, NoncePayload, NotifyPayload
from ikeproto.proposals import SaPayload

__all__ = ["QuickMode", "Step", "TRANSITIONS", "offer"]

QM = ExchangeType.QUICK_MODE
NONCE_LENGTH = 32


class Step(enum.Enum):
    START = "start"
    SENT = "sent"  # initiator: message 1 out, waiting for 2
    ANSWERED = "answered"  # responder: message 2 out, waiting for 3
    DONE = "done"
    FAILED = "failed"


TRANSITIONS: dict[Step, frozenset[Step]] = {
    Step.START: frozenset({Step.SENT, Step.ANSWERED, Step.FAILED}),
    Step.SENT: frozenset({Step.DONE, Step.FAILED}),
    Step.ANSWERED: frozenset({Step.DONE, Step.FAILED}),
    Step.DONE: frozenset(),
    Step.FAILED: frozenset(),
}


def offer(sa: IkeSa, config: Phase2Config, spis: dict[str, bytes]) -> SaPayload:
    """The SA payload an initiator sends on ``sa`` (UsageError for a config that cannot be sent)."""
    udp = sa.udp_encapsulation
    mode: Mode = config.mode
    encapsulation = sa.natt.encapsulation_mode(mode) if udp and sa.natt else plain_encapsulation_mode(mode)
    ah_encapsulation = plain_encapsulation_mode(mode) if udp and sa.config.allow_ah_with_nat else None
    return phase2_sa(config, spis=spis, encapsulation=encapsulation, allow_ah=not udp,
                     ah_encapsulation=ah_encapsulation)


class QuickMode:
    """One Quick Mode exchange (one message ID) on an IKE SA."""

    def __init__(self, sa: IkeSa, env: Env, *, message_id: int, initiator: bool, request_id: int | None = None,
                 config: Phase2Config | None = None) -> None:
        self.sa = sa
        self.env = env
        self.message_id = message_id
        self.is_initiator = initiator
        self.request_id = request_id
        self.config = config
        self.step = Step.START
        self.flight: Flight | None = None
        self.last_in: bytes | None = None
        self.last_out: tuple[bytes, ...] = ()
        self.spis: dict[str, bytes] = {}
        self.ni = self.nr = b""
        self.ids: tuple[IdPayload, IdPayload] | None = None
        self.local_ts: TrafficSelector | None = None
        self.remote_ts: TrafficSelector | None = None
        self.choice: Phase2Choice | None = None
        self.g_qm: bytes | None = None
        self.peer_original: str | None = None
        self.peer_spis: set[bytes] = set()  # SPIs the peer chose or offered (to match its notifies)
        self.notify_spi: tuple[int, bytes] | None = None  # (protocol, SPI) our error notify names
        self._dh: dh.DhPrivate | None = None

    def _set_step(self, new: Step) -> None:
        if new not in TRANSITIONS[self.step]:
            raise UsageError(f"Quick Mode cannot go from {self.step.value} to {new.value}")
        self.env.trace.state("quick mode", self.step, new, message_id=f"{self.message_id:08x}", peer=self.sa.peer_ip)
        self.step = new

    @property
    def expected(self) -> MessageKind | None:
        return {Step.SENT: MessageKind.QM2, Step.ANSWERED: MessageKind.QM3}.get(self.step)

    @property
    def deadline(self) -> float | None:
        return self.flight.deadline if self.flight else None

    def concerns(self, spi: bytes) -> bool:
        """Whether a notify naming ``spi`` is about this exchange."""
        return spi in self.spis.values() or spi in self.peer_spis

    def _protect(self, payloads: list, hash_value_fn) -> bytes:
        self.env.trace.message("sent", payloads, exchange="quick mode", message_id=f"{self.message_id:08x}",
                               peer=self.sa.peer_ip)
        rest = serialize_payloads(payloads)
        h = hash_value_fn(rest)
        body = serialize_payload(HashPayload(data=h), payloads[0].payload_type) + rest
        return self.sa.protect(QM, self.message_id, PayloadType.HASH, body)

    def _rest(self, inb: Inbound) -> bytes:
        """The octets after the HASH payload up to the end of the chain (RFC 2409 §5.5)."""
        assert inb.plaintext is not None
        hash_len = int.from_bytes(inb.plaintext[2:4], "big")
        return inb.plaintext[hash_len:inb.chain_end]

    def _natoa(self, *, own_first: bool) -> list[NatOaPayload]:
        sa = self.sa
        if not (self.choice is not None and self.choice.udp and self.choice.mode == "transport") or sa.natt is None:
            return []
        ptype = sa.natt.natoa_type
        mine = NatOaPayload(payload_type=ptype, **_oa(self.env.local_address))
        if not sa.natt.is_rfc:
            return [mine]  # draft-02/03: the sender's original address only
        theirs = NatOaPayload(payload_type=ptype, **_oa(sa.peer_ip))
        return [mine, theirs] if own_first else [theirs, mine]

    def _peer_original(self, inb: Inbound, *, peer_index: int) -> str | None:
        if self.sa.natt is None:
            return None
        oas = inb.of_type(self.sa.natt.natoa_type)
        if not oas:
            return None
        index = peer_index if len(oas) > 1 else 0
        try:
            return str(ipaddress.ip_address(oas[index].address))
        except ValueError:
            return None

    # --- timers, failures -----------------------------------------------------------------------

    def on_timer(self, now: float) -> str | None:
        if self.flight is None:
            return None
        action = self.flight.tick(now, self.env.retransmit)
        if action == "resend":
            self.env.trace.step("retransmit", exchange="quick mode", message_id=f"{self.message_id:08x}")
            self.env.send(self.sa, self.flight.datagrams)
        return action

    def fail(self, now: float, *, reason: str, notify: int | None, failure_point: str, timed_out: bool = False,
             send_notify: bool = False) -> None:
        """End the exchange: optionally send the protected Notify, always the event."""
        if self.step in (Step.DONE, Step.FAILED):
            return
        self.env.trace.failure(reason, exchange="quick mode", message_id=f"{self.message_id:08x}", notify=notify)
        answer: tuple[bytes, ...] = ()
        if send_notify and notify is not None and self.sa.is_established:
            protocol_id, spi = self.notify_spi or (3, b"")
            answer = (send_protected(self.sa, self.env, [NotifyPayload(notify_type=notify, protocol_id=protocol_id,
                                                                        spi=spi)]),)
        self._set_step(Step.FAILED)
        self.flight = None
        if self.last_in is not None:
            # A retransmission of the refused message gets the same Notify again (the first may
            # have been lost; the peer drops a copy of one it has seen).
            self.sa.remember(self.message_id, self.last_in, answer)
        if self.sa.ivs is not None:
            self.sa.ivs.forget(self.message_id)
        self.env.emit(NegotiationFailed(at=now, peer=self.sa.peer, phase=2, request_id=self.request_id, reason=reason,
                                        notify=notify, failure_point=failure_point, timed_out=timed_out))

    # --- initiator ------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        sa, cfg = self.sa, self.config
        assert cfg is not None and sa.keys is not None
        protocols = {t.protocol for p in cfg.proposals for t in p.transforms}
        self.spis = {proto: self.env.new_spi() for proto in sorted(protocols)}
        sa_payload = offer(sa, cfg, self.spis)
        first = sa_payload.proposals[0]
        self.notify_spi = (first.protocol_id, first.spi)
        self.ni = self.env.rng(NONCE_LENGTH)
        payloads: list = [sa_payload, NoncePayload(data=self.ni)]
        if cfg.pfs_group is not None:
            self._dh = dh.group(cfg.pfs_group).generate(self.env.rng)
            payloads.append(KePayload(data=self._dh.public_value))
        self.local_ts, self.remote_ts = cfg.local_ts, cfg.remote_ts
        self.ids = (selector_payload(cfg.local_ts), selector_payload(cfg.remote_ts))
        payloads += self.ids
        if sa.udp_encapsulation and cfg.mode == "transport" and sa.natt is not None:
            # RFC 3947 §5.2 (errata 4936): the initiator sends NAT-OA with any UDP transport mode.
            ptype = sa.natt.natoa_type
            payloads.append(NatOaPayload(payload_type=ptype, **_oa(self.env.local_address)))
            if sa.natt.is_rfc:
                payloads.append(NatOaPayload(payload_type=ptype, **_oa(sa.peer_ip)))
        raw = self._protect(payloads, lambda rest: sa.keys.qm_hash1(self.message_id, rest))  # type: ignore[union-attr]
        self._set_step(Step.SENT)
        self.env.send(sa, (raw,))
        self.last_out = (raw,)
        self.flight = Flight.start((raw,), self.env.retransmit, now, first=False)

    def process(self, inb: Inbound) -> None:
        if self.step is Step.SENT and self.is_initiator:
            self._process_qm2(inb)
        elif self.step is Step.ANSWERED and not self.is_initiator:
            self._process_qm3(inb)
        else:
            raise ProtocolError(f"no Quick Mode message expected in step {self.step.value}",
                                notify=NotifyType.INVALID_MESSAGE_ID)

    def _verify(self, inb: Inbound, expected: bytes, which: str) -> None:
        if not hmac.compare_digest(inb.payloads[0].data, expected):  # type: ignore[attr-defined]
            raise ProtocolError(f"{which} does not verify", notify=NotifyType.INVALID_HASH_INFORMATION)

    def _process_qm2(self, inb: Inbound) -> None:
        sa, cfg = self.sa, self.config
        assert sa.keys is not None and sa.ivs is not None and cfg is not None and inb.last_block is not None
        self._verify(inb, sa.keys.qm_hash2(self.message_id, self.ni, self._rest(inb)), "HASH(2)")
        # authenticated from here on: the IV chain moves, and a refusal ends the exchange
        sa.ivs.advance(self.message_id, inb.last_block)
        self.env.authenticated(sa, inb)
        self.last_in = inb.raw
        self.peer_spis = {p.spi for p in inb.find(SaPayload).proposals}
        try:
            choice = accept_phase2(inb.find(SaPayload), cfg, mode=cfg.mode, udp=sa.udp_encapsulation,
                                   ah_plain=sa.config.allow_ah_with_nat)
            nr = _nonce(inb)
            g_qm = self._pfs(inb, choice.pfs_group)
            ids = inb.find_all(IdPayload)
            if ids and (len(ids) != 2 or tuple(serialize_payload_body(i) for i in ids)
                        != tuple(serialize_payload_body(i) for i in self.ids or ())):
                raise ProtocolError("the responder changed the client IDs", notify=NotifyType.INVALID_ID_INFORMATION)
            for n in inb.find_all(NotifyPayload):
                if n.notify_type == NotifyType.RESPONDER_LIFETIME:
                    # RFC 2407 §4.6.3.1: the initiator honours the responder's shorter lifetime.
                    choice = apply_responder_lifetime(choice, *parse_responder_lifetime(n.data))
        except ProtocolError as exc:
            self.fail(inb.now, reason=str(exc), notify=exc.notify, failure_point="me", send_notify=True)
            return
        self.choice, self.nr, self.g_qm = choice, nr, g_qm
        self.peer_original = self._peer_original(inb, peer_index=1)
        raw = self.sa.protect(QM, self.message_id, PayloadType.HASH,
                              serialize_payload(HashPayload(data=sa.keys.qm_hash3(self.message_id, self.ni, nr))))
        self.env.send(sa, (raw,))
        sa.remember(self.message_id, inb.raw, (raw,))
        self._finish(inb.now)

    def _pfs(self, inb: Inbound, group: int | None) -> bytes | None:
        """g(qm)^xy when PFS was agreed (RFC 2409 §5.5); a KE without PFS, or none with it, is refused."""
        ke = inb.find(KePayload)
        if group is None:
            if ke is not None:
                raise ProtocolError("KE payload without a group in the SA", notify=NotifyType.INVALID_PAYLOAD_TYPE)
            return None
        if ke is None:
            raise ProtocolError("PFS agreed but no KE payload", notify=NotifyType.PAYLOAD_MALFORMED)
        if self._dh is None or self._dh.group.number != group:
            self._dh = dh.group(group).generate(self.env.rng)
        self._dh.group.check_public(ke.data)
        return self._dh.compute(ke.data)

    # --- responder ------------------------------------------------------------------------------

    def respond(self, inb: Inbound) -> None:
        """Process message 1; answer with message 2 or refuse with a protected Notify."""
        sa = self.sa
        assert sa.keys is not None and sa.ivs is not None and inb.last_block is not None
        self.ni = _nonce_data(inb)
        self._verify(inb, sa.keys.qm_hash1(self.message_id, self._rest(inb)), "HASH(1)")
        sa.ivs.advance(self.message_id, inb.last_block)
        self.env.authenticated(sa, inb)
        self.last_in = inb.raw
        offered = inb.find(SaPayload).proposals
        self.peer_spis = {p.spi for p in offered}
        if offered:
            self.notify_spi = (offered[0].protocol_id, offered[0].spi)
        if inb.message.flags & Flag.COMMIT:
            self.env.trace.step("commit bit set: accepted and ignored", message_id=f"{self.message_id:08x}")
        try:
            self._choose(inb)
        except ProtocolError as exc:
            self.fail(inb.now, reason=str(exc), notify=exc.notify, failure_point="me", send_notify=True)
            return
        assert self.choice is not None
        self.spis = {c.protocol: self.env.new_spi() for c in self.choice.children}
        self.nr = self.env.rng(NONCE_LENGTH)
        payloads: list = [responder_sa(self.choice, self.spis), NoncePayload(data=self.nr)]
        if self._dh is not None:
            payloads.append(KePayload(data=self._dh.public_value))
        ids = inb.find_all(IdPayload)
        payloads += ids  # RFC 2409 §5.5: the responder returns the IDs it was given
        payloads += self._natoa(own_first=False)
        if self.choice.notify_lifetime:
            data = responder_lifetime_data(self.choice.lifetime_s, self.choice.lifetime_kb)
            for c in self.choice.children:
                payloads.append(NotifyPayload(notify_type=NotifyType.RESPONDER_LIFETIME, protocol_id=c.protocol_id,
                                              spi=self.spis[c.protocol], data=data))
        raw = self._protect(payloads, lambda rest: sa.keys.qm_hash2(self.message_id, self.ni, rest))  # type: ignore[union-attr]
        self._set_step(Step.ANSWERED)
        self.env.send(sa, (raw,))
        self.last_out = (raw,)
        self.flight = Flight.start((raw,), self.env.retransmit, inb.now, first=False)

    def _choose(self, inb: Inbound) -> None:
        sa = self.sa
        _nonce(inb)
        ids = inb.find_all(IdPayload)
        if len(ids) == 1:
            raise ProtocolError("one client ID where two or none belong", notify=NotifyType.PAYLOAD_MALFORMED)
        if ids:
            remote_ts, local_ts = selector_of(ids[0]), selector_of(ids[1])
        else:
            remote_ts, local_ts = host_selector(sa.peer_ip), host_selector(self.env.local_address)
        offer_sa: SaPayload = inb.find(SaPayload)
        mode = _offered_mode(offer_sa)
        config = self.env.provider.phase2_config(sa.peer, local_ts, remote_ts, mode)
        if config is None:
            raise ProtocolError(f"no policy for {remote_ts.network} -> {local_ts.network} ({mode})",
                                notify=NotifyType.NO_PROPOSAL_CHOSEN)
        udp = sa.udp_encapsulation
        choice = select_phase2(offer_sa, config, mode=mode, udp=udp, allow_ah=not udp,
                               ah_plain=sa.config.allow_ah_with_nat)
        self.g_qm = self._pfs(inb, choice.pfs_group)
        self.choice, self.config = choice, config
        self.local_ts, self.remote_ts = local_ts, remote_ts
        self.peer_original = self._peer_original(inb, peer_index=0)
        self.env.trace.step("chose phase 2", number=choice.number, mode=mode, udp=udp, pfs=choice.pfs_group,
                            transforms=[f"{c.protocol}:{c.cipher.name if c.cipher else ''}/"
                                        f"{c.integrity.name if c.integrity else ''}" for c in choice.children])

    def _process_qm3(self, inb: Inbound) -> None:
        sa = self.sa
        assert sa.keys is not None
        self._verify(inb, sa.keys.qm_hash3(self.message_id, self.ni, self.nr), "HASH(3)")
        self.env.authenticated(sa, inb)
        sa.remember(self.message_id, inb.raw, ())
        self._finish(inb.now)

    # --- both -----------------------------------------------------------------------------------

    def _finish(self, now: float) -> None:
        sa, choice = self.sa, self.choice
        assert sa.keys is not None and sa.ivs is not None and choice is not None
        assert self.local_ts is not None and self.remote_ts is not None and sa.peer_id is not None
        children = []
        for c in choice.children:
            spi_in, spi_out = self.spis[c.protocol], c.peer_spi
            n = c.keymat_length
            k_in, k_out = sa.keys.child_keymat(protocol=c.protocol_id, spi_in=spi_in, spi_out=spi_out, ni_b=self.ni,
                                               nr_b=self.nr, length=n, g_qm_xy=self.g_qm)
            enc_n = n - (c.integrity.key_bytes if c.integrity else 0)
            children.append(ChildSa(
                protocol=c.protocol, spi_in=int.from_bytes(spi_in, "big"), spi_out=int.from_bytes(spi_out, "big"),
                cipher=c.cipher.name if c.cipher else None, key_bits=c.key_bits,
                integrity=c.integrity.name if c.integrity else None, enc_key_in=k_in[:enc_n], auth_key_in=k_in[enc_n:],
                enc_key_out=k_out[:enc_n], auth_key_out=k_out[enc_n:],
            ))
            self.env.add_child(sa, ChildRecord(
                protocol=c.protocol, spi_in=int.from_bytes(spi_in, "big"), spi_out=int.from_bytes(spi_out, "big"),
                message_id=self.message_id, cookies=sa.cookies,
                expires_at=now + choice.lifetime_s if choice.lifetime_s is not None else None))
            self.env.trace.secret(f"KEYMAT {c.protocol} in", k_in, spi=spi_in.hex())
            self.env.trace.secret(f"KEYMAT {c.protocol} out", k_out, spi=spi_out.hex())
        self._set_step(Step.DONE)
        self.flight = None
        sa.ivs.forget(self.message_id)
        self.env.emit(Phase2Established(
            at=now, peer=sa.peer, cookies=sa.cookies, message_id=self.message_id, is_initiator=self.is_initiator,
            request_id=self.request_id, peer_id=sa.peer_id, mode=choice.mode,
            encapsulation="udp" if choice.udp else "none", local_ts=self.local_ts, remote_ts=self.remote_ts,
            sas=tuple(children), lifetime_s=choice.lifetime_s, lifetime_kb=choice.lifetime_kb,
            pfs_group=choice.pfs_group, local_port=sa.local_port, peer_port=sa.peer_port,
            local_address=self.env.local_address, peer_original_address=self.peer_original,
        ))


def _oa(address: str) -> dict:
    a = ipaddress.ip_address(address)
    return {"id_type": 1 if a.version == 4 else 5, "address": a.packed}


def _nonce_data(inb: Inbound) -> bytes:
    return inb.find(NoncePayload).data


def _nonce(inb: Inbound) -> bytes:
    data = _nonce_data(inb)
    if not 8 <= len(data) <= 256:  # RFC 2409 §5: nonces are 8 to 256 octets
        raise ProtocolError(f"nonce of {len(data)} octets", notify=NotifyType.PAYLOAD_MALFORMED)
    return data


def _offered_mode(sa: SaPayload) -> Mode:
    """The mode the initiator asks for: the Encapsulation Mode of its first transform."""
    for prop in sa.proposals:
        for t in prop.transforms:
            value = t.attribute(4)  # RFC 2407 §4.5 Encapsulation Mode
            if isinstance(value, int):
                decoded = decode_encapsulation(value)
                if decoded is not None:
                    return decoded[0]
    return "transport"
