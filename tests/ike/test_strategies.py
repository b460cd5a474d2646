"""The public strategies, used as a fuzzing user would: every generated record round-trips, and every
generated or mutated datagram parses or raises our ParseError, nothing else."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ikeproto import mutations
from ikeproto import strategies as s
from ikeproto.enums import ExchangeType, PayloadType
from ikeproto.errors import ParseError
from ikeproto.message import Message, parse_message, parse_payloads, serialize_message
from ikeproto.payloads import NoncePayload
from ikeproto.proposals import SaPayload

ICKY = b"ICOOKIE!"


def parses_or_parse_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except ParseError:
        return
    # Whatever parses must serialize back to the very same octets.
    assert serialize_message(msg) == data


@pytest.mark.parametrize("cls", list(s.PAYLOAD_STRATEGIES), ids=lambda c: c.__name__)
def test_every_payload_strategy_round_trips(cls):
    """For every payload type: parse(serialize(m)) == m for a message carrying the payload, and
    serialize(parse(b)) == b."""

    @given(s.PAYLOAD_STRATEGIES[cls], st.lists(s.payloads(), max_size=2))
    def check(payload, others):
        assert isinstance(payload, cls)
        msg = Message(initiator_cookie=ICKY, exchange_type=ExchangeType.INFORMATIONAL, payloads=(payload, *others))
        wire = serialize_message(msg)
        assert parse_message(wire) == msg
        assert serialize_message(parse_message(wire)) == wire

    check()


@pytest.mark.parametrize("cls", list(s.PAYLOAD_STRATEGIES), ids=lambda c: c.__name__)
def test_every_payload_type_mutated_raises_only_parse_error(cls):
    """For every payload type: mutations of a message carrying it parse (byte-exactly) or raise
    ParseError."""

    @given(s.mutated(st.builds(lambda p: Message(initiator_cookie=ICKY, exchange_type=5, payloads=(p,)), s.PAYLOAD_STRATEGIES[cls])))
    def check(data):
        parses_or_parse_error(data)

    check()


@pytest.mark.parametrize("exchange", [ExchangeType.IDENTITY_PROTECTION, ExchangeType.AGGRESSIVE, ExchangeType.QUICK_MODE,
                                      ExchangeType.INFORMATIONAL, ExchangeType.NEW_GROUP_MODE], ids=lambda e: e.name)
def test_exchange_messages_round_trip(exchange):
    """Messages shaped as each exchange sends them round-trip byte-exactly."""

    @given(s.messages(exchange))
    def check(msg):
        assert msg.exchange_type == exchange
        assert parse_message(serialize_message(msg)) == msg

    check()


@given(s.arbitrary_messages())
def test_arbitrary_messages_round_trip(msg):
    """Any payloads in any order round-trip."""
    assert parse_message(serialize_message(msg)) == msg


@given(s.headers())
def test_headers_are_valid(msg):
    """Header-only messages parse back equal (major version 1, E clear, length 28)."""
    wire = serialize_message(msg)
    assert len(wire) == 28 and parse_message(wire) == msg


@given(s.datagrams())
@example(b"")
@example(bytes(28))
@example(bytes.fromhex("0102030405060708" + "00" * 8 + "0110020000000000" + "0000001c"))
@example(bytes.fromhex("0102030405060708" + "00" * 8 + "0d10020000000000" + "00000020" + "0d000004"))
@example(bytes.fromhex("0102030405060708" + "00" * 8 + "0d10020000000000" + "00000020" + "00000000"))
def test_datagrams_parse_or_raise_parse_error(data):
    """Valid, mutated or random datagrams: parse (and re-serialize identically) or ParseError."""
    parses_or_parse_error(data)


@given(st.sampled_from(PayloadType) | st.integers(0, 255), st.binary(max_size=300), st.booleans())
def test_payload_chains_raise_only_parse_error(first, data, allow_trailing):
    """parse_payloads on arbitrary octets with any first type returns or raises ParseError."""
    try:
        parse_payloads(first, data, allow_trailing=allow_trailing)
    except ParseError:
        pass


@given(st.binary(max_size=400))
def test_locate_fields_never_raises(data):
    """The mutation walker survives any octets and reports fields inside the buffer."""
    for f in mutations.locate_fields(data):
        assert 0 <= f.offset and f.offset + f.size <= len(data)


def test_structured_mutations_do_what_they_say():
    """delete/duplicate/reorder change the payload list; form swaps change attribute forms;
    lie_length changes exactly one length field."""
    rng = random.Random(4)
    choose = rng.randrange
    sa_msg = Message(initiator_cookie=ICKY, exchange_type=2, payloads=(_sa(), NoncePayload(data=b"n" * 8)))
    assert len(mutations.delete_payload(sa_msg, choose).payloads) == 1
    assert len(mutations.duplicate_payload(sa_msg, choose).payloads) > 2
    picks = iter([0, 1])
    swapped = mutations.reorder_payloads(sa_msg, lambda n: next(picks))
    assert [type(p) for p in swapped.payloads] == [NoncePayload, SaPayload]
    forms_before = [a.is_basic for a in sa_msg.payloads[0].proposals[0].transforms[0].attributes]
    after = mutations.swap_attribute_forms(sa_msg, lambda n: 0)
    forms_after = [a.is_basic for a in after.payloads[0].proposals[0].transforms[0].attributes]
    assert forms_after == [not f for f in forms_before]
    wire = serialize_message(sa_msg)
    lied = mutations.lie_length(wire, choose)
    assert len(lied) == len(wire) and sum(a != b for a, b in zip(lied, wire)) in (1, 2, 3, 4)
    with pytest.raises(ParseError):
        parse_message(mutations.truncate(wire, lambda n: n - 3))


def _sa() -> SaPayload:
    from ikeproto.attributes import Attribute
    from ikeproto.proposals import Proposal, Transform

    t = Transform(attributes=(Attribute.tv(1, 5), Attribute.tlv(12, b"\x70\x80")))
    return SaPayload.ipsec([Proposal.isakmp([t])])
