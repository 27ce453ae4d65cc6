"""The loop a typical user writes with confluent-kafka: the comparison column of the pipeline benchmark.

    poll one → synthesize → encode WAV → upload → produce the result (flush) → synchronous commit

One thread, no transactions, no pause/resume, no prefetch, no per-request reference check (the
voice is fixed at start-up), no progress events. It uses the same stand-in engine, the same WAV
encoder, the same boto3 client settings and the same Kafka and S3 as the processor it is compared
with. Its result is a small JSON document, visible to a ``read_committed`` reader as soon as the
produce is acknowledged (it is not transactional): the simplest thing that delivers a result at least
once. ``NaiveLoop(cfg, engine).run()`` is called by ``benchmarks.pipeline_overhead`` in the variant's own process and
returns what every request went through, in the same shape as the processor's jobs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from confluent_kafka import Consumer, Producer

log = logging.getLogger("benchmarks.naive_loop")


class NaiveLoop:
    """Built before the measurement starts (client set-up is not per-request work), then ``run``."""

    def __init__(self, cfg: dict[str, Any], engine: Any) -> None:
        from processor.config import S3Settings
        from processor.storage import s3_client
        from processor.wire import Codec

        self.cfg = cfg
        self.engine = engine
        self.consumer = Consumer({
            "bootstrap.servers": cfg["bootstrap"], "group.id": cfg["group"], "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed",
        })
        self.producer = Producer({"bootstrap.servers": cfg["bootstrap"], "enable.idempotence": True,
                                  "linger.ms": 0})
        self.s3 = s3_client(S3Settings(endpoint_url=cfg["s3_endpoint"], region=cfg["s3_region"],
                                       bucket=cfg["bucket"], access_key_id=cfg["s3_access_key"] or None,
                                       secret_access_key=cfg["s3_secret_key"] or None))
        self.codec = Codec("TtsRequest")
        # Its client's one-time set-up (botocore's lazy loading, a connection) before the measurement,
        # as the processor's storage.warm_up does.
        self.s3.head_bucket(Bucket=cfg["bucket"])

    def run(self, *, on_tick: Callable[[], bool], on_job: Callable[[int], None] | None = None
            ) -> list[dict[str, Any]]:
        """Serve until ``cfg['expected']`` requests are done or ``on_tick`` returns True (stop)."""
        from processor.audio import encode_wav

        cfg, consumer, producer, s3, codec, engine = (self.cfg, self.consumer, self.producer, self.s3, self.codec,
                                                      self.engine)
        t = cfg["topics"]
        consumer.subscribe([t["requests"]])
        jobs: list[dict[str, Any]] = []
        try:
            while len(jobs) < cfg["expected"]:
                if on_tick():
                    break
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                if msg.error():
                    log.warning("consumer error: %s", msg.error())
                    continue
                marks = {"polled": time.perf_counter()}
                request = codec.decode(msg.value())
                marks["decoded"] = marks["engine_start"] = time.perf_counter()
                # The stand-in reads only the text: a fixed voice, default settings.
                out = engine.synthesize(SimpleNamespace(text=request["text"]))
                marks["engine_end"] = marks["finish_start"] = time.perf_counter()
                audio = encode_wav(out.pcm, out.sample_rate)
                marks["encoded"] = time.perf_counter()
                key = f"naive/{request['request_id']}.wav"
                s3.put_object(Bucket=cfg["bucket"], Key=key, Body=audio.data, ContentType="audio/wav")
                marks["uploaded"] = time.perf_counter()
                result = {"request_id": request["request_id"], "status": "success",
                          "output_uri": f"s3://{cfg['bucket']}/{key}", "sha256": audio.sha256, "size": audio.size,
                          "duration_seconds": audio.duration_seconds}
                producer.produce(t["results"], json.dumps(result).encode(), msg.key())
                producer.flush(30)
                marks["result"] = time.perf_counter()  # acknowledged: visible to any reader from here on
                consumer.commit(message=msg, asynchronous=False)
                marks["committed"] = time.perf_counter()
                jobs.append({
                    "partition": msg.partition(), "offset": msg.offset(), "status": "success", "error_code": "",
                    "attempts": 1, "marks": marks,
                    "stage_seconds": {"decode": marks["decoded"] - marks["polled"],
                                      "synthesis": marks["engine_end"] - marks["engine_start"],
                                      "encode": marks["encoded"] - marks["finish_start"],
                                      "upload": marks["uploaded"] - marks["encoded"],
                                      "produce": marks["result"] - marks["uploaded"],
                                      "commit": marks["committed"] - marks["result"]},
                })
                if on_job is not None:
                    on_job(len(jobs))
        finally:
            consumer.close()
        return jobs
