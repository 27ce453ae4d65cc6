"""Property tests of ``Codec.decode``: reading a record written with our own schema without resolving it
against our schema gives exactly what the resolving read gave (the same fields in the same order, the
same values, the same errors for damaged bytes), for every framing and both timestamp modes.

The reference is the decode as it was before resolution was skipped (docs/benchmarks.md, "Intake
cost"): every writer resolved against our schema, timestamps stripped from the writer for raw reads.
"""

from __future__ import annotations

import io
import json
import re
import struct
from pathlib import Path
from typing import Any

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.wire import SINGLE_OBJECT_MAGIC, Codec, DecodeError, SchemaRegistry, _strip_timestamps, schema_json

SCHEMA = schema_json("TtsRequest")
HISTORY = json.loads(next(Path(__file__).resolve().parents[2].glob("schemas/history/TtsRequest.*.avsc")).read_text())
REGISTRY = SchemaRegistry("mock://wire-properties")
PLAIN = Codec("TtsRequest")
FRAMED = Codec("TtsRequest", REGISTRY, "tts.requests-value")
FRAMED.encode({f["name"]: f.get("default") for f in SCHEMA["fields"]} | {"request_id": "r", "text": "t", "voice": "v"})
HISTORY_ID = REGISTRY.register("tts.requests-history-value", HISTORY)
# The registry hands our schema back as its own object, parsed from its own copy of the JSON.
OURS_ID = FRAMED._schema_id
assert OURS_ID is not None

INT32 = st.integers(-(2**31), 2**31 - 1)
LONG = st.integers(-(2**63), 2**63 - 1)
PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(), "boolean": st.booleans(), "int": INT32, "long": LONG,
    "float": st.floats(width=32), "double": st.floats(), "string": st.text(max_size=12),
}


def values(t: Any) -> st.SearchStrategy[Any]:
    if isinstance(t, str):
        return PRIMITIVES[t]
    if isinstance(t, list):
        return st.one_of(*(values(b) for b in t))
    if t["type"] == "array":
        return st.lists(values(t["items"]), max_size=9)
    if t.get("logicalType", "").startswith("timestamp-"):
        # Millis both near now and beyond what a datetime holds (2**63-1 must reach validation).
        return st.one_of(st.integers(0, 4_102_444_800_000), LONG)
    return PRIMITIVES[t["type"]]


def records(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f["name"]: values(f["type"]) for f in schema["fields"]})


# Written with timestamps as plain longs, so that values no datetime can hold are encodable too.
WRITERS = {id(s): fastavro.parse_schema(_strip_timestamps(s)) for s in (SCHEMA, HISTORY)}


def encode(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, WRITERS[id(schema)], record)
    return out.getvalue()


def reference_decode(data: bytes, raw_timestamps: bool) -> dict[str, Any]:
    """Codec.decode as it was: the writer always resolved against our schema."""
    if data[:2] == SINGLE_OBJECT_MAGIC:
        writer = PLAIN._known[data[2:10]]
        body = data[10:]
    else:
        writer = REGISTRY.writer_schema(struct.unpack(">I", data[1:5])[0])
        body = data[5:]
    if raw_timestamps:
        writer = _strip_timestamps(writer)
    buf = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(buf, writer, PLAIN._schema)
    except Exception as exc:
        raise DecodeError(f"corrupt TtsRequest payload: {exc}") from exc
    if buf.tell() != len(body):
        raise DecodeError(f"{len(body) - buf.tell()} trailing bytes after TtsRequest payload")
    assert isinstance(record, dict)
    return record


def outcome(decode: Any, data: bytes, raw: bool) -> str:
    # repr: the same keys in the same order and the same values (nan included) as the reference.
    try:
        return repr(decode(data, raw))
    except DecodeError as exc:
        # fastavro names the buffer it read from ("<_io.BytesIO object at 0x...>"): a new one each time.
        return "DecodeError: " + re.sub(r" at 0x[0-9a-f]+>", ">", str(exc))


def framings(record_of_ours: dict[str, Any], record_of_history: dict[str, Any]) -> list[bytes]:
    ours, old = encode(SCHEMA, record_of_ours), encode(HISTORY, record_of_history)
    return [
        SINGLE_OBJECT_MAGIC + PLAIN._fingerprint + ours,
        b"\x00" + struct.pack(">I", OURS_ID) + ours,
        SINGLE_OBJECT_MAGIC + next(fp for fp in PLAIN._known if fp != PLAIN._fingerprint) + old,
        b"\x00" + struct.pack(">I", HISTORY_ID) + old,
    ]


@settings(max_examples=100, deadline=None)
@given(records(SCHEMA), records(HISTORY), st.booleans(), st.data())
def test_decode_reads_what_the_resolving_decode_read(ours: dict[str, Any], old: dict[str, Any], raw: bool,
                                                      data: st.DataObject) -> None:
    for value in framings(ours, old):
        codec = FRAMED if value[:1] == b"\x00" else PLAIN
        new = outcome(lambda d, r: codec.decode(d, raw_timestamps=r), value, raw)  # noqa: B023
        assert new == outcome(reference_decode, value, raw)
        # Damaged: truncated, a byte changed, a byte appended. Errors must read the same too.
        head = 10 if value[:1] == b"\xc3" else 5
        cut = data.draw(st.integers(head, len(value)))
        at = data.draw(st.integers(head, len(value) - 1)) if len(value) > head else head
        byte = data.draw(st.integers(0, 255))
        for bad in (value[:cut], value[:at] + bytes([byte]) + value[at + 1:], value + bytes([byte])):
            new = outcome(lambda d, r: codec.decode(d, raw_timestamps=r), bad, raw)  # noqa: B023
            assert new == outcome(reference_decode, bad, raw)
