"""In-process fuzzing of our own parser: the invariant, and a loop that reports escapes.

The invariant (``check_case``): ``parse_message`` returns or raises ``ParseError``; whatever
parses re-serializes to the same octets; the body parsed as a decrypted chain (padding allowed)
also returns or raises ``ParseError``. ``fuzz_in_process`` runs cases until a count, a duration or
Ctrl-C, prints cases/s, and reports each distinct escaping exception once with its reproducer.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

from ikeproto.errors import ParseError
from ikeproto.fuzz.corpus import cases
from ikeproto.message import parse_message, parse_payloads, serialize_message

__all__ = ["check_case", "fuzz_in_process"]


def check_case(data: bytes) -> None:
    """The invariant: parse or raise ParseError; what parses re-serializes to the same octets;
    the body parsed as a decrypted chain (padding allowed) also parses or raises ParseError."""
    try:
        msg = parse_message(data)
    except ParseError:
        pass
    else:
        again = serialize_message(msg)
        if again != data:
            raise AssertionError(f"round trip changed the octets: {again.hex()}")
    if len(data) > 28:
        try:
            parse_payloads(data[16], data[28:], allow_trailing=True)
        except ParseError:
            pass


def fuzz_in_process(*, seed: int, max_cases: int | None, seconds: float | None, out: Callable[[str], None] = print,
                    max_failures: int = 10) -> dict:
    """Run cases until ``max_cases``/``seconds``/Ctrl-C; return a summary with any escapes."""
    started = time.perf_counter()
    last_report = started
    done = 0
    failures: list[dict] = []
    seen: set[tuple[str, str]] = set()
    try:
        for case in cases(seed):
            if max_cases is not None and done >= max_cases:
                break
            now = time.perf_counter()
            if seconds is not None and now - started >= seconds:
                break
            try:
                check_case(case.data)
            except Exception as exc:  # noqa: BLE001 - finding these is the point
                where = traceback.extract_tb(exc.__traceback__)[-1]
                key = (type(exc).__name__, f"{where.filename}:{where.lineno}")
                if key not in seen:
                    seen.add(key)
                    failures.append({"seed": case.seed, "case": case.index, "exception": f"{type(exc).__name__}: {exc}",
                                     "at": key[1], "hex": case.data.hex()})
                    out(f"ESCAPED {type(exc).__name__} at {key[1]}: {exc}\n  reproduce: python -m ikeproto.fuzz --seed {case.seed} "
                        f"--case {case.index}\n  or: ikeproto.message.parse_message(bytes.fromhex('{case.data.hex()}'))")
                    if len(failures) >= max_failures:
                        break
            done += 1
            if now - last_report >= 2.0:
                out(f"{done} cases, {done / (now - started):,.0f} cases/s, {len(failures)} escapes")
                last_report = now
    except KeyboardInterrupt:
        pass
    elapsed = time.perf_counter() - started
    summary = {"mode": "in-process", "seed": seed, "cases": done, "seconds": round(elapsed, 3),
               "cases_per_s": round(done / elapsed, 1) if elapsed else None, "escapes": failures}
    out(f"{done} cases in {elapsed:.1f} s ({summary['cases_per_s']:,} cases/s), {len(failures)} escaping exceptions")
    return summary


