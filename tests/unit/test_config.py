"""Configuration: one clear message naming every bad variable, exit code 2; secrets stay masked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from processor.config import Settings, load_settings


def test_invalid_config_names_each_variable_and_exits_2(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_GROUP_PROTOCOL", "eager")
    monkeypatch.setenv("WORKER_PREFETCH", "0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "KAFKA_GROUP_PROTOCOL" in err and "WORKER_PREFETCH" in err
    assert "s3cr3t-value" not in err


def test_cli_run_with_bad_config_fails_fast() -> None:
    env = {"KAFKA_MAX_POLL_INTERVAL_MS": "10000", "KAFKA_SESSION_TIMEOUT_MS": "20000", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "processor.cli", "run"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "KAFKA_MAX_POLL_INTERVAL_MS must be >= KAFKA_SESSION_TIMEOUT_MS" in proc.stderr


def test_secrets_are_masked_and_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-pass-123")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "s3-secret-456")
    s = Settings()
    assert "kafka-pass-123" not in repr(s) and "s3-secret-456" not in repr(s)
    assert set(s.secrets()) >= {"kafka-pass-123", "s3-secret-456"}
    assert s.kafka.librdkafka_common()["sasl.password"] == "kafka-pass-123"
