"""An honest *estimate* of how IndexTTS2 will split a text into segments, without the model.

The console runs no model, so it cannot run the worker's BPE tokenizer. It approximates upstream's
``TextTokenizer.split_segments`` (indextts/utils/front.py) instead:

1. Chinese punctuation is read as its ASCII twin (upstream's normaliser does the same): 。！？… end a
   sentence, ，、；： act like a comma.
2. Tokens are estimated: one per CJK character, one per punctuation mark, about one per five letters
   of an English word (at least one), one per digit (numbers are spelled out later, so this is low).
3. The text is cut after every sentence end and after every comma (upstream cuts at commas too, then
   glues pieces back), a piece over the budget is cut by length.
4. Adjacent pieces are merged greedily while they fit in ``max_text_tokens_per_segment``.

The result is labelled an estimate everywhere it is shown; the worker's tokenizer decides, and the
result event reports the real segment count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SENTENCE_END = frozenset(".!?。！？…")
COMMA_LIKE = frozenset(",，、;；:：")
# Closing quotes/brackets stay with the punctuation before them.
CLOSERS = frozenset("\"'”’」』）)】]")

_UNIT = re.compile(
    r"(?P<cjk>[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])"
    r"|(?P<word>[A-Za-z]+(?:'[A-Za-z]+)*)"
    r"|(?P<num>\d+(?:[.,]\d+)*)"
    r"|(?P<ellipsis>\.\.\.|…+)"
    r"|(?P<punct>[^\sA-Za-z0-9\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])"
)

NOTE = ("Estimate: the console has no model, so it approximates the worker's BPE tokenizer; the worker "
        "decides the final split (the result reports the real segment count).")


@dataclass(frozen=True)
class Segment:
    text: str
    tokens: int


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    kind: str  # "end", "comma", "closer" or "text"


def _units(text: str) -> list[_Unit]:
    out: list[_Unit] = []
    for m in _UNIT.finditer(text):
        s = m.group(0)
        if m.lastgroup == "cjk":
            out.append(_Unit(m.start(), m.end(), 1, "text"))
        elif m.lastgroup == "word":
            out.append(_Unit(m.start(), m.end(), 1 + (len(s) - 1) // 5, "text"))
        elif m.lastgroup == "num":
            out.append(_Unit(m.start(), m.end(), sum(c.isdigit() for c in s), "text"))
        elif m.lastgroup == "ellipsis":
            out.append(_Unit(m.start(), m.end(), 1, "end"))
        else:
            kind = "end" if s in SENTENCE_END else "comma" if s in COMMA_LIKE else "closer" if s in CLOSERS else "text"
            out.append(_Unit(m.start(), m.end(), 1, kind))
    return out


def estimate_tokens(text: str) -> int:
    return sum(u.tokens for u in _units(text))


def estimate_segments(text: str, max_text_tokens_per_segment: int = 120) -> list[Segment]:
    budget = max(1, int(max_text_tokens_per_segment))
    units = _units(text)
    # 1) pieces ending at sentence ends or commas (closing quotes stay attached)
    pieces: list[list[_Unit]] = []
    cur: list[_Unit] = []
    for i, u in enumerate(units):
        cur.append(u)
        nxt = units[i + 1] if i + 1 < len(units) else None
        if u.kind in ("end", "comma", "closer") and (nxt is None or nxt.kind not in ("end", "closer")) and \
                any(x.kind == "end" or x.kind == "comma" for x in cur) and sum(x.tokens for x in cur) > 2:
            pieces.append(cur)
            cur = []
    if cur:
        pieces.append(cur)
    # 2) hard-split pieces over the budget
    bounded: list[list[_Unit]] = []
    for piece in pieces:
        chunk: list[_Unit] = []
        n = 0
        for u in piece:
            if chunk and n + u.tokens > budget:
                bounded.append(chunk)
                chunk, n = [], 0
            chunk.append(u)
            n += u.tokens
        if chunk:
            bounded.append(chunk)
    # 3) greedy merge of neighbours that fit together
    merged: list[list[_Unit]] = []
    for piece in bounded:
        if merged and sum(u.tokens for u in merged[-1]) + sum(u.tokens for u in piece) <= budget:
            merged[-1] = merged[-1] + piece
        else:
            merged.append(piece)
    return [Segment(text[seg[0].start:seg[-1].end].strip(), sum(u.tokens for u in seg)) for seg in merged if seg]
