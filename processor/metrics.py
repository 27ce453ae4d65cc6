"""Prometheus metrics. Units in names, bounded label values (status, error code, stage, partition)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

REQUESTS = Counter("tts_requests_total", "Requests answered, by status and error code.", ["status", "error_code"])
DEAD_LETTERS = Counter("tts_dead_letters_total", "Records sent to the dead-letter topic.")
SYNTHESIS_SECONDS = Histogram("tts_synthesis_seconds", "Engine time per request.", buckets=_LATENCY)
AUDIO_SECONDS = Counter("tts_audio_seconds_total", "Seconds of audio produced.")
REAL_TIME_FACTOR = Histogram(
    "tts_real_time_factor", "Synthesis seconds per audio second (lower is faster).",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5, 10, 50),
)
STAGE_SECONDS = Histogram(
    "tts_stage_seconds", "Time per pipeline stage: decode, download, synthesis, encode, upload, commit.",
    ["stage"], buckets=_LATENCY,
)
QUEUE_LAG = Gauge("tts_queue_lag_messages", "High watermark minus committed offset.", ["topic", "partition"])
INFLIGHT_AGE = Gauge("tts_inflight_job_age_seconds", "How long the job on the GPU has been running (0 if idle).")
INFLIGHT_JOBS = Gauge("tts_inflight_jobs", "Requests taken from Kafka and not yet committed.")
REBALANCES = Counter("tts_rebalances_total", "Partition assignment changes.", ["kind"])
TRANSACTIONS = Counter("tts_transactions_total", "Kafka transactions by outcome.", ["outcome"])
PRODUCER_REPLACEMENTS = Counter("tts_producer_replacements_total",
                                "Transactional producers replaced in place, by reason.", ["reason"])
RETRIES = Counter("tts_retries_total", "Retried operations after transient errors.", ["stage"])
SPEAKER_CACHE = Counter("tts_speaker_cache_total", "Conditioning cache lookups.", ["result"])
GPU_MEMORY = Gauge("tts_gpu_memory_bytes", "GPU memory allocated by this process.", ["kind"])
READY = Gauge("tts_worker_ready", "1 when the model is warm and the consumer joined.")
