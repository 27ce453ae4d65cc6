"""S3-compatible object storage: the only place boto3 is touched.

Failures become TtsError codes, decided once here:
- a missing object is the request's fault (REFERENCE_NOT_FOUND, permanent);
- any other 4xx will not heal by retrying (STORAGE_REJECTED, permanent, at once), except the few
  4xx that S3 uses for throttling, clock skew and expiring credentials;
- an unreachable, failing (5xx) or hanging endpoint is ours (STORAGE_ERROR, retriable).
Bucket and key syntax is checked before any call. Every call has a connect, a read and a total time
budget (S3_*_TIMEOUT_SECONDS), so a storage server that hangs instead of refusing holds no stage for
longer than that. Messages name bucket/key, never credentials.

How the total budget is kept: a per-read timeout alone is not enough (a server that trickles a byte
now and then never trips it). Reads (``get_capped``, ``etag``, listings) run on a small pool of
threads and the caller stops waiting at the budget. Writes, one per result and the hot path, run on
the caller's own thread, because the hand-off costs more CPU than anything else in a request's
storage step (two thread wake-ups, ~0.6 ms here): instead ``_Deadlines`` notes which connection each
write is using, and a watchdog thread shuts down the socket of a write that outlives its budget, so
its blocked send or receive fails at once. Should a future botocore not let us note connections, a
write falls back to the pool.

Results are written through obstore (Rust's object_store) unless S3_WRITER=boto3: botocore spends
~3 ms of CPU on one 88 KB PUT here, obstore ~0.5 ms (all its threads), and it releases the GIL while
it waits. Its per-attempt ``timeout`` is the total budget, so it needs no watchdog. Its errors carry
no fields, only text: ``_ObjectStoreWriter`` reads the HTTP status and S3 code from it and classifies
them exactly as ``_classify`` does for boto3 (tests/unit/test_storage_writers.py holds both to it).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import posixpath
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import obstore
from botocore.awsrequest import AWSHTTPConnection, AWSHTTPConnectionPool, AWSHTTPSConnection, AWSHTTPSConnectionPool
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store
from urllib3.connection import HTTPConnection

from processor.config import S3Settings
from processor.errors import ErrorCode, TtsError
from processor.request import S3Location, check_bucket, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from obstore.store import ClientConfig

T = TypeVar("T")
log = logging.getLogger(__name__)

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}
# 4xx answers that do heal: throttling, timeouts, clock skew, credentials about to be refreshed.
_TRANSIENT_4XX = {"RequestTimeout", "SlowDown", "TooManyRequests", "Throttling", "ThrottlingException",
                  "RequestTimeTooSkewed", "ExpiredToken", "TokenRefreshRequired", "OperationAborted",
                  "RequestLimitExceeded", "408", "429"}
_CHUNK = 1024 * 1024
# content_addressed runs for every stored object (audio, subtitles, streamed pieces): a compiled
# pattern, not a Python loop over 64 characters.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


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
        self._direct_writes = _note_connections(self.client)
        # A client handed in (tests' stubs and fakes) answers the writes too.
        self._writer = _ObjectStoreWriter.of(settings) if client is None and settings.writer == "obstore" else None

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

        if self._writer is not None:
            self._writer.put(bucket, key, data, content_type=content_type, metadata=metadata, what=what)
            return

        def write() -> None:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata=metadata)

        timeout = self.settings.call_timeout_seconds
        try:
            if not self._direct_writes:
                self._call(what, write)
                return
            with DEADLINES.call(timeout) as call:
                try:
                    write()
                except (_OutOfTime, BotoCoreError) as exc:
                    if not (call.expired or isinstance(exc, _OutOfTime)):
                        raise
                # Cut off: whatever the attempt returned is not an answer (a response whose socket
                # was shut down mid-header can even parse as a 200).
                if call.expired:
                    raise TtsError(ErrorCode.STORAGE_ERROR, f"{what}: no answer within {timeout:.0f}s")
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

    def warm_up(self, bucket: str) -> None:
        """Pay both paths' one-time set-up at start-up instead of in the first request: botocore's lazy
        loading (service model, endpoint rules, each operation's model) and a pooled connection for
        reads, obstore's store (credentials, its runtime) and a connection for writes: ~35 ms of CPU
        and as much latency in the first request otherwise. A HEAD and a GET of a key that need not
        exist on the read path, a HEAD on the write path. A failure is only logged: storage that is
        down now may be up by the first request, which reports it otherwise."""
        key = ".tts-processor-warm-up"
        what = f"warming up s3://{bucket}/{key}"
        _check(bucket, key, what)
        try:
            # botocore loads each operation's model on its first use: both that a reference download runs.
            for op in (self.client.head_object, self.client.get_object):
                try:
                    self._call(what, functools.partial(op, Bucket=bucket, Key=key))
                except ClientError as exc:
                    if _code(exc) not in _NOT_FOUND:
                        raise _classify(exc, what) from None
                except BotoCoreError as exc:
                    raise _unreachable(exc, what) from None
            if self._writer is not None:
                self._writer.head(bucket, key)
        except TtsError as exc:
            log.warning("storage warm-up: %s", exc)

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


class _OutOfTime(Exception):
    """Raised when a write past its budget would open or reuse a connection (a botocore retry):
    deliberately no OSError or BotoCoreError, so neither urllib3 nor botocore retries it."""


class _Call:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: HTTPConnection | None = None  # the connection its current attempt uses
        self.expired = False


class _Deadlines:
    """Storage writes in flight, by thread, with their deadlines; a watchdog thread (started on first
    use, ticking while it lives) shuts down the socket of a write past its deadline. Shutting the
    socket down, rather than closing it, makes a send or receive blocked on it in another thread
    return at once; the caller's urllib3 then discards the connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, _Call] = {}
        self._tick = 1.0
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def call(self, budget: float) -> Iterator[_Call]:
        me = threading.get_ident()
        c = _Call(time.monotonic() + budget)
        with self._lock:
            # The watchdog cuts a call off at most one tick past its budget.
            self._tick = min(self._tick, max(0.05, budget / 8))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="tts-s3-deadlines", daemon=True)
                self._thread.start()
            self._calls[me] = c
        try:
            yield c
        finally:
            with self._lock:
                self._calls.pop(me, None)

    def using(self, conn: HTTPConnection) -> None:
        """Called by the connection as a write's attempt starts a request on it."""
        with self._lock:
            c = self._calls.get(threading.get_ident())
            if c is None:
                return
            if c.expired or time.monotonic() >= c.deadline:
                c.expired = True
                raise _OutOfTime
            c.conn = conn

    def _watch(self) -> None:
        while True:
            time.sleep(self._tick)
            now = time.monotonic()
            with self._lock:
                for c in self._calls.values():
                    if now >= c.deadline and not c.expired:
                        c.expired = True
                        sock = c.conn.sock if c.conn is not None else None
                        if sock is not None:
                            with contextlib.suppress(OSError):
                                sock.shutdown(socket.SHUT_RDWR)


DEADLINES = _Deadlines()


class _NotedHTTPConnection(AWSHTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> Any:
        DEADLINES.using(self)
        return super().request(*args, **kwargs)


class _NotedHTTPSConnection(AWSHTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> Any:
        DEADLINES.using(self)
        return super().request(*args, **kwargs)


class _NotedHTTPConnectionPool(AWSHTTPConnectionPool):
    ConnectionCls = _NotedHTTPConnection


class _NotedHTTPSConnectionPool(AWSHTTPSConnectionPool):
    ConnectionCls = _NotedHTTPSConnection


def _note_connections(client: Any) -> bool:
    """Make ``client`` open its connections through the classes above, so that ``DEADLINES`` can cut a
    write off. botocore offers no public hook for this: its HTTP session keeps the pool classes in a
    dict that it shares with its pool managers, and creates pools from it on first use. False (writes
    go through the pool of threads instead) when that is not where it used to be, or for a client
    that is not botocore's (tests pass small fakes)."""
    classes = getattr(getattr(getattr(client, "_endpoint", None), "http_session", None),
                      "_pool_classes_by_scheme", None)
    if not isinstance(classes, dict) or classes.get("http") is not AWSHTTPConnectionPool \
            or classes.get("https") is not AWSHTTPSConnectionPool:
        if classes is not None:
            log.warning("botocore's HTTP session is not as expected: storage writes use the thread pool")
        return False
    classes.update(http=_NotedHTTPConnectionPool, https=_NotedHTTPSConnectionPool)
    return True


def _check(bucket: str, key: str, what: str) -> None:
    """Bucket and key syntax, before any call: S3 would reject them anyway, or worse, normalize them."""
    try:
        check_bucket(bucket)
        check_key(key)
    except ValueError as exc:
        raise TtsError(ErrorCode.STORAGE_REJECTED, f"{what}: {exc}") from None


def _classify(exc: ClientError, what: str) -> TtsError:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return _answered(status, _code(exc), what)


def _answered(status: int, code: str, what: str) -> TtsError:
    if 400 <= status < 500 and code not in _TRANSIENT_4XX and str(status) not in _TRANSIENT_4XX:
        return TtsError(ErrorCode.STORAGE_REJECTED, f"{what}: refused ({status} {code})")
    return TtsError(ErrorCode.STORAGE_ERROR, f"{what} failed: {code}")


# What obstore's error text says (its exceptions have no fields): the server's answer, or how the
# request failed (reqwest's kind: Timeout, Connect, Request, Body, Decode, ...).
_OBS_STATUS = re.compile(r"non-2xx status code: (\d{3})")
_OBS_S3_CODE = re.compile(r"<Code>([A-Za-z0-9.\-]{1,64})</Code>")
_OBS_KIND = re.compile(r"HttpError \{\s*kind: (\w{1,32})")


class _ObjectStoreWriter:
    """PUTs through obstore, one ``S3Store`` per bucket, configured as the boto3 client is: endpoint,
    path-style addressing, region, credentials (the same boto3 chain when no keys are set), TLS, one
    quick retry, and the call budget as its total time per attempt and for retrying."""

    def __init__(self, settings: S3Settings, credentials: Any | None) -> None:
        self.settings = settings
        self._credentials = credentials
        self._stores: dict[str, S3Store] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: S3Settings) -> _ObjectStoreWriter | None:
        if settings.access_key_id is not None and settings.secret_access_key is not None:
            return cls(settings, None)
        from obstore.auth.boto3 import Boto3CredentialProvider

        try:
            provider = Boto3CredentialProvider(boto3.session.Session(region_name=settings.region))
        except ValueError:  # no credentials anywhere in the chain: boto3 writes, and says why it fails
            log.warning("no S3 credentials found: storage writes use boto3")
            return None
        return cls(settings, provider)

    def store(self, bucket: str) -> S3Store:
        with self._lock:
            st = self._stores.get(bucket)
            if st is None:
                st = self._stores[bucket] = self._make(bucket)
            return st

    def _make(self, bucket: str) -> S3Store:
        s = self.settings
        budget = timedelta(seconds=s.call_timeout_seconds)
        options: ClientConfig = {
            "timeout": budget, "connect_timeout": timedelta(seconds=s.connect_timeout_seconds),
            "allow_http": (s.endpoint_url or "").startswith("http://"),
            "allow_invalid_certificates": not s.verify_tls,
        }
        if s.ca_bundle:
            options["root_certificate"] = s.ca_bundle
        kwargs: dict[str, Any] = {"region": s.region, "virtual_hosted_style_request": False}
        if s.endpoint_url:
            kwargs["endpoint"] = s.endpoint_url
        if self._credentials is not None:
            kwargs["credential_provider"] = self._credentials
        else:
            assert s.access_key_id is not None and s.secret_access_key is not None
            kwargs["access_key_id"] = s.access_key_id.get_secret_value()
            kwargs["secret_access_key"] = s.secret_access_key.get_secret_value()
        return S3Store(bucket, client_options=options, **kwargs, retry_config={
            "max_retries": 1, "retry_timeout": budget,
            "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(seconds=1), "base": 2},
        })

    def put(self, bucket: str, key: str, data: bytes, *, content_type: str, metadata: dict[str, str],
            what: str) -> None:
        try:
            # Keys other than the standard headers are user metadata (x-amz-meta-*), as boto3's Metadata.
            obstore.put(self.store(bucket), key, data, use_multipart=False,
                        attributes={**metadata, "Content-Type": content_type})
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise self._classify(exc, what) from None

    def head(self, bucket: str, key: str) -> None:
        """A HEAD of the key (that it is missing is no error): the store is made and a connection opened."""
        try:
            obstore.head(self.store(bucket), key)
        except obstore.exceptions.NotFoundError:
            return
        except (obstore.exceptions.BaseError, OSError) as exc:
            status = _OBS_STATUS.search(str(exc))  # a HEAD's 404 has no body to make it a NotFoundError
            if status is not None and status.group(1) == "404":
                return
            raise self._classify(exc, f"reading s3://{bucket}/{key}") from None

    def _classify(self, exc: Exception, what: str) -> TtsError:
        """Never passes obstore's text on: only the status, the S3 code and the failure's kind."""
        text = str(exc)
        status = _OBS_STATUS.search(text)
        if status is not None:
            code = _OBS_S3_CODE.search(text)
            return _answered(int(status.group(1)), code.group(1) if code else status.group(1), what)
        kind = _OBS_KIND.search(text)
        if kind is not None and kind.group(1) == "Timeout":
            budget = self.settings.call_timeout_seconds
            return TtsError(ErrorCode.STORAGE_ERROR, f"{what}: no answer within {budget:.0f}s")
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)):
            return TtsError(ErrorCode.STORAGE_REJECTED, f"{what}: refused ({type(exc).__name__})")
        return TtsError(ErrorCode.STORAGE_ERROR,
                        f"storage unreachable: {kind.group(1) if kind else type(exc).__name__}")


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
    if not _SHA256_HEX.fullmatch(sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    stem, ext = posixpath.splitext(loc.key)
    return S3Location(loc.bucket, f"{stem}/{sha256}{ext}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "error"))
