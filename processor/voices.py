"""Voice presets: real reference clips stored in S3, not names mapped to nothing.

Layout: s3://<bucket>/<voices_prefix>/<name>/reference.<ext> plus voice.json with
{name, description, language, gender}. A preset resolves through the same reference cache as any URI.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from processor.errors import ErrorCode, TtsError
from processor.references import check_audio
from processor.request import S3Location
from processor.storage import Storage


@dataclass(frozen=True)
class VoicePreset:
    name: str
    description: str
    language: str
    gender: str
    reference: S3Location

    def as_dict(self) -> dict[str, str]:
        d = asdict(self)
        d["reference"] = self.reference.uri
        return d


class VoiceCatalog:
    def __init__(self, storage: Storage, bucket: str, prefix: str, ttl_seconds: float = 30.0) -> None:
        self.storage = storage
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.ttl = ttl_seconds
        self._cached: dict[str, VoicePreset] = {}
        self._at = 0.0
        self._lock = threading.Lock()

    def list(self, *, refresh: bool = False) -> dict[str, VoicePreset]:
        # The S3 listing runs outside the lock: a slow or hanging store must not make every other
        # reader (health, the prepare thread) wait on one caller's load. Two loads may overlap; the
        # later one wins, which is as fresh as either.
        with self._lock:
            if not refresh and time.monotonic() - self._at <= self.ttl:
                return dict(self._cached)
        loaded = self._load()
        with self._lock:
            self._cached, self._at = loaded, time.monotonic()
            return dict(loaded)

    def resolve(self, name: str) -> VoicePreset:
        preset = self.list().get(name) or self.list(refresh=True).get(name)
        if preset is None:
            raise TtsError(ErrorCode.UNKNOWN_VOICE, f"no voice preset named '{name}'")
        return preset

    def cached(self, name: str) -> VoicePreset | None:
        """The preset as last listed, if that listing is still fresh; never a storage call."""
        with self._lock:
            if time.monotonic() - self._at <= self.ttl:
                return self._cached.get(name)
        return None

    def add(self, name: str, audio: bytes, *, suffix: str = ".wav", description: str = "",
            language: str = "", gender: str = "") -> VoicePreset:
        check_audio(audio, f"voice '{name}'")
        base = f"{self.prefix}/{name}"
        ref = S3Location(self.bucket, f"{base}/reference{suffix}")
        self.storage.put(ref.bucket, ref.key, audio, content_type="audio/wav", metadata={})
        preset = VoicePreset(name, description, language, gender, ref)
        meta = {k: v for k, v in preset.as_dict().items() if k != "reference"}
        meta["reference_key"] = ref.key
        self.storage.put(self.bucket, f"{base}/voice.json", json.dumps(meta).encode(),
                         content_type="application/json", metadata={})
        with self._lock:
            self._at = 0.0
        return preset

    def _load(self) -> dict[str, VoicePreset]:
        presets: dict[str, VoicePreset] = {}
        for key in self.storage.list_keys(self.bucket, self.prefix + "/"):
            if not key.endswith("/voice.json"):
                continue
            try:
                raw, _ = self.storage.get_capped(self.bucket, key, 64 * 1024)
                meta = json.loads(raw)
                if not isinstance(meta, dict):
                    raise ValueError("voice.json is not an object")
                name = str(meta["name"])
                ref_key = str(meta.get("reference_key") or f"{Path(key).parent}/reference.wav")
            except (TtsError, ValueError, KeyError):
                continue  # a broken preset is skipped, not fatal to the catalog
            presets[name] = VoicePreset(name, str(meta.get("description", "")), str(meta.get("language", "")),
                                        str(meta.get("gender", "")), S3Location(self.bucket, ref_key))
        return presets
