"""Demultiplexing for ``IkeEndpoint``: from a received datagram to the exchange task it belongs to.

Owns the receive path (a mixin of ``IkeEndpoint``, which provides the SA table, the trace, the
counters and the outputs): parse the header, find the IKE SA by its cookies (a message 1 by the
responder cookie it would get), check the peer address, then by exchange type and message ID find
or create the task, decrypt without touching any state, check the message against its row of
``exchanges.PAYLOAD_RULES`` once, and hand it over. Duplicates of a message already answered get
the same answer (RFC 2408 §5, never more than the task allows); everything else that does not fit
is counted in ``stats.dropped`` under a reason, traced, and changes nothing, except where a
Main Mode task says the negotiation cannot go on (``Step.FAILED``): it is then given up at once.
"""

from __future__ import annotations

from typing import Any

from ikeproto.config import Address
from ikeproto.enums import ExchangeType, NotifyType
from ikeproto.errors import ParseError, ProtocolError
from ikeproto.events import NegotiationFailed
from ikeproto.exchanges import MessageKind, check_payloads
from ikeproto.exchanges.common import Inbound
from ikeproto.exchanges.informational import clear_notify, process_clear, process_protected
from ikeproto.exchanges.main_mode import MainMode, Step  # noqa: F401 - MainMode for type hints
from ikeproto.exchanges.quick_mode import QuickMode
from ikeproto.exchanges.quick_mode import Step as QmStep
from ikeproto.ike_sa import IkeSa
from ikeproto.message import Message, parse_message, pull_payloads
from ikeproto.sa_table import ZERO_COOKIE


__all__ = ["Demultiplexer"]

MM, QM, INFO = ExchangeType.IDENTITY_PROTECTION, ExchangeType.QUICK_MODE, ExchangeType.INFORMATIONAL


class Demultiplexer:
    """The receive path of ``IkeEndpoint`` (see the module docstring)."""

    def receive_datagram(self, data: bytes, addr: Address, now: float, local_port: int | None = None) -> None:
        """One ISAKMP message (non-ESP marker already stripped) from ``addr`` on ``local_port``."""
        self.stats.received += 1
        port = self.ike_port if local_port is None else local_port
        try:
            msg = parse_message(data)
        except ParseError as exc:
            self._drop("malformed", exc, addr)
            return
        try:
            sa = self._dispatch(msg, bytes(data), addr, port, now)
        except ProtocolError as exc:  # pragma: no cover - every path handles its own errors
            self._drop("refused", exc, addr)
            return
        if sa is not None:
            self._schedule(sa)

    def _dispatch(self, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> IkeSa | None:
        exch, cky_i, cky_r = msg.exchange_type, msg.initiator_cookie, msg.responder_cookie
        if exch == MM and cky_r == ZERO_COOKIE:
            return self._message_1(msg, raw, addr, port, now)
        sa = self.table.find(cky_i, cky_r)
        if sa is None and not msg.is_encrypted and exch in (MM, INFO):
            sa = self.table.initiating(cky_i)  # message 2, or a notify answering message 1
        if sa is None:
            self._drop("unknown cookies", None, addr)
            return None
        if addr[0] != sa.peer_ip:
            self._drop("address does not match the SA", None, addr)
            return None
        if exch == MM:
            self._main_mode(sa, msg, raw, addr, port, now)
        elif exch == QM:
            self._quick_mode(sa, msg, raw, addr, port, now)
        elif exch == INFO:
            self._informational(sa, msg, raw, addr, port, now)
        else:
            self._drop("unsupported exchange type", None, addr, exchange=exch)
        return sa

    def _inbound(self, sa: IkeSa | None, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> Inbound:
        """Decrypt (without touching any state) and parse; ParseError/ProtocolError on failure."""
        if not msg.is_encrypted:
            return Inbound(message=msg, payloads=msg.payloads, raw=raw, addr=addr, local_port=port, now=now)
        assert sa is not None
        plaintext, last = sa.unprotect(msg)
        payloads, end = pull_payloads(plaintext, 0, len(plaintext), msg.first_payload_type, allow_trailing=True)
        if len(plaintext) - end > sa.block_size:
            # More than one block after the payloads is not padding (see IkeSa.protect).
            raise ProtocolError(f"{len(plaintext) - end} octets of padding", notify=NotifyType.PAYLOAD_MALFORMED)
        return Inbound(message=msg, payloads=payloads, raw=raw, addr=addr, local_port=port, now=now,
                       plaintext=plaintext, chain_end=end, last_block=last)

    def _message_1(self, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> IkeSa | None:
        cky_r = self.table.responder_cookie(addr[0], msg.initiator_cookie)
        sa = self.table.find(msg.initiator_cookie, cky_r)
        if sa is not None:
            if sa.main_mode is not None and sa.main_mode.replay(raw):
                self.stats.duplicates += 1
            else:
                self._drop("unexpected message 1", None, addr)
            return None
        if msg.is_encrypted:
            self._drop("encrypted message 1", None, addr)
            return None
        if self.table.is_ours(msg.initiator_cookie):
            self._drop("reflected message 1", None, addr)
            return None
        try:
            check_payloads(MessageKind.MM1, msg.payloads)
        except ProtocolError as exc:
            self._drop("bad payloads", exc, addr)
            return None
        if self.table.half_open(addr[0]) >= self.max_half_open_per_peer:
            self._drop("half-open limit per peer", None, addr)
            return None
        if self.table.half_open() >= self.max_half_open:
            self._drop("half-open limit", None, addr)
            return None
        config = self.provider.phase1_config(addr)
        if config is None:
            self._drop("no phase-1 configuration for the peer", None, addr)
            return None
        sa = IkeSa(cky_i=msg.initiator_cookie, cky_r=cky_r, is_initiator=False, peer=addr,
                   local_address=self.local_address, local_port=port, config=config, now=now, trace=self.trace)
        sa.main_mode = self._new_main_mode(sa)
        inb = Inbound(message=msg, payloads=msg.payloads, raw=raw, addr=addr, local_port=port, now=now)
        self.trace.message("received", msg.payloads, exchange="main mode 1", peer=addr[0], cookies=sa.cookie_text)
        try:
            sa.main_mode.respond(inb, expire_at=now + self.half_open_timeout_s)
        except ProtocolError as exc:
            self._drop("refused", exc, addr)
            self._out.append((clear_notify(sa.cky_i, cky_r, exc.notify), addr, port))
            self.stats.sent += 1
            self.emit(NegotiationFailed(at=now, peer=addr, phase=1, request_id=None, reason=str(exc),
                                        notify=exc.notify, failure_point="me"))
            return None
        self.table.add(sa)
        return sa

    def _main_mode(self, sa: IkeSa, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> None:
        mm: MainMode = sa.main_mode
        if mm.replay(raw):
            self.stats.duplicates += 1
            return
        kind = mm.expected
        if kind is None:
            self._drop("unexpected main mode message", None, addr)
            return
        encrypted = kind in (MessageKind.MM5, MessageKind.MM6)
        if msg.is_encrypted != encrypted:
            self._drop("wrong encryption for the step", None, addr, expected=kind.value)
            return
        try:
            try:
                inb = self._inbound(sa, msg, raw, addr, port, now)
            except ProtocolError as exc:
                # A body that does not decrypt to payloads under the new keys: a different
                # pre-shared key (or DH result), or tampering.
                raise ProtocolError(f"{kind.value} does not decrypt to valid payloads ({exc})",
                                    notify=NotifyType.AUTHENTICATION_FAILED) from None
            self.trace.message("received", inb.payloads, exchange=kind.value, peer=addr[0], cookies=sa.cookie_text)
            check_payloads(kind, inb.payloads)
            mm.process(inb)
        except ProtocolError as exc:
            sa.note_failure(str(exc), exc.notify, "me")
            mm.refused = exc
            self._drop("refused", exc, addr, exchange=kind.value)
            over = mm.step is Step.FAILED  # the task cannot go on (its GSS-API context failed)
            if not sa.is_initiator or over:
                # The answer to a refused message is its Notify, nothing else; an initiator that
                # gives up tells the responder why, so that its report carries the reason too.
                notify = clear_notify(msg.initiator_cookie, msg.responder_cookie, exc.notify)
                self._out.append((notify, addr, port))
                self.stats.sent += 1
            if over:
                self._give_up_phase1(sa, now)
            return
        if kind is MessageKind.MM2:
            self.table.responder_cookie_known(sa)
        if mm.step is Step.ESTABLISHED:
            self.established(sa, now)

    def _quick_mode(self, sa: IkeSa, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> None:
        mid = msg.message_id
        if not sa.is_established or not msg.is_encrypted or mid == 0:
            self._drop("quick mode outside an established SA", None, addr)
            return
        qm: QuickMode | None = sa.quick_modes.get(mid)
        if qm is not None and qm.last_in == raw:
            self.stats.duplicates += 1
            if not qm.is_initiator:
                self.send(sa, qm.last_out)
            return
        done = sa.finished.get(mid)
        if done is not None:
            if done[0] == raw:
                self.stats.duplicates += 1
                self.send(sa, done[1])
            else:
                self._drop("message for a finished exchange", None, addr)
            return
        kind = qm.expected if qm is not None else MessageKind.QM1
        if kind is None or mid in sa.informational_seen:
            self._drop("unexpected quick mode message", None, addr)
            return
        try:
            inb = self._inbound(sa, msg, raw, addr, port, now)
            self.trace.message("received", inb.payloads, exchange=kind.value, peer=addr[0], message_id=f"{mid:08x}")
            check_payloads(kind, inb.payloads)
            if qm is None:
                qm = QuickMode(sa, self, message_id=mid, initiator=False)
                qm.respond(inb)
                if qm.step is QmStep.ANSWERED:
                    sa.quick_modes[mid] = qm
            else:
                qm.process(inb)
        except ProtocolError as exc:
            self._drop("refused", exc, addr, exchange=kind.value)
            return
        if qm.step in (QmStep.DONE, QmStep.FAILED):
            sa.quick_modes.pop(mid, None)

    def _informational(self, sa: IkeSa, msg: Message, raw: bytes, addr: Address, port: int, now: float) -> None:
        mid = msg.message_id
        try:
            if msg.is_encrypted:
                if sa.keys is None or mid == 0 or mid in sa.informational_seen or mid in sa.quick_modes:
                    self._drop("unexpected protected informational", None, addr)
                    return
                inb = self._inbound(sa, msg, raw, addr, port, now)
                self.trace.message("received", inb.payloads, exchange="informational", peer=addr[0])
                check_payloads(MessageKind.INFO, inb.payloads)
                process_protected(sa, self, inb)
                self._drain(sa.peer_ip, now)
            else:
                if sa.is_established:
                    self._drop("unprotected informational on an established SA", None, addr)
                    return
                check_payloads(MessageKind.INFO_CLEAR, msg.payloads)
                self.trace.message("received", msg.payloads, exchange="informational (unprotected)", peer=addr[0])
                process_clear(sa, self, Inbound(message=msg, payloads=msg.payloads, raw=raw, addr=addr,
                                                local_port=port, now=now))
        except ProtocolError as exc:
            self._drop("refused", exc, addr, exchange="informational")
        for m, qm in list(sa.quick_modes.items()):
            if qm.step in (QmStep.DONE, QmStep.FAILED):
                del sa.quick_modes[m]

    def authenticated(self, sa: IkeSa, inb: Inbound) -> None:
        """A message on ``sa`` just authenticated: answer where it came from (RFC 3947 §4, a NAT
        may change the port), and stay on the NAT-T port once there."""
        if inb.local_port == self.natt_port:
            sa.local_port = inb.local_port
            sa.peer_port = inb.addr[1]

    def _drop(self, reason: str, exc: Exception | None, addr: Address, **fields: Any) -> None:
        self.stats.dropped[reason] += 1
        detail: dict[str, Any] = {"error": str(exc)} if exc is not None else {}
        notify = getattr(exc, "notify", None)
        if notify is not None:
            detail["notify"] = notify
        self.trace.failure(reason, peer=addr[0], **detail, **fields)
