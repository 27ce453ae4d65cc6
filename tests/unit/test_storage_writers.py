"""The two storage writers (obstore, the default, and boto3) against the same small S3 over real TCP:
what arrives (path-style key, content type, metadata, bytes), and how every kind of failure is
classified. Writes are the hot path, so they moved to obstore; this suite is what keeps its answers
the same as boto3's, whose classification the rest of the worker (retry or fail at once) relies on."""

from __future__ import annotations

import socket
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from processor.config import S3Settings
from processor.errors import ErrorCode, TtsError
from processor.storage import Storage

WRITERS = ["obstore", "boto3"]
KEY_ID, SECRET = "AKIDEXAMPLE0000", "wJalrXUtnFEMI-secret-never-shown"


class _S3:
    """Answers every PUT with ``status`` (an S3 error document when not 200) and records the requests."""

    def __init__(self) -> None:
        self.status, self.code = 200, ""
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append({"path": urllib.parse.unquote(self.path), "headers": dict(self.headers),
                                       "body": body})
                doc = b"" if outer.status == 200 else (
                    f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{outer.code}</Code>"
                    "<Message>m</Message></Error>").encode()
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(doc)))
                if outer.status == 200:
                    self.send_header("ETag", '"0"')
                self.end_headers()
                self.wfile.write(doc)

            def do_HEAD(self) -> None:  # nothing is stored here: every object is missing
                self._missing(b"")

            def do_GET(self) -> None:
                self._missing(b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code>"
                              b"<Message>m</Message></Error>")

            def _missing(self, doc: bytes) -> None:
                outer.requests.append({"method": self.command, "path": urllib.parse.unquote(self.path),
                                       "headers": dict(self.headers), "body": b""})
                self.send_response(404)
                self.send_header("Content-Length", str(len(doc)))
                self.end_headers()
                self.wfile.write(doc)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def s3() -> Iterator[_S3]:
    server = _S3()
    yield server
    server.close()


def _storage(endpoint: str, writer: str) -> Storage:
    # A generous total budget: boto3 backs off up to 2 s before retrying a 429 or 503, and a write cut
    # off by the budget says "no answer" instead of what the server answered.
    st = Storage(S3Settings(endpoint_url=endpoint, access_key_id=KEY_ID, secret_access_key=SECRET, writer=writer,
                            connect_timeout_seconds=1, read_timeout_seconds=5, call_timeout_seconds=20))
    assert (st._writer is not None) is (writer == "obstore")
    return st


@pytest.mark.parametrize("writer", WRITERS)
def test_a_write_arrives_as_boto3_would_send_it(s3: _S3, writer: str) -> None:
    s3.status, s3.requests = 200, []
    key = "tts/ü b+c%20d/0123.wav"  # unicode, space, '+' and a literal '%20' stay what they are
    data = bytes(range(256)) * 40
    _storage(s3.endpoint, writer).put("out-bucket", key, data, content_type="audio/wav",
                                      metadata={"sha256": "ab" * 32, "worker-id": "w-1"})
    [req] = s3.requests
    headers = {k.lower(): v for k, v in req["headers"].items()}
    assert req["path"] == f"/out-bucket/{key}"  # path-style addressing, the key byte for byte
    assert req["body"] == data
    assert headers["content-type"] == "audio/wav"
    assert headers["x-amz-meta-sha256"] == "ab" * 32 and headers["x-amz-meta-worker-id"] == "w-1"
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert SECRET not in str(req["headers"])


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("status,code,expect", [
    (403, "AccessDenied", ErrorCode.STORAGE_REJECTED),
    (404, "NoSuchBucket", ErrorCode.STORAGE_REJECTED),
    (400, "InvalidArgument", ErrorCode.STORAGE_REJECTED),
    (400, "RequestTimeout", ErrorCode.STORAGE_ERROR),
    (403, "RequestTimeTooSkewed", ErrorCode.STORAGE_ERROR),
    (429, "TooManyRequests", ErrorCode.STORAGE_ERROR),
    (500, "InternalError", ErrorCode.STORAGE_ERROR),
    (503, "SlowDown", ErrorCode.STORAGE_ERROR),
])
def test_a_refused_write_is_classified_alike(s3: _S3, writer: str, status: int, code: str, expect: ErrorCode
                                             ) -> None:
    s3.status, s3.code = status, code
    with pytest.raises(TtsError) as info:
        _storage(s3.endpoint, writer).put("out", "tts/a.wav", b"x" * 100, content_type="audio/wav", metadata={})
    assert info.value.code is expect
    assert info.value.retriable is (expect is ErrorCode.STORAGE_ERROR)
    assert "s3://out/tts/a.wav" in info.value.message and code in info.value.message
    assert SECRET not in info.value.message and KEY_ID not in info.value.message


@pytest.mark.parametrize("writer", WRITERS)
def test_a_write_to_nothing_listening_is_a_retriable_outage(writer: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TtsError) as info:
        _storage(f"http://127.0.0.1:{port}", writer).put("out", "tts/a.wav", b"x", content_type="audio/wav",
                                                         metadata={})
    assert info.value.code is ErrorCode.STORAGE_ERROR and info.value.retriable
    assert "unreachable" in info.value.message
    assert SECRET not in info.value.message


@pytest.mark.parametrize("writer", WRITERS)
def test_warm_up_calls_each_path_once_before_any_request(s3: _S3, writer: str, caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    """The read path (boto3: a HEAD and a GET, as a reference check and download) and the write path
    (obstore, when it writes) make their first calls at start-up, of a key that need not exist."""
    s3.status, s3.code = 200, ""
    st = _storage(s3.endpoint, writer)
    before = len(s3.requests)
    with caplog.at_level("WARNING", logger="processor.storage"):
        st.warm_up("out")
    assert not caplog.records  # a missing key is the expected answer, not a problem
    calls = [(r.get("method"), r["path"]) for r in s3.requests[before:]]
    key = "/out/.tts-processor-warm-up"
    assert calls == [("HEAD", key), ("GET", key)] + ([("HEAD", key)] if writer == "obstore" else [])
    st.put("out", "tts/after.wav", b"x", content_type="audio/wav", metadata={})
    assert s3.requests[-1]["path"] == "/out/tts/after.wav"


@pytest.mark.parametrize("writer", WRITERS)
def test_warm_up_of_unreachable_storage_only_logs(writer: str, caplog: pytest.LogCaptureFixture) -> None:
    """Storage that is down at start-up may be up by the first request: the worker starts anyway, and
    the first request reports the outage as its own retriable error."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    st = Storage(S3Settings(endpoint_url=f"http://127.0.0.1:{port}", access_key_id=KEY_ID, secret_access_key=SECRET,
                            writer=writer, connect_timeout_seconds=1, read_timeout_seconds=1,
                            call_timeout_seconds=3))
    with caplog.at_level("WARNING", logger="processor.storage"):
        st.warm_up("out")
    assert any("storage warm-up" in r.getMessage() and "unreachable" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text and KEY_ID not in caplog.text
