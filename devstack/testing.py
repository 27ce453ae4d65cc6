"""Helpers for tests that share one stack: names that never collide between tests or runs."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class UniqueNames:
    """Topic / group / transactional-id / bucket names owned by one test.

    A random suffix keeps them apart from other tests and from earlier runs against a
    long-lived external stack.
    """

    prefix: str  # lowercase [a-z0-9-], starts with a letter

    @classmethod
    def for_test(cls, test_name: str) -> UniqueNames:
        slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
        return cls(f"t-{slug}-{uuid.uuid4().hex[:8]}")

    def topic(self, base: str = "topic") -> str:
        return f"{self.prefix}.{base}"

    def group(self, base: str = "group") -> str:
        return f"{self.prefix}.{base}"

    def txn_id(self, base: str = "txn") -> str:
        return f"{self.prefix}.{base}"

    @property
    def bucket(self) -> str:
        # S3: 3-63 chars of [a-z0-9.-], alphanumeric at both ends.
        return self.prefix[:63].rstrip("-.")
