"""Secrets never reach a log line: not through KAFKA_EXTRA, a URL, or an exception that ends a thread."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from processor import logs
from processor.config import Settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    old_hooks = (threading.excepthook, sys.excepthook)
    root = logging.getLogger()
    old = (root.handlers[:], root.level)
    yield
    root.handlers[:], root.level = old
    threading.excepthook, sys.excepthook = old_hooks


def test_kafka_extra_and_url_secrets_are_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_EXTRA", '{"sasl.oauthbearer.client.secret": "oauth-secret-1", '
                                      '"ssl.key.password": "keypass-22", "socket.keepalive.enable": true}')
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://user:registry-pass-3@registry:8081")
    s = Settings()
    assert {"oauth-secret-1", "keypass-22", "registry-pass-3"} <= set(s.secrets())
    assert "true" not in s.secrets() and "True" not in s.secrets()


@pytest.mark.usefixtures("restore_logging")
def test_exception_ending_a_thread_goes_through_the_scrubber(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", ["thread-secret-99"])

    def boom() -> None:
        raise RuntimeError("connect failed with password thread-secret-99")

    t = threading.Thread(target=boom, name="tts-test")
    t.start()
    t.join()
    text = capsys.readouterr().err
    assert "thread tts-test died" in text and "RuntimeError" in text
    assert "thread-secret-99" not in text and "***" in text
