"""`tts-processor` command line: run a worker, set up topics, submit requests, tail events, manage voices."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from processor import tracing
from processor.config import Settings, load_settings
from processor.deadletter import FRAMING_BYTES
from processor.errors import TtsError
from processor.request import validate_request

# `tts-processor tail <kind>`: the schema of each kind; its topic comes from wire.SCHEMA_TOPICS.
CODEC_OF = {"results": "TtsResult", "progress": "TtsProgress", "health": "WorkerHealth", "dlq": "DeadLetter",
            "requests": "TtsRequest"}


def to_json(record: dict[str, Any]) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        if isinstance(o, bytes):
            return o.decode("utf-8", "backslashreplace")
        return str(o)

    return json.dumps(record, ensure_ascii=False, default=default)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from processor.worker import run_worker

    return run_worker(settings)


def cmd_setup(settings: Settings, args: argparse.Namespace) -> int:
    """Create the topics (requests with N partitions = max GPUs) and the output bucket. Idempotent."""
    k = settings.kafka
    admin = AdminClient(k.librdkafka_common())
    specs = {
        k.request_topic: args.partitions, k.result_topic: args.partitions, k.progress_topic: args.partitions,
        k.dlq_topic: 1, k.health_topic: 1,
    }
    existing = admin.list_topics(timeout=15).topics
    # Sized for what the worker writes (KAFKA_MAX_MESSAGE_BYTES plus framing), whatever the broker's
    # default: an outcome the topic refuses would fail its transaction.
    fits = {"max.message.bytes": str(k.max_message_bytes + FRAMING_BYTES)}
    configs = {t: dict(fits) for t in (k.result_topic, k.dlq_topic, k.progress_topic, k.health_topic)}
    configs[k.health_topic]["cleanup.policy"] = "compact"
    todo = [NewTopic(t, num_partitions=n, replication_factor=args.replication, config=configs.get(t, {}))
            for t, n in specs.items() if t not in existing]
    for topic, fut in admin.create_topics(todo).items() if todo else []:
        try:
            fut.result()
            print(f"created topic {topic}")
        except KafkaException as exc:
            print(f"topic {topic}: {exc}", file=sys.stderr)
            return 1
    for t in specs:
        if t in existing:
            have = len(existing[t].partitions)
            note = "" if t != k.request_topic or have >= args.partitions else f" (fewer than {args.partitions}!)"
            print(f"topic {t} exists with {have} partitions{note}")
    if not args.no_bucket:
        from processor.storage import Storage

        Storage(settings.s3).ensure_bucket(settings.s3.bucket)
        print(f"bucket {settings.s3.bucket} ready")
    return 0


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(Path(args.json).read_text()) if args.json else {}
    for name in ("text", "voice", "emotion_reference", "emotion_text", "workflow_id", "stage_name",
                 "output_bucket", "output_key_prefix", "output_format", "sample_rate", "channels", "bitrate_kbps",
                 "loudness", "true_peak_dbtp", "subtitles"):
        if getattr(args, name, None) is not None:
            record[name] = getattr(args, name)
    if args.emotion_alpha is not None:
        record["emotion_alpha"] = args.emotion_alpha
    if args.emotion_vector:
        record["emotion_vector"] = [float(x) for x in args.emotion_vector.split(",")]
    if args.use_emotion_text:
        record["use_emotion_text"] = True
    if getattr(args, "stream_segments", False):
        record["stream_segments"] = True
    if args.deadline_seconds is not None:
        record["deadline"] = datetime.now(UTC) + timedelta(seconds=args.deadline_seconds)
    record.setdefault("request_id", args.request_id or f"req-{uuid.uuid4().hex[:16]}")
    record.setdefault("created_at", datetime.now(UTC))
    for key in ("deadline", "created_at"):
        if isinstance(record.get(key), str):
            record[key] = datetime.fromisoformat(record[key])
    return record


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    from processor.wire import make_codecs

    record = build_request(args)
    try:
        req = validate_request(record)  # fail here, with the processor's own rules, not on the worker
    except TtsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    full = {**{f: None for f in ("emotion_reference", "emotion_vector", "emotion_text", "top_p", "top_k",
                                 "temperature", "num_beams", "repetition_penalty", "max_mel_tokens",
                                 "interval_silence_ms", "output_bucket", "output_key_prefix", "workflow_id",
                                 "stage_name", "deadline", "created_at")}, **record}
    codecs = make_codecs(settings)
    # Where the result partitions end before the request is sent: its result can only come after.
    # (Looking up offsets by time after sending raced a fast worker: a result committed between the
    # lookup and the fallback to the then-current end was skipped.)
    start = result_ends(settings) if args.wait else None
    producer = Producer({**settings.kafka.librdkafka_common(), "enable.idempotence": True})
    # A trace per request (the caller's, or a new one): the worker continues it, and the id printed
    # here finds the request's spans and its result, progress and dead-letter records.
    traceparent = args.traceparent or tracing.new_traceparent()
    if tracing.extract([("traceparent", traceparent)]) is None:
        print(f"error: --traceparent {traceparent!r} is not a W3C traceparent", file=sys.stderr)
        return 2
    producer.produce(settings.kafka.request_topic, codecs["TtsRequest"].encode(full), req.request_id.encode(),
                     headers=[("traceparent", traceparent.encode())])
    if producer.flush(30) != 0:
        print("error: request not delivered", file=sys.stderr)
        return 1
    print(f"submitted {req.request_id} to {settings.kafka.request_topic} "
          f"(trace {tracing.trace_id([('traceparent', traceparent)])})", file=sys.stderr)
    if not args.wait:
        return 0
    for rec in consume(settings, "results", from_beginning=False, timeout=args.timeout, start=start):
        if rec.get("request_id") == req.request_id:
            print(to_json(rec))
            return 0 if rec.get("status") == "success" else 1
    print(f"error: no result for {req.request_id} within {args.timeout:.0f}s", file=sys.stderr)
    return 1


def _reader(settings: Settings, *, earliest: bool) -> Consumer:
    return Consumer({
        **settings.kafka.librdkafka_common(), "group.id": f"tts-cli-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest" if earliest else "latest",
        "enable.auto.commit": False, "isolation.level": "read_committed",
    })


def result_ends(settings: Settings) -> dict[int, int]:
    """Each result partition's end (its last stable offset, as a read_committed reader sees it) now."""
    topic = settings.kafka.result_topic
    consumer = _reader(settings, earliest=True)
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
    finally:
        consumer.close()


def consume(settings: Settings, kind: str, *, from_beginning: bool, timeout: float | None,
            start: dict[int, int] | None = None) -> Iterator[dict[str, Any]]:
    """Yield decoded events (read_committed) until ``timeout`` seconds pass without one; from the
    given offsets per partition when ``start`` is set."""
    from processor.wire import make_codecs, topic_of

    topic = topic_of(CODEC_OF[kind], settings.kafka)
    codec = make_codecs(settings)[CODEC_OF[kind]]
    consumer = _reader(settings, earliest=from_beginning or start is not None)
    if start is None:
        consumer.subscribe([topic])
    else:
        # Manual assignment only: a subscribe() here would start a group join whose late revoke
        # clears the assignment.
        consumer.assign([TopicPartition(topic, p, off) for p, off in start.items()])
    last = time.monotonic()
    try:
        while timeout is None or time.monotonic() - last < timeout:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            try:
                yield codec.decode(msg.value())
            except ValueError as exc:
                yield {"undecodable": str(exc), "partition": msg.partition(), "offset": msg.offset()}
    finally:
        consumer.close()


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    events = consume(settings, args.kind, from_beginning=args.from_beginning, timeout=args.timeout)
    for n, rec in enumerate(events, start=1):
        print(to_json(rec), flush=True)
        if args.count and n >= args.count:
            break
    return 0


def cmd_voices(settings: Settings, args: argparse.Namespace) -> int:
    from processor.storage import Storage
    from processor.voices import VoiceCatalog

    catalog = VoiceCatalog(Storage(settings.s3), settings.s3.bucket, settings.s3.voices_prefix)
    try:
        if args.voices_cmd == "add":
            path = Path(args.file)
            preset = catalog.add(args.name, path.read_bytes(), suffix=path.suffix or ".wav",
                                 description=args.description, language=args.language, gender=args.gender)
            print(to_json(preset.as_dict()))
        else:
            for preset in catalog.list(refresh=True).values():
                print(to_json(preset.as_dict()))
    except TtsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_console(settings: Settings, args: argparse.Namespace) -> int:
    from processor.console.app import serve

    return serve(settings, host=args.host, port=args.port)


def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    from processor import doctor

    return doctor.main(settings, min_partitions=args.partitions, timeout=args.timeout)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tts-processor", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run one worker (one consumer-group member, one GPU)").set_defaults(fn=cmd_run)

    s = sub.add_parser("setup", help="create topics and the output bucket (idempotent)")
    s.add_argument("--partitions", type=int, default=6, help="request partitions = the most GPUs you will run")
    s.add_argument("--replication", type=int, default=1)
    s.add_argument("--no-bucket", action="store_true")
    s.set_defaults(fn=cmd_setup)

    s = sub.add_parser("submit", help="publish one TtsRequest")
    s.add_argument("--json", help="a JSON file with TtsRequest fields (arguments override it)")
    s.add_argument("--request-id")
    s.add_argument("--text")
    s.add_argument("--voice", help="s3://bucket/key or a preset name")
    s.add_argument("--emotion-reference")
    s.add_argument("--emotion-alpha", type=float)
    s.add_argument("--emotion-vector", help="8 comma-separated weights")
    s.add_argument("--emotion-text")
    s.add_argument("--use-emotion-text", action="store_true")
    s.add_argument("--deadline-seconds", type=float)
    s.add_argument("--output-bucket")
    s.add_argument("--output-key-prefix")
    s.add_argument("--format", dest="output_format", choices=["wav", "flac", "opus", "mp3"])
    s.add_argument("--sample-rate", type=int, help="8000-48000 Hz (default: the engine's)")
    s.add_argument("--channels", type=int, choices=[1, 2])
    s.add_argument("--bitrate-kbps", type=int, help="opus / mp3 bitrate")
    s.add_argument("--loudness", type=float, help="target integrated loudness in LUFS, e.g. -16")
    s.add_argument("--true-peak-dbtp", type=float, help="true-peak ceiling with --loudness (default -1)")
    s.add_argument("--subtitles", choices=["none", "srt", "vtt", "both"])
    s.add_argument("--stream-segments", action="store_true", help="store and announce each segment as it finishes")
    s.add_argument("--workflow-id")
    s.add_argument("--stage-name")
    s.add_argument("--wait", action="store_true", help="print the result event and exit 0 on success")
    s.add_argument("--traceparent", help="W3C traceparent to continue (default: a new trace; its id is printed)")
    s.add_argument("--timeout", type=float, default=300.0)
    s.set_defaults(fn=cmd_submit)

    s = sub.add_parser("tail", help="print events as JSON lines (read_committed)")
    s.add_argument("kind", nargs="?", default="results", choices=sorted(CODEC_OF))
    s.add_argument("--from-beginning", action="store_true")
    s.add_argument("--count", type=int, default=0)
    s.add_argument("--timeout", type=float, default=None, help="stop after this many idle seconds")
    s.set_defaults(fn=cmd_tail)

    s = sub.add_parser("voices", help="list or add voice presets (stored in S3)")
    vs = s.add_subparsers(dest="voices_cmd", required=True)
    vs.add_parser("list")
    a = vs.add_parser("add")
    a.add_argument("name")
    a.add_argument("file", help="reference clip (WAV/FLAC/OGG, 0.2-60 s)")
    a.add_argument("--description", default="")
    a.add_argument("--language", default="")
    a.add_argument("--gender", default="")
    s.set_defaults(fn=cmd_voices)

    s = sub.add_parser("console", help="web console: try voices, follow requests, watch the workers")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8088)
    s.set_defaults(fn=cmd_console)

    s = sub.add_parser("doctor", help="check the installation, model files, Kafka, S3 and schemas")
    s.add_argument("--partitions", type=int, default=None,
                   help="requests/results/progress need at least this many partitions (default: 1)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for Kafka and S3")
    s.set_defaults(fn=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = load_settings()
    code: int = args.fn(settings, args)
    return code


if __name__ == "__main__":
    sys.exit(main())
