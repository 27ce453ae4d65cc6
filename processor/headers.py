"""Reading a consumed record's headers without letting a hostile producer crash the worker.

confluent-kafka (2.16.1, librdkafka 2.16.0) converts header names with ``PyUnicode_FromString`` and
does not check the result: a name that is not valid UTF-8 leaves a NULL inside the returned list, so
``Message.headers()`` raises ``SystemError`` ("returned a result with an exception set"), keeps the
half-built list cached on the message, and a second call hands that list out: touching its broken
tuple is a segfault. Any producer can write such a name (the Kafka protocol carries bytes).

So headers are read here, exactly once per message, and a failure is a fact about the record (it
still gets its outcome), never an exception that reaches the poll loop. docs/trust-model.md has the
upstream-ready report.
"""

from __future__ import annotations

from typing import Protocol

UNREADABLE = "header names are not valid UTF-8; the client library cannot read them"


class HasHeaders(Protocol):
    def headers(self) -> list[tuple[str, bytes | str | None]] | None: ...


def read_headers(msg: HasHeaders) -> tuple[list[tuple[str, bytes]], str | None]:
    """The record's headers as (name, value bytes), null values as b"", and None or why they are missing.

    Call it once per message, before anything else reads the headers, and never read them again
    when it reports a problem."""
    try:
        raw = msg.headers()
    except SystemError:
        return [], UNREADABLE
    out: list[tuple[str, bytes]] = []
    for name, value in raw or []:
        out.append((name, b"" if value is None else value.encode() if isinstance(value, str) else value))
    return out, None
