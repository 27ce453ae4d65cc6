"""The local stack's schema registry (Apicurio Registry, Confluent API) and our client against it.

The registry is a real server here, not confluent-kafka's ``mock://``: ids, subjects, versions,
404s and compatibility verdicts are the server's own.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import urllib.request
from pathlib import Path

import pytest

from devstack.registry import RegistryServer, build_registry, registry_answers
from devstack.schema_compat import check_with_registry, current_schemas, registry_verdict, released_schemas
from devstack.stack import StackError, java_bin, port_open
from processor.wire import Codec, DecodeError, SchemaRegistry, schema_json
from tests.integration.test_stack import _pid_gone
from tests.support.workers import request


def test_registry_process_starts_answers_and_leaves_nothing(tmp_path: Path) -> None:
    try:
        java_bin()
        build_registry()
    except StackError as e:
        pytest.skip(f"no local registry here: {e}")
    server = RegistryServer(tmp_path)
    server.start()
    pid = server.pid
    assert pid is not None and registry_answers(server.url)
    schema_id = SchemaRegistry(server.url).register("lifecycle-value", schema_json("WorkerHealth"))
    with urllib.request.urlopen(f"{server.url}/schemas/ids/{schema_id}", timeout=5) as r:
        assert json.loads(json.loads(r.read())["schema"])["name"] == "WorkerHealth"
    server.stop()
    assert not server.running and _pid_gone(pid)
    assert not port_open("127.0.0.1", server.port)
    assert "registry" in (tmp_path / "logs" / "registry.out").read_text()


def test_codec_registers_frames_and_reads_back(registry: str) -> None:
    subject = f"codec-{os.urandom(4).hex()}-value"
    codec = Codec("TtsRequest", SchemaRegistry(registry), subject)
    data = codec.encode(request("framed-1", "s3://b/v.wav"))
    assert data[:1] == b"\x00"
    (schema_id,) = struct.unpack(">I", data[1:5])
    with urllib.request.urlopen(f"{registry}/subjects/{subject}/versions/latest", timeout=5) as r:
        assert json.loads(r.read())["id"] == schema_id
    # A second client (fresh cache) resolves the id through the server.
    back = Codec("TtsRequest", SchemaRegistry(registry), subject).decode(data)
    assert back["request_id"] == "framed-1" and back["voice"] == "s3://b/v.wav"


def test_unknown_schema_id_is_a_decode_error(registry: str) -> None:
    codec = Codec("TtsRequest", SchemaRegistry(registry), "unknown-id-value")
    with pytest.raises(DecodeError, match="schema id 2147483000 is unknown to the registry"):
        codec.decode(b"\x00" + struct.pack(">I", 2_147_483_000) + b"\x02x")



# ----------------------------------------------------------------- compatibility, by the registry


def test_registry_finds_every_schema_compatible_with_its_release(registry: str) -> None:
    problems = check_with_registry(registry)
    assert not problems, "\n".join(str(p) for p in problems)


def test_registry_rejects_a_new_field_without_default_naming_it(registry: str) -> None:
    released = released_schemas()["TtsRequest"]
    broken = copy.deepcopy(current_schemas()["TtsRequest"])
    broken["fields"].append({"name": "priority", "type": "int"})
    ok, reason = registry_verdict(registry, released, broken, "BACKWARD")
    assert not ok and "priority" in reason, reason
    assert registry_verdict(registry, released, broken, "FORWARD") == (True, "")
    problems = check_with_registry(registry, current={"TtsRequest": broken}, released={"TtsRequest": released})
    assert [(p.direction, p.checker) for p in problems] == [("BACKWARD", "registry")]
    assert "priority" in str(problems[0])


def test_registry_rejects_removing_a_required_field_forward(registry: str) -> None:
    released = released_schemas()["TtsRequest"]
    new = copy.deepcopy(current_schemas()["TtsRequest"])
    new["fields"] = [f for f in new["fields"] if f["name"] != "voice"]
    ok, reason = registry_verdict(registry, released, new, "FORWARD")
    assert not ok and "voice" in reason, reason
    assert registry_verdict(registry, released, new, "BACKWARD")[0]
