"""`tts-processor setup` creates every topic the worker writes with room for what it writes."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from confluent_kafka.admin import ConfigResource

from processor.deadletter import FRAMING_BYTES
from tests.support.workers import REPO


def test_setup_sizes_the_written_topics_for_the_largest_outcome(stack: Any, names: Any) -> None:
    topics = {f"KAFKA_{k}_TOPIC": names.topic(k.lower()) for k in ("REQUEST", "RESULT", "PROGRESS", "HEALTH", "DLQ")}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "S3_"))}, **stack.env(),
           **topics, "KAFKA_MAX_MESSAGE_BYTES": "2000000", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "processor.cli", "setup", "--partitions", "2", "--no-bucket"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    admin = stack.admin()
    for var in ("KAFKA_RESULT_TOPIC", "KAFKA_DLQ_TOPIC", "KAFKA_PROGRESS_TOPIC", "KAFKA_HEALTH_TOPIC"):
        res = ConfigResource("topic", topics[var])
        cfg = admin.describe_configs([res])[res].result(30)
        assert int(cfg["max.message.bytes"].value) == 2_000_000 + FRAMING_BYTES, var
