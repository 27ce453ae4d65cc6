"""`tts-processor console`: a small web console to try voices, follow requests and watch the workers.

A Starlette app over :class:`~processor.console.backend.Backend` (Kafka + S3 only, no model) and a
static page (``static/``: vanilla JS + CSS, no build step). The page polls the JSON API:

    GET  /api/config              defaults, emotion names, limits, topics
    GET  /api/status              tailer state per topic (results, progress, health)
    GET  /api/voices              voice presets (VoiceCatalog in S3)
    POST /api/uploads             multipart `file` (+ `kind` voice|emotion) -> s3://<bucket>/uploads/...
    POST /api/segments            {text, max_text_tokens_per_segment} -> estimated segments
    POST /api/requests            form JSON -> validated TtsRequest published; {request_id}
    GET  /api/requests/{id}       state, latest progress, result
    GET  /api/workers             WorkerHealth view: status, GPU, model, partitions + lag, job, throughput
    GET  /api/history             recent results (all clients), newest first
    GET  /api/audio/{id}          the result's audio, proxied from S3 (Range supported)
    GET  /api/pieces/{id}/{n}     streamed segment n of a request (stream_segments), from its progress event
    GET  /api/subtitles/{id}/{f}  the result's srt or vtt file
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from processor.audio import DEFAULT_TRUE_PEAK_DBTP, FORMATS, MP3_RATES, available_formats
from processor.config import Settings
from processor.console.backend import MODEL_DEFAULTS, Backend, ConsoleError
from processor.console.segments import NOTE, estimate_segments
from processor.engine.base import EMOTION_NAMES
from processor.request import MAX_TEXT_CHARS

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
STANDARD_RATES = MP3_RATES  # the rates people ask for (telephony to video); WAV and FLAC take any in range


def _error(exc: ConsoleError) -> JSONResponse:
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)


def _bad(message: str, code: str = "invalid_request", status: int = 400) -> JSONResponse:
    return _error(ConsoleError(status, code, message))


def create_app(settings: Settings, backend: Backend | None = None) -> Starlette:
    be = backend or Backend(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        be.start()
        try:
            yield
        finally:
            await run_in_threadpool(be.stop)

    async def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def config(_: Request) -> Response:
        return JSONResponse({
            "defaults": MODEL_DEFAULTS,
            "emotion_alpha": 0.65,
            "emotion_names": list(EMOTION_NAMES),
            "emotion_vector_max": 1.2,
            "max_text_chars": MAX_TEXT_CHARS,
            "max_upload_bytes": settings.s3.max_reference_bytes,
            "bucket": settings.s3.bucket,
            "request_topic": settings.kafka.request_topic,
            "segment_note": NOTE,
            "output": {
                "formats": available_formats(),
                "rates": {f: list(info.rates) if info.rates else list(STANDARD_RATES) for f, info in FORMATS.items()},
                "loudness_presets": [-14.0, -16.0, -23.0],
                "true_peak_dbtp": DEFAULT_TRUE_PEAK_DBTP,
            },
        })

    async def status(_: Request) -> Response:
        return JSONResponse(be.status())

    async def voices(_: Request) -> Response:
        try:
            return JSONResponse({"voices": await run_in_threadpool(be.voices)})
        except ConsoleError as exc:
            return _error(exc)

    async def upload(request: Request) -> Response:
        cap = settings.s3.max_reference_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cap + 64 * 1024:
            return _bad(f"upload of {length} bytes exceeds the {cap}-byte limit", "reference_too_large", 413)
        try:
            form = await request.form(max_files=1, max_fields=4, max_part_size=64 * 1024)
        except Exception as exc:  # noqa: BLE001 (bad input from the browser becomes an HTTP error, not a 500)
            return _bad(f"not a multipart form upload: {exc}")
        file = form.get("file")
        kind = str(form.get("kind") or "voice")
        if kind not in ("voice", "emotion"):
            return _bad("kind must be voice or emotion")
        if not isinstance(file, UploadFile):
            return _bad("no file in the upload (form field 'file')")
        data = await file.read(cap + 1)
        await form.close()
        try:
            out = await run_in_threadpool(be.upload, data, file.filename or "clip", kind)
        except ConsoleError as exc:
            return _error(exc)
        return JSONResponse(out, status_code=201)

    async def segments(request: Request) -> Response:
        try:
            body = await request.json()
            text = str(body.get("text") or "")[:MAX_TEXT_CHARS * 2]
            budget = int(body.get("max_text_tokens_per_segment") or MODEL_DEFAULTS["max_text_tokens_per_segment"])
        except (ValueError, TypeError, AttributeError):
            return _bad("expected JSON {text, max_text_tokens_per_segment}")
        budget = min(600, max(20, budget))
        segs = estimate_segments(text, budget)
        return JSONResponse({"estimate": True, "note": NOTE, "max_text_tokens_per_segment": budget,
                             "total_tokens": sum(s.tokens for s in segs),
                             "segments": [{"text": s.text, "tokens": s.tokens} for s in segs]})

    async def submit(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _bad("expected a JSON body")
        if not isinstance(body, dict):
            return _bad("expected a JSON object")
        try:
            req, _ = await run_in_threadpool(be.submit, body)
        except ConsoleError as exc:
            return _error(exc)
        view = be.job_view(req.request_id)
        return JSONResponse({"request_id": req.request_id, "job": view}, status_code=202)

    async def job(request: Request) -> Response:
        view = be.job_view(request.path_params["request_id"])
        if view is None:
            return _bad("unknown request id (not submitted here and not in recent history)", "not_found", 404)
        return JSONResponse(view)

    async def workers(_: Request) -> Response:
        return JSONResponse({"workers": be.worker_views()})

    async def history(request: Request) -> Response:
        try:
            limit = max(1, min(200, int(request.query_params.get("limit", "50"))))
        except ValueError:
            return _bad("limit must be an integer")
        return JSONResponse({"results": be.history(limit)})

    async def proxy(request: Request, bucket: str, key: str, content_type: str) -> Response:
        """An S3 object streamed through the console (Range supported, so players can seek)."""
        rng = request.headers.get("range")
        extra: dict[str, Any] = {}
        m = _RANGE.match(rng.strip()) if rng else None
        if m and (m.group(1) or m.group(2)):
            extra["Range"] = f"bytes={m.group(1)}-{m.group(2)}"

        def fetch() -> Any:
            return be.storage.client.get_object(Bucket=bucket, Key=key, **extra)

        try:
            obj = await run_in_threadpool(fetch)
        except Exception as exc:  # noqa: BLE001 (bad input from the browser becomes an HTTP error, not a 500)
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            if code == "InvalidRange":
                return Response(status_code=416)
            return _bad(f"s3://{bucket}/{key}: {code}", "storage_error", 502)
        body = obj["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(64 * 1024)
            finally:
                body.close()

        headers = {"Accept-Ranges": "bytes", "Content-Length": str(obj["ContentLength"]),
                   "Cache-Control": "private, max-age=300"}
        if "ContentRange" in obj:
            headers["Content-Range"] = obj["ContentRange"]
        return StreamingResponse(chunks(), status_code=206 if "ContentRange" in obj else 200,
                                 media_type=content_type, headers=headers)

    async def audio(request: Request) -> Response:
        try:
            bucket, key, content_type = be.audio_location(request.path_params["request_id"])
        except ConsoleError as exc:
            return _error(exc)
        return await proxy(request, bucket, key, content_type)

    async def piece(request: Request) -> Response:
        try:
            bucket, key, content_type = be.piece_location(request.path_params["request_id"],
                                                          request.path_params["index"])
        except ConsoleError as exc:
            return _error(exc)
        return await proxy(request, bucket, key, content_type)

    async def subtitle(request: Request) -> Response:
        try:
            bucket, key, content_type = be.subtitle_location(request.path_params["request_id"],
                                                             request.path_params["fmt"])
        except ConsoleError as exc:
            return _error(exc)
        return await proxy(request, bucket, key, f"{content_type}; charset=utf-8")

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/api/config", config),
        Route("/api/status", status),
        Route("/api/voices", voices),
        Route("/api/uploads", upload, methods=["POST"]),
        Route("/api/segments", segments, methods=["POST"]),
        Route("/api/requests", submit, methods=["POST"]),
        Route("/api/requests/{request_id:str}", job),
        Route("/api/workers", workers),
        Route("/api/history", history),
        Route("/api/audio/{request_id:str}", audio),
        Route("/api/pieces/{request_id:str}/{index:int}", piece),
        Route("/api/subtitles/{request_id:str}/{fmt:str}", subtitle),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.backend = be
    return app


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8088) -> int:
    import uvicorn

    from processor import logs

    logs.configure(settings.log_level, settings.secrets())
    app = create_app(settings)
    log.info("console on http://%s:%d (Kafka %s, bucket %s)", host, port, settings.kafka.bootstrap_servers,
             settings.s3.bucket)
    print(f"tts console: http://{host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0
