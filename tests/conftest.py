"""Shared fixtures: one real Kafka + S3 stack per pytest session, and unique names per test.

Nothing here starts a server unless a test asks for ``stack`` (directly or through ``bucket`` /
``make_topics``), so pure unit tests never start Java. Tests that use the stack are marked
``integration`` automatically, so ``-m "not integration"`` deselects them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import pytest

from devstack.testing import UniqueNames

if TYPE_CHECKING:
    from devstack.stack import LocalStack

_STACK_FIXTURES = frozenset({"stack", "bucket", "make_topics", "registry"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """The session's Kafka + S3 (external, Docker or local Java processes: see devstack.stack)."""
    from devstack.stack import LocalStack

    with LocalStack() as s:
        yield s


@pytest.fixture(scope="session")
def registry(stack: LocalStack) -> str:
    """The session's schema registry URL (Confluent API): ``SCHEMA_REGISTRY_URL`` if set, else a local
    Apicurio Registry process started on first use and stopped with the stack."""
    return stack.start_registry()


@pytest.fixture
def names(request: pytest.FixtureRequest) -> UniqueNames:
    return UniqueNames.for_test(request.node.name)


@pytest.fixture
def make_topics(stack: LocalStack, names: UniqueNames) -> Callable[[Mapping[str, int]], dict[str, str]]:
    """``make_topics({"requests": 4})`` creates this test's own topics; returns logical -> real name."""

    def make(topics: Mapping[str, int]) -> dict[str, str]:
        real = {base: names.topic(base) for base in topics}
        stack.create_topics({real[base]: n for base, n in topics.items()})
        return real

    return make


@pytest.fixture
def bucket(stack: LocalStack, names: UniqueNames) -> str:
    """A fresh, empty bucket for this test."""
    stack.create_bucket(names.bucket)
    return names.bucket
