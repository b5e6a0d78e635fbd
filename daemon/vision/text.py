"""Text: sentiment (VADER lexicon) and extractive summaries (the sentences that carry the text's frequent words).

Both are cheap, but a long text must not stall the event loop, so they run on the task's worker threads too.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass

from ..registry import LoadedTask, ModelRegistry, ModelUnavailable

TASK = "text"
LEXICON_MODEL = "vader"
EMOJI_MODEL = "vader_emoji"
MAX_TEXT = 1_000_000  # characters

# Sentence ends: . ! ? (and their CJK forms) followed by space or the end, not inside "e.g." style abbreviations.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9À-ÖØ-Þ\u4e00-\u9fff])")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
# Words that occur everywhere and say nothing about a text's subject.
_STOPWORD_TEXT = """
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her here
hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off
on once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when where
which while who whom why will with would you your yours yourself yourselves one many much may might must shall
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


class TextError(ValueError):
    """Bad text input; the message is for the client."""


@dataclass(frozen=True, slots=True)
class Sentiment:
    is_positive: bool
    positive_probability: float
    compound: float
    process_ms: float


@dataclass(frozen=True, slots=True)
class Summary:
    summary: str
    sentences: int  # in the summary
    total_sentences: int
    process_ms: float


def split_sentences(text: str) -> list[str]:
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip())]
    return [p for p in parts if p]


def summarize(text: str, num_sentences: int) -> tuple[list[str], int]:
    """The `num_sentences` sentences with the highest mean frequency of content words, in their original order."""
    sentences = split_sentences(text)
    if num_sentences >= len(sentences):
        return sentences, len(sentences)
    words = [[w.lower() for w in _WORD.findall(s)] for s in sentences]
    freq = Counter(w for ws in words for w in ws if w not in STOPWORDS)
    top = max(freq.values(), default=1)

    def score(i: int) -> float:
        content = [w for w in words[i] if w not in STOPWORDS]
        # Mean rather than sum: long sentences must not win merely by being long.
        return sum(freq[w] / top for w in content) / (len(content) ** 0.5) if content else 0.0

    chosen = sorted(sorted(range(len(sentences)), key=score, reverse=True)[:num_sentences])
    return [sentences[i] for i in chosen], len(sentences)


class TextWorker:
    device = "cpu"

    def close(self) -> None:
        pass


class TextTask:
    def __init__(self, loaded: LoadedTask, analyzer: object) -> None:
        self.loaded = loaded
        self.analyzer = analyzer  # vaderSentiment's analyzer: read-only dictionaries, safe across threads

    @staticmethod
    def check(text: str | None) -> str:
        if text is None or not text.strip():
            raise TextError("text is required and must not be empty")
        if len(text) > MAX_TEXT:
            raise TextError(f"text is longer than {MAX_TEXT} characters")
        return text

    def _sentiment(self, text: str) -> Sentiment:
        t0 = time.perf_counter()
        compound = float(self.analyzer.polarity_scores(text)["compound"])  # type: ignore[attr-defined]
        # VADER's compound score is -1..1; the route speaks in a probability of "positive".
        probability = (compound + 1.0) / 2.0
        ms = (time.perf_counter() - t0) * 1000
        self.loaded.record(ms)
        # VADER's own cut-off for "positive"; neutral text (|compound| < 0.05) is not called positive.
        return Sentiment(compound >= 0.05, probability, compound, ms)

    def _summary(self, text: str, num_sentences: int) -> Summary:
        t0 = time.perf_counter()
        chosen, total = summarize(text, num_sentences)
        ms = (time.perf_counter() - t0) * 1000
        self.loaded.record(ms)
        return Summary(" ".join(chosen), len(chosen), total, ms)

    async def sentiment(self, text: str | None) -> Sentiment:
        checked = self.check(text)
        return await self.loaded.run(lambda _: self._sentiment(checked))

    async def summary(self, text: str | None, num_sentences: int) -> Summary:
        checked = self.check(text)
        if num_sentences < 1:
            raise TextError("num_sentences must be at least 1")
        return await self.loaded.run(lambda _: self._summary(checked, num_sentences))


def _build(registry: ModelRegistry) -> LoadedTask:
    lexicon, emoji = registry.model_file(LEXICON_MODEL), registry.model_file(EMOJI_MODEL)
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        # Absolute paths: the analyzer joins them onto its own folder, which keeps an absolute path as it is.
        analyzer = SentimentIntensityAnalyzer(lexicon_file=str(lexicon), emoji_lexicon=str(emoji))
    except (ImportError, OSError) as exc:
        raise ModelUnavailable(f"sentiment analysis is unavailable: {exc}") from exc
    workers = [TextWorker() for _ in range(registry.task_workers())]
    loaded = LoadedTask(TASK, registry.task_pool(TASK, list(workers)), "cpu", [lexicon.name, emoji.name])
    loaded.engine = TextTask(loaded, analyzer)
    return loaded


async def get_text_task(registry: ModelRegistry) -> TextTask:
    loaded = await registry.get_task(TASK, lambda: _build(registry),
                                     {LEXICON_MODEL: 1})
    task: TextTask = loaded.engine
    return task
