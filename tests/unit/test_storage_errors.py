"""Storage error policy: 4xx is permanent with its own code at once, bad keys never reach the wire,
every call has a total time budget. boto3's Stubber stands in for the server's answers here; the
bad-input corpus (tests/integration/test_bad_input.py) sends the same keys to the real S3."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import pytest
from botocore.stub import Stubber

from processor.config import S3Settings
from processor.errors import ErrorCode, TtsError
from processor.storage import Storage, s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@functools.cache
def _client() -> tuple[S3Settings, S3Client]:
    # Built once (a boto3 client takes ~0.1 s to load its service model); every test gets its own
    # Stubber on it, active only inside the test's ``with stub``.
    s = S3Settings(endpoint_url="http://127.0.0.1:9", access_key_id="k" * 8, secret_access_key="s" * 16)
    return s, s3_client(s)


def storage() -> tuple[Storage, Stubber]:
    s, client = _client()
    return Storage(s, client), Stubber(client)


@pytest.mark.parametrize("status,code,expect", [
    (400, "InvalidArgument", ErrorCode.STORAGE_REJECTED),
    (400, "KeyTooLongError", ErrorCode.STORAGE_REJECTED),
    (403, "AccessDenied", ErrorCode.STORAGE_REJECTED),
    (400, "RequestTimeout", ErrorCode.STORAGE_ERROR),
    (429, "TooManyRequests", ErrorCode.STORAGE_ERROR),
    (403, "RequestTimeTooSkewed", ErrorCode.STORAGE_ERROR),
    (500, "InternalError", ErrorCode.STORAGE_ERROR),
    (503, "SlowDown", ErrorCode.STORAGE_ERROR),
])
def test_issue11_defect5_client_errors_are_permanent_unless_s3_says_they_heal(
        status: int, code: str, expect: ErrorCode) -> None:
    st, stub = storage()
    stub.add_client_error("head_object", service_error_code=code, http_status_code=status)
    with stub, pytest.raises(TtsError) as info:
        st.etag("refs", "a.wav")
    assert info.value.code is expect
    assert info.value.retriable is (expect is ErrorCode.STORAGE_ERROR)


def test_missing_object_is_reference_not_found() -> None:
    st, stub = storage()
    stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
    stub.add_client_error("head_object", service_error_code="NoSuchKey", http_status_code=404)
    with stub:
        assert st.etag("refs", "a.wav") is None
        with pytest.raises(TtsError) as info:
            st.get_capped("refs", "a.wav", 1000)
    assert info.value.code is ErrorCode.REFERENCE_NOT_FOUND


def test_put_refused_is_permanent() -> None:
    st, stub = storage()
    stub.add_client_error("put_object", service_error_code="NoSuchBucket", http_status_code=404)
    with stub, pytest.raises(TtsError) as info:
        st.put("out", "tts/a.wav", b"x", content_type="audio/wav", metadata={})
    assert info.value.code is ErrorCode.STORAGE_REJECTED and not info.value.retriable


@pytest.mark.parametrize("key", ["a/../b.wav", "a//b.wav", "a\x00b", "/abs", "dir/", "k" * 1025, "a/./b"])
def test_bad_keys_are_refused_before_any_call(key: str) -> None:
    st, stub = storage()  # no answers queued: any call that reached the client would fail differently
    with stub:
        for call in (lambda: st.etag("refs", key), lambda: st.get_capped("refs", key, 10),
                     lambda: st.put("refs", key, b"", content_type="x", metadata={})):
            with pytest.raises(TtsError) as info:
                call()
            assert info.value.code is ErrorCode.STORAGE_REJECTED and not info.value.retriable
        stub.assert_no_pending_responses()


class _Hanging:
    """A client whose server never answers (what a socket that trickles bytes looks like to us)."""

    def head_object(self, **kw: Any) -> dict[str, Any]:
        time.sleep(1.5)
        return {"ETag": "x"}


def test_every_call_has_a_total_time_budget() -> None:
    s = S3Settings(call_timeout_seconds=0.1)
    st = Storage(s, _Hanging())  # type: ignore[arg-type]
    t0 = time.monotonic()
    with pytest.raises(TtsError) as info:
        st.etag("refs", "a.wav")
    assert time.monotonic() - t0 < 2
    assert info.value.code is ErrorCode.STORAGE_ERROR and info.value.retriable


def test_client_has_connect_and_read_timeouts() -> None:
    client = s3_client(S3Settings(connect_timeout_seconds=1.5, read_timeout_seconds=7))
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (1.5, 7)


class _SlowServer:
    """A TCP server that accepts and then answers one byte at a time, every ``gap`` seconds, forever:
    what an S3 that hangs rather than refuses looks like. Each read succeeds, so only a total budget
    ends the call."""

    def __init__(self, gap: float) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.gap = gap
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: Any) -> None:
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nx-slow: " + b"a" * 10_000:
                if self.stop.wait(self.gap):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _trickled(server: _SlowServer, writer: str = "obstore") -> Storage:
    """Storage whose per-read timeout (0.5 s) a byte every 0.03 s never trips: only the 0.8 s total can."""
    return Storage(S3Settings(endpoint_url=f"http://127.0.0.1:{server.port}", access_key_id="k" * 8,
                              secret_access_key="s" * 16, connect_timeout_seconds=1, read_timeout_seconds=0.5,
                              call_timeout_seconds=0.8, writer=writer))


def test_a_storage_server_that_trickles_is_cut_off_by_the_total_budget() -> None:
    server = _SlowServer(gap=0.03)
    try:
        st = _trickled(server)
        t0 = time.monotonic()
        with pytest.raises(TtsError) as info:
            st.etag("refs", "a.wav")
        took = time.monotonic() - t0
    finally:
        server.close()
    assert info.value.code is ErrorCode.STORAGE_ERROR and info.value.retriable
    assert 0.75 < took < 1.6  # the per-read timeout (0.5 s) never fired: every read got a byte in 0.03 s



@pytest.mark.parametrize("writer", ["obstore", "boto3"])
def test_a_write_to_a_storage_server_that_trickles_is_cut_off_by_the_total_budget(writer: str) -> None:
    """Writes run on the caller's thread (no hand-off). obstore's total timeout ends them; boto3's are
    cut off by the deadline watchdog, which shuts their socket down. Cut off mid-header, the trickled
    response would even parse as a 200: it must still fail."""
    server = _SlowServer(gap=0.03)
    try:
        st = _trickled(server, writer)
        if writer == "boto3":
            assert st._direct_writes  # botocore still lets us note its connections
        t0 = time.monotonic()
        with pytest.raises(TtsError) as info:
            st.put("out", "tts/a.wav", b"x" * 1000, content_type="audio/wav", metadata={})
        took = time.monotonic() - t0
    finally:
        server.close()
    assert info.value.code is ErrorCode.STORAGE_ERROR and info.value.retriable
    assert "no answer within" in info.value.message
    assert 0.75 < took < 1.6  # the per-read timeout (0.5 s) never fired: every read got a byte in 0.03 s
