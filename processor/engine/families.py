"""What each model family can do, and IndexTTS-2.5's language detection: plain data and text rules,
importable without torch (the capability check at intake and the unit tests use them)."""

from __future__ import annotations

import re

from processor.engine.base import Capabilities

# IndexTTS2 reads Chinese and English (detected per request) and has no speed control.
INDEXTTS2 = Capabilities(
    languages=("zh", "en"),
    detects_language=True,
    emotion_modes=("same_as_voice", "reference", "vector", "text"),
    speed_min=1.0,
    speed_max=1.0,
    streaming=True,
)

SPEED_MIN, SPEED_MAX = 0.5, 2.0  # duration factor; the published model stops speeding up near 0.78
INDEXTTS25 = Capabilities(
    languages=("zh", "en", "ja", "es", "ar"),
    detects_language=True,
    emotion_modes=("same_as_voice", "reference", "vector"),
    speed_min=SPEED_MIN,
    speed_max=SPEED_MAX,
    streaming=True,
)

_ARABIC = re.compile(r"[\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_SPANISH_MARKS = re.compile(r"[ñÑ¿¡áéíóúÁÉÍÓÚüÜ]")
_SPANISH_WORDS = frozenset({
    "el", "la", "los", "las", "un", "una", "unos", "unas", "de", "del", "y", "que", "en", "es", "por", "para",
    "con", "no", "se", "su", "al", "lo", "como", "más", "pero", "sus", "le", "ya", "o", "este", "esta",
    "porque", "muy", "sin", "sobre", "también", "hola", "gracias", "buenos", "buenas", "días", "qué", "cómo",
    "dónde"
})
_ENGLISH_WORDS = frozenset({
    "the", "a", "an", "of", "and", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are",
    "with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "not", "but",
    "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "each", "which", "she", "do",
    "how", "their", "if", "will", "up", "hello"
})


def detect_language(text: str, default: str = "en") -> str:
    """The text's language among IndexTTS-2.5's five, by script (and, for Latin text, by common words).

    Arabic script -> ar; any kana -> ja; Han without kana -> zh; Latin text -> es when it has Spanish
    letters or more Spanish than English function words, else en; anything else -> ``default``.
    """
    if _ARABIC.search(text):
        return "ar"
    if _KANA.search(text):
        return "ja"
    if _HAN.search(text):
        return "zh"
    if _LATIN.search(text):
        if _SPANISH_MARKS.search(text):
            return "es"
        words = re.findall(r"[a-záéíóúñü]+", text.lower())
        spanish = sum(w in _SPANISH_WORDS for w in words)
        english = sum(w in _ENGLISH_WORDS for w in words)
        if spanish > english:
            return "es"
        if english > spanish:
            return "en"
        return default if default in ("en", "es") else "en"
    return default
