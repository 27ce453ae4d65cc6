"""ConditioningCache bounds and counters (pure: tiny tensors, no model)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from processor.engine.conditioning import ConditioningCache, EmotionConditioning, SpeakerConditioning


def _speaker(floats: int) -> SpeakerConditioning:
    # 4 tensors; total float32 bytes = 4 * floats * 4
    return SpeakerConditioning(*(torch.zeros(floats) for _ in range(4)))


def _emotion(floats: int) -> EmotionConditioning:
    return EmotionConditioning(torch.zeros(floats))


def test_nbytes_counts_every_tensor() -> None:
    assert _speaker(10).nbytes == 4 * 10 * 4
    assert EmotionConditioning(torch.zeros(3, dtype=torch.float16)).nbytes == 6


def test_hits_and_misses() -> None:
    cache = ConditioningCache(max_entries=4, max_bytes=10_000)
    assert cache.get("speaker", "a") is None
    value = _speaker(1)
    cache.put("speaker", "a", value)
    assert cache.get("speaker", "a") is value
    assert cache.get("emotion", "a") is None  # kinds do not collide
    assert (cache.hits, cache.misses) == (1, 2)


def test_get_or_compute_computes_once() -> None:
    cache = ConditioningCache()
    calls: list[int] = []

    def compute() -> EmotionConditioning:
        calls.append(1)
        return _emotion(2)

    first = cache.get_or_compute("emotion", "x", compute)
    second = cache.get_or_compute("emotion", "x", compute)
    assert first is second and len(calls) == 1
    assert (cache.hits, cache.misses) == (1, 1)


def test_entry_bound_evicts_least_recently_used() -> None:
    cache = ConditioningCache(max_entries=2, max_bytes=10**9)
    cache.put("speaker", "a", _speaker(1))
    cache.put("speaker", "b", _speaker(1))
    cache.get("speaker", "a")  # a is now most recent
    cache.put("speaker", "c", _speaker(1))
    assert ("speaker", "b") not in cache
    assert ("speaker", "a") in cache and ("speaker", "c") in cache
    assert cache.evictions == 1 and len(cache) == 2


def test_byte_bound_evicts_until_it_fits() -> None:
    cache = ConditioningCache(max_entries=100, max_bytes=1000)
    for key in "abc":
        cache.put("emotion", key, _emotion(100))  # 400 bytes each
    assert cache.bytes <= 1000
    assert len(cache) == 2 and ("emotion", "a") not in cache
    cache.put("emotion", "big", _emotion(200))  # 800 bytes: only it fits
    assert len(cache) == 1 and cache.bytes == 800


def test_oversized_entry_is_not_stored() -> None:
    cache = ConditioningCache(max_entries=10, max_bytes=100)
    cache.put("emotion", "small", _emotion(10))
    cache.put("emotion", "huge", _emotion(1000))
    assert ("emotion", "huge") not in cache
    assert ("emotion", "small") in cache  # nothing was evicted for it
    value = cache.get_or_compute("emotion", "huge2", lambda: _emotion(1000))
    assert value.nbytes == 4000 and len(cache) == 1


def test_replacing_a_key_keeps_bytes_right() -> None:
    cache = ConditioningCache(max_entries=10, max_bytes=10_000)
    cache.put("speaker", "a", _speaker(10))
    cache.put("speaker", "a", _speaker(20))
    assert len(cache) == 1 and cache.bytes == _speaker(20).nbytes


def test_disabled_and_clear() -> None:
    off = ConditioningCache(max_entries=0)
    off.put("speaker", "a", _speaker(1))
    assert len(off) == 0 and off.get("speaker", "a") is None
    cache = ConditioningCache()
    cache.put("speaker", "a", _speaker(1))
    cache.get("speaker", "a")
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0
    assert cache.hits == 1  # counters survive a clear
    assert cache.stats()["entries"] == 0


def test_bounds_must_be_non_negative() -> None:
    with pytest.raises(ValueError):
        ConditioningCache(max_entries=-1)


@pytest.mark.engine
def test_engine_keeps_several_voices(engine: Any, make_spec: Callable[..., Any], voice: Any, other_voice: Any) -> None:
    """Unlike upstream's one-entry cache, alternating voices stay cached (keyed by content hash)."""
    engine.synthesize(make_spec(voice=voice))
    engine.synthesize(make_spec(voice=other_voice))
    hits, misses = engine.cache.hits, engine.cache.misses
    again_a = engine.synthesize(make_spec(voice=voice))
    again_b = engine.synthesize(make_spec(voice=other_voice))
    assert (engine.cache.hits, engine.cache.misses) == (hits + 4, misses)  # speaker + emotion, twice
    assert "conditioning" not in again_a.stage_seconds and "conditioning" not in again_b.stage_seconds
