"""Custom detection models: files in the custom-model directory, each described by a small sidecar YAML.

    <custom_model_dir>/          (settings.custom_model_dir, default <state_dir>/custom-models)
      ipcam-cars.onnx
      ipcam-cars.txt              labels, one per line (or `labels: [car, truck]` inline)
      ipcam-cars.yaml             decoder: yolov8 | yolox | ssd_postprocess | rknn_*  (see vision/decoders.py)
                                  labels_file: ipcam-cars.txt
                                  input: {size: [640, 640], layout: NCHW, color: RGB, resize: letterbox,
                                          align: center, normalize: unit}
                                  file: ipcam-cars.onnx    (optional: <name>.onnx or <name>.tflite)
                                  name: Cars at the gate   (optional display name)

`perchd models import FILE.onnx --labels FILE` writes all three from an ONNX export (it reads the tensor shapes to
fill in the input spec and the decoder). The model name is the file stem and must be a plain identifier: routes
use it as `/v1/vision/custom/<name>`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from .manifest import InputSpec, LabelSpec, Manifest, ModelEntry, Variant

log = logging.getLogger("perch.custom")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MODEL_SUFFIXES = (".onnx", ".tflite", ".hef")
# A compiled Hailo model runs only on the Hailo (`perchd models import FILE.hef`); everything else on the CPU.
SUFFIX_ACCELERATOR = {".hef": "hailo"}
LABEL_SET_PREFIX = "custom:"


class CustomModelError(ValueError):
    """A custom model or its sidecar is unusable; the message names the file and the problem."""


def valid_name(name: str) -> bool:
    """A plain identifier: letters, digits, '-' and '_' (no dots, slashes, NUL, nothing hidden)."""
    return bool(NAME_RE.fullmatch(name))


def _inside(directory: Path, relative: str) -> Path:
    """`relative` under `directory`, checked lexically: a symlink to a shared model file is fine, "../x" is not."""
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or not parts:
        raise CustomModelError(f"{relative!r} must be a file name inside {directory}")
    return directory / relative


def load_sidecar(directory: Path, sidecar: Path) -> tuple[ModelEntry, list[str] | None]:
    """(manifest entry with absolute paths, inline labels or None) for one sidecar YAML."""
    name = sidecar.stem
    if not valid_name(name):
        raise CustomModelError(f"{sidecar.name}: model name {name!r} is not a plain identifier")
    try:
        meta = yaml.safe_load(sidecar.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CustomModelError(f"{sidecar.name}: not readable YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise CustomModelError(f"{sidecar.name}: must be a mapping")
    if meta.get("file"):
        model = _inside(directory, str(meta["file"]))
    else:
        model = next((directory / f"{name}{s}" for s in MODEL_SUFFIXES if (directory / f"{name}{s}").is_file()),
                     directory / f"{name}.onnx")
    if not model.is_file():
        raise CustomModelError(f"{sidecar.name}: model file {model.name} not found")
    inline: list[str] | None = None
    if isinstance(meta.get("labels"), list):
        inline = [str(label) for label in meta["labels"]]
        labels = LabelSpec(set=f"{LABEL_SET_PREFIX}{name}")
    else:
        labels_file = _inside(directory, str(meta.get("labels_file") or meta.get("labels") or f"{name}.txt"))
        if not labels_file.is_file():
            raise CustomModelError(f"{sidecar.name}: labels file {labels_file.name} not found")
        labels = LabelSpec(file=str(labels_file))
    try:
        entry = ModelEntry(
            task="detection",
            name=str(meta.get("name") or name),
            license=meta.get("license"),
            labels=labels,
            input=InputSpec.model_validate(meta.get("input") or {}),
            decoder=str(meta.get("decoder") or ""),
            # An absolute path: the registry's `model_dir / file` then points here, not into the model directory.
            variants=[Variant(accelerator=SUFFIX_ACCELERATOR.get(model.suffix, "cpu"), file=str(model))],
        )
    except ValidationError as exc:
        raise CustomModelError(f"{sidecar.name}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
    if not entry.decoder:
        raise CustomModelError(f"{sidecar.name}: `decoder` is required")
    return entry, inline


Scan = tuple[dict[str, ModelEntry], dict[str, list[str]], dict[str, str]]


def scan(directory: Path) -> Scan:
    """(entries, inline label sets, problems by file) of every sidecar in `directory`."""
    entries: dict[str, ModelEntry] = {}
    label_sets: dict[str, list[str]] = {}
    problems: dict[str, str] = {}
    if not directory.is_dir():
        return entries, label_sets, problems
    for sidecar in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            entry, inline = load_sidecar(directory, sidecar)
        except CustomModelError as exc:
            problems[sidecar.name] = str(exc)
            continue
        entries[sidecar.stem] = entry
        if inline is not None:
            label_sets[f"{LABEL_SET_PREFIX}{sidecar.stem}"] = inline
    return entries, label_sets, problems


def apply(manifest: Manifest, scanned: Scan, custom_ids: set[str]) -> dict[str, str]:
    """Put a scan's models into `manifest` (packaged ids win); returns problems by file for the log and status.

    `custom_ids` tracks which ids came from the directory, so a model whose sidecar was removed disappears. Call it
    on the event loop (the manifest is read there); the scan itself reads files and belongs on a thread.
    """
    entries, label_sets, problems = scanned
    problems = dict(problems)
    for model_id in custom_ids - set(entries):
        manifest.models.pop(model_id, None)
        custom_ids.discard(model_id)
    for model_id, entry in entries.items():
        if model_id in manifest.models and model_id not in custom_ids:
            problems[f"{model_id}.yaml"] = f"{model_id} is a built-in model name; rename the custom model"
            continue
        key = f"{LABEL_SET_PREFIX}{model_id}"
        if key in label_sets:
            manifest.label_sets[key] = label_sets[key]
        manifest.models[model_id] = entry
        custom_ids.add(model_id)
    for file, problem in problems.items():
        log.warning("custom model %s ignored: %s", file, problem)
    return problems


def detection_models(manifest: Manifest) -> list[str]:
    return [k for k, v in manifest.models.items() if v.task == "detection"]


# ---- `perchd models import` ------------------------------------------------------------------------------------


def _grid_rows(width: int, height: int, strides: tuple[int, ...] = (8, 16, 32)) -> int:
    return sum((width // s) * (height // s) for s in strides)


def describe_onnx(inputs: list[Any], outputs: list[Any], classes: int) -> dict[str, Any]:
    """Sidecar fields (input spec, decoder) from an ONNX detector's tensor shapes; CustomModelError if unsure."""
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise CustomModelError(f"input shape {shape} is not an image batch")
    if shape[1] == 3:
        layout, height, width = "NCHW", shape[2], shape[3]
    elif shape[3] == 3:
        layout, height, width = "NHWC", shape[1], shape[2]
    else:
        raise CustomModelError(f"input shape {shape}: cannot tell where the 3 colour channels are")
    if min(width, height) <= 0:
        raise CustomModelError("the input size is dynamic; export the model with a fixed size")
    out = tuple(outputs[0].shape)
    size = [int(width), int(height)]
    if len(out) == 3 and out[1] == 4 + classes and out[2] > out[1]:
        # Ultralytics YOLOv8/v11 export: [1, 4+C, N], RGB / 255, letterboxed around the centre.
        return {"decoder": "yolov8", "input": {"size": size, "layout": layout, "color": "RGB",
                                               "resize": "letterbox", "align": "center", "normalize": "unit"}}
    if len(out) == 3 and out[2] == 5 + classes and out[1] == _grid_rows(width, height):
        # YOLOX raw head: BGR 0-255, letterboxed to the top-left corner.
        return {"decoder": "yolox", "input": {"size": size, "layout": layout, "color": "BGR",
                                              "resize": "letterbox", "align": "top-left", "normalize": "raw"}}
    raise CustomModelError(f"output shape {out} with {classes} labels matches no known detector head"
                           " (YOLOv8 [1,4+C,N], YOLOX [1,N,5+C]); pass --decoder and write the sidecar's input")


def _atomic_write(dest: Path, data: bytes | Path) -> None:
    """Write bytes (or copy a file) beside `dest`, then rename: a scan never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, Path):
                with open(data, "rb") as src:
                    shutil.copyfileobj(src, fh)
            else:
                fh.write(data)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def import_model(directory: Path, model: Path, labels_file: Path, name: str | None = None,
                 decoder: str | None = None, force: bool = False) -> Path:
    """Copy an ONNX detector and its labels into `directory` with a sidecar; check it loads and runs first."""
    from ..accelerators.base import AcceleratorError, OpenOptions, get_backend
    from .vision.detect import Detector

    name = name or model.stem
    if not valid_name(name):
        raise CustomModelError(f"model name {name!r} is not a plain identifier (letters, digits, '-', '_');"
                               " choose one with --name")
    if model.suffix != ".onnx":
        raise CustomModelError(f"{model.name}: only ONNX models can be imported")
    try:
        labels = [line.strip() for line in labels_file.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise CustomModelError(f"cannot read labels {labels_file}: {exc}") from exc
    if not labels:
        raise CustomModelError(f"{labels_file} lists no labels")
    directory.mkdir(parents=True, exist_ok=True)
    sidecar = directory / f"{name}.yaml"
    if sidecar.exists() and not force:
        raise CustomModelError(f"a custom model named {name} exists; pass --force to replace it")
    try:
        session = get_backend("cpu_onnx").open(model, OpenOptions())
    except AcceleratorError as exc:
        raise CustomModelError(str(exc)) from exc
    try:
        meta = describe_onnx(list(session.inputs), list(session.outputs), len(labels))
        if decoder:
            meta["decoder"] = decoder
        # One real inference through the same pre/post-processing the route will use.
        try:
            spec = InputSpec.model_validate(meta["input"])
            detector = Detector(spec, meta["decoder"], labels, session)
            detector.run_frame(session, np.full((64, 64, 3), 114, np.uint8), 0.5)
        except (AcceleratorError, ValidationError, ValueError, IndexError) as exc:
            raise CustomModelError(f"{model.name} does not run as a {meta['decoder']} detector: {exc}") from exc
    finally:
        session.close()
    _atomic_write(directory / f"{name}.onnx", model)
    _atomic_write(directory / f"{name}.txt", ("\n".join(labels) + "\n").encode())
    meta = {"name": name, "file": f"{name}.onnx", "labels_file": f"{name}.txt", **meta}
    # The sidecar goes last: a model is listed only once every file it names is in place.
    _atomic_write(sidecar, yaml.safe_dump(meta, sort_keys=False).encode())
    return sidecar
