"""Coral Edge TPU backend: a `*_edgetpu.tflite` model on ai-edge-litert (or tflite_runtime) with libedgetpu.

One Session = one interpreter bound to one TPU (`OpenOptions.device = "usb:N" | "pci:N"`, from the probe); several
TPUs mean several Sessions, one per worker thread. `load_delegate` fails in two ways that need different fixes:
OSError when libedgetpu.so.1 is not installed, ValueError when the library loads but no TPU answers. Both become
BackendUnavailable subclasses with their own message, so the daemon can fall back to the model's CPU twin and say
why. pycoral is optional: when importable, its TPU list makes the "no device" message more precise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .base import BackendUnavailable, ModelLoadError, OpenOptions
from .cpu_tflite import TFLiteSession, import_interpreter, open_interpreter

LIBEDGETPU = "libedgetpu.so.1"


class EdgeTPULibraryMissing(BackendUnavailable):
    """libedgetpu.so.1 could not be loaded (load_delegate raised OSError)."""


class EdgeTPUNotFound(BackendUnavailable):
    """libedgetpu loaded but no Edge TPU answered at the requested device (load_delegate raised ValueError)."""


def cpu_twin(path: Path) -> Path | None:
    """The CPU-runnable model next to an Edge TPU one: X_edgetpu.tflite -> X_cpu_twin.tflite or X.tflite."""
    stem = path.name.removesuffix("_edgetpu.tflite")
    if stem == path.name:
        return None
    for name in (f"{stem}_cpu_twin.tflite", f"{stem}.tflite"):
        candidate = path.with_name(name)
        if candidate.is_file():
            return candidate
    return None


def _list_tpus() -> list[str] | None:
    """TPUs that pycoral can see ("usb:0", "pci:0"), or None when pycoral is not installed."""
    try:
        from pycoral.utils.edgetpu import list_edge_tpus
    except ImportError:
        return None
    try:
        found = list_edge_tpus()
    except Exception:  # pycoral's C extension can fail in many ways; the list is only advisory
        return None
    counts: dict[str, int] = {}
    out = []
    for tpu in found:
        kind = str(tpu.get("type", "?"))
        out.append(f"{kind}:{counts.get(kind, 0)}")
        counts[kind] = counts.get(kind, 0) + 1
    return out


def load_edgetpu_delegate(device: str | None, library: str = LIBEDGETPU) -> Any:
    """libedgetpu's delegate for one TPU, with the two failure modes told apart."""
    _, load_delegate = import_interpreter()
    # libedgetpu accepts "usb", "usb:N", "pci", "pci:N", ":N" and sysfs / /dev/apex_N paths.
    if device is not None and not re.fullmatch(r"(usb|pci)?(:\d+)?|/\S+", device):
        raise EdgeTPUNotFound(f"unknown Edge TPU device {device!r}: expected usb:N or pci:N")
    options = {"device": device} if device else {}
    try:
        return load_delegate(library, options)
    except OSError as exc:
        raise EdgeTPULibraryMissing(
            f"{library} cannot be loaded ({exc}): install libedgetpu1-std from Coral's apt repository "
            "(libedgetpu1-max for the faster, hotter clock)"
        ) from exc
    except ValueError as exc:
        seen = _list_tpus()
        where = device or "any device"
        hint = f"; pycoral sees {', '.join(seen) or 'no TPU'}" if seen is not None else ""
        detail = " ".join(str(exc).split())
        raise EdgeTPUNotFound(
            f"no Edge TPU answered at {where} ({detail}){hint}: check that it is plugged in (USB 3 port), that the "
            "udev rule gives the service user access (group plugdev / apex), that the PCIe apex driver is loaded, "
            "and that no other process holds the TPU"
        ) from exc


class EdgeTPUSession(TFLiteSession):
    kind = "edgetpu"

    def __init__(self, interpreter: Any, device: str, delegate: Any) -> None:
        super().__init__(interpreter, device)
        # The interpreter must not outlive the delegate it runs on: keep both and drop them together.
        self._delegate = delegate

    def close(self) -> None:
        super().close()
        self._delegate = None


class EdgeTPUBackend:
    kind = "edgetpu"

    def __init__(self, library: str = LIBEDGETPU) -> None:
        self.library = library

    def open(self, path: Path, options: OpenOptions) -> EdgeTPUSession:
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path} does not exist: run `perchd models pull`")
        library = options.extra.get("edgetpu_library", self.library)
        delegate = load_edgetpu_delegate(options.device, library)
        # The delegate does the work; one CPU thread is enough for the ops it leaves on the host.
        try:
            interpreter = open_interpreter(path, 1, [delegate])
        except ModelLoadError as exc:
            raise ModelLoadError(f"Edge TPU could not load {path.name}: {exc}") from exc
        return EdgeTPUSession(interpreter, options.device or "tpu", delegate)
