"""Why a model runs where it runs, in words a person can act on.

A usable accelerator serves nothing when no model is built for it here: the manifest has no variant for this SoC
or chip, or the variant's file is not in the model directory (RKNN and Hailo files are converted or imported by the
user, never downloaded). Each such case becomes a reason naming the missing file and the command that produces it
(the manifest variant's `build`, or `perchd models pull`), shown in the log, `/v1/status/system-status`,
`perchd hardware` and the MQTT diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..accelerators.probe import AcceleratorReport, HardwareReport
from .config import Settings
from .manifest import Manifest, ModelEntry, Variant

BUILD_NAMES = {"rknn": "RKNN", "edgetpu": "Edge TPU", "tensorrt": "ONNX/TensorRT", "hailo": "Hailo"}


class _Registry(Protocol):
    settings: Settings
    manifest: Manifest
    hardware: HardwareReport

    def candidate_kinds(self) -> list[str]: ...

    def variants_for(self, entry: ModelEntry, kind: str) -> list[Variant]: ...


def present(model_dir: Path, variants: list[Variant]) -> bool:
    """Some variant's file is in the model directory (not verified: that happens when it loads)."""
    return any((model_dir / v.file).is_file() for v in variants)


def how_to_get(variant: Variant, model_id: str) -> str:
    if variant.url is None and variant.build:
        return variant.build
    return f"perchd models pull {model_id}"


def _what(report: AcceleratorReport | None, kind: str, hardware: HardwareReport) -> str:
    """"RK3576 NPU", "Hailo-8L", "Edge TPU", … for a reason's opening words."""
    if kind == "rknn":
        return f"{(hardware.board.soc or 'Rockchip').upper()} NPU"
    if kind == "hailo" and report is not None:
        chip = next((v for k, v in report.details.items() if k.startswith("pci ")), None)
        return chip or "Hailo"
    return {"edgetpu": "Edge TPU", "tensorrt": "NVIDIA GPU"}.get(kind, kind)


def no_model_reason(registry: _Registry, kind: str, model_id: str) -> str:
    """Why usable accelerator `kind` does not run `model_id` (which has no variant for it here)."""
    hardware = registry.hardware
    report = hardware.get(kind)
    what = _what(report, kind, hardware)
    model_dir = registry.settings.model_dir
    soc = hardware.board.soc
    lead = f"{kind}: {what} is usable but {model_id} has no {BUILD_NAMES.get(kind, kind)} build"
    if kind == "rknn" and soc:
        lead += f" for {soc}"
    default = registry.manifest.defaults.get("detection", {}).get(kind)
    entry = registry.manifest.models.get(default or "")
    if default and default != model_id and entry is not None:
        variants = registry.variants_for(entry, kind)
        if variants and present(model_dir, variants):
            return f"{lead}; request {default}, which has one"
        if variants:
            v = variants[0]
            return f"{lead}, and {default}'s file {v.file} is not in {model_dir}: {how_to_get(v, default)}"
    if kind == "rknn":
        target = (report.details.get("target") if report else None) or soc or "TARGET"
        return (f"{lead}: convert one on an x86-64 host with `perchd models convert {model_id} --target {target}` "
                "(models/rknn/README.md) and add it to the manifest")
    if kind == "hailo":
        return (f"{lead}: compile a .hef for it (Hailo Dataflow Compiler or Model Zoo) and run "
                "`perchd models import FILE.hef --labels LABELS.txt --decoder DECODER`")
    return f"{lead}: see models/manifest.yaml"


@dataclass
class Plan:
    """What `auto` would serve on this machine and why, without opening a model (for `perchd hardware`)."""

    model_id: str
    kind: str
    file: str | None
    reasons: list[str] = field(default_factory=list)


def plan(registry: _Registry, model_id: str) -> Plan:
    """The first candidate accelerator that has `model_id`'s file here; reasons for every one skipped before it."""
    entry = registry.manifest.models[model_id]
    reasons: list[str] = []
    for kind in registry.candidate_kinds():
        report = registry.hardware.get(kind)
        if kind != "cpu" and report is not None and not report.usable:
            reasons.append(f"{kind}: {report.reason}")
            continue
        variants = registry.variants_for(entry, kind)
        for v in variants:
            if (registry.settings.model_dir / v.file).is_file():
                return Plan(model_id, kind, v.file, reasons)
        if variants:
            reasons.append(f"{kind}: {variants[0].file} is not in {registry.settings.model_dir}: "
                           f"{how_to_get(variants[0], model_id)}")
        elif kind != "cpu":
            reasons.append(no_model_reason(registry, kind, model_id))
    return Plan(model_id, "none", None, reasons or [f"{model_id} has no file in {registry.settings.model_dir}"])


def best_usable(hardware: HardwareReport) -> str:
    """The probe's best usable accelerator kind (CPU when nothing else is)."""
    return next((k for k in hardware.usable_kinds() if k != "cpu"), "cpu")


def accelerator_state(models: list[dict[str, Any]], hardware: HardwareReport) -> dict[str, Any]:
    """One line for dashboards and MQTT: is the default model on the best usable accelerator, and if not, why.

    `state`: "accelerator" (on the best usable one), "cpu" (nothing better is usable), "fallback" (a usable
    accelerator is not serving, reasons say why), "degraded" (it failed mid-run and the CPU twin serves).
    """
    model = next((m for m in models if m.get("task") == "detection" and "accelerator" in m), None)
    best = best_usable(hardware)
    if model is None:
        return {"state": "unavailable", "best": best, "serving": None, "reason": None}
    if model.get("degraded"):
        state, reason = "degraded", model.get("degradedReason")
    elif model["accelerator"] == best:
        state, reason = ("cpu" if best == "cpu" else "accelerator"), None
    else:
        state, reason = "fallback", "; ".join(model.get("fallbackReasons") or []) or None
    return {"state": state, "best": best, "serving": model.get("inferenceDevice"), "model": model.get("id"),
            "reason": reason}
