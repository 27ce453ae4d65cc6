"""Property tests of the intake's key check: the fast ``check_key`` accepts and refuses exactly what the
plain per-character version it replaced did, with the same message, on any text.

The reference below is that version, kept verbatim (it ran ~3 times per request and cost more than
the rest of intake's checks, which is why it was replaced: docs/benchmarks.md, "Intake cost").
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from processor.request import MAX_KEY_BYTES, _under, check_key, parse_s3_uri


def reference_check_key(key: str) -> str:
    if not key:
        raise ValueError("object key is empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("object key is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise ValueError(f"object key is {size} bytes; the limit is {MAX_KEY_BYTES}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise ValueError("object key contains control characters")
    if any(seg in ("", ".", "..") for seg in key.split("/")):
        raise ValueError("object key has an empty, '.' or '..' segment (leading, trailing or double '/')")
    return key


def verdict(check: object, key: str) -> tuple[str, str]:
    try:
        return "ok", check(key)  # type: ignore[operator]
    except ValueError as exc:
        return "refused", str(exc)


# Characters that sit on the check's edges (slash, dots, C0 controls and DEL next to their printable
# neighbours, C1 controls that keys may hold, a lone surrogate) mixed with any code point at all.
EDGES = "/./..\x00\x01\x1f\x20\x7e\x7f\x80\x9f\xa0a~é声\U0001f600\ud800\udfff"
ANY_CHAR = st.characters(exclude_categories=())  # every category, surrogates (Cs) included
TEXT = st.text(alphabet=st.one_of(st.sampled_from(EDGES), ANY_CHAR), max_size=40)
SEGMENT = st.one_of(st.sampled_from(["", ".", "..", "...", ". ", " .", "a", "a.b", "声音", "\x7f", "\t"]), TEXT)


@st.composite
def keys(draw: st.DrawFn) -> str:
    """Keys built from segments (the shapes the segment rule cares about), some padded to around the
    byte limit with one-, two-, three- and four-byte characters."""
    key = "/".join(draw(st.lists(SEGMENT, max_size=6)))
    if draw(st.booleans()):
        pad = draw(st.sampled_from("a\xe9\u58f0\U0001f600"))
        width = len(pad.encode("utf-8"))
        target = draw(st.integers(MAX_KEY_BYTES - 8, MAX_KEY_BYTES + 8))
        key = key + pad * max(0, (target - len(key.encode("utf-8", "surrogatepass"))) // width)
    return key


@settings(max_examples=1000)
@given(st.one_of(TEXT, keys()))
@example("")
@example("a" * MAX_KEY_BYTES)
@example("a" * (MAX_KEY_BYTES + 1))
@example("\u58f0" * 341 + "a")  # 1024 bytes of UTF-8 in 342 characters
@example("\u58f0" * 341 + "ab")
@example("a/\ud800")  # not encodable: refused before the control and segment rules
@example("a\x7f/b")
@example("a\x80/b")  # C1 controls are not refused in keys (only C0 and DEL)
@example("a/./b")
@example("./a")
@example("a/..")
@example("a//b")
@example("/a")
@example("a/")
@example("a/.../b")
def test_check_key_agrees_with_the_per_character_reference(key: str) -> None:
    assert verdict(check_key, key) == verdict(reference_check_key, key)


@settings(max_examples=200)
@given(keys())
def test_s3_uris_are_refused_exactly_when_their_key_is(key: str) -> None:
    uri = f"s3://voices/{key}"
    if not key or key.endswith("/"):
        return  # refused before the key check, for naming no object
    ok = verdict(reference_check_key, key)[0] == "ok"
    try:
        loc = parse_s3_uri(uri)
    except ValueError as exc:
        assert not ok and str(exc) == verdict(reference_check_key, key)[1]
    else:
        assert ok and loc.key == key


def reference_under(prefix: str, root: str) -> bool:
    return prefix == root or prefix.startswith(root + "/")


PATHS = st.text(alphabet="ab/", max_size=7)


@settings(max_examples=200)
@given(PATHS, st.lists(PATHS, max_size=4))
def test_under_any_root_agrees_with_the_one_root_at_a_time_reference(path: str, roots: list[str]) -> None:
    """OutputPolicy's allow and reserve checks: one startswith over all roots, as the loop over them."""
    assert _under(path, tuple(f"{r}/" for r in roots)) == any(reference_under(path, r) for r in roots)
