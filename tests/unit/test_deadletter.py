"""Dead letters always fit the DLQ topic: small originals inline, large ones by claim check."""

from __future__ import annotations

import hashlib

from processor import deadletter
from processor.events import Origin
from processor.request import S3Location
from processor.wire import Codec

CODEC = Codec("DeadLetter")
LIMIT = 100_000


def build(original: deadletter.Original) -> tuple[deadletter.DeadLetterRecord, dict[str, bytes]]:
    stored: dict[str, bytes] = {}

    def put(loc: S3Location, data: bytes) -> None:
        stored[loc.uri] = data

    dl = deadletter.build(original, "undecodable", "not Avro", worker_id="w-1", codec=CODEC, max_bytes=LIMIT,
                          bucket="out", prefix="dead-letters", put=put)
    return dl, stored


def test_small_original_travels_inline() -> None:
    orig = deadletter.Original(Origin("req", 2, 7), b"k", b"\x00garbage", [("h", b"v")])
    dl, stored = build(orig)
    assert not stored and dl.claim_check is None and dl.key == b"k"
    rec = CODEC.decode(dl.value)
    assert rec["original_value"] == b"\x00garbage" and rec["original_headers"] == {"h": b"v"}
    assert dict(dl.headers)["dlq.reason"] == b"undecodable"


def test_large_original_goes_to_storage_and_the_record_names_it_by_sha256() -> None:
    big_value, big_key = b"v" * (LIMIT * 10), b"k" * (LIMIT // 2)
    orig = deadletter.Original(Origin("req", 2, 7), big_key, big_value, [("h", b"x" * 5000), ("t", b"1")])
    dl, stored = build(orig)
    assert deadletter.record_size(dl.key, dl.value, dl.headers) + deadletter.FRAMING_BYTES <= LIMIT
    assert dl.key is None  # the original key alone was too large to be the DLQ record's key
    rec = CODEC.decode(dl.value)
    assert rec["original_value"] is None and rec["original_headers"] == {"t": b"1"}
    (uri, data), = stored.items()
    assert rec["claim_check_uri"] == uri and uri.startswith("s3://out/dead-letters/req/2/7-")
    assert rec["claim_check_sha256"] == hashlib.sha256(data).hexdigest() and rec["claim_check_size_bytes"] == len(data)
    assert rec["original_size_bytes"] == orig.size
    whole = CODEC.decode(data)  # the object holds the original untouched
    assert (whole["original_key"], whole["original_value"]) == (big_key, big_value)
    assert whole["original_headers"] == {"h": b"x" * 5000, "t": b"1"}
    assert build(orig)[1] == stored  # a redo writes the same bytes to the same key


def test_original_just_under_the_limit_is_claim_checked_once_wrapped() -> None:
    orig = deadletter.Original(Origin("req", 0, 1), b"k", b"v" * (LIMIT - deadletter.FRAMING_BYTES - 50), [])
    dl, stored = build(orig)
    assert len(stored) == 1 and dl.claim_check is not None
    fits = deadletter.Original(Origin("req", 0, 1), b"k", b"v" * (LIMIT - 4000), [])
    assert build(fits)[0].claim_check is None


def test_unreadable_headers_are_said_so() -> None:
    orig = deadletter.Original(Origin("req", 0, 1), None, None, [], headers_problem="header names are not UTF-8")
    dl, _ = build(orig)
    assert "header names are not UTF-8" in CODEC.decode(dl.value)["error_message"]
