"""What request intake costs the poll thread per request: decode, validate, output policy, key checks.

    uv run python -m benchmarks.intake_cost [--n 3000] [--repeat 5] [--out artifacts/bench/intake.json]

Builds realistic request records (as ``benchmarks.pipeline_overhead`` sends them: an s3:// voice, a
sentence of text, created_at set, everything else null; plus one with an emotion vector, an output
prefix and bucket), encodes them with the worker's codec, and times each step ``--n`` times in a row.
The figure is thread CPU time (``time.thread_time``) in microseconds per call, the best of
``--repeat`` runs: the best run is the cost, the others measure the machine's other tenants.

``Stages.intake`` is the whole step as the processor runs it (trace start, decode, validation,
capability check, output policy, expiry, the decode metric); the other rows are its parts, and
``Codec.decode (plain)`` is what the naive confluent-kafka loop in ``benchmarks.naive_loop`` spends.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.pipeline_overhead import request_record
from benchmarks.standin_engine import StandInEngine
from processor.config import KafkaSettings, S3Settings, Settings
from processor.request import check_key, parse_s3_uri, validate_request
from processor.session import Record
from processor.stages import Job, Stages
from processor.storage import content_addressed
from processor.wire import SCHEMA_TOPICS, Codec, SchemaRegistry

BUCKET = "tts-audio"
VOICE = f"s3://{BUCKET}/voices/narrator/0f3a9c2e-reference.wav"
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def records() -> dict[str, dict[str, Any]]:
    plain = request_record("bench-000123", VOICE, "Hello world, this is light-load request 123.")
    rich = {**plain, "request_id": "wf-7:stage-2:req-000456", "emotion_vector": [0, 0, 0, 0, 0, 0, 0.6, 0.2],
            "output_bucket": BUCKET, "output_key_prefix": "tts/team-a", "workflow_id": "wf-7",
            "text": "你好, world. A longer sentence with a few clauses, numbers like 42, and punctuation!"}
    return {"plain": plain, "rich": rich}


def per_call_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    fn()  # imports, caches, pydantic's first-call work
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        best = min(best, time.thread_time() - t0)
    return round(best * 1e6 / n, 2)


def stages() -> Stages:
    settings = Settings(kafka=KafkaSettings(group_id="bench"), s3=S3Settings(bucket=BUCKET))
    codecs = {name: Codec(name) for name in SCHEMA_TOPICS}
    # Intake touches only the settings, the codecs, the engine's info and the clock.
    return Stages(settings, StandInEngine(0.0), None, None, None, codecs, None,  # type: ignore[arg-type]
                  clock=time.monotonic)


def measure(n: int, repeat: int) -> list[dict[str, Any]]:
    st = stages()
    codec = st.codecs["TtsRequest"]
    # A worker with SCHEMA_REGISTRY_URL reads registry-framed records (mock://: the client's in-process registry).
    framed = Codec("TtsRequest", SchemaRegistry("mock://intake-cost"), "tts.requests-value")
    rows = []
    for label, rec in records().items():
        value = codec.encode(rec)
        framed_value = framed.encode(rec)
        record = Record("tts.requests", 0, 123, rec["request_id"].encode(), value, [])
        fields = codec.decode(value, raw_timestamps=True)
        req = validate_request(fields)
        loc = st.output_policy.location(req)
        assert st.intake(Job(("tts.requests", 0), 123), record) is None, "the benchmark request must be valid"
        cases: list[tuple[str, Callable[[], object]]] = [
            ("Stages.intake", lambda: st.intake(Job(("tts.requests", 0), 123), record)),  # noqa: B023
            ("Codec.decode (plain)", lambda: codec.decode(value)),  # noqa: B023
            ("Codec.decode (raw timestamps)", lambda: codec.decode(value, raw_timestamps=True)),  # noqa: B023
            ("Codec.decode (raw, registry)", lambda: framed.decode(framed_value, raw_timestamps=True)),  # noqa: B023
            ("validate_request", lambda: validate_request(fields)),  # noqa: B023
            ("OutputPolicy.location", lambda: st.output_policy.location(req)),  # noqa: B023
            ("parse_s3_uri (voice)", lambda: parse_s3_uri(req.voice)),  # noqa: B023
            ("check_key (output key)", lambda: check_key(loc.key)),  # noqa: B023
            ("content_addressed (stored key)", lambda: content_addressed(loc, SHA256)),  # noqa: B023
        ]
        for case, fn in cases:
            rows.append({"record": label, "case": case, "cpu_us_per_call": per_call_us(fn, n, repeat)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("artifacts/bench/intake.json"))
    args = p.parse_args(argv)
    rows = measure(args.n, args.repeat)
    for r in rows:
        print(f"{r['record']:6} {r['case']:32} {r['cpu_us_per_call']:9.2f} us")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(), "n": args.n, "repeat": args.repeat, "rows": rows,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
