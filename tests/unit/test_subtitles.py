"""Subtitle files parse with independent libraries (srt, webvtt-py) and their cues are the timing."""

from __future__ import annotations

import io

import srt as srtlib
import webvtt

from processor import subtitles
from processor.audio import SegmentTiming

MS = 0.0005 + 1e-9  # both formats carry milliseconds

TIMING = [
    SegmentTiming(1, "Hello there, this is the first sentence of a fairly long line of narration.", 0.0, 3.2505),
    SegmentTiming(2, "Then <b>markup</b> & an arrow --> and\n\nblank lines.", 3.45, 5.0),
    SegmentTiming(3, "你好，世界。这是一段比较长的中文句子，用来检查换行是否按字宽处理。", 5.2, 3725.5),
    SegmentTiming(4, "   ", 3726.0, 3727.0),  # nothing to show: no cue
]


def test_srt_parses_and_cue_times_are_the_segments() -> None:
    cues = list(srtlib.parse(subtitles.srt(TIMING)))
    assert len(cues) == 3
    for cue, t in zip(cues, TIMING, strict=False):
        assert abs(cue.start.total_seconds() - t.start_seconds) <= MS
        assert abs(cue.end.total_seconds() - t.end_seconds) <= MS
        assert " ".join(cue.content.split()).replace(" ", "") == " ".join(t.text.split()).replace(
            "-->", "→").replace(" ", "")
    assert all(len(line) <= subtitles.LINE_CHARS for line in cues[0].content.splitlines())
    assert cues[2].end.total_seconds() == 3725.5  # past an hour


def test_vtt_parses_and_cue_times_are_the_segments() -> None:
    cues = webvtt.from_buffer(io.StringIO(subtitles.vtt(TIMING))).captions
    assert len(cues) == 3
    for cue, t in zip(cues, TIMING, strict=False):
        assert abs(_seconds(cue.start) - t.start_seconds) <= MS
        assert abs(_seconds(cue.end) - t.end_seconds) <= MS
    assert cues[1].text.replace("\n", " ") == "Then &lt;b&gt;markup&lt;/b&gt; &amp; an arrow → and blank lines."
    assert all(len(line) <= subtitles.CJK_LINE_CHARS for line in cues[2].text.splitlines())


def test_formats_choice() -> None:
    assert subtitles.formats("none") == [] and subtitles.formats("both") == ["srt", "vtt"]


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)
