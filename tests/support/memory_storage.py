"""An in-memory stand-in for ``processor.storage.Storage`` (same methods, same error codes), with
injected faults: the next N calls fail transiently (``storage_error``), or raise anything at all."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from processor.errors import ErrorCode, TtsError


@dataclass
class MemoryStorage:
    objects: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    transient_failures: int = 0  # the next N calls raise storage_error (retriable)
    fault: Callable[[str, str], None] | None = None  # called with (operation, key) before each call
    puts: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _enter(self, op: str, key: str) -> None:
        if self.fault is not None:
            self.fault(op, key)
        with self._lock:
            if self.transient_failures > 0:
                self.transient_failures -= 1
                raise TtsError(ErrorCode.STORAGE_ERROR, f"{op} {key} failed: injected")

    def put(self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]) -> None:
        self._enter("put", key)
        with self._lock:
            self.objects[(bucket, key)] = (data, dict(metadata))
            self.puts.append((bucket, key))

    def get_capped(self, bucket: str, key: str, max_bytes: int) -> tuple[bytes, str]:
        self._enter("get", key)
        got = self.objects.get((bucket, key))
        if got is None:
            raise TtsError(ErrorCode.REFERENCE_NOT_FOUND, f"s3://{bucket}/{key} does not exist")
        if len(got[0]) > max_bytes:
            raise TtsError(ErrorCode.REFERENCE_TOO_LARGE, f"s3://{bucket}/{key} exceeds {max_bytes} bytes")
        return got[0], self._etag(got[0])

    def etag(self, bucket: str, key: str) -> str | None:
        self._enter("head", key)
        got = self.objects.get((bucket, key))
        return self._etag(got[0]) if got is not None else None

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        self._enter("list", prefix)
        return sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))

    @staticmethod
    def _etag(data: bytes) -> str:
        return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'  # what S3 uses for an ETag
