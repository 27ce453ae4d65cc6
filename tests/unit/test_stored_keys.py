"""The stored key of a result's audio names its bytes, so no later attempt can change that object."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from processor.request import S3Location, validate_request
from processor.storage import content_addressed


def test_the_key_carries_the_content_hash_under_the_request_id() -> None:
    loc = validate_request({"request_id": "r-1", "text": "hi", "voice": "s3://voices/a.wav",
                            "output_key_prefix": "out/team"}).output_location("bucket")
    sha = hashlib.sha256(b"audio").hexdigest()
    assert content_addressed(loc, sha) == S3Location("bucket", f"out/team/r-1/{sha}.wav")


def test_different_bytes_get_different_keys_and_the_same_bytes_the_same_key() -> None:
    loc = S3Location("b", "tts/r-1.wav")
    a, b = hashlib.sha256(b"take 1").hexdigest(), hashlib.sha256(b"take 2").hexdigest()
    assert content_addressed(loc, a) != content_addressed(loc, b)
    assert content_addressed(loc, a) == content_addressed(loc, a)


def test_other_extensions_are_kept() -> None:
    sha = "0" * 64
    assert content_addressed(S3Location("b", "tts/r-1.flac"), sha).key == f"tts/r-1/{sha}.flac"


@pytest.mark.parametrize("bad", ["", "abc", "G" * 64, "A" * 64, "0" * 63, "0" * 65])
def test_only_a_sha256_hex_digest_is_accepted(bad: str) -> None:
    with pytest.raises(ValueError):
        content_addressed(S3Location("b", "tts/r-1.wav"), bad)


@settings(max_examples=300)
@given(st.one_of(st.text(alphabet="0123456789abcdefABCDEFg\n", min_size=62, max_size=66), st.text(max_size=70)))
@example("0" * 64 + "\n")
def test_the_digest_rule_is_64_lowercase_hex_digits_exactly(sha: str) -> None:
    valid = len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
    try:
        content_addressed(S3Location("b", "tts/r-1.wav"), sha)
    except ValueError:
        assert not valid
    else:
        assert valid
