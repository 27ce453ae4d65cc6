"""Reference audio: resolve a voice (S3 URI or preset) to a checked local file, cached by content hash.

Downloads are size-capped, restricted to allowed buckets and must decode as audio. The disk cache is
keyed by SHA-256 (what the engine's conditioning cache keys on too) and bounded in bytes; an
(bucket, key, ETag) → hash memo skips the download entirely for a voice seen before, and the ETag
itself is asked for at most once per ``S3_REFERENCE_REVALIDATE_SECONDS`` per object (a voice
overwritten in place is used from that long after the overwrite at the latest).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import soundfile as sf

from processor.config import S3Settings
from processor.engine.base import LocalAudio
from processor.errors import ErrorCode, TtsError
from processor.request import S3Location
from processor.storage import Storage

MIN_SECONDS = 0.2
MAX_SECONDS = 60.0
# Decoded size is what costs memory and time (the engine decodes to float32 and resamples), so the
# header's rate, channels and frames are bounded before anything is decoded whole.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 96_000
MAX_CHANNELS = 2


def check_audio(data: bytes, what: str) -> None:
    """Raise INVALID_REFERENCE_AUDIO unless ``data`` decodes as a usable clip."""
    try:
        info = sf.info(io.BytesIO(data))
    # libsndfile reports bad input as several exception types (LibsndfileError, RuntimeError, TypeError);
    # whatever it is, the bytes are not a clip we can use.
    except Exception:  # noqa: BLE001 (libsndfile raises several types for bad input; all mean 'not audio')
        raise TtsError(ErrorCode.INVALID_REFERENCE_AUDIO,
                       f"{what} is not decodable audio (WAV, FLAC or OGG expected)") from None
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise TtsError(ErrorCode.INVALID_REFERENCE_AUDIO,
                       f"{what} has a sample rate of {info.samplerate} Hz; "
                       f"references must be {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise TtsError(ErrorCode.INVALID_REFERENCE_AUDIO,
                       f"{what} has {info.channels} channels; references may have at most {MAX_CHANNELS}")
    seconds = info.frames / info.samplerate
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise TtsError(ErrorCode.INVALID_REFERENCE_AUDIO,
                       f"{what} lasts {seconds:.2f}s; references must be {MIN_SECONDS}-{MAX_SECONDS:.0f}s")
    # Within these bounds a full decode is cheap (at most 96000 x 60 x 2 samples), and it catches what
    # the header cannot: a truncated or corrupt body would otherwise fail on the GPU as engine_error.
    try:
        decoded, _ = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except Exception:  # noqa: BLE001 (libsndfile raises several types for bad input; all mean 'not audio')
        raise TtsError(ErrorCode.INVALID_REFERENCE_AUDIO, f"{what} is truncated or corrupt") from None
    if len(decoded) < MIN_SECONDS * info.samplerate:
        raise TtsError(ErrorCode.INVALID_REFERENCE_AUDIO,
                       f"{what} holds {len(decoded) / info.samplerate:.2f}s of audio; its header claims {seconds:.2f}s")


class ReferenceCache:
    def __init__(self, storage: Storage, settings: S3Settings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.storage = storage
        self.settings = settings
        self.clock = clock
        self.dir = Path(settings.reference_cache_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._by_etag: OrderedDict[tuple[str, str, str], LocalAudio] = OrderedDict()
        # (bucket, key) -> (when its ETag was last checked, the clip it named then). A HEAD per request
        # costs ~4 ms of latency and ~2.5 ms of CPU (boto3) on every request; a voice used back to back
        # is checked once per S3_REFERENCE_REVALIDATE_SECONDS instead.
        self._checked: dict[tuple[str, str], tuple[float, LocalAudio]] = {}
        self._lock = threading.Lock()
        self.downloads = 0
        self.etag_checks = 0

    def fetch(self, loc: S3Location, *, check_bucket: bool = True) -> LocalAudio:
        if check_bucket and loc.bucket not in self.settings.allowed():
            raise TtsError(ErrorCode.BUCKET_NOT_ALLOWED, f"bucket '{loc.bucket}' is not in S3_ALLOWED_BUCKETS")
        recent = self.recent(loc)
        if recent is not None:
            return recent
        checked_at = self.clock()
        self.etag_checks += 1
        etag = self.storage.etag(loc.bucket, loc.key)
        if etag is None:
            raise TtsError(ErrorCode.REFERENCE_NOT_FOUND, f"{loc.uri} does not exist")
        memo = (loc.bucket, loc.key, etag)
        with self._lock:
            hit = self._by_etag.get(memo)
            if hit is not None and hit.path.exists():
                self._by_etag.move_to_end(memo)
                os.utime(hit.path)
                self._remember_check(loc, checked_at, hit)
                return hit
        data, _ = self.storage.get_capped(loc.bucket, loc.key, self.settings.max_reference_bytes)
        self.downloads += 1
        check_audio(data, loc.uri)
        local = self._store(data, Path(loc.key).suffix.lower() or ".wav")
        with self._lock:
            self._by_etag[memo] = local
            while len(self._by_etag) > 4096:
                self._by_etag.popitem(last=False)
            self._remember_check(loc, checked_at, local)
        return local

    def recent(self, loc: S3Location) -> LocalAudio | None:
        """The local copy of a clip checked within S3_REFERENCE_REVALIDATE_SECONDS, if any: what
        ``fetch`` returns without a storage call (the bucket is not checked here)."""
        with self._lock:
            recent = self._checked.get((loc.bucket, loc.key))
            if (recent is not None and self.clock() - recent[0] < self.settings.reference_revalidate_seconds
                    and recent[1].path.exists()):
                return recent[1]
        return None

    def _remember_check(self, loc: S3Location, checked_at: float, local: LocalAudio) -> None:
        self._checked[(loc.bucket, loc.key)] = (checked_at, local)
        if len(self._checked) > 4096:  # the oldest check is the least useful one to keep
            del self._checked[min(self._checked, key=lambda k: self._checked[k][0])]

    def _store(self, data: bytes, suffix: str) -> LocalAudio:
        digest = hashlib.sha256(data).hexdigest()
        path = self.dir / f"{digest}{suffix}"
        if not path.exists():
            tmp = path.with_suffix(path.suffix + f".{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                tmp.write_bytes(data)
                tmp.replace(path)  # atomic: a concurrent reader never sees a partial file
            except BaseException:
                tmp.unlink(missing_ok=True)  # a full disk must not leave litter outside the byte budget
                raise
            self._evict()
        return LocalAudio(path=path, sha256=digest)

    def _evict(self) -> None:
        files = sorted((p for p in self.dir.iterdir() if p.is_file() and not p.name.endswith(".tmp")),
                       key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files[:-1]:  # never evict the file just written
            if total <= self.settings.reference_cache_bytes:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
