"""`tts-processor run`: wire settings → engine → clients → Processor, and run one group member.

Start-up order matters: the HTTP probes come up first (live, not ready), the model loads and runs
one warm-up synthesis, the storage clients make their first call (``Storage.warm_up``), and only
then does the consumer subscribe, so a member never holds partitions it cannot serve and its first
request pays for no one-time set-up.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import os
import signal
import time
from types import FrameType

from processor import logs, tracing
from processor.audio import available_formats, encoder_problems
from processor.config import EngineSettings, Settings
from processor.engine.base import Engine
from processor.health import HealthReporter, WorkerState, health_record, serve_http
from processor.kafka_io import make_producer, plain_producer_config
from processor.pipeline import Processor
from processor.session import FatalKafkaError, KafkaSession
from processor.storage import Storage
from processor.wire import make_codecs

log = logging.getLogger(__name__)

EXIT_FATAL = 3


def load_engine(settings: EngineSettings) -> Engine:
    """Import the configured engine factory (``module:callable``) and build the engine ONCE."""
    module_name, _, attr = settings.engine.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    engine: Engine = factory(settings)
    return engine


def run_worker(settings: Settings) -> int:
    logs.configure(settings.log_level, settings.secrets())
    w = settings.worker
    tracing.configure(settings.tracing.traces_exporter, service_name=settings.tracing.service_name, worker_id=w.id)
    state = WorkerState(w.liveness_stall_seconds, w.job_timeout_seconds, w.commit_stall_seconds())
    server = serve_http(state, settings.http.host, settings.http.port)
    codecs = make_codecs(settings)
    events_producer = make_producer(plain_producer_config(settings.kafka, w.id))

    def announce(status: str, reasons: list[str] | None = None) -> None:
        rec = health_record(state, w.id, status, [], lags={}, gpu={"available": False, "count": 0, "name": None,
                            "memory_used_bytes": None, "memory_total_bytes": None}, reasons=reasons or [])
        events_producer.produce(settings.kafka.health_topic, codecs["WorkerHealth"].encode(rec), w.id.encode())
        events_producer.poll(0)

    announce("starting")
    stop_early = False

    def early_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_early
        stop_early = True

    signal.signal(signal.SIGTERM, early_stop)
    signal.signal(signal.SIGINT, early_stop)

    # Trying every encoder imports the loudness meter (scipy.signal: seconds on a busy node): do it
    # beside the model load, not after it, so it never lengthens start-up.
    encoders = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="encoder-check")
    encoder_check = encoders.submit(encoder_problems)
    encoders.shutdown(wait=False)
    t0 = time.monotonic()
    log.info("loading engine %s", settings.engine.engine)
    try:
        engine = load_engine(settings.engine)
        engine.warm_up()
    except Exception as exc:
        # Say so on the health topic before dying, or the worker's last word there stays 'starting'.
        reason = f"engine: {type(exc).__name__}: {exc}"
        for secret in settings.secrets():
            reason = reason.replace(secret, "***")
        log.error("engine failed to load: %s", reason)
        state.status = "stopped"
        announce("stopped", [reason[:300]])
        events_producer.flush(5)
        server.shutdown()
        raise
    state.model = engine.info
    log.info("engine ready in %.1fs: %s", time.monotonic() - t0, engine.info)
    # Try every encoder once now: a format this build cannot encode is refused from the start (its
    # requests get unsupported_format) instead of failing after a GPU run.
    for fmt, why in encoder_check.result().items():
        log.error("output %s refused: %s", fmt, why)
    log.info("output formats: %s", ", ".join(available_formats()))
    if stop_early:
        announce("stopped")
        events_producer.flush(5)
        server.shutdown()
        return 0

    session = KafkaSession.connect(settings.kafka, w.id, budget_seconds=w.kafka_call_budget(),
                                   park_in_txn_seconds=w.test_park_in_txn_seconds)
    storage = Storage(settings.s3)
    storage.warm_up(settings.s3.bucket)  # before the first request, not in it
    processor = Processor(settings, engine, storage, session, events_producer, codecs)
    state.processor = processor
    state.status = "ready"
    # Its own thread: listing voice presets reads S3, which must never hold up the poll loop.
    reporter = HealthReporter(state, processor, w.id, w.health_interval_seconds)
    reporter.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: draining (grace %.0fs)", signum, w.shutdown_grace_seconds)
        state.status = "draining"
        processor.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    try:
        processor.run()
    except FatalKafkaError as exc:
        log.error("%s; exiting so the orchestrator restarts this worker", exc)
        code = EXIT_FATAL
    state.status = "stopped"
    reporter.stop()
    reporter.publish("stopped")
    events_producer.flush(5)
    tracing.shutdown()  # flushes spans still batched for export
    server.shutdown()
    if code == EXIT_FATAL or session.set_aside:
        # The fatal path is often a transactional call stuck inside librdkafka (#5456/#5511): its thread
        # never returns, and interpreter shutdown would join it forever (seen in the chaos run: a worker
        # that had said "exiting" was still alive 36 s later). Leave without joining so the restart that
        # fences the stuck producer really happens. A producer set aside by a replacement may still
        # be stuck the same way: its destructor must never run.
        logging.shutdown()
        os._exit(code)
    return code
