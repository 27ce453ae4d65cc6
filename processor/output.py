"""What a finished job stores: the audio in the requested form, its segment timing, its subtitles,
and, for ``stream_segments`` requests, each segment as it finishes.

All of it is CPU work (resampling, loudness, encoding) and storage I/O, so none of it runs on the
GPU thread: the final render runs in the finish stage, and streamed pieces on their own thread
(``SegmentStreamer``), fed by the progress callback, which only hands a chunk over.

Keys come from ``storage.content_addressed`` like the final audio's, so a piece or a subtitle file
written by a late or redone attempt can only add a sibling, never change what an event names:

    <prefix>/<request_id>/<sha256>.<ext>                       the audio (named by the result)
    <prefix>/<request_id>/<sha256>.srt | .vtt                  subtitles (named by the result)
    <prefix>/<request_id>/segment-NNNN/<sha256>.<ext>          streamed pieces (named by progress events)
"""

from __future__ import annotations

import logging
import posixpath
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from processor import subtitles
from processor.audio import (
    EncodedAudio,
    SegmentTiming,
    Span,
    integrated_loudness,
    render,
    timeline,
)
from processor.events import SegmentPiece
from processor.request import S3Location, TtsRequest
from processor.storage import content_addressed

log = logging.getLogger(__name__)

HISTORY_SECONDS = 60.0  # how much of a streamed job's audio so far sets a piece's loudness gain


@dataclass(frozen=True)
class SubtitleFile:
    format: str
    data: bytes
    content_type: str


@dataclass(frozen=True)
class Rendered:
    audio: EncodedAudio
    timing: list[SegmentTiming]
    subtitles: list[SubtitleFile]


def render_job(req: TtsRequest, pcm: npt.NDArray[np.int16], engine_rate: int, spans: Sequence[Span]) -> Rendered:
    """The final audio as the request asks, with the timing of every segment in it and its subtitles."""
    audio = render(pcm, engine_rate, req.output_spec)
    timing = timeline(spans, engine_rate, audio.sample_rate)
    files = [SubtitleFile(fmt, subtitles.render(fmt, timing), subtitles.CONTENT_TYPES[fmt])
             for fmt in subtitles.formats(req.subtitles)]
    return Rendered(audio, timing, files)


def subtitle_location(base: S3Location, fmt: str, sha256: str) -> S3Location:
    """``<prefix>/<request_id>.<ext>`` (the audio's base key) -> ``<prefix>/<request_id>/<sha256>.<fmt>``."""
    stem = posixpath.splitext(base.key)[0]
    return content_addressed(S3Location(base.bucket, f"{stem}.{fmt}"), sha256)


def segment_location(base: S3Location, index: int, sha256: str) -> S3Location:
    """``<prefix>/<request_id>.<ext>`` -> ``<prefix>/<request_id>/segment-NNNN/<sha256>.<ext>``."""
    stem, ext = posixpath.splitext(base.key)
    return content_addressed(S3Location(base.bucket, f"{stem}/segment-{index:04d}{ext}"), sha256)


# ------------------------------------------------------------------------------------ streaming

Store = Callable[[S3Location, EncodedAudio], None]
Announce = Callable[[Span, SegmentTiming, SegmentPiece | None], None]


@dataclass(eq=False)
class JobStream:
    """One job's streamed pieces. ``add`` runs on the GPU thread and only queues; the streamer's
    thread renders, stores and announces; ``wait`` (finish stage) returns once every piece is out."""

    req: TtsRequest
    base: S3Location  # the audio's base key (before content addressing), already checked against policy
    engine_rate: int
    store: Store
    announce: Announce
    _streamer: SegmentStreamer
    pieces: list[SegmentPiece] = field(default_factory=list)
    failed: str | None = None
    _pending: int = 0
    _history: list[npt.NDArray[np.int16]] = field(default_factory=list)
    _offset_frames: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, span: Span, chunk: npt.NDArray[np.int16]) -> None:
        with self._cond:
            self._pending += 1
        self._streamer.submit(self, span, chunk)

    def wait(self, timeout: float) -> bool:
        """True when every piece handed over so far was stored and announced (or given up on)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def _process(self, span: Span, chunk: npt.NDArray[np.int16]) -> None:
        piece: SegmentPiece | None = None
        try:
            if self.failed is None:
                piece = self._piece(span, chunk)
        except Exception as exc:  # a piece is informational: the final audio does not depend on it  # noqa: BLE001
            self.failed = f"{type(exc).__name__}: {exc}"
            log.warning("streamed segment %d of %s not stored: %s", span.index, self.req.request_id, self.failed)
        try:
            [timing] = timeline([span], self.engine_rate, self.req.output_spec.rate_for(self.engine_rate))
            self.announce(span, timing, piece)  # without a piece after a failure: text and timing still go out
        except Exception as exc:  # noqa: BLE001 (a streamed piece is informational; the final audio does not depend on it)
            log.warning("progress of segment %d of %s not announced: %s", span.index, self.req.request_id, exc)
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def _piece(self, span: Span, chunk: npt.NDArray[np.int16]) -> SegmentPiece:
        spec = self.req.output_spec
        measured = None
        if spec.loudness_lufs is not None:
            # The final gain depends on the whole job; the job so far (its last minute, so a long job
            # costs the same per piece) is the best estimate of it, so consecutive pieces play at a
            # steady level close to the final file's.
            self._history.append(chunk)
            keep = HISTORY_SECONDS * self.engine_rate
            while len(self._history) > 1 and sum(len(c) for c in self._history[1:]) >= keep:
                self._history.pop(0)
            so_far = np.concatenate(self._history).astype(np.float32) / np.float32(32768.0)
            measured = integrated_loudness(so_far, self.engine_rate)
        audio = render(chunk, self.engine_rate, spec, measured_lufs=measured)
        loc = segment_location(self.base, span.index, audio.sha256)
        self.store(loc, audio)
        piece = SegmentPiece(loc, audio, self._offset_frames / audio.sample_rate)
        self._offset_frames += audio.frames
        self.pieces.append(piece)
        return piece


class SegmentStreamer:
    """The thread that stores and announces streamed pieces, in the order they were handed over."""

    def __init__(self) -> None:
        self._q: queue.Queue[tuple[JobStream, Span, npt.NDArray[np.int16]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def open(self, req: TtsRequest, base: S3Location, engine_rate: int, store: Store, announce: Announce
             ) -> JobStream:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tts-segments", daemon=True)
            self._thread.start()
        return JobStream(req, base, engine_rate, store, announce, self)

    def submit(self, stream: JobStream, span: Span, chunk: npt.NDArray[np.int16]) -> None:
        self._q.put((stream, span, chunk))

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None)

    def _loop(self) -> None:
        while (item := self._q.get()) is not None:
            stream, span, chunk = item
            stream._process(span, chunk)
