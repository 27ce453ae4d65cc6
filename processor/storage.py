"""S3-compatible object storage: the only place boto3 is touched.

Failures become TtsError codes, decided once here:
- a missing object is the request's fault (REFERENCE_NOT_FOUND, permanent);
- any other 4xx will not heal by retrying (STORAGE_REJECTED, permanent, at once), except the few
  4xx that S3 uses for throttling, clock skew and expiring credentials;
- an unreachable, failing (5xx) or hanging endpoint is ours (STORAGE_ERROR, retriable).
Bucket and key syntax is checked before any call. Every call has a connect, a read and a total time
budget (S3_*_TIMEOUT_SECONDS), so a storage server that hangs instead of refusing holds no stage for
longer than that. Messages name bucket/key, never credentials.
"""

from __future__ import annotations

import posixpath
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from processor.config import S3Settings
from processor.errors import ErrorCode, TtsError
from processor.request import S3Location, check_bucket, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
# 4xx answers that do heal: throttling, timeouts, clock skew, credentials about to be refreshed.
_TRANSIENT_4XX = {"RequestTimeout", "SlowDown", "TooManyRequests", "Throttling", "ThrottlingException",
                  "RequestTimeTooSkewed", "ExpiredToken", "TokenRefreshRequired", "OperationAborted",
                  "RequestLimitExceeded", "408", "429"}
_CHUNK = 1024 * 1024


def s3_client(settings: S3Settings, *, connect_timeout: float | None = None, read_timeout: float | None = None,
              ) -> S3Client:
    kwargs: dict[str, Any] = {
        "region_name": settings.region,
        "config": Config(
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout or settings.connect_timeout_seconds,
            read_timeout=read_timeout or settings.read_timeout_seconds,
            # One quick retry inside boto; the pipeline owns the longer, observable backoff.
            retries={"max_attempts": 2, "mode": "standard"},
            signature_version="s3v4",
        ),
        "verify": settings.ca_bundle or settings.verify_tls,
    }
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    if settings.access_key_id is not None and settings.secret_access_key is not None:
        kwargs["aws_access_key_id"] = settings.access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = settings.secret_access_key.get_secret_value()
    client: S3Client = boto3.session.Session().client("s3", **kwargs)
    return client


class Storage:
    def __init__(self, settings: S3Settings, client: S3Client | None = None) -> None:
        self.settings = settings
        self.client = client or s3_client(settings)
        # Calls run here so that the caller can stop waiting at the total budget even when a server
        # trickles bytes slowly enough to never trip the per-read timeout. A call given up on keeps
        # its thread until boto's own timeouts end it; the pool bounds how many such threads exist.
        self._pool = _DaemonPool(8, "tts-s3")

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        timeout = self.settings.call_timeout_seconds
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            raise TtsError(ErrorCode.STORAGE_ERROR, f"{what}: no answer within {timeout:.0f}s") from None

    def put(self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]) -> None:
        what = f"writing s3://{bucket}/{key[:300]}"
        _check(bucket, key, what)
        try:
            self._call(what, lambda: self.client.put_object(Bucket=bucket, Key=key, Body=data,
                                                            ContentType=content_type, Metadata=metadata))
        except ClientError as exc:
            raise _classify(exc, what) from None
        except BotoCoreError as exc:
            raise _unreachable(exc, what) from None

    def get_capped(self, bucket: str, key: str, max_bytes: int) -> tuple[bytes, str]:
        """Object bytes and ETag; refuses objects over ``max_bytes`` before downloading them."""
        what = f"reading s3://{bucket}/{key[:300]}"
        _check(bucket, key, what)
        deadline = time.monotonic() + self.settings.call_timeout_seconds

        def fetch() -> tuple[bytes, str]:
            head = self.client.head_object(Bucket=bucket, Key=key)
            if head["ContentLength"] > max_bytes:
                raise TtsError(ErrorCode.REFERENCE_TOO_LARGE,
                               f"s3://{bucket}/{key} is {head['ContentLength']} bytes; the limit is {max_bytes}")
            obj = self.client.get_object(Bucket=bucket, Key=key)
            body = obj["Body"]
            parts: list[bytes] = []
            size = 0
            while size <= max_bytes:
                if time.monotonic() > deadline:  # the caller gave up already; stop reading too
                    body.close()
                    raise TtsError(ErrorCode.STORAGE_ERROR, f"{what}: no answer within the time budget")
                chunk = body.read(min(_CHUNK, max_bytes + 1 - size))
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
            if size > max_bytes:
                body.close()
                raise TtsError(ErrorCode.REFERENCE_TOO_LARGE, f"s3://{bucket}/{key} exceeds {max_bytes} bytes")
            return b"".join(parts), str(obj.get("ETag", ""))

        try:
            return self._call(what, fetch)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise TtsError(ErrorCode.REFERENCE_NOT_FOUND, f"s3://{bucket}/{key} does not exist") from None
            raise _classify(exc, what) from None
        except BotoCoreError as exc:
            raise _unreachable(exc, what) from None

    def etag(self, bucket: str, key: str) -> str | None:
        """The object's ETag, or None if it does not exist (cheap check before a cached download)."""
        what = f"reading s3://{bucket}/{key[:300]}"
        _check(bucket, key, what)
        try:
            head = self._call(what, lambda: self.client.head_object(Bucket=bucket, Key=key))
            return str(head.get("ETag", ""))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise _classify(exc, what) from None
        except BotoCoreError as exc:
            raise _unreachable(exc, what) from None

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        what = f"listing s3://{bucket}/{prefix[:300]}"

        def pages() -> list[str]:
            keys: list[str] = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(o["Key"] for o in page.get("Contents", []))
            return keys

        try:
            return self._call(what, pages)
        except ClientError as exc:
            raise _classify(exc, what) from None
        except BotoCoreError as exc:
            raise _unreachable(exc, what) from None

    def ensure_bucket(self, bucket: str) -> None:
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError:
            self.client.create_bucket(Bucket=bucket)

    def probe(self) -> str | None:
        """None when the output bucket is reachable, else a short reason (for health events)."""
        try:
            self._call("probe", lambda: self.client.head_bucket(Bucket=self.settings.bucket))
            return None
        except TtsError as exc:
            return f"storage: {exc.message}"
        except ClientError as exc:
            return f"storage: bucket {self.settings.bucket}: {_code(exc)}"
        except BotoCoreError as exc:
            return f"storage: {type(exc).__name__}"


class _DaemonPool:
    """A few daemon threads running storage calls. Not a ThreadPoolExecutor: its threads are joined at
    interpreter exit, so one call stuck on a hung S3 would hold up the worker's exit after SIGTERM."""

    def __init__(self, size: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._size, self._name = size, name
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if len(self._threads) < self._size:  # grown on demand, up to the size
                t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
        self._jobs.put((fn, future))
        return future

    def _work(self) -> None:
        while True:
            fn, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue  # the caller gave up before it started
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who raises it  # noqa: BLE001
                future.set_exception(exc)


def _check(bucket: str, key: str, what: str) -> None:
    """Bucket and key syntax, before any call: S3 would reject them anyway, or worse, normalize them."""
    try:
        check_bucket(bucket)
        check_key(key)
    except ValueError as exc:
        raise TtsError(ErrorCode.STORAGE_REJECTED, f"{what}: {exc}") from None


def _classify(exc: ClientError, what: str) -> TtsError:
    code = _code(exc)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if 400 <= status < 500 and code not in _TRANSIENT_4XX and str(status) not in _TRANSIENT_4XX:
        return TtsError(ErrorCode.STORAGE_REJECTED, f"{what}: refused ({status} {code})")
    return TtsError(ErrorCode.STORAGE_ERROR, f"{what} failed: {code}")


def _unreachable(exc: BotoCoreError, what: str) -> TtsError:
    if isinstance(exc, ParamValidationError):  # boto refused the call before sending it
        return TtsError(ErrorCode.STORAGE_REJECTED, f"{what}: invalid parameters")
    return TtsError(ErrorCode.STORAGE_ERROR, f"storage unreachable: {type(exc).__name__}")


def content_addressed(loc: S3Location, sha256: str) -> S3Location:
    """Where one attempt's audio is stored: ``<prefix>/<request_id>.wav`` becomes
    ``<prefix>/<request_id>/<sha256>.wav`` (any extension is kept the same way).

    The key names the bytes, so whatever writes it writes exactly those bytes: a late writer (a zombie
    that lost its partition, a PUT in flight at revocation, a redo on another GPU that renders other
    bytes) can only add a sibling object, never change the one a committed result names. Siblings that
    no result names are orphans; docs/operations.md says how they expire.
    """
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    stem, ext = posixpath.splitext(loc.key)
    return S3Location(loc.bucket, f"{stem}/{sha256}{ext}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))
