"""The default backend: answers by quoting the knowledge base, with no model at all.

It picks the sentences of the retrieved chunks that share the most informative words with
the question, quotes them in order of relevance with citation markers ([1], [2], ...) that
number the cited chunks, and says plainly that the answer is extractive. Deterministic: the
same question over the same chunks always gives the same answer, through every interface.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from agents.backends.base import ContextChunk, Generation, OnDelta, Prompt

if TYPE_CHECKING:
    from cachecore.tokenizers import Tokenizer

PREAMBLE = "Extractive answer, quoted from the knowledge base (no language model was used):"
MAX_SENTENCES = 4
# Later chunks rank lower in retrieval; this much weight is lost per rank.
RANK_DECAY = 0.15
MIN_WORDS = 3
FULL_SENTENCE_WORDS = 8
# A sentence scoring below this share of the best one is not quoted.
MIN_RELATIVE_SCORE = 0.4

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
# A sentence ends at . ! ? followed by a space and something that can start a sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9`])")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_UNDERLINE = re.compile(r"^([=*\-~^+_])\1{2,}$")

# Stopwords never make a sentence relevant on their own, but they still add a little when the
# rest matches: "the with statement" should prefer sentences that say "with".
_STOPWORDS_TEXT = """
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing during each few for from further had has have having he her
here hers him his how i if in into is it its itself just me more most my no nor not now of on once only
or other our ours own same she should so some such than that the their theirs them then there these
they this those through to too until very was we were what when where which while who whom why will
with would you your yours yourself please tell explain know want need get use using thing things way ways
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
STOPWORD_WEIGHT = 0.25


@dataclass(frozen=True)
class _Sentence:
    text: str
    chunk_rank: int
    position: int
    terms: frozenset[str]


class ExtractiveBackend:
    name = "extractive"

    def __init__(self, *, tokenizer: Tokenizer, max_sentences: int = MAX_SENTENCES) -> None:
        self.tokenizer = tokenizer
        self.max_sentences = max_sentences

    def generate(
        self, prompt: Prompt, *, max_tokens: int, temperature: float, on_delta: OnDelta | None = None
    ) -> Generation:
        """`temperature` is ignored: the answer is deterministic. `max_tokens` bounds the quoted text."""
        chosen = self._choose(prompt.question, prompt.chunks, max_tokens)
        if chosen:
            cited: list[ContextChunk] = []
            pieces = [PREAMBLE + "\n\n"]
            for n, sentence in enumerate(chosen):
                chunk = prompt.chunks[sentence.chunk_rank]
                if chunk not in cited:
                    cited.append(chunk)
                marker = cited.index(chunk) + 1
                pieces.append(f"{sentence.text} [{marker}]" + ("\n" if n < len(chosen) - 1 else ""))
            # Two chunks of one document share a title: list it once, with both markers.
            markers: dict[str, str] = {}
            for n, chunk in enumerate(cited, start=1):
                markers[chunk.title] = markers.get(chunk.title, "") + f"[{n}]"
            sources = "; ".join(f"{marks} {title}" for title, marks in markers.items())
            pieces.append(f"\n\nSources: {sources}")
        else:
            cited = []
            pieces = [
                f"I found nothing in the knowledge base about \u201c{_shorten(prompt.question)}\u201d. "
                "Try the words the documentation would use. "
                "(Extractive answer: no language model was used.)"
            ]
        if on_delta is not None:
            for piece in pieces:
                on_delta(piece)
        text = "".join(pieces)
        return Generation(
            text=text,
            cited_chunk_ids=tuple(chunk.chunk_id for chunk in cited),
            prompt_tokens=len(prompt.token_ids),
            completion_tokens=len(self.tokenizer.encode(text)),
            backend=self.name,
            prompt_ids_echoed=None,
        )

    def _choose(self, question: str, chunks: tuple[ContextChunk, ...], max_tokens: int) -> list[_Sentence]:
        wanted = _terms(question)
        minor = _words(question) & STOPWORDS
        if not wanted:
            return []
        sentences = [
            _Sentence(text, rank, position, terms | (words & minor))
            for rank, chunk in enumerate(chunks)
            for position, (text, terms, words) in enumerate(_analysed(chunk.text))
        ]
        if not sentences:
            return []
        # IDF over the retrieved sentences: a word in every sentence says little about which one answers.
        document_frequency = Counter(term for s in sentences for term in s.terms & (wanted | minor))
        idf = {t: math.log(1 + len(sentences) / (1 + df)) for t, df in document_frequency.items()}

        scored = []
        for s in sentences:
            overlap = s.terms & wanted
            if not overlap:
                continue
            relevance = sum(idf[t] for t in overlap) + STOPWORD_WEIGHT * sum(idf[t] for t in s.terms & minor)
            # Short lines (titles, "See also" references) match densely but answer little.
            brevity = min(1.0, len(_WORD.findall(s.text)) / FULL_SENTENCE_WORDS)
            score = brevity * relevance / (1 + RANK_DECAY * s.chunk_rank)
            scored.append((-score, s.chunk_rank, s.position, s))
        scored.sort(key=lambda item: item[:3])
        if scored:
            # Sentences far below the best one are filler that merely mentions a common word.
            floor = MIN_RELATIVE_SCORE * -scored[0][0]
            candidates = [s for negative, _, _, s in scored if -negative >= floor]
        else:
            # No sentence says it, but a chunk's title does ("Logging in" for "how do I log in"):
            # its opening sentences are the best answer the knowledge base has.
            titled = [rank for rank, c in enumerate(chunks) if _terms(c.title) & wanted]
            candidates = [s for s in sentences if titled and s.chunk_rank == titled[0]]

        chosen: list[_Sentence] = []
        seen: set[str] = set()
        budget = max(max_tokens, 1)
        for sentence in candidates:
            key = " ".join(sentence.text.lower().split())
            if key in seen:
                continue
            cost = len(self.tokenizer.encode(sentence.text))
            if cost > budget:
                if not chosen:  # always answer with something: the best sentence, cut to fit
                    chosen.append(_fit(sentence, budget, self.tokenizer))
                break
            chosen.append(sentence)
            seen.add(key)
            budget -= cost
            if len(chosen) == self.max_sentences:
                break
        return chosen


@lru_cache(maxsize=4096)
def _analysed(chunk_text: str) -> tuple[tuple[str, frozenset[str], frozenset[str]], ...]:
    """A chunk's quotable sentences with their terms and words, worked out once per process.

    The same chunks answer question after question (that is what the token cache is for), and
    splitting and folding them was a sixth of a short turn's CPU (py-spy, bench/throughput.py).
    """
    return tuple((text, _terms(text), _words(text)) for text in _sentences(chunk_text))


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _terms(text: str) -> frozenset[str]:
    """Content words, folded: what makes a sentence relevant to a question."""
    return frozenset(_stem(w) for w in _words(text) if w not in STOPWORDS and (len(w) > 1 or w.isdigit()))


def _stem(word: str) -> str:
    # Just enough folding that "restart", "restarts" and "restarting" match; no dictionary needed.
    word = word.removesuffix("'s")
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    # "logging" -> "logg" -> "log"; applied to every word, so "install" and "installing" still meet.
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]
    return word


def _sentences(text: str) -> list[str]:
    """Answer-worthy sentences: headings, code fences and fragments are not."""
    out: list[str] = []
    in_code = False
    for paragraph in re.split(r"\n\s*\n", text):
        lines: list[str] = []
        for line in paragraph.splitlines():
            stripped = line.strip()
            if stripped.startswith("```"):
                in_code = not in_code
                continue
            if _UNDERLINE.match(stripped):
                # reStructuredText heading: the line above was its title.
                if lines:
                    lines.pop()
                continue
            if in_code or not stripped or stripped.startswith("#") or line.startswith(("    ", "\t")):
                continue
            lines.append(_LIST_MARKER.sub("", stripped))
        # List items and lines of a paragraph join into one flow before splitting at sentence ends.
        flow = " ".join(lines)
        for sentence in _SENTENCE_END.split(flow):
            sentence = sentence.strip()
            # Not quoted: fragments, the tail of a sentence cut by a code example (lower-case start),
            # and lead-ins to a list or example that is not quoted with them (trailing colon).
            if len(_WORD.findall(sentence)) < MIN_WORDS or sentence[0].islower() or sentence.endswith(":"):
                continue
            out.append(sentence)
    return out


def _fit(sentence: _Sentence, budget: int, tokenizer: Tokenizer) -> _Sentence:
    words = sentence.text.split()
    while len(words) > 1 and len(tokenizer.encode(" ".join(words) + "\u2026")) > budget:
        words = words[: max(1, len(words) * 3 // 4)]
    return _Sentence(" ".join(words) + "\u2026", sentence.chunk_rank, sentence.position, sentence.terms)


def _shorten(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"
