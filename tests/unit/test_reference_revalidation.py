"""The reference cache asks S3 for an object's ETag at most once per S3_REFERENCE_REVALIDATE_SECONDS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devstack.clips import voice_clip
from processor.config import S3Settings
from processor.references import ReferenceCache
from processor.request import S3Location


class FakeStorage:
    """Just what ReferenceCache calls: etag() and get_capped(), counted."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.heads = 0
        self.gets = 0

    def etag(self, bucket: str, key: str) -> str | None:
        self.heads += 1
        obj = self.objects.get((bucket, key))
        return obj[1] if obj else None

    def get_capped(self, bucket: str, key: str, max_bytes: int) -> tuple[bytes, str]:
        self.gets += 1
        return self.objects[(bucket, key)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, revalidate: float) -> tuple[ReferenceCache, FakeStorage, Clock]:
    storage, clock = FakeStorage(), Clock()
    settings = S3Settings(bucket="b", reference_cache_dir=str(tmp_path), reference_revalidate_seconds=revalidate)
    storage.objects[("b", "voices/a.wav")] = (voice_clip(seconds=1.0, seed=1), '"etag-1"')
    cache: Any = ReferenceCache(storage, settings, clock=clock)  # type: ignore[arg-type]
    return cache, storage, clock


LOC = S3Location("b", "voices/a.wav")


def test_a_voice_used_back_to_back_is_checked_once_within_the_interval(tmp_path: Path) -> None:
    cache, storage, clock = make(tmp_path, revalidate=5.0)
    first = cache.fetch(LOC)
    clock.now += 4.9
    assert cache.fetch(LOC) == first
    assert (storage.heads, storage.gets) == (1, 1)


def test_after_the_interval_the_etag_is_checked_again_and_an_overwrite_is_picked_up(tmp_path: Path) -> None:
    cache, storage, clock = make(tmp_path, revalidate=5.0)
    first = cache.fetch(LOC)
    storage.objects[("b", "voices/a.wav")] = (voice_clip(seconds=1.0, seed=2), '"etag-2"')
    clock.now += 1.0
    assert cache.fetch(LOC) == first  # within the interval: the clip checked a second ago
    clock.now += 4.0
    second = cache.fetch(LOC)
    assert second.sha256 != first.sha256
    assert (storage.heads, storage.gets) == (2, 2)


def test_zero_checks_on_every_request(tmp_path: Path) -> None:
    cache, storage, _ = make(tmp_path, revalidate=0.0)
    cache.fetch(LOC)
    cache.fetch(LOC)
    assert (storage.heads, storage.gets) == (2, 1)  # the ETag memo still saves the download


def test_a_deleted_cache_file_is_fetched_again(tmp_path: Path) -> None:
    cache, storage, _ = make(tmp_path, revalidate=5.0)
    cache.fetch(LOC).path.unlink()
    cache.fetch(LOC)
    assert (storage.heads, storage.gets) == (2, 2)
