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


# ParseError subclasses: each names the RFC 2408 §3.14.1 Notify a responder would answer with.
# The numbers are repeated here (not imported from enums) to keep this module dependency-free.


class MalformedError(ParseError):
    """A fixed field is cut short or a length is below its minimum (PAYLOAD-MALFORMED)."""

    notify = 16


class LengthMismatchError(ParseError):
    """A length field disagrees with the bytes around it: header length vs datagram, a payload or
    attribute that overruns its parent, a chain that runs past the end, trailing bytes
    (UNEQUAL-PAYLOAD-LENGTHS)."""

    notify = 30


class InvalidMajorVersionError(ParseError):
    """ISAKMP major version other than 1 (INVALID-MAJOR-VERSION)."""

    notify = 5


class InvalidPayloadTypeError(ParseError):
    """A payload type that cannot appear where it was found (INVALID-PAYLOAD-TYPE)."""

    notify = 1


class BadProposalSyntaxError(ParseError):
    """Proposal/transform nesting whose next-payload values or counts disagree with the bytes
    (BAD-PROPOSAL-SYNTAX)."""

    notify = 15


class InvalidSpiError(ParseError):
    """An SPI size that disagrees with the protocol it is given for (INVALID-SPI)."""

    notify = 11


class InvalidIdInformationError(ParseError):
    """An ID or NAT-OA payload whose type and data length disagree (INVALID-ID-INFORMATION)."""

    notify = 18
