"""Dead letters that always fit: small originals travel inline, large ones by claim check.

A record that cannot be read keeps its place in the stream as a DeadLetter on the DLQ topic, in the
same transaction that commits its offset. The original can be as large as the request topic allows
(its key, value and headers together), more than the DLQ topic takes once wrapped, and a record that
cannot be produced would abort every transaction that carries it. So when the inline dead letter
would exceed KAFKA_MAX_MESSAGE_BYTES, the complete DeadLetter (originals untouched) is written to
``s3://<S3_BUCKET>/<S3_DEAD_LETTER_PREFIX>/<topic>/<partition>/<offset>-<sha256>.avro`` first, and
the DLQ record carries its URI, SHA-256 and size instead of the original bytes.

The claim-check object depends only on the record and the reason, so a redo writes the same bytes to
the same key. The prefix is reserved: no request can write there (request.OutputPolicy).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from processor import events
from processor.events import ClaimCheck, Origin
from processor.request import S3Location
from processor.wire import Codec

# Room kept for what Kafka adds around a record (record and batch framing).
FRAMING_BYTES = 1024
# Kafka key of the DLQ record: the original key when it is at most this long.
MAX_DLQ_KEY_BYTES = 1024

Put = Callable[[S3Location, bytes], None]


@dataclass(frozen=True)
class Original:
    """A consumed record as it was read, untouched."""

    origin: Origin
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    # Why headers is empty although the record had some (see processor.headers), or None.
    headers_problem: str | None = None

    @property
    def size(self) -> int:
        return record_size(self.key, self.value, self.headers)


@dataclass(frozen=True)
class DeadLetterRecord:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    claim_check: ClaimCheck | None


def build(original: Original, reason: str, message: str, *, worker_id: str, codec: Codec, max_bytes: int,
          bucket: str, prefix: str, put: Put) -> DeadLetterRecord:
    """The DLQ record for ``original``; writes the claim-check object through ``put`` when needed."""
    if original.headers_problem:
        message = f"{message}; {original.headers_problem}"
    headers = dlq_headers(original, reason, message, worker_id)
    if original.size + FRAMING_BYTES <= max_bytes:  # else it cannot fit, whatever the envelope
        record = events.dead_letter(original.origin, original.key, original.value, original.headers, reason,
                                    message, worker_id, original_size=original.size)
        inline = DeadLetterRecord(original.key, codec.encode(record), headers, None)
        if record_size(inline.key, inline.value, inline.headers) + FRAMING_BYTES <= max_bytes:
            return inline
    claim = claim_check(original, reason, message, codec=codec, bucket=bucket, prefix=prefix, put=put)
    key = original.key if original.key is not None and len(original.key) <= MAX_DLQ_KEY_BYTES else None
    small_headers = [(n, v) for n, v in original.headers if len(n) + len(v) <= 256][:32]
    record = events.dead_letter(original.origin, key, None, small_headers, reason, message, worker_id,
                                claim_check=claim, original_size=original.size)
    return DeadLetterRecord(key, codec.encode(record), headers, claim)


def claim_check(original: Original, reason: str, message: str, *, codec: Codec, bucket: str, prefix: str,
                put: Put) -> ClaimCheck:
    record = events.dead_letter(original.origin, original.key, original.value, original.headers, reason,
                                message, "", original_size=original.size)
    record["failed_at"] = None  # the object depends on the record alone: a redo writes the same bytes
    data = codec.encode(record)
    digest = hashlib.sha256(data).hexdigest()
    o = original.origin
    loc = S3Location(bucket, f"{prefix.strip('/')}/{o.topic}/{o.partition}/{o.offset}-{digest}.avro")
    put(loc, data)
    return ClaimCheck(loc.uri, digest, len(data))


def dlq_headers(original: Original, reason: str, message: str, worker_id: str) -> list[tuple[str, bytes]]:
    o = original.origin
    return [
        ("dlq.source.topic", o.topic.encode()),
        ("dlq.source.partition", str(o.partition).encode()),
        ("dlq.source.offset", str(o.offset).encode()),
        ("dlq.reason", reason.encode()),
        ("dlq.error", events.bounded(message, 1000).encode()),
        ("dlq.worker", worker_id.encode()),
    ]


def record_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """What a produced record weighs against max.message.bytes, before framing."""
    return len(key or b"") + len(value or b"") + sum(len(n.encode()) + len(v) for n, v in headers)
