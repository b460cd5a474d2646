"""Main Mode (identity protection, RFC 2409 §5) for one IKE SA, initiator and responder.

    Initiator                        Responder
    HDR, SA [, VID...]          -->                          message 1
                                <--  HDR, SA [, VID]         message 2
    HDR, KE, Ni [, NAT-D x2]    -->                          message 3
                                <--  HDR, KE, Nr [, NAT-D x2]  message 4
    HDR*, IDii, [CERT,] HASH_I | SIG_I [, N(INITIAL-CONTACT)]  -->   message 5 (port 4500 after a NAT)
                                <--  HDR*, IDir, [CERT,] HASH_R | SIG_R   message 6

Owns the step enum and its transition table, and the build/process function of each message,
chosen once per role. Processing validates everything into locals and commits only at the end:
a message that fails (bad KE value, HASH_I that does not verify, a body that does not decrypt)
raises ``ProtocolError`` and changes nothing, so the genuine message can still follow. The
endpoint turns that error into a dropped datagram, an unprotected Notify and a recorded reason.

The authentication method is a strategy chosen with the transform (``auth``, ``gss_auth``).
GSS-API repeats 5/6 while a context needs legs (``AUTH_SENT`` again, ``AUTH_ANSWERED``); a dead
method (a failed GSS-API context) makes the task ``FAILED`` as it raises, and the endpoint gives
up at once. A refused Kerberos token in message 3 changes nothing but queues its 545 event.

RFC 3947 §3-§4 (NAT-T): vendor IDs in messages 1-2, NAT-D in 3-4, the initiator moves to the
NAT-T port for message 5 when a NAT is detected (or faked), the responder answers from the port
message 5 arrived on. CVE-2016-5361: the responder never retransmits message 2 on a timer; it
answers an exact duplicate of message 1 at most ``MAX_MM2_REPLAYS`` times (one answer per
datagram, so never an amplifier). Responder messages 4 and 6 are resent only in answer to a
duplicate of the message they answer.
"""

from __future__ import annotations

import enum

from ikeproto import dh
from ikeproto.enums import ExchangeType, NotifyType, PayloadType, ProtocolId
from ikeproto.errors import ProtocolError, UsageError
from ikeproto.events import NegotiationFailed, Phase1Established
from ikeproto.exchanges import MessageKind
from ikeproto.exchanges.auth import Authentication, HashOf, SignatureAuth, check_peer_identity, usable_proposals
from ikeproto.config import Identity
from ikeproto.exchanges.common import Env, Inbound, address_identity, identity_of, identity_payload
from ikeproto.exchanges.gss_auth import GssAuth, announced_gss_id
from ikeproto.gss import gss_vendor_ids, peer_speaks_gssapi
from ikeproto.ike_sa import Flight, IkeSa
from ikeproto.keymat import Phase1Keys
from ikeproto.message import Message, serialize_message, serialize_payload_body, serialize_payloads
from ikeproto.natt import NatStatus, choose_variant, detect_nat, natd_payloads, offered_vendor_ids
from ikeproto.negotiation import Phase1Choice, accept_phase1, phase1_sa, select_phase1
from ikeproto.payloads import IdPayload, KePayload, NoncePayload, NotifyPayload, VendorIdPayload
from ikeproto.proposals import Proposal, SaPayload

__all__ = ["MainMode", "Step", "TRANSITIONS"]

NONCE_LENGTH = 32
MAX_MM2_REPLAYS = 2
MAX_EXCHANGES = 256  # Quick Mode / Informational IV chains kept per IKE SA (many requests at once)
MM = ExchangeType.IDENTITY_PROTECTION


class Step(enum.Enum):
    START = "start"
    SA_SENT = "sa-sent"  # initiator: message 1 out, waiting for 2
    SA_ANSWERED = "sa-answered"  # responder: message 2 out, waiting for 3
    KE_SENT = "ke-sent"  # initiator: 3 out, waiting for 4
    KE_ANSWERED = "ke-answered"  # responder: 4 out, waiting for 5
    AUTH_SENT = "auth-sent"  # initiator: 5 out, waiting for 6
    AUTH_ANSWERED = "auth-answered"  # responder: a 6 with a GSS token out, waiting for the next 5
    ESTABLISHED = "established"
    FAILED = "failed"


TRANSITIONS: dict[Step, frozenset[Step]] = {
    Step.START: frozenset({Step.SA_SENT, Step.SA_ANSWERED, Step.FAILED}),
    Step.SA_SENT: frozenset({Step.KE_SENT, Step.FAILED}),
    Step.SA_ANSWERED: frozenset({Step.KE_ANSWERED, Step.FAILED}),
    Step.KE_SENT: frozenset({Step.AUTH_SENT, Step.FAILED}),
    Step.KE_ANSWERED: frozenset({Step.AUTH_ANSWERED, Step.ESTABLISHED, Step.FAILED}),
    # GSS-API contexts that need more legs repeat messages 5 and 6.
    Step.AUTH_SENT: frozenset({Step.AUTH_SENT, Step.ESTABLISHED, Step.FAILED}),
    Step.AUTH_ANSWERED: frozenset({Step.AUTH_ANSWERED, Step.ESTABLISHED, Step.FAILED}),
    Step.ESTABLISHED: frozenset(),
    Step.FAILED: frozenset(),
}

EXPECTS: dict[Step, MessageKind] = {
    Step.SA_SENT: MessageKind.MM2,
    Step.SA_ANSWERED: MessageKind.MM3,
    Step.KE_SENT: MessageKind.MM4,
    Step.KE_ANSWERED: MessageKind.MM5,
    Step.AUTH_SENT: MessageKind.MM6,
    Step.AUTH_ANSWERED: MessageKind.MM5,
}

_METHODS: dict[str, type[Authentication]] = {"psk": Authentication, "rsa-sig": SignatureAuth, "gssapi": GssAuth}


class MainMode:
    """The Main Mode task of one IKE SA."""

    def __init__(self, sa: IkeSa, env: Env) -> None:
        self.sa = sa
        self.env = env
        self.step = Step.START
        self.flight: Flight | None = None
        self.last_in: bytes | None = None  # the last message we processed, as received
        self.last_out: tuple[bytes, ...] = ()  # our answer to it
        self.replays = 0
        self.expire_at: float | None = None  # responder: when a half-open SA is given up
        self.proposals = usable_proposals(sa.config)
        self.auth: Authentication | None = None  # chosen with the transform
        self.fatal: ProtocolError | None = None  # what ended the negotiation at once (see process)
        self.refused: ProtocolError | None = None  # why we refused the last message we refused (demux)
        self._reported: set[str] = set()  # audit reasons of refused messages already queued
        self.sai_b = b""
        self.ni = self.nr = self.g_xi = self.g_xr = b""
        self._dh: dh.DhPrivate | None = None
        if sa.is_initiator:
            self._handlers = {Step.SA_SENT: self._process_mm2, Step.KE_SENT: self._process_mm4,
                              Step.AUTH_SENT: self._process_mm6}
        else:
            self._handlers = {Step.SA_ANSWERED: self._process_mm3, Step.KE_ANSWERED: self._process_mm5,
                              Step.AUTH_ANSWERED: self._process_mm5}

    def _set_step(self, new: Step) -> None:
        if new not in TRANSITIONS[self.step]:
            raise UsageError(f"Main Mode cannot go from {self.step.value} to {new.value}")
        self.env.trace.state("main mode", self.step, new, cookies=self.sa.cookie_text, peer=self.sa.peer_ip)
        self.step = new

    @property
    def expected(self) -> MessageKind | None:
        """The message this task waits for (None when it waits for nothing)."""
        return EXPECTS.get(self.step)

    @property
    def deadline(self) -> float | None:
        times = [t for t in (self.flight.deadline if self.flight else None, self.expire_at) if t is not None]
        return min(times) if times else None

    def _send(self, datagrams: tuple[bytes, ...], now: float, *, retransmit: bool, first: bool = False) -> None:
        self.env.send(self.sa, datagrams)
        self.last_out = datagrams
        self.flight = Flight.start(datagrams, self.env.retransmit, now, first=first) if retransmit else None

    def _message(self, payloads: list) -> bytes:
        sa = self.sa
        self.env.trace.message("sent", payloads, exchange="main mode", cookies=sa.cookie_text, peer=sa.peer_ip)
        return serialize_message(Message(initiator_cookie=sa.cky_i, responder_cookie=sa.cky_r, exchange_type=MM,
                                         payloads=tuple(payloads)))

    # --- duplicates and timers --------------------------------------------------------------------

    def replay(self, raw: bytes) -> bool:
        """Answer an exact duplicate of the last message we processed; True when it was one."""
        if self.last_in is None or raw != self.last_in:
            return False
        if self.step is Step.SA_ANSWERED:
            # CVE-2016-5361: message 2 goes out once per received message 1, and only a few times.
            if self.replays >= MAX_MM2_REPLAYS:
                return True
            self.replays += 1
        if self.last_out and not self.sa.is_initiator:
            self.env.send(self.sa, self.last_out)
        return True

    def on_timer(self, now: float) -> str | None:
        """Resend or give up; returns "give-up" when the negotiation is over."""
        if self.expire_at is not None and now >= self.expire_at:
            return "give-up"
        if self.flight is None:
            return None
        action = self.flight.tick(now, self.env.retransmit)
        if action == "resend":
            self.env.trace.step("retransmit", exchange="main mode", step=self.step.value, peer=self.sa.peer_ip)
            self.env.send(self.sa, self.flight.datagrams)
        return action

    def fail(self) -> None:
        if self.step is not Step.FAILED:
            self._set_step(Step.FAILED)
        self.flight = None
        self.expire_at = None

    def audit_failure(self, peer_notify: tuple[int, str] | None = None) -> tuple[str, str] | None:
        """(reason code, what to do) when the negotiation failed in its authentication method in a
        way that is audited on its own (Kerberos: event 545); ``peer_notify`` is the (number, description)
        of an error notify the peer sent, if that is why it failed."""
        return self.auth.audit_failure(self.fatal, peer_notify) if self.auth is not None else None

    def _choose(self, choice: Phase1Choice) -> Authentication:
        return _METHODS[choice.auth](self.sa.config, choice, is_initiator=self.sa.is_initiator, trace=self.env.trace,
                                     peer_ip=self.sa.peer_ip)

    def _local_id(self) -> Identity:
        """Ours: configured, else the method's (a certificate's DN), else our address."""
        assert self.auth is not None
        return self.sa.config.local_id or self.auth.local_identity() or address_identity(self.env.local_address)

    # --- initiator ------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Initiator: send message 1 (SA with one transform per proposal, NAT-T and GSS-API vendor IDs)."""
        cfg = self.sa.config
        gssapi = any(p.auth == "gssapi" for p in self.proposals)
        sa_payload = phase1_sa(self.proposals, gssapi=gssapi, gss_id=announced_gss_id(cfg) if gssapi else None)
        vids = [*(offered_vendor_ids() if cfg.nat_traversal else ()), *(gss_vendor_ids() if gssapi else ())]
        self.sai_b = serialize_payload_body(sa_payload)
        self._set_step(Step.SA_SENT)
        self._send((self._message([sa_payload, *(VendorIdPayload(data=v) for v in vids)]),), now, retransmit=True,
                   first=True)

    def process(self, inb: Inbound) -> None:
        """Process the expected message (the endpoint checked its payloads). ProtocolError: dropped,
        and nothing changed, unless the step became FAILED: then the negotiation is over."""
        handler = self._handlers.get(self.step)
        if handler is None:
            raise ProtocolError(f"no Main Mode message expected in step {self.step.value}",
                                notify=NotifyType.INVALID_EXCHANGE_TYPE)
        try:
            handler(inb)
        except ProtocolError as err:
            if self.auth is not None and self.auth.is_dead and self.step is not Step.FAILED:
                self.fatal = err
                self.env.trace.failure("authentication cannot go on", exchange="main mode", error=str(err),
                                       peer=self.sa.peer_ip, cookies=self.sa.cookie_text)
                self.fail()
            raise

    def _process_mm2(self, inb: Inbound) -> None:
        sa, cfg = self.sa, self.sa.config
        cky_r = inb.message.responder_cookie
        if cky_r == bytes(8):
            raise ProtocolError("message 2 without a responder cookie", notify=NotifyType.INVALID_COOKIE)
        choice = accept_phase1(inb.find(SaPayload), self.proposals)
        variant = choose_variant(v.data for v in inb.find_all(VendorIdPayload)) if cfg.nat_traversal else None
        group = dh.group(choice.dh_group)
        private = group.generate(self.env.rng)
        ni = self.env.rng(NONCE_LENGTH)
        # Our first GSS-API token (may ask the KDC for a ticket); a failure there is final.
        self.auth = self._choose(choice)
        extra = self.auth.ke_payloads()
        payloads: list = [KePayload(data=private.public_value), NoncePayload(data=ni), *extra]
        if variant is not None:
            payloads += natd_payloads(choice.hash, sa.cky_i, cky_r, remote=inb.addr,
                                      local=(self.env.local_address, inb.local_port), variant=variant,
                                      fake=cfg.force_encapsulation, rng=self.env.rng)
        # commit
        sa.cky_r, sa.choice, sa.natt, sa.peer_answered = cky_r, choice, variant, True
        self._dh, self.ni, self.g_xi = private, ni, private.public_value
        self.last_in = inb.raw
        self.env.trace.step("chose phase 1", role="initiator", cipher=choice.cipher_name, key_bits=choice.key_bits,
                            hash=choice.hash_name, group=choice.dh_group, auth=choice.auth,
                            nat_t=variant.name if variant else None)
        self._set_step(Step.KE_SENT)
        self._send((self._message(payloads),), inb.now, retransmit=True)

    def _key_exchange(self, inb: Inbound) -> tuple[bytes, bytes, NatStatus | None]:
        """Checks common to messages 3 and 4: (peer KE value, peer nonce, NAT status)."""
        sa = self.sa
        assert sa.choice is not None
        ke, nonce = inb.find(KePayload), inb.find(NoncePayload)
        if not 8 <= len(nonce.data) <= 256:  # RFC 2409 §5: nonces are 8 to 256 octets
            raise ProtocolError(f"nonce of {len(nonce.data)} octets", notify=NotifyType.PAYLOAD_MALFORMED)
        dh.group(sa.choice.dh_group).check_public(ke.data)
        if ke.data == self.g_xi or nonce.data == self.ni:
            # Our own message 3 sent back as message 4 (a reflection): the same shape, our values.
            raise ProtocolError("our own KE value or nonce came back", notify=NotifyType.INVALID_KEY_INFORMATION)
        nat = None
        if sa.natt is not None:
            hashes = [p.data for p in inb.of_type(sa.natt.natd_type)]
            if len(hashes) >= 2:
                nat = detect_nat(sa.choice.hash, sa.cky_i, sa.cky_r, hashes,
                                 local=(self.env.local_address, inb.local_port), remote=inb.addr)
                if sa.config.force_encapsulation:
                    nat = NatStatus(local_behind_nat=True, peer_behind_nat=nat.peer_behind_nat)
        return ke.data, nonce.data, nat

    def _keys(self, g_xy: bytes, ni: bytes, nr: bytes) -> Phase1Keys:
        assert self.auth is not None
        return self.auth.keys(ni_b=ni, nr_b=nr, g_xy=g_xy, cky_i=self.sa.cky_i, cky_r=self.sa.cky_r)

    def _trace_keys(self, keys: Phase1Keys, g_xy: bytes) -> None:
        t = self.env.trace
        for name, value in (("g^xy", g_xy), ("SKEYID", keys.skeyid), ("SKEYID_d", keys.skeyid_d),
                            ("SKEYID_a", keys.skeyid_a), ("SKEYID_e", keys.skeyid_e), ("Ka", keys.enc_key)):
            t.secret(name, value, cookies=self.sa.cookie_text)

    def _float(self, nat: NatStatus | None) -> None:
        """RFC 3947 §4: with a NAT between us the initiator moves to the NAT-T port for message 5."""
        sa = self.sa
        if nat is not None and nat.detected and sa.local_port != self.env.natt_port:
            self.env.trace.step("NAT detected: moving to the NAT-T port", local_behind_nat=nat.local_behind_nat,
                                peer_behind_nat=nat.peer_behind_nat, port=self.env.natt_port)
            sa.local_port = self.env.natt_port
            sa.peer_port = self.env.natt_port

    def _process_mm4(self, inb: Inbound) -> None:
        sa = self.sa
        assert self._dh is not None and self.auth is not None
        g_xr, nr, nat = self._key_exchange(inb)
        g_xy = self._dh.compute(g_xr)
        keys = self._keys(g_xy, self.ni, nr)
        ivs = keys.iv_manager(g_xi=self.g_xi, g_xr=g_xr, max_exchanges=MAX_EXCHANGES)
        self.auth.accept_ke(inb)  # last check: it may consume the responder's GSS token
        # commit, then build message 5 with the new keys
        sa.keys, sa.ivs, sa.nat = keys, ivs, nat
        self.nr, self.g_xr, self._dh = nr, g_xr, None
        self.last_in = inb.raw
        self._trace_keys(keys, g_xy)
        self._float(nat)
        sa.local_id = self._local_id()
        self._send_auth(inb.now)

    def _send_auth(self, now: float) -> None:
        """Initiator: message 5 (again, while a GSS-API context needs more legs)."""
        sa = self.sa
        assert self.auth is not None and sa.local_id is not None
        id_payload = identity_payload(sa.local_id)
        payloads = [id_payload, *self.auth.proof(self._hash_of(id_payload, initiator=True))]
        if sa.config.initial_contact and self.env.is_first_contact(sa):
            # RFC 2407 §4.6.3.3: tell the peer to drop the state it still has for us (in every
            # message 5: the responder acts on the one that authenticates us).
            payloads.append(NotifyPayload(notify_type=NotifyType.INITIAL_CONTACT, protocol_id=ProtocolId.ISAKMP,
                                          spi=sa.cky_i + sa.cky_r))
        self.env.trace.message("sent", payloads, exchange="main mode 5", cookies=sa.cookie_text, peer=sa.peer_ip,
                               port=sa.local_port)
        raw = sa.protect(MM, 0, PayloadType.ID, serialize_payloads(payloads))
        self._set_step(Step.AUTH_SENT)
        self._send((raw,), now, retransmit=True)

    def _hash_of(self, id_payload: IdPayload, *, initiator: bool) -> HashOf:
        """HASH_I (``initiator``) or HASH_R over ``id_payload`` (RFC 2409 §5), with what the method
        appends to ID_b (GSS-API: identity and tokens)."""
        sa = self.sa
        assert sa.keys is not None
        keys, id_b = sa.keys, serialize_payload_body(id_payload)
        common = {"g_xi": self.g_xi, "g_xr": self.g_xr, "cky_i": sa.cky_i, "cky_r": sa.cky_r, "sai_b": self.sai_b}
        if initiator:
            return lambda extra: keys.hash_i(idii_b=id_b + extra, **common)
        return lambda extra: keys.hash_r(idir_b=id_b + extra, **common)

    def _verify_peer(self, inb: Inbound, *, initiator: bool) -> tuple[IdPayload, bool]:
        """The peer's identity, then its proof: (its ID payload, whether it is authenticated now;
        False while a GSS-API context needs another round of messages 5/6)."""
        sa = self.sa
        assert self.auth is not None
        id_p: IdPayload = inb.find(IdPayload)
        check_peer_identity(sa.config, self.auth.method, identity_of(id_p), peer_ip=sa.peer_ip,
                            peer_behind_nat=sa.nat is not None and sa.nat.peer_behind_nat)
        done = self.auth.verify(inb, self._hash_of(id_p, initiator=not initiator),
                                name="HASH_R" if initiator else "HASH_I")
        return id_p, done

    def _established(self, inb: Inbound, id_p: IdPayload) -> None:
        sa = self.sa
        assert sa.choice is not None and sa.local_id is not None and self.auth is not None
        sa.local_id, sa.peer_id = self.auth.identities(sa.local_id, identity_of(id_p))
        value = sa.peer_id.value
        self.env.trace.step("peer authenticated", method=self.auth.method, peer_id=sa.peer_id.kind,
                            name=value if isinstance(value, str) else value.hex(), peer=sa.peer_ip)
        sa.establish(inb.now)
        self._set_step(Step.ESTABLISHED)
        self.flight = None
        self.expire_at = None
        c = sa.choice
        self.env.emit(Phase1Established(
            at=inb.now, peer=sa.peer, cookies=sa.cookies, is_initiator=sa.is_initiator, local_id=sa.local_id,
            peer_id=sa.peer_id, cipher=c.cipher_name, key_bits=c.key_bits, hash=c.hash_name, dh_group=c.dh_group,
            auth=c.auth, lifetime_s=c.lifetime_s, nat_detected=sa.udp_encapsulation,
        ))

    def _process_mm6(self, inb: Inbound) -> None:
        sa = self.sa
        assert sa.ivs is not None and inb.last_block is not None
        id_p, done = self._verify_peer(inb, initiator=True)
        sa.ivs.advance(0, inb.last_block)
        self.env.authenticated(sa, inb)
        self.last_in, self.last_out = inb.raw, ()
        if done:
            self._established(inb, id_p)
        else:
            self._send_auth(inb.now)  # the next leg: message 5 again

    # --- responder ------------------------------------------------------------------------------

    def respond(self, inb: Inbound, *, expire_at: float) -> None:
        """Responder: process message 1 and answer with message 2 (sent once, never on a timer)."""
        sa, cfg = self.sa, self.sa.config
        sa_in: SaPayload = inb.find(SaPayload)
        if not self.proposals:
            raise ProtocolError("no usable phase-1 proposal configured for this peer", notify=NotifyType.NO_PROPOSAL_CHOSEN)
        vids_in = [v.data for v in inb.find_all(VendorIdPayload)]
        # 65001 is GSS-API Kerberos only when the peer sent a GSS-API vendor ID (else XAUTH).
        choice = select_phase1(sa_in, self.proposals, gssapi=peer_speaks_gssapi(vids_in))
        variant = choose_variant(vids_in) if cfg.nat_traversal else None
        auth = self._choose(choice)
        reply = SaPayload.ipsec([Proposal.isakmp([auth.reply_transform(choice.transform)],
                                                 number=choice.proposal_number)])
        vids = [*([variant.vendor_id] if variant is not None else []), *auth.vendor_ids()]
        sa.choice, sa.natt, self.auth = choice, variant, auth
        self.sai_b = serialize_payload_body(sa_in)
        self.last_in = inb.raw
        self.expire_at = expire_at
        self.env.trace.step("chose phase 1", role="responder", cipher=choice.cipher_name, key_bits=choice.key_bits,
                            hash=choice.hash_name, group=choice.dh_group, auth=choice.auth,
                            nat_t=variant.name if variant else None)
        self._set_step(Step.SA_ANSWERED)
        self._send((self._message([reply, *(VendorIdPayload(data=v) for v in vids)]),), inb.now, retransmit=False)

    def _process_mm3(self, inb: Inbound) -> None:
        sa, cfg = self.sa, self.sa.config
        assert sa.choice is not None and self.auth is not None
        g_xi, ni, nat = self._key_exchange(inb)
        private = dh.group(sa.choice.dh_group).generate(self.env.rng)
        g_xy = private.compute(g_xi)
        nr = self.env.rng(NONCE_LENGTH)
        keys = self._keys(g_xy, ni, nr)
        try:
            self.auth.accept_ke(inb)  # last check: the initiator's GSS token
        except ProtocolError as err:
            self._report_refused(err, inb.now)
            raise
        payloads: list = [KePayload(data=private.public_value), NoncePayload(data=nr), *self.auth.ke_payloads()]
        if sa.natt is not None and nat is not None:
            payloads += natd_payloads(sa.choice.hash, sa.cky_i, sa.cky_r, remote=inb.addr,
                                      local=(self.env.local_address, inb.local_port), variant=sa.natt,
                                      fake=cfg.force_encapsulation, rng=self.env.rng)
        # commit
        sa.keys, sa.nat, sa.peer_answered = keys, nat, True
        sa.ivs = keys.iv_manager(g_xi=g_xi, g_xr=private.public_value, max_exchanges=MAX_EXCHANGES)
        self.g_xi, self.g_xr, self.ni, self.nr = g_xi, private.public_value, ni, nr
        self.last_in = inb.raw
        self._trace_keys(keys, g_xy)
        self._set_step(Step.KE_ANSWERED)
        self._send((self._message(payloads),), inb.now, retransmit=False)

    def _report_refused(self, err: ProtocolError, now: float) -> None:
        """A refused message 3 changes nothing, but an authentication failure with its own audit
        (Kerberos: 545) is queued, once per reason, while the genuine message may still come."""
        assert self.auth is not None
        audit = self.auth.audit_failure(err, None)
        if audit is None or audit[0] in self._reported:
            return
        self._reported.add(audit[0])
        self.env.emit(NegotiationFailed(at=now, peer=self.sa.peer, phase=1, request_id=None, reason=audit[1],
                                        notify=err.notify, failure_point="me", auth_failure=audit[0]))

    def _process_mm5(self, inb: Inbound) -> None:
        sa = self.sa
        assert sa.ivs is not None and inb.last_block is not None and self.auth is not None
        id_p, done = self._verify_peer(inb, initiator=False)
        initial_contact = any(n.notify_type == NotifyType.INITIAL_CONTACT for n in inb.find_all(NotifyPayload))
        sa.local_id = self._local_id()
        own_id = identity_payload(sa.local_id)
        payloads = [own_id, *self.auth.proof(self._hash_of(own_id, initiator=False))]
        # commit: the IV chain moves past message 5, the SA answers from where message 5 arrived
        sa.ivs.advance(0, inb.last_block)
        sa.peer_port = inb.addr[1]
        self.env.authenticated(sa, inb)
        self.env.trace.message("sent", payloads, exchange="main mode 6", cookies=sa.cookie_text,
                               peer=sa.peer_ip, port=sa.local_port)
        raw = sa.protect(MM, 0, PayloadType.ID, serialize_payloads(payloads))
        self.last_in = inb.raw
        self.env.send(sa, (raw,))
        self.last_out = (raw,)
        if not done:
            self._set_step(Step.AUTH_ANSWERED)  # a GSS-API leg went out: wait for the next message 5
            return
        self._established(inb, id_p)
        if initial_contact:
            self.env.initial_contact(sa, inb.now)
