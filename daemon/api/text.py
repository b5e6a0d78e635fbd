"""CodeProject.AI natural-language and audio routes (seed 001, "Natural Language", "Computer Audition")."""

from __future__ import annotations

import time

from aiohttp import web

from ..vision.sound import AudioError, get_sound_task
from ..vision.text import TextError, get_text_task
from .common import CORE, ApiError, Module, envelope, json_response, parse_fraction, read_form, task_response

DEFAULT_SENTENCES = 3
MAX_SENTENCES = 1000
SOUND = Module("SoundClassifier", "Perch Sound Classifier (YAMNet)")


async def sentiment(request: web.Request) -> web.Response:
    started = time.perf_counter()
    form = await read_form(request)
    task = await get_text_task(request.app[CORE].registry)
    try:
        result = await task.sentiment(form.fields.get("text"))
    except TextError as exc:
        raise ApiError(str(exc)) from exc
    return json_response(envelope(
        request, started, message="positive" if result.is_positive else "not positive",
        is_positive=result.is_positive, positive_probability=round(result.positive_probability, 4),
        compound=round(result.compound, 4), moduleId="SentimentAnalysis", moduleName="Perch Sentiment (VADER)",
        command="sentiment", processMs=round(result.process_ms), inferenceDevice="CPU"))


async def summarize(request: web.Request) -> web.Response:
    started = time.perf_counter()
    form = await read_form(request)
    raw = form.get("num_sentences")
    try:
        count = DEFAULT_SENTENCES if raw is None else int(raw)
    except ValueError as exc:
        raise ApiError(f"num_sentences must be a whole number, got {raw!r}") from exc
    if not 1 <= count <= MAX_SENTENCES:
        raise ApiError(f"num_sentences must be between 1 and {MAX_SENTENCES}, got {count}")
    task = await get_text_task(request.app[CORE].registry)
    try:
        result = await task.summary(form.fields.get("text"), count)
    except TextError as exc:
        raise ApiError(str(exc)) from exc
    note = "" if count <= result.total_sentences else f" (the text has only {result.total_sentences})"
    return json_response(envelope(
        request, started, message=f"{result.sentences} of {result.total_sentences} sentences{note}",
        summary=result.summary, sentences=result.sentences, totalSentences=result.total_sentences,
        moduleId="TextSummary", moduleName="Perch Text Summary", command="summarize",
        processMs=round(result.process_ms), inferenceDevice="CPU"))


async def sound_classify(request: web.Request) -> web.Response:
    started = time.perf_counter()
    core = request.app[CORE]
    form = await read_form(request)
    data = form.file("sound", "file", "audio")
    if not data:
        raise ApiError("no sound was sent: expected a WAV file in the form field 'sound'")
    min_conf = parse_fraction(form.get("min_confidence"), 0.4)
    task = await get_sound_task(core.registry)
    try:
        result = await task.classify(data, min_conf)
    except AudioError as exc:
        raise ApiError(str(exc)) from exc
    return task_response(request, started, SOUND, "classify", task.loaded.inference_device,
                         inference_ms=result.inference_ms, process_ms=result.process_ms,
                         message=f"{result.label} ({result.seconds:.1f} s of audio)", label=result.label,
                         confidence=round(result.confidence, 4))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/text/sentiment", sentiment)
    app.router.add_post("/v1/text/summarize", summarize)
    app.router.add_post("/v1/sound/classify", sound_classify)
