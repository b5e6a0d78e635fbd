"""models/manifest.yaml: parse it, resolve files under the model directory, verify them by sha256."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..accelerators.base import KINDS, backend_names


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileRef(_Strict):
    file: str
    sha256: str | None = None
    size: int | None = None
    url: str | None = None


class LabelSpec(_Strict):
    file: str | None = None
    set: str | None = None
    sha256: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> LabelSpec:
        if (self.file is None) == (self.set is None):
            raise ValueError("labels need exactly one of 'file' or 'set'")
        return self


class InputSpec(_Strict):
    size: tuple[int, int]  # width, height
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    color: Literal["RGB", "BGR"] = "RGB"
    resize: Literal["stretch", "letterbox"] = "stretch"
    align: Literal["center", "top-left"] = "center"
    pad: int = 114
    # raw = pixels 0..255 as they are; unit = pixels / 255; signed = pixels / 127.5 - 1
    normalize: Literal["raw", "unit", "signed"] = "raw"


class Variant(FileRef):
    accelerator: str
    soc: list[str] | None = None  # SoCs the compiled file is built for (rknn)
    cpu_twin: str | None = None  # an Edge TPU file's CPU equivalent, for fallback
    build: str | None = None  # how to make it when there is no download
    # The backend that runs the file (accelerators/base.py registry name, e.g. opencv-yunet, opencv-superres, dlib),
    # for files only one library can run; None = chosen by accelerator and file suffix (backend_for_file).
    runtime: str | None = None

    @model_validator(mode="after")
    def _known_kind(self) -> Variant:
        if self.accelerator not in KINDS:
            raise ValueError(f"unknown accelerator {self.accelerator!r}; expected one of {', '.join(KINDS)}")
        if self.runtime is not None and self.runtime not in backend_names():
            raise ValueError(f"unknown runtime {self.runtime!r}; expected one of {', '.join(backend_names())}")
        return self


class MemoryFigure(_Strict):
    """RSS growth in MiB of opening and warming Sessions of the CPU variant, measured in a fresh process by
    benchmarks/model_memory.py: the first Session (including its runtime's start-up), and each one more."""

    first_mb: float = Field(ge=0)
    more_mb: float = Field(ge=0)
    measured: str  # where and when, e.g. "x86_64 2-core, 2026-11-30"


class Accuracy(_Strict):
    """COCO val2017 mAP@[.5:.95] of a detection model, from the model card cited in `source`."""

    coco_map: float = Field(ge=0, le=1)
    source: str


class ModelEntry(_Strict):
    task: str
    name: str
    license: str | None = None
    labels: LabelSpec | None = None
    input: InputSpec | None = None
    decoder: str | None = None
    variants: list[Variant]
    memory: MemoryFigure | None = None
    accuracy: Accuracy | None = None


class Manifest(_Strict):
    version: int = 1
    label_sets: dict[str, list[str]] = Field(default_factory=dict)
    defaults: dict[str, dict[str, str]] = Field(default_factory=dict)
    models: dict[str, ModelEntry]

    def by_task(self, task: str) -> dict[str, ModelEntry]:
        return {k: v for k, v in self.models.items() if v.task == task}


class ModelFileError(Exception):
    """A model file is missing or does not match the manifest; the message says which and how to fix it."""


def load_manifest(path: Path | None = None) -> Manifest:
    source = resources.files("perch.models").joinpath("manifest.yaml") if path is None else path
    text = source.read_text()
    return Manifest.model_validate(yaml.safe_load(text))


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def resolve(model_dir: Path, ref: FileRef | LabelSpec, verify: bool = True) -> Path:
    """The verified path of `ref` under `model_dir`, or ModelFileError naming the file and the expected hash."""
    assert ref.file is not None
    path = model_dir / ref.file
    if not path.is_file():
        build = getattr(ref, "build", None)
        if ref.url is None and build:
            # Converted or imported files (RKNN, Hailo) cannot be pulled: say how to make this one.
            raise ModelFileError(f"model file {ref.file} not found in {model_dir}; it is not downloadable: {build}")
        raise ModelFileError(
            f"model file {ref.file} not found in {model_dir}; fetch it with `perchd models pull`"
            " (or point PERCHD_MODEL_DIR at a folder that has it)"
        )
    if verify and ref.sha256:
        actual = sha256_of(path)
        if actual != ref.sha256:
            raise ModelFileError(
                f"model file {path} is corrupt: sha256 {actual}, expected {ref.sha256};"
                " delete it and run `perchd models pull`"
            )
    return path


def load_labels(manifest: Manifest, model_dir: Path, spec: LabelSpec | None) -> list[str]:
    if spec is None:
        return []
    if spec.set is not None:
        return list(manifest.label_sets[spec.set])
    return [line.strip() for line in resolve(model_dir, spec).read_text().splitlines()]
