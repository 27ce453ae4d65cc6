"""The unit suite's two promises, checked on every run of it: no test here needs the Kafka + S3 stack
(those live in tests/integration), and nothing here imports torch (the engine tests do)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _only_unit(items: list[pytest.Item]) -> bool:
    return bool(items) and all(HERE in item.path.parents for item in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    needs_stack = [item.nodeid for item in session.items
                   if HERE in item.path.parents and item.get_closest_marker("integration")]
    if needs_stack:
        raise pytest.UsageError(f"tests/unit must not need the Kafka + S3 stack: {needs_stack}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _only_unit(session.items) and "torch" in sys.modules and session.testscollected:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("=", "FAILED: tests/unit imported torch", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
