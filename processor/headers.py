"""Reading a consumed record's headers without letting a hostile producer crash the worker.

confluent-kafka (2.16.1, librdkafka 2.16.0) converts header names with ``PyUnicode_FromString`` and
does not check the result: a name that is not valid UTF-8 leaves a NULL inside the returned list, and
the method returns that list with an exception set. Called through PyObject_Call, CPython turns this
into ``SystemError``; called from hot Python code (3.11's specialized call path skips the check in
release builds) the broken list comes back as if all were well, and touching it is a segfault. The
list is also cached on the message, so a second call returns it too. Any producer can write such a
name (the Kafka protocol carries bytes).

So headers are read here, exactly once per message, and a failure is a fact about the record (it
still gets its outcome), never an exception that reaches the poll loop. docs/trust-model.md has the
upstream-ready report.
"""

from __future__ import annotations

import operator
from typing import Protocol

UNREADABLE = "header names are not valid UTF-8; the client library cannot read them"

# Called from C, never from Python bytecode: CPython 3.11's specializing interpreter calls a hot
# method descriptor directly and (in release builds) skips the check that turns "a result with an
# exception set" into SystemError, so after a few records ``msg.headers()`` written in Python
# returns the broken list itself, and iterating it is a segfault. ``methodcaller`` goes through
# PyObject_Call, which always checks.
_call_headers = operator.methodcaller("headers")


class HasHeaders(Protocol):
    def headers(self) -> object: ...


def read_headers(msg: HasHeaders) -> tuple[list[tuple[str, bytes]], str | None]:
    """The record's headers as (name, value bytes), null values as b"", and None or why they are missing.

    Call it once per message, before anything else reads the headers, and never read them again
    when it reports a problem."""
    try:
        raw = _call_headers(msg)
    except SystemError:
        return [], UNREADABLE
    items = raw.items() if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    out: list[tuple[str, bytes]] = []
    for name, value in items:
        data = b"" if value is None else value.encode() if isinstance(value, str) else bytes(value)
        out.append((str(name), data))
    return out, None
