"""Accelerator model files that cannot be downloaded: `perchd models convert` (ONNX -> .rknn for one Rockchip NPU)
and `perchd models import FILE.hef` (a compiled Hailo model).

Conversion needs rknn-toolkit2, which lives in its own venv (it pins numpy<=1.26.4 and imports torch): this module
only finds the ONNX source and the target file in the manifest and runs models/rknn/convert.py with that venv's
Python (`--python`, $PERCHD_RKNN_PYTHON, or the venv .ci/rknn.sh keeps under ~/.cache/perchd/rknn-venv).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config import Settings
from .custom_models import CustomModelError, valid_name
from .manifest import Manifest, ModelFileError, load_labels, resolve, sha256_of

TOOLKIT_VENV = Path("~/.cache/perchd/rknn-venv/bin/python")
# The probe's SoC names -> rknn-toolkit2 target_platform (RK3588S has RK3588's NPU).
RKNN_TARGETS = {"rk3588": "rk3588", "rk3588s": "rk3588", "rk3576": "rk3576", "rk3568": "rk3568",
                "rk3566": "rk3566", "rk3562": "rk3562"}
HAILO_INPUT = {"layout": "NHWC", "color": "RGB", "resize": "letterbox", "align": "center", "normalize": "raw"}


def toolkit_python(explicit: str | None = None) -> str | None:
    """The Python of a venv with rknn-toolkit2, or None."""
    if explicit:
        return explicit
    if os.environ.get("PERCHD_RKNN_PYTHON"):
        return os.environ["PERCHD_RKNN_PYTHON"]
    default = TOOLKIT_VENV.expanduser()
    return str(default) if default.is_file() else None


def convert_rknn(settings: Settings, manifest: Manifest, model_id: str, soc: str, python: str | None = None,
                 out_dir: Path | None = None) -> tuple[int, str]:
    """(exit code, message): build `model_id`'s .rknn for `soc` into the model directory (or `out_dir`)."""
    entry = manifest.models.get(model_id)
    if entry is None:
        return 1, f"unknown model {model_id!r}; see `perchd models list`"
    soc = soc.lower()
    if soc not in RKNN_TARGETS:
        return 1, f"unknown Rockchip SoC {soc!r}; expected one of {', '.join(RKNN_TARGETS)}"
    variant = next((v for v in entry.variants if v.accelerator == "rknn" and soc in (v.soc or [])), None)
    if variant is None:
        return 1, (f"{model_id} has no RKNN variant for {soc} in the manifest; add one (models/rknn/README.md) "
                   "or convert another model")
    source = None
    for v in entry.variants:
        if v.accelerator in ("cpu", "tensorrt") and v.file.endswith(".onnx"):
            try:
                source = resolve(settings.model_dir, v, verify=settings.verify_models)
                break
            except ModelFileError as exc:
                return 1, f"the ONNX source is missing: {exc}"
    if source is None:
        return 1, f"{model_id} has no ONNX variant to convert from"
    py = toolkit_python(python)
    if py is None:
        return 3, ("rknn-toolkit2 is not installed: create its venv (models/rknn/README.md, or run `bash "
                   ".ci/rknn.sh` once) and pass --python VENV/bin/python or set PERCHD_RKNN_PYTHON")
    out = (out_dir or settings.model_dir) / variant.file
    script = resources.files("perch.models").joinpath("rknn/convert.py")
    with resources.as_file(script) as path:
        cmd = [py, str(path), "--onnx", str(source), "--target", RKNN_TARGETS[soc], "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-5:]
        return proc.returncode, f"conversion failed ({' '.join(cmd)}):\n" + "\n".join(tail)
    return 0, (f"wrote {out} for {RKNN_TARGETS[soc]} (sha256 {sha256_of(out)}); the daemon uses it on a {soc} board "
               "with this model directory (copy it to the board's model directory)")


def _copy(src: Path, dest: Path) -> None:
    """Copy beside `dest`, then rename: the daemon never sees half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _size(text: str | None) -> list[int]:
    """"640" or "640x480" -> [width, height]."""
    w, _, h = (text or "640").lower().partition("x")
    try:
        size = [int(w), int(h or w)]
    except ValueError as exc:
        raise CustomModelError(f"--size must be WIDTH or WIDTHxHEIGHT, got {text!r}") from exc
    if min(size) < 32:
        raise CustomModelError(f"--size {text!r} is too small")
    return size


def import_hef(settings: Settings, manifest: Manifest, hef: Path, labels_file: Path, decoder: str | None,
               name: str | None = None, size: str | None = None, force: bool = False) -> str:
    """Import a compiled Hailo model. Named like a manifest model with a Hailo variant (e.g. yolov8n), it becomes
    that variant's file in the model directory and `auto` serves it on the Hailo; any other name becomes a custom
    model (served at /v1/vision/custom/NAME). HailoRT is not needed here: the file is checked when it loads."""
    name = name or hef.stem
    if hef.suffix != ".hef" or not hef.is_file() or hef.stat().st_size == 0:
        raise CustomModelError(f"{hef}: not a non-empty .hef file")
    if not valid_name(name):
        raise CustomModelError(f"model name {name!r} is not a plain identifier; choose one with --name")
    try:
        labels = [s.strip() for s in labels_file.read_text().splitlines() if s.strip()]
    except OSError as exc:
        raise CustomModelError(f"cannot read labels {labels_file}: {exc}") from exc
    if not labels:
        raise CustomModelError(f"{labels_file} lists no labels")
    entry = manifest.models.get(name)
    slot = next((v for v in entry.variants if v.accelerator == "hailo"), None) if entry else None
    if entry is not None and slot is not None:
        expected = load_labels(manifest, settings.model_dir, entry.labels)
        if len(labels) != len(expected):
            raise CustomModelError(f"{name} has {len(expected)} labels, {labels_file} lists {len(labels)}")
        if decoder and decoder != entry.decoder:
            raise CustomModelError(f"{name} decodes with {entry.decoder}; import a {decoder} model under another "
                                   "--name (it then becomes a custom model)")
        dest = settings.model_dir / slot.file
        if dest.exists() and not force:
            raise CustomModelError(f"{dest} exists; pass --force to replace it")
        _copy(hef, dest)
        return f"imported {hef.name} as the Hailo build of {name}: {dest}"
    if entry is not None:
        raise CustomModelError(f"{name} is a built-in model without a Hailo variant; choose another --name")
    if not decoder:
        raise CustomModelError("a custom .hef needs --decoder (e.g. yolov8 for an output of [4+classes, N])")
    directory = settings.effective_custom_model_dir
    sidecar = directory / f"{name}.yaml"
    if sidecar.exists() and not force:
        raise CustomModelError(f"a custom model named {name} exists; pass --force to replace it")
    _copy(hef, directory / f"{name}.hef")
    (directory / f"{name}.txt").write_text("\n".join(labels) + "\n")
    meta: dict[str, Any] = {"name": name, "file": f"{name}.hef", "labels_file": f"{name}.txt", "decoder": decoder,
                            "input": {"size": _size(size), **HAILO_INPUT}}
    tmp = sidecar.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(meta, sort_keys=False))
    os.replace(tmp, sidecar)  # last: a model is listed only once every file it names is in place
    return f"imported {name} into {directory}; it runs on the Hailo at /v1/vision/custom/{name}"
