"""docs/asyncapi.yaml is generated (devstack/asyncapi.py) and must not drift from schemas/ or the code.

Regenerate with ``uv run python scripts/gen_asyncapi.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml

from devstack import asyncapi
from processor.config import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "asyncapi.yaml"
REGENERATE = "docs/asyncapi.yaml is stale: run `uv run python scripts/gen_asyncapi.py` and commit it"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text())
    return loaded


def test_committed_document_is_what_the_generator_produces(doc: dict[str, Any]) -> None:
    assert doc == asyncapi.build(), REGENERATE
    assert DOC_PATH.read_text() == asyncapi.render(), REGENERATE


def test_generator_check_mode(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.yaml"
    assert asyncapi.main(["--check", "--output", str(out)]) == 1  # missing
    assert asyncapi.main(["--output", str(out)]) == 0
    assert asyncapi.main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text().replace("tts.results", "tts.result"))
    assert asyncapi.main(["--check", "--output", str(out)]) == 1


def test_every_schema_is_embedded_verbatim(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    files = sorted((ROOT / "schemas").glob("*.avsc"))
    assert {json.loads(f.read_text())["name"] for f in files} == set(messages)
    for f in files:
        schema = json.loads(f.read_text())
        payload = messages[schema["name"]]["payload"]
        assert payload["schemaFormat"] == "application/vnd.apache.avro;version=1.9.0"
        assert payload["schema"] == schema, f"{f.name} differs from the embedded payload: {REGENERATE}"
        fastavro.parse_schema(payload["schema"])  # and it is valid Avro


def test_channels_use_the_config_default_topic_names(doc: dict[str, Any]) -> None:
    fields = KafkaSettings.model_fields
    expected = {
        "requests": (fields["request_topic"].default, "TtsRequest"),
        "results": (fields["result_topic"].default, "TtsResult"),
        "progress": (fields["progress_topic"].default, "TtsProgress"),
        "health": (fields["health_topic"].default, "WorkerHealth"),
        "deadLetters": (fields["dlq_topic"].default, "DeadLetter"),
    }
    assert set(doc["channels"]) == set(expected)
    for channel_id, (topic, message) in expected.items():
        ch = doc["channels"][channel_id]
        assert ch["address"] == topic and ch["bindings"]["kafka"]["topic"] == topic
        assert list(ch["messages"]) == [message]
        assert doc["components"]["messages"][message]["x-avro-subject"] == f"{topic}-value"
    assert doc["servers"]["kafka"]["host"] == fields["bootstrap_servers"].default


def test_the_codec_subjects_match_the_document(doc: dict[str, Any]) -> None:
    """The registry subject the worker registers (wire.make_codecs) is the one documented."""
    from processor.config import Settings
    from processor.wire import make_codecs

    codecs = make_codecs(Settings(kafka=KafkaSettings.model_construct(), schema_registry_url=None))
    for name, codec in codecs.items():
        assert doc["components"]["messages"][name]["x-avro-subject"] == codec._subject


def test_dlq_headers_are_the_ones_the_pipeline_sets(doc: dict[str, Any]) -> None:
    src = (ROOT / "processor" / "deadletter.py").read_text()
    written = set(re.findall(r'\("(dlq\.[a-z.]+)"', src))
    assert written == {"dlq.source.topic", "dlq.source.partition", "dlq.source.offset", "dlq.reason", "dlq.error",
                       "dlq.worker"}
    headers = doc["components"]["messages"]["DeadLetter"]["headers"]
    assert set(headers["properties"]) == written and set(headers["required"]) == written
    assert all(h["type"] == "string" for h in headers["properties"].values())


def test_keys_and_delivery_semantics(doc: dict[str, Any]) -> None:
    msgs = doc["components"]["messages"]
    assert "request_id" in msgs["TtsResult"]["bindings"]["kafka"]["key"]["description"]
    assert "request_id" in msgs["TtsProgress"]["bindings"]["kafka"]["key"]["description"]
    assert "worker_id" in msgs["WorkerHealth"]["bindings"]["kafka"]["key"]["description"]
    assert "original" in msgs["DeadLetter"]["bindings"]["kafka"]["key"]["description"]
    ch = doc["channels"]
    for exactly_once in ("results", "deadLetters"):
        assert "exactly-once" in ch[exactly_once]["x-delivery"]
        assert "isolation.level=read_committed" in ch[exactly_once]["description"]
    for best_effort in ("progress", "health"):
        assert "at-least-once" in ch[best_effort]["x-delivery"]
    assert ch["health"]["bindings"]["kafka"]["topicConfiguration"] == {"cleanup.policy": ["compact"]}
    for m in msgs.values():
        assert "0x00" in m["description"] and "0xC3 0x01" in m["description"]  # both framings documented


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if "$ref" in node else []) + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_asyncapi_3_structure(doc: dict[str, Any]) -> None:
    """The parts of the AsyncAPI 3.0 schema this document uses (checked with @asyncapi/parser as well)."""
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["servers"]["kafka"]["protocol"] == "kafka"
    for ref in _refs(doc):
        _resolve(doc, ref)  # every $ref resolves
    for op_id, op in doc["operations"].items():
        assert op["action"] in ("send", "receive"), op_id
        channel_ref = op["channel"]["$ref"]
        channel_id = channel_ref.rsplit("/", 1)[1]
        for m in op["messages"]:
            assert m["$ref"].startswith(f"{channel_ref}/messages/"), (op_id, m)  # 3.0: the channel's messages
        assert op["bindings"]["kafka"]["bindingVersion"] == "0.5.0"
        assert channel_id in doc["channels"]
    assert {op["action"] for op in doc["operations"].values()} == {"send", "receive"}
    (receive,) = [op for op in doc["operations"].values() if op["action"] == "receive"]
    assert receive["channel"]["$ref"] == "#/channels/requests"
    assert receive["bindings"]["kafka"]["groupId"]["default"] == KafkaSettings.model_fields["group_id"].default
    for ch in doc["channels"].values():
        assert set(ch) <= {"address", "title", "summary", "description", "messages", "bindings", "servers",
                           "parameters", "tags", "externalDocs"} | {k for k in ch if k.startswith("x-")}
