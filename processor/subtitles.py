"""SubRip (.srt) and WebVTT (.vtt) files from a job's segment timing: one cue per segment.

Cue times are the segment's speech in the stored audio, as the result's ``segment_timing`` reports
them, rounded to the millisecond both formats use. Text is the text the engine synthesized, wrapped
into lines a player can show; characters that would end a cue or start markup are made harmless.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections.abc import Sequence

from processor.audio import SegmentTiming

LINE_CHARS = 42  # the usual subtitle line length (Netflix, BBC guidelines) for Latin scripts
CJK_LINE_CHARS = 16  # CJK glyphs are twice as wide

CONTENT_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt"}


def formats(subtitles: str) -> list[str]:
    """The request's ``subtitles`` choice as the files to write."""
    return {"none": [], "srt": ["srt"], "vtt": ["vtt"], "both": ["srt", "vtt"]}[subtitles]


def srt(timing: Sequence[SegmentTiming]) -> str:
    cues = []
    for n, t in enumerate(_cues(timing), start=1):
        cues.append(f"{n}\n{_stamp(t.start_seconds, ',')} --> {_stamp(t.end_seconds, ',')}\n{_lines(t.text)}\n")
    return "\n".join(cues)


def vtt(timing: Sequence[SegmentTiming]) -> str:
    cues = ["WEBVTT\n"]
    for t in _cues(timing):
        text = _lines(t.text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        cues.append(f"{t.index}\n{_stamp(t.start_seconds, '.')} --> {_stamp(t.end_seconds, '.')}\n{text}\n")
    return "\n".join(cues)


def render(fmt: str, timing: Sequence[SegmentTiming]) -> bytes:
    return (srt(timing) if fmt == "srt" else vtt(timing)).encode("utf-8")


def _cues(timing: Sequence[SegmentTiming]) -> list[SegmentTiming]:
    # A cue needs some text and a positive duration; an empty or zero-length segment has nothing to show.
    return [t for t in timing if _clean(t.text) and round(t.end_seconds * 1000) > round(t.start_seconds * 1000)]


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _clean(text: str) -> str:
    # A blank line ends a cue in both formats and "-->" starts a timing line: neither may survive.
    return re.sub(r"\s+", " ", text.replace("-->", "→")).strip()


def _lines(text: str) -> str:
    text = _clean(text)
    wide = sum(1 for c in text if unicodedata.east_asian_width(c) in "WF")
    width = CJK_LINE_CHARS if wide > len(text) // 2 else LINE_CHARS
    return "\n".join(textwrap.wrap(text, width=width, break_long_words=True, break_on_hyphens=False))
