"""LRU cache of IndexTTS2 reference-audio conditioning, keyed by the clip's content hash.

IndexTTS2 itself remembers only the last speaker and the last emotion clip, so a worker that
alternates between voices re-runs w2v-BERT, the semantic codec, CAMPPlus and the length regulator
on every request. These tensors depend only on the audio bytes (and the loaded model), so they are
kept here, bounded by entry count and by tensor bytes (they live on the GPU), with hit/miss
counters for the metrics module.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from processor.metrics import SPEAKER_CACHE

if TYPE_CHECKING:  # torch is imported lazily: importing this module must stay cheap
    from torch import Tensor

Kind = Literal["speaker", "emotion"]


def _tensor_bytes(tensor: Tensor) -> int:
    return int(tensor.numel()) * int(tensor.element_size())


@dataclass(frozen=True)
class SpeakerConditioning:
    """What ``IndexTTS2._get_speaker_conditioning`` computes from a speaker clip."""

    spk_cond_emb: Tensor  # w2v-BERT features (1, T, 1024)
    style: Tensor  # CAMPPlus speaker embedding (1, 192)
    prompt_condition: Tensor  # length-regulated semantic prompt for the s2mel CFM
    ref_mel: Tensor  # reference mel spectrogram (1, 80, frames)

    @property
    def nbytes(self) -> int:
        return sum(_tensor_bytes(t) for t in (self.spk_cond_emb, self.style, self.prompt_condition, self.ref_mel))

    def as_tuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.spk_cond_emb, self.style, self.prompt_condition, self.ref_mel


@dataclass(frozen=True)
class EmotionConditioning:
    """What ``IndexTTS2._get_emotion_conditioning`` computes from an emotion clip."""

    emo_cond_emb: Tensor  # w2v-BERT features (1, T, 1024)

    @property
    def nbytes(self) -> int:
        return _tensor_bytes(self.emo_cond_emb)


Conditioning = SpeakerConditioning | EmotionConditioning


class ConditioningCache:
    """Thread-safe LRU over both kinds, bounded by ``max_entries`` and ``max_bytes``.

    An entry larger than ``max_bytes`` on its own is returned to the caller but not stored.
    ``max_entries=0`` disables caching (every lookup is a miss).
    """

    def __init__(self, max_entries: int = 64, max_bytes: int = 512 * 1024 * 1024) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("cache bounds must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Kind, str], Conditioning] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: tuple[Kind, str]) -> bool:
        return key in self._entries

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, kind: Kind, sha256: str) -> Conditioning | None:
        key = (kind, sha256)
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                SPEAKER_CACHE.labels("miss").inc()
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            SPEAKER_CACHE.labels("hit").inc()
            return value

    def put(self, kind: Kind, sha256: str, value: Conditioning) -> None:
        size = value.nbytes
        key = (kind, sha256)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if self.max_entries == 0 or size > self.max_bytes:
                return
            self._entries[key] = value
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1

    def get_or_compute(self, kind: Kind, sha256: str, compute: Callable[[], Conditioning]) -> Conditioning:
        cached = self.get(kind, sha256)
        if cached is not None:
            return cached
        # Computed outside the lock: it runs the model, and the engine is single-threaded anyway.
        value = compute()
        self.put(kind, sha256, value)
        return value

    def clear(self) -> None:
        """Drop every entry (e.g. to give GPU memory back after an OOM); counters are kept."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }
