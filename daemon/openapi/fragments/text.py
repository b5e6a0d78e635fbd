"""CodeProject.AI natural-language and audio routes."""

from __future__ import annotations

from typing import Any

from ..parts import binary, boolean, codeproject, envelope, form_body, form_text, fraction, integer, number, string

ORDER = 40
TAG = "Text and sound (CodeProject.AI)"
TAGS = [{"name": TAG, "description": "Sentiment (VADER), extractive summaries, sound classes (YAMNet)."}]

TEXT = form_text("The text (UTF-8)")

PATHS: dict[str, Any] = {
    "/v1/text/sentiment": {"post": codeproject(
        "Is the text positive", TAG,
        envelope({"is_positive": boolean(), "positive_probability": number(minimum=0, maximum=1),
                  "compound": number(minimum=-1, maximum=1)}, ["is_positive", "positive_probability"]),
        body=form_body({"text": TEXT}, ["text"]))},
    "/v1/text/summarize": {"post": codeproject(
        "The most telling sentences of the text", TAG,
        envelope({"summary": string(), "sentences": integer(), "totalSentences": integer()},
                 ["summary", "sentences", "totalSentences"]),
        body=form_body({"text": TEXT, "num_sentences": form_text("How many sentences (1..1000, default 3)",
                                                                 pattern="^[0-9]{1,4}$")}, ["text"]))},
    "/v1/sound/classify": {"post": codeproject(
        "What the recording sounds like (AudioSet classes)", TAG,
        envelope({"label": string('An AudioSet class, or "unknown" below min_confidence'),
                  "confidence": number()}, ["label", "confidence"]),
        body=form_body({"sound": binary("A WAV file: PCM 8/16/24/32-bit or float, any rate, mono or stereo "
                                        "(also accepted as `file` or `audio`)"),
                        "min_confidence": fraction("Below it the label is unknown", 0.4)}, ["sound"]), fuzz=8)},
}
