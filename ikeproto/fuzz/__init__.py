"""Fuzz harness: ``python -m ikeproto.fuzz`` (in-process) or ``--target HOST:PORT`` (over UDP).

In-process mode runs our parser on generated and mutated messages until stopped, for ``--cases``
cases or ``--seconds``; it prints cases/s and every exception other than ``ParseError`` with a
reproducer (the datagram in hex and the ``--seed``/``--case`` that regenerates it). It also checks
that whatever parses re-serializes to the same octets.

Target mode sends generated and mutated messages to an IKE responder, bounded in count
(``--count``, at most ``--max-count``) and rate (``--rate`` per second), and reports which inputs
got no answer, an error Notify, or another answer; between batches it probes liveness with a
valid Main Mode offer, and a peer that stops answering the probe is reported as crashed together
with the inputs sent since the last good probe. Only loopback and the lab network 192.0.2.0/24
are allowed unless ``--allow-any`` is given.

This is a tool, not a protocol core: it owns its socket and clock. Cases come from
``random.Random`` seeded per case (so every case is reproducible) and the mutations of
``ikeproto.mutations``.
"""


from ikeproto.fuzz.corpus import FuzzCase, case_datagram, cases, random_message
from ikeproto.fuzz.inprocess import check_case, fuzz_in_process
from ikeproto.fuzz.target import TargetReport, check_target, classify_reply, fuzz_target, probe_message

__all__ = [
    "FuzzCase",
    "TargetReport",
    "case_datagram",
    "cases",
    "check_case",
    "check_target",
    "classify_reply",
    "fuzz_in_process",
    "fuzz_target",
    "probe_message",
    "random_message",
]
