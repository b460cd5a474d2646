"""The ikeproto error tree: one root, ``IkeError``.

- ``ParseError``: bytes from the wire that do not parse. Carries the offset and payload type where
  the problem was found, and the ISAKMP Notify type (RFC 2408 §3.14.1) a responder would send.
- ``ProtocolError``: a message that parsed but breaks the exchange (wrong payloads, bad hash,
  no acceptable proposal). Carries the Notify type it turns into.
- ``UsageError``: local misuse of the API by the caller, never caused by a peer.

Notify types are plain ints here so this module has no dependencies; ``ikeproto.enums.NotifyType``
names them.
"""

from __future__ import annotations


class IkeError(Exception):
    """Root of every error ikeproto raises on purpose."""


class UsageError(IkeError):
    """The caller used the API wrongly (never raised because of peer input)."""


class ProtocolError(IkeError):
    """A peer broke the protocol; ``notify`` is the RFC 2408 Notify type it maps to."""

    notify: int = 16  # PAYLOAD-MALFORMED unless a subclass or the raiser says otherwise

    def __init__(self, message: str, *, notify: int | None = None) -> None:
        super().__init__(message)
        if notify is not None:
            self.notify = notify


class ParseError(ProtocolError):
    """Bytes that do not parse. ``offset`` is from the start of the parsed buffer."""

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        payload_type: int | None = None,
        notify: int | None = None,
    ) -> None:
        where = []
        if payload_type is not None:
            where.append(f"payload {payload_type}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message, notify=notify)
        self.offset = offset
        self.payload_type = payload_type
