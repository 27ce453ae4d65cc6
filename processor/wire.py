"""Avro on the wire: Confluent Schema Registry framing or Avro single-object encoding.

Writing uses the registry framing (magic 0x00 + 4-byte big-endian schema id) when a registry URL is
configured, else single-object encoding (0xC3 0x01 + 8-byte little-endian CRC-64-AVRO fingerprint),
which needs no registry. Reading accepts both whatever the configuration, so a topic can move from
one to the other without a flag day. The writer's schema is resolved against ours (schema
evolution), so producers may lag or lead by compatible versions.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

if TYPE_CHECKING:
    from processor.config import KafkaSettings, Settings

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class DecodeError(ValueError):
    """The bytes are not a record we can read; the caller dead-letters them."""


class RegistryUnavailable(RuntimeError):
    """The registry could not be asked (down, timeout, 5xx): the record may be fine, so it is not
    dead-lettered; the caller leaves it uncommitted and tries again later."""


def _schema_dir() -> Path:
    # Installed wheels carry the schemas inside the package; a source checkout has them at the root.
    packaged = Path(__file__).resolve().parent / "schemas"
    return packaged if packaged.is_dir() else SCHEMA_DIR


@cache
def schema_json(name: str) -> dict[str, Any]:
    with (_schema_dir() / f"{name}.avsc").open() as fh:
        loaded: dict[str, Any] = json.load(fh)
    return loaded


@cache
def parsed_schema(name: str) -> Any:
    return fastavro.parse_schema(schema_json(name))


def schema_fingerprint(schema: dict[str, Any]) -> bytes:
    """CRC-64-AVRO of the parsing canonical form, as the 8 little-endian bytes the spec puts on the wire."""
    # fastavro's hex string already lists the bytes in wire (little-endian) order.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


class SchemaRegistry:
    """The few registry calls we need, through confluent-kafka's client (cached per id/subject)."""

    def __init__(self, url: str, config: dict[str, Any] | None = None) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        # new_client also understands mock:// URLs (an in-process registry, for tests and demos).
        self._client = SchemaRegistryClient.new_client({"url": url, **(config or {})})
        self._parsed: dict[int, Any] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        from confluent_kafka.schema_registry import Schema

        return int(self._client.register_schema(subject, Schema(json.dumps(schema), "AVRO")))

    def writer_schema(self, schema_id: int) -> Any:
        """The parsed writer schema for ``schema_id``: ``DecodeError`` if the registry has no such id,
        ``RegistryUnavailable`` if it could not be asked."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        with self._lock:
            if schema_id not in self._parsed:
                try:
                    fetched = self._client.get_schema(schema_id)
                except SchemaRegistryError as exc:
                    if exc.http_status_code == 404:
                        raise DecodeError(f"schema id {schema_id} is unknown to the registry") from exc
                    raise RegistryUnavailable(f"registry error for schema id {schema_id}: "
                                              f"HTTP {exc.http_status_code} {exc.error_message}") from exc
                except Exception as exc:  # connection refused, timeout, TLS: the registry, not the record
                    raise RegistryUnavailable(f"registry unreachable for schema id {schema_id}: "
                                              f"{type(exc).__name__}") from exc
                try:
                    self._parsed[schema_id] = fastavro.parse_schema(json.loads(fetched.schema_str or "null"))
                except Exception as exc:
                    raise DecodeError(f"schema id {schema_id} is not an Avro schema we can parse: {exc}") from exc
            return self._parsed[schema_id]


def _strip_timestamps(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _strip_timestamps(v) for k, v in node.items()}
        if str(out.get("logicalType", "")).startswith(("timestamp-", "local-timestamp-")):
            del out["logicalType"]
        return out
    if isinstance(node, list):
        return [_strip_timestamps(v) for v in node]
    return node


class Codec:
    """Encodes/decodes one record type (e.g. ``TtsRequest``) to and from Kafka values."""

    def __init__(self, name: str, registry: SchemaRegistry | None = None, subject: str | None = None) -> None:
        self.name = name
        self._schema = parsed_schema(name)
        self._registry = registry
        self._subject = subject
        self._schema_id: int | None = None
        self._fingerprint = schema_fingerprint(schema_json(name))
        self._plans: dict[tuple[int, bool], tuple[Any, Any]] = {}
        # Writers we can resolve by fingerprint: ours, plus older versions kept in schemas/history/.
        self._known: dict[bytes, Any] = {self._fingerprint: self._schema}
        history = _schema_dir() / "history"
        for path in sorted(history.glob(f"{name}.*.avsc")) if history.is_dir() else []:
            old = json.loads(path.read_text())
            self._known[schema_fingerprint(old)] = fastavro.parse_schema(old)

    def _plan(self, writer: Any, raw_timestamps: bool) -> tuple[Any, Any]:
        """The (writer, reader) schemas to read a record of ``writer`` with; reader None: no resolution.

        A writer with our parsing canonical form (our own schema, or ours as the registry hands it
        back) lays out the same fields, names, symbols and branches in the same order: resolving it
        against our schema changes nothing (fastavro applies logical types as the WRITER says), yet
        it doubled the cost of a decode, so it is skipped. Any other writer is resolved as before.
        """
        key = (id(writer), raw_timestamps)  # writers are cached for the codec's life, so their ids stay theirs
        plan = self._plans.get(key)
        if plan is None:
            try:
                ours = writer is self._schema or schema_fingerprint(writer) == self._fingerprint
            except Exception:  # noqa: BLE001 (a registry schema fastavro parsed but cannot put in canonical form: resolve it, as before)
                ours = False
            # Timestamps as millis: fastavro converts logical types as the writer's schema says, so
            # the copy without them is the one to read with.
            plan = (_strip_timestamps(writer) if raw_timestamps else writer, None if ours else self._schema)
            self._plans[key] = plan
        return plan

    def encode(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        if self._registry is not None:
            if self._schema_id is None:
                self._schema_id = self._registry.register(self._subject or self.name, schema_json(self.name))
            out.write(CONFLUENT_MAGIC + struct.pack(">I", self._schema_id))
        else:
            out.write(SINGLE_OBJECT_MAGIC + self._fingerprint)
        fastavro.schemaless_writer(out, self._schema, record)
        return out.getvalue()

    def decode(self, data: bytes | None, *, raw_timestamps: bool = False) -> dict[str, Any]:
        """The record in ``data``. ``raw_timestamps``: timestamp fields stay longs (millis), so a value
        no datetime can hold (a deadline of 2**63-1) reaches validation instead of failing the decode."""
        if not data:
            raise DecodeError("empty value")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            writer = self._known.get(data[2:10])
            if writer is None:
                raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()} for {self.name}")
            body = data[10:]
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
            if self._registry is None:
                raise DecodeError("registry-framed record but no SCHEMA_REGISTRY_URL is configured")
            (schema_id,) = struct.unpack(">I", data[1:5])
            writer = self._registry.writer_schema(schema_id)
            body = data[5:]
        else:
            raise DecodeError("not Avro: no single-object or registry magic bytes")
        writer, reader = self._plan(writer, raw_timestamps)
        buf = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:
            raise DecodeError(f"corrupt {self.name} payload: {exc}") from exc
        if buf.tell() != len(body):
            raise DecodeError(f"{len(body) - buf.tell()} trailing bytes after {self.name} payload")
        if not isinstance(record, dict):
            raise DecodeError(f"{self.name} payload is not a record")
        return record


# The one table of which schema travels on which topic (a KafkaSettings attribute). The worker, the
# doctor, the console and the CLI all read it, so a new topic or a renamed setting changes one line.
SCHEMA_TOPICS: dict[str, str] = {
    "TtsRequest": "request_topic",
    "TtsResult": "result_topic",
    "TtsProgress": "progress_topic",
    "WorkerHealth": "health_topic",
    "DeadLetter": "dlq_topic",
}


def topic_of(schema: str, kafka: KafkaSettings) -> str:
    topic: str = getattr(kafka, SCHEMA_TOPICS[schema])
    return topic


def make_codecs(settings: Settings) -> dict[str, Codec]:
    """One codec per schema, registering under the ``<topic>-value`` subject (TopicNameStrategy)."""
    registry = SchemaRegistry(settings.schema_registry_url) if settings.schema_registry_url else None
    return {name: Codec(name, registry, f"{topic_of(name, settings.kafka)}-value") for name in SCHEMA_TOPICS}
