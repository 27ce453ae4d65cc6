"""All configuration in one typed place, read from the environment (and an optional .env file).

Names follow the deployment: KAFKA_*, S3_* / AWS_*, INDEX_TTS_* (the seed's names), WORKER_*, HTTP_*.
Secrets are SecretStr so they never print; `librdkafka_config()` / `boto3_kwargs()` are the only
places they are unwrapped, straight into the client libraries.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "tts-processor"
    request_topic: str = "tts.requests"
    result_topic: str = "tts.results"
    progress_topic: str = "tts.progress"
    health_topic: str = "tts.health"
    dlq_topic: str = "tts.requests.dlq"
    group_protocol: Literal["classic", "consumer"] = "classic"
    # Static membership: group.instance.id = worker id (the StatefulSet pod name), so a restarted pod
    # gets its partitions back without a rebalance storm.
    static_membership: bool = False
    session_timeout_ms: int = Field(default=45000, ge=6000)
    max_poll_interval_ms: int = Field(default=300000, ge=10000)
    transaction_timeout_ms: int = Field(default=60000, ge=1000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    # Any other librdkafka property, as a JSON object: KAFKA_EXTRA='{"socket.keepalive.enable": true}'.
    # Values under secret-looking names (see SECRET_PROPERTY) are scrubbed from logs like the password.
    extra: dict[str, str | int | bool] = Field(default_factory=dict)
    # The largest record the worker will produce (key + value + headers). Outcomes are built to fit;
    # a dead letter that would not fit moves its original bytes to object storage (a claim check).
    # Keep it at or below the result and DLQ topics' max.message.bytes (`setup` creates them so).
    max_message_bytes: int = Field(default=1_000_000, ge=64 * 1024, le=100 * 1024 * 1024)

    @model_validator(mode="after")
    def _poll_interval(self) -> KafkaSettings:
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise ValueError("KAFKA_MAX_POLL_INTERVAL_MS must be >= KAFKA_SESSION_TIMEOUT_MS")
        return self

    def secrets(self) -> list[str]:
        out = [self.sasl_password.get_secret_value()] if self.sasl_password is not None else []
        out += [str(v) for k, v in self.extra.items() if SECRET_PROPERTY.search(k) and not isinstance(v, bool)]
        return out

    def librdkafka_common(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        conf.update(self.extra)
        return conf


# librdkafka (and registry client) properties whose values are credentials or key material.
SECRET_PROPERTY = re.compile(
    r"password|secret|token|credential|jaas|private|oauthbearer\.config|user\.info|(^|\.)key(\.pem)?$|key\.pem",
    re.IGNORECASE)


def url_secret(url: str | None) -> str | None:
    """The password in a URL's userinfo (https://user:pass@host), if any."""
    if not url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None


class S3Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="S3_", extra="ignore", populate_by_name=True)

    endpoint_url: str | None = None
    region: str = Field(default="us-east-1", validation_alias=AliasChoices("S3_REGION", "AWS_REGION"))
    bucket: str = "tts-audio"
    access_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    secret_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    # Buckets reference audio may be read from (comma-separated). The output bucket is always allowed.
    allowed_buckets: str = ""
    # Where a request may have its audio written (comma-separated): buckets, and key prefixes (a
    # request's output_key_prefix must equal one or lie under one; the first is the default). The
    # voice-preset and dead-letter prefixes are never writable by a request.
    output_buckets: str = ""
    output_prefixes: str = "tts"
    voices_prefix: str = "voices"
    # Claim checks: originals of dead letters too large for the DLQ topic, in the output bucket.
    dead_letter_prefix: str = "dead-letters"
    # Time budgets per storage call: TCP connect, each socket read, and the whole call (retries included).
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    read_timeout_seconds: float = Field(default=20.0, gt=0)
    call_timeout_seconds: float = Field(default=60.0, gt=0)
    verify_tls: bool = True
    ca_bundle: str | None = None
    # What stores the results: obstore (Rust object_store; ~0.5 ms of CPU per PUT where botocore takes
    # ~3) or boto3, the client of every other storage call (reads, listings, probes).
    writer: Literal["obstore", "boto3"] = "obstore"
    max_reference_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    reference_cache_dir: str = Field(default_factory=lambda: os.path.join(_cache_home(), "references"))
    reference_cache_bytes: int = Field(default=2 * 1024**3, ge=0)
    # How long a reference's ETag check stays good: within it, requests for the same object skip the HEAD.
    reference_revalidate_seconds: float = Field(default=30.0, ge=0)

    def allowed(self) -> frozenset[str]:
        names = {b.strip() for b in self.allowed_buckets.split(",") if b.strip()}
        return frozenset(names | {self.bucket})

    def writable(self) -> frozenset[str]:
        names = {b.strip() for b in self.output_buckets.split(",") if b.strip()}
        return frozenset(names | {self.bucket})

    def output_prefix_list(self) -> list[str]:
        return [p.strip().strip("/") for p in self.output_prefixes.split(",") if p.strip().strip("/")]

    def reserved_prefixes(self) -> list[str]:
        return [p for p in (self.voices_prefix.strip("/"), self.dead_letter_prefix.strip("/")) if p]

    @model_validator(mode="after")
    def _output(self) -> S3Settings:
        from processor.request import check_prefix

        if not self.output_prefix_list():
            raise ValueError("S3_OUTPUT_PREFIXES must name at least one prefix")
        for p in self.output_prefix_list() + self.reserved_prefixes():
            check_prefix(p)
        return self


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INDEX_TTS_", extra="ignore")

    # Python path of an engine factory; the default is the product engine. Tests and benchmarks
    # point it at stand-ins (e.g. tests.support.tone_engine:ToneEngine).
    engine: str = "processor.engine.loader:product"
    # The model family the product engine loads: "indextts2" (IndexTTS-2) or "indextts2.5" (IndexTTS-2.5).
    # One setting: the chart and `doctor` follow it too (weights layout, capabilities).
    family: Literal["indextts2", "indextts2.5"] = "indextts2"
    model_dir: str = "checkpoints"
    device: str = "auto"
    use_fp16: bool = False
    use_deepspeed: bool = False
    use_cuda_kernel: bool = False
    accel: bool = False
    compile: bool = False
    # Attention backend for the GPT: None/"sdpa" (torch SDPA), "flash" (flash-attn; on IndexTTS-2.5 the
    # package's accelerated decoder, refused at start-up when flash_attn is not importable) or "sage"
    # (sageattention, IndexTTS2 only). use_fp16 is the half-precision GPT: fp16 on IndexTTS2, bf16 on 2.5.
    attn_backend: Literal["sdpa", "flash", "sage"] | None = None
    # Default text language of requests without one: None detects it (IndexTTS2: zh/en per segment;
    # IndexTTS-2.5: zh, en, ja, es or ar from the script and common words).
    language: Literal["zh", "en", "ja", "es", "ar"] | None = None
    auto_download: bool = False
    # IndexTTS-2.5's s2mel Euler steps; None keeps the package's 25 (fewer: faster, lower quality).
    diffusion_steps: int | None = Field(default=None, ge=1, le=100)
    hf_home: str | None = Field(default=None, validation_alias=AliasChoices("HF_HOME", "INDEX_TTS_HF_HOME"))
    # Conditioning LRU bounds (speaker + emotion references).
    conditioning_cache_entries: int = Field(default=64, ge=0)
    conditioning_cache_bytes: int = Field(default=512 * 1024**2, ge=0)


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKER_", extra="ignore")

    id: str = Field(default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname())
    # Requests taken from Kafka but not yet on the GPU (their references are downloaded meanwhile).
    prefetch: int = Field(default=1, ge=1, le=16)
    shutdown_grace_seconds: float = Field(default=60.0, ge=0)
    health_interval_seconds: float = Field(default=15.0, gt=0)
    max_request_age_seconds: float | None = Field(default=None, gt=0)
    job_timeout_seconds: float = Field(default=900.0, gt=0)
    # Transient storage errors are retried with backoff (≈ 60 s in all with the defaults), long enough
    # to ride out a short storage outage; then the request fails with storage_error.
    max_attempts: int = Field(default=8, ge=1, le=20)
    retry_base_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=30.0, gt=0)
    # Outcomes committed per Kafka transaction at most (batching amortizes the commit round trip).
    max_batch: int = Field(default=16, ge=1)
    # The liveness probe fails when the poll loop has not ticked for this long.
    liveness_stall_seconds: float = Field(default=60.0, gt=0)
    # ... and when the worker has had work but committed nothing for this long (unset: twice the job
    # time limit plus ten minutes, enough for the longest job, its upload retries and a commit).
    liveness_commit_seconds: float | None = Field(default=None, gt=0)

    def commit_stall_seconds(self) -> float:
        return self.liveness_commit_seconds or 2 * self.job_timeout_seconds + 600

    # TEST ONLY (chaos harness): hold every transaction open this long between
    # send_offsets_to_transaction and commit_transaction, so a kill can land inside it. Never set in
    # production: the poll loop stands still meanwhile.
    test_park_in_txn_seconds: float = Field(default=0.0, ge=0, validation_alias="TTS_TEST_PARK_IN_TXN_SECONDS")

    def kafka_call_budget(self) -> float:
        """How long one blocking Kafka call sequence (a commit, an abort) may hold the poll thread:
        well inside liveness, so a slow broker aborts a transaction rather than restarting the pod."""
        return min(30.0, self.liveness_stall_seconds / 2)


class HttpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HTTP_", extra="ignore")

    host: str = "0.0.0.0"  # noqa: S104 (probes and metrics must be reachable from the kubelet and Prometheus)
    port: int = Field(default=8080, ge=0, le=65535)


class TracingSettings(BaseSettings):
    """OpenTelemetry's own variable names, so operators set them as for any other service. Unlike the
    SDK's default (otlp), export is off unless asked for; OTEL_EXPORTER_OTLP_* (endpoint, headers) are
    read by the exporter itself and never pass through here."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    traces_exporter: Literal["none", "console", "otlp"] = "none"
    service_name: str = "tts-processor"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    schema_registry_url: str | None = None
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v

    def secrets(self) -> list[str]:
        """Every secret value, whatever setting carried it, so log/event scrubbing can prove none leaks."""
        out = self.kafka.secrets()
        for s in (self.s3.access_key_id, self.s3.secret_access_key):
            if s is not None:
                out.append(s.get_secret_value())
        out += [p for p in (url_secret(self.schema_registry_url), url_secret(self.s3.endpoint_url)) if p]
        return [v for v in out if v]


def _cache_home() -> str:
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tts-processor")


def load_settings() -> Settings:
    """Settings from the environment, or one clear message naming the variables, and exit code 2."""
    lines: list[str] = []
    sections: dict[str, Any] = {}
    for name, cls in (("kafka", KafkaSettings), ("s3", S3Settings), ("engine", EngineSettings),
                      ("worker", WorkerSettings), ("http", HttpSettings), ("tracing", TracingSettings)):
        try:
            sections[name] = cls()
        except ValidationError as exc:
            prefix = str(cls.model_config.get("env_prefix", "")).upper()
            lines += [f"  {prefix}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
    try:
        settings = Settings(**sections) if not lines else None
    except ValidationError as exc:
        lines += [f"  {'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        settings = None
    if settings is None:
        print("invalid configuration:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2)
    return settings
